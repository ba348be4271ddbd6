"""Every config file loads (paper size and its documented :args), with what it names existing."""

import dataclasses
import functools
import pathlib

import jax
import ml_collections
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from fusionjax import config_lib, models
from fusionjax.training import input as input_lib
from fusionjax.training import optim, steps

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO / "configs").glob("*.py"))
TASK_CONFIGS = ("mambadfuse_med", "fusionmamba_med")  # these take task=ct|pet|spect
CASES = [(path.stem, arg) for path in CONFIG_FILES for arg in (None, "tiny")] + [
  (name, f"tiny,task={task}") for name in TASK_CONFIGS for task in ("pet", "spect")
]


def load(name: str, arg: str | None) -> ml_collections.ConfigDict:
  return config_lib.load(f"{REPO / 'configs' / name}.py" + (f":{arg}" if arg else ""))


@functools.cache
def abstract_parameter_count(model_config: str) -> int:
  config = ml_collections.ConfigDict(eval(model_config))  # pylint: disable=eval-used
  model = nnx.eval_shape(lambda: models.build(config, rngs=nnx.Rngs(0)))
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_the_six_configs_exist_and_give_their_commands():
  assert {path.stem for path in CONFIG_FILES} == {
    "mambadfuse_vif",
    "mambadfuse_med",
    "fusionmamba_vif",
    "fusionmamba_med",
    "fusionmamba_gfp",
    "s4fusion_vif",
  }
  for path in CONFIG_FILES:
    assert f"python run.py --config=configs/{path.name}:tiny" in path.read_text()


@pytest.mark.parametrize("name, arg", CASES)
def test_config_loads_and_builds(name, arg):
  config = load(name, arg)
  config.lock()
  tiny = arg is not None and "tiny" in arg
  assert config.model.name.endswith("_tiny") == tiny
  assert abstract_parameter_count(repr(config.model.to_dict())) > 0
  steps.make_loss(config.loss)
  schedule = optim.make_schedule(config.optim, config.train.num_steps)
  optim.make_optimizer(config.optim, schedule)
  assert float(schedule(0)) > 0 and float(schedule(config.train.num_steps)) > 0
  if config.ckpt.keep_best:
    assert config.ckpt.best_metric in config.eval.metrics
  if tiny:  # the smoke run reads the embedded pairs
    assert config.train.num_steps <= 100 and config.data.crop_size <= 32
    assert len(input_lib.pair_source(config.data, config.data.train_split)) > 0
    assert len(input_lib.eval_pairs(config.data, config.eval.num_pairs)) > 0


def test_paper_sizes():
  """The paper-size configs build the papers' models (docs/architectures.md 1.8, 2.9, 3.8)."""
  counts = {
    name: abstract_parameter_count(repr(load(name, None).model.to_dict()))
    for name in ("mambadfuse_vif", "s4fusion_vif")
  }
  assert counts["mambadfuse_vif"] == 1_347_271
  assert counts["s4fusion_vif"] == pytest.approx(3.56e6, rel=0.02)


def _parse_command_line(*argv: str):
  """The config that run.py's --config flag gives for these arguments."""
  argv = ["run.py", *argv]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  flag_values(argv)
  return flag_values.config


def test_command_line_overrides_are_typed_and_locked():
  path = REPO / "configs" / "mambadfuse_med.py"
  config = _parse_command_line(
    f"--config={path}:tiny,task=pet", "--config.optim.learning_rate=0.5", "--config.model.d_state=2"
  )
  assert (config.optim.learning_rate, config.model.d_state) == (0.5, 2)
  assert config.data.dataset == "harvard/pet_mri"
  # A typo is an error naming the field it probably meant, not a new field.
  with pytest.raises(AttributeError, match='Did you mean "learning_rate"'):
    _parse_command_line(f"--config={path}", "--config.optim.learning_rte=0.5")
  with pytest.raises(flags.IllegalFlagValueError):  # so is a value of the wrong type
    _parse_command_line(f"--config={path}", "--config.train.num_steps=many")


def test_parse_arg():
  arg = config_lib.parse_arg("tiny, task=pet", tiny=False, task="ct", steps=10)
  assert (arg.tiny, arg.task, arg.steps) == (True, "pet", 10)
  assert config_lib.parse_arg(None, tiny=False).tiny is False
  assert config_lib.parse_arg("steps=3", steps=10).steps == 3
  with pytest.raises(ValueError, match="unknown config argument 'tyni'"):
    config_lib.parse_arg("tyni", tiny=False)
  with pytest.raises(ValueError, match="needs a value"):
    config_lib.parse_arg("task", task="ct")
  assert config_lib.parse_arg("task=pet", {"task": ("ct", "pet")}, task="ct").task == "pet"
  with pytest.raises(ValueError, match=r"task must be one of \['ct', 'pet'\], got 'mr'"):
    config_lib.parse_arg("task=mr", {"task": ("ct", "pet")}, task="ct")


def test_medical_configs_refuse_an_unknown_task():
  for name in (
    *TASK_CONFIGS,
    "pretrained/mambadfuse_small_med",
    "pretrained/fusionmamba_small_med",
  ):
    with pytest.raises(ValueError, match="task must be one of .*got 'mr'"):
      load(name, "task=mr")


def test_shrink_needs_the_tiny_model():
  config = config_lib.base_config(config_lib.model_config("mambadfuse"))
  with pytest.raises(ValueError, match="tiny model"):
    config_lib.shrink(config, train_split="test")


def test_model_config_refuses_unknown_fields():
  with pytest.raises(ValueError, match="unknown fields"):
    config_lib.model_config("mambadfuse", tiny=True, embed_dimension=8)


def test_model_variant_is_chosen_by_name_without_mixing_defaults():
  """--config.model.name picks a variant: its own defaults, explicit fields on top."""
  path = REPO / "configs" / "fusionmamba_med.py"
  config = config_lib.resolve(
    _parse_command_line(f"--config={path}", "--config.model.name=fusionmamba_ct_mri")
  )
  ct_mri = dataclasses.asdict(models.resolve_config("fusionmamba_ct_mri")[1])
  assert config.model.to_dict() == {"name": "fusionmamba_ct_mri", **ct_mri}
  assert config.model.depths == (2, 2, 1, 2) and config.model.decoder_depths == (2, 1, 2, 2)
  # The tiny config's variant leaks nothing into another variant either.
  config = config_lib.resolve(
    _parse_command_line(
      f"--config={path}:tiny", "--config.model.name=fusionmamba_ct_mri", "--config.model.d_state=8"
    )
  )
  assert config.model.to_dict() == {"name": "fusionmamba_ct_mri", **ct_mri, "d_state": 8}
  assert config.model.embed_dim == 96  # the tiny variant's 8 does not leak


def test_model_name_of_another_family_or_unknown_is_refused():
  path = REPO / "configs" / "fusionmamba_med.py"
  with pytest.raises(
    config_lib.ConfigError, match="is a mambadfuse model but this config's model section"
  ):
    config_lib.resolve(_parse_command_line(f"--config={path}", "--config.model.name=mambadfuse"))
  with pytest.raises(config_lib.ConfigError, match="unknown model 'fusionmamba_ct'"):
    config_lib.resolve(
      _parse_command_line(f"--config={path}", "--config.model.name=fusionmamba_ct")
    )


def test_medical_smoke_runs_evaluate_on_pairs_they_did_not_train_on():
  for name in TASK_CONFIGS:
    for task in ("ct", "pet", "spect"):
      data = load(name, f"tiny,task={task}").data
      train = {record["name"] for record in input_lib.pair_source(data, data.train_split)}
      evaluated = {record["name"] for record in input_lib.pair_source(data, data.eval_split)}
      assert train and evaluated and not train & evaluated
