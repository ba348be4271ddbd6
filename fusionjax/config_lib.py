"""Shared defaults for `configs/*.py` and the parsing of their `:arg`; configs import only this.

A config file (big_vision style) is

    def get_config(arg=None):
      arg = config_lib.parse_arg(arg, tiny=False)
      config = config_lib.base_config(config_lib.model_config("fusionmamba", tiny=arg.tiny))
      config.loss = ...; config.data.dataset = ...; config.optim.learning_rate = ...
      return config_lib.shrink(config, train_split="train") if arg.tiny else config

and runs with `python run.py --config=configs/<file>.py[:arg] [--config.section.field=value]`.

Sections (every field is documented in `base_config`): `model` (`name`, a registered model
variant, and its Config dataclass's fields, None = the variant's default: `model_config`),
`loss`, `data`, `optim`, `train`, `eval`, `ckpt`, and the top-level `seed`.
"""

import dataclasses
import importlib.util
import pathlib
import typing
from typing import Any

import ml_collections

from fusionjax import models
from fusionjax.models import registry

# The `task=` of the medical configs: dataset harvard/<task>_mri (fusionjax.data.builders).
MEDICAL_TASKS = ("ct", "pet", "spect")

# The CPU smoke-run sizes that `shrink` sets (a few minutes on 2 CPU cores, embedded pairs).
TINY_CROP_SIZE = 32
TINY_BATCH_SIZE = 8
TINY_NUM_STEPS = 60
# Tiny models over a few dozen steps: a larger rate than the papers' shows learning in the run.
TINY_LEARNING_RATE = 1e-3


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of "path/to/config.py[:arg]", as run.py's --config would load it (unlocked).

  >>> config = load("configs/fusionmamba_med.py:tiny")
  """
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"config file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def check_config_flag(argv: list[str]) -> None:
  """Loads the config that the last --config flag of a command line names (`--config=x` or
  `--config x`), if any, so that a missing file or a bad `:arg` raises its own error
  (FileNotFoundError, ValueError) before absl's flag parsing wraps it."""
  spec = None
  for index, arg in enumerate(argv):
    if arg.startswith("--config="):
      spec = arg.partition("=")[2]
    elif arg == "--config" and index + 1 < len(argv):
      spec = argv[index + 1]
  if spec:
    load(spec)


def parse_arg(
  arg: str | None, choices: dict[str, tuple[Any, ...]] | None = None, **defaults: Any
) -> ml_collections.ConfigDict:
  """Parses the `:arg` of `--config=file.py:arg` into typed fields.

  `arg` is a comma-separated list of `key=value` or bare `key` (sets a bool to True), e.g.
  "tiny" or "tiny,task=pet". Every key must be one of `defaults`, whose values give the
  types; absent keys keep their defaults. `choices` names the values a key may take.

  >>> parse_arg("tiny,task=pet", tiny=False, task="ct")
  task: pet
  tiny: true
  """
  values = dict(defaults)
  for token in filter(None, (token.strip() for token in (arg or "").split(","))):
    key, has_value, text = token.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      values[key] = True
    elif isinstance(default, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key!r} is a bool, got {text!r}")
      values[key] = text.lower() in ("true", "1")
    else:
      values[key] = type(default)(text)
    allowed = (choices or {}).get(key)
    if allowed is not None and values[key] not in allowed:
      raise ValueError(f"{key} must be one of {sorted(allowed)}, got {values[key]!r}")
  return ml_collections.ConfigDict(values)


class ConfigError(ValueError):
  """A config names something that does not exist or does not fit (model, variant, field)."""


def _field_type(config_cls: type, field: dataclasses.Field, default: Any) -> type:
  """The type a command-line value of a model field is parsed to: the default's type, else
  the annotation's (`int | None` -> int)."""
  if default is not None:
    return type(default)
  annotation = registry.field_types(config_cls)[field.name]
  arm = registry.optional_arm(annotation)
  return annotation if arm is None else typing.get_origin(arm) or arm


def model_config(name: str, *, tiny: bool = False, **overrides: Any) -> ml_collections.ConfigDict:
  """The `model` section: `name` (a registered variant) plus one field per field of its Config
  dataclass, each None ("the variant's default") unless set.

  `tiny` selects the family's small variant (`registry.Family.tiny_variant`). Every field
  exists, typed, so that it can be overridden from the command line
  (`--config.model.d_state=8`); `overrides` set fields here (unknown ones are refused). The
  fields left None take the defaults of the variant that
  `name` names when the model is built, so `--config.model.name=fusionmamba_ct_mri` gives
  that variant's defaults, with explicit field overrides on top, never a mix of two variants'
  defaults. `resolve` writes the resolved values out (run.py records them in config.json).
  """
  if tiny:
    _lookup(name)
    name = registry.get(name).tiny_variant
  config_cls, _ = _lookup(name)
  defaults = config_cls()
  fields = {
    field.name: ml_collections.config_dict.placeholder(
      _field_type(config_cls, field, getattr(defaults, field.name))
    )
    for field in dataclasses.fields(config_cls)
  }
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"unknown fields for model {name!r}: {unknown}; known: {sorted(fields)}")
  section = ml_collections.ConfigDict({"name": name, **fields})
  section.update(overrides)
  return section


def _lookup(name: str) -> tuple[type, type]:
  """(Config class, model class) of a registered variant, or a ConfigError naming them all."""
  if name not in models.names():
    raise ConfigError(f"unknown model {name!r}; registered models: {models.names()}")
  return registry.lookup(name)


def model_family(name: str) -> str:
  """The family name ("mambadfuse", ...) of a registered model variant."""
  _lookup(name)
  return registry.get(name).name


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose model fields are all written out: the set ones as they are, the
  None ones the defaults of the variant `model.name` names.

  Raises:
    ConfigError: model.name is not a registered model, is a model of another family than the
      config's model section was made for (another config file is needed), or a set field does
      not fit it. The loss may be any family's (`loss.name`): every loss takes (a, b, fused).
  """
  section = config.model.to_dict()
  name = section.pop("name")
  family = model_family(name)
  config_cls, _ = _lookup(name)
  if set(section) != {field.name for field in dataclasses.fields(config_cls)}:
    raise ConfigError(
      f"model.name={name!r} is a {family} model but this config's model section holds "
      f"another family's fields; use a configs/{family}_*.py file"
    )
  try:
    _, resolved = models.resolve_config({"name": name, **section})
  except (TypeError, ValueError) as error:
    raise ConfigError(f"model {name!r}: {error}") from error
  result = ml_collections.ConfigDict(config.to_dict())
  result.model = ml_collections.ConfigDict({"name": name, **dataclasses.asdict(resolved)})
  return result


# Training fields that count something, and the smallest value each may take.
_MINIMUMS = {
  "data.crop_size": 1,
  "data.batch_size": 1,
  "data.num_threads": 0,
  "train.num_steps": 1,
  "train.log_every_steps": 1,
  "eval.every_steps": 0,
  "eval.num_pairs": 0,
  "eval.num_samples": 0,
  "ckpt.every_steps": 1,
  "ckpt.keep_last": 1,
  "ckpt.keep_best": 0,
}


def check_training_values(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError naming the first training field out of range: a count under its
  minimum, a learning rate that is not positive, an EMA decay outside [0, 1)."""
  for path, minimum in _MINIMUMS.items():
    section, field = path.split(".")
    if config[section][field] < minimum:
      raise ConfigError(f"{path} must be at least {minimum}, got {config[section][field]}")
  if not config.optim.learning_rate > 0:
    raise ConfigError(f"optim.learning_rate must be positive, got {config.optim.learning_rate}")
  if not 0 <= config.optim.ema_decay < 1:
    raise ConfigError(f"optim.ema_decay must be in [0, 1), got {config.optim.ema_decay}")


def base_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Defaults of every section; a config file then sets its paper's values."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # model init, data order and augmentation, stochastic depth
  config.model = model
  # `name` is the model family, whose loss (`registry.Family.loss`) takes the other fields as
  # keyword arguments (weights and variants), set by each config file.
  config.loss = ml_collections.ConfigDict({"name": model_family(model.name)})
  config.data = ml_collections.ConfigDict(
    dict(
      dataset="",  # TFDS name of a fusionjax.data.builders dataset ("harvard/ct_mri", "msrs")
      # Where the pairs are read from: TFDS array_record files in `data_dir` (built once from
      # `manual_dir` when both are set); else the raw folders in `manual_dir` (any layout the
      # dataset's builder accepts, e.g. docs/data.md's <dataset>/<split>/<modality>/); else the
      # pairs embedded in the package (fusionjax.data.sample_dir()).
      data_dir="",
      manual_dir="",
      # Split names, or TFDS slices of a prepared dataset ("train[17:]"; needs data_dir).
      train_split="train",
      eval_split="test",
      # Pair names never read from either split (e.g. fusionjax.data.overlap's near-copies
      # of test pairs).
      exclude_names=(),
      # Feed the model (img_b, img_a) instead of (img_a, img_b), where img_a is the grey
      # modality (ir, mri, pc) and img_b the other (vi, ct, pet, spect, gfp). The Y
      # convention of img_b is the model family's (`InferenceSpec.y_convention`).
      swap_inputs=False,
      crop_size=128,  # random square crop, the same position in both images
      batch_size=8,  # global, over all devices and processes
      augment="none",  # "none" | "flips" | "dihedral" (fusionjax.data.train_dataset)
      skip_smaller_than_crop=False,  # skip pairs smaller than the crop instead of failing
      num_threads=4,  # grain reading threads per process
    )
  )
  config.optim = ml_collections.ConfigDict(
    dict(
      optimizer="adam",  # "adam" | "adamw" (optax), PyTorch defaults for betas and eps
      learning_rate=1e-4,  # constant value, the start of "multistep"/"exponential", the peak
      # of "warmup_cosine"
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,  # decoupled (adamw only)
      grad_clip_norm=0.0,  # clip by global norm when > 0
      schedule="constant",  # "constant" | "multistep" | "exponential" | "warmup_cosine"
      boundaries=(),  # multistep: steps where the rate is multiplied by decay_rate
      decay_rate=0.5,  # multistep and exponential
      decay_every_steps=0,  # exponential: staircase period (e.g. one epoch)
      warmup_steps=0,  # warmup_cosine: linear warm-up from init_learning_rate
      init_learning_rate=0.0,
      end_learning_rate=0.0,  # warmup_cosine: floor reached at train.num_steps
      ema_decay=0.0,  # > 0 keeps an EMA of the parameters, used for evaluation and fusing
    )
  )
  config.train = ml_collections.ConfigDict(
    dict(
      num_steps=10_000,
      log_every_steps=50,  # scalars to metrics.jsonl and TensorBoard
      # Fine-tuning: start the model and its EMA from these parameters instead of a fresh model
      # (fusionjax.training.starting_point: a run folder, a folder of fusionjax params, or a
      # shipped model's name or task); a run resuming a checkpoint does not read it.
      init_from="",
      # Compile the train step for compile time, not run time (fusionjax.compile_options
      # .fast_compile: no backend optimisation): for runs of a few dozen steps (FusionMamba's
      # tiny configs), whose steps run 2-5x slower but start sooner. The arithmetic is the same
      # up to float32 rounding.
      fast_compile=False,
    )
  )
  config.eval = ml_collections.ConfigDict(
    dict(
      every_steps=1_000,  # validation during training, and at its end; 0 = never
      num_pairs=0,  # pairs of data.eval_split validated, reported and fused; 0 = all
      # fusionjax.metrics names; () = its DEFAULT_METRICS
      metrics=("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"),
      num_samples=4,  # pairs drawn in samples/ and TensorBoard, and in the report's grid
      baselines=True,  # the report (run.py --mode=eval) also scores the classical baselines
    )
  )
  config.ckpt = ml_collections.ConfigDict(
    dict(
      every_steps=1_000,  # periodic saves (also after every validation and at the end)
      keep_last=3,  # latest checkpoints kept
      keep_best=1,  # checkpoints kept by best validation `best_metric`
      best_metric="Qabf",  # a name of eval.metrics
      best_mode="max",  # "max" | "min"
    )
  )
  return config


def shrink(
  config: ml_collections.ConfigDict, *, train_split: str, fast_compile: bool = False
) -> ml_collections.ConfigDict:
  """Shrinks a paper config in place to a CPU smoke run on the embedded sample pairs.

  Tiny crops and batches, a few dozen steps, validation and checkpoints at the end (and one
  in the middle), the learning rate (and its schedule's other values) scaled to
  TINY_LEARNING_RATE; the model must already be the tiny variant (`model_config(tiny=True)`).
  Evaluation is on the embedded "test" pairs; training on `train_split`: "train" where the
  samples hold a few training pairs of the dataset (the Harvard tasks), so that the smoke run
  is evaluated on pairs it did not train on, else "test" (then it evaluates on its training
  pairs). `fast_compile` sets `train.fast_compile`: worth it where the tiny step compiles slowly
  and runs fast (FusionMamba: 31 s -> 16 s to compile, 83 -> 217 ms a step on 2 CPU cores; the
  unoptimised steps of MambaDFuse and S4Fusion run 4.5x slower, more than their 60 steps save).
  """
  if config.model.name != registry.get(config.model.name).tiny_variant:
    raise ValueError(f"shrink() needs a tiny model, got {config.model.name!r}")
  config.data.update(
    data_dir="",
    manual_dir="",
    train_split=train_split,
    eval_split="test",
    crop_size=TINY_CROP_SIZE,
    batch_size=TINY_BATCH_SIZE,
    num_threads=1,
    skip_smaller_than_crop=False,
  )
  config.train.update(num_steps=TINY_NUM_STEPS, log_every_steps=5, fast_compile=fast_compile)
  config.eval.update(every_steps=TINY_NUM_STEPS // 2, num_pairs=2, num_samples=2)
  config.ckpt.update(every_steps=TINY_NUM_STEPS // 2, keep_last=2)
  if config.optim.ema_decay:
    config.optim.ema_decay = 0.9
  scale = TINY_LEARNING_RATE / config.optim.learning_rate
  config.optim.learning_rate *= scale
  config.optim.init_learning_rate *= scale
  config.optim.end_learning_rate *= scale
  if config.optim.schedule == "warmup_cosine":
    config.optim.warmup_steps = TINY_NUM_STEPS // 10
  return config


def pretrained_data(
  config: ml_collections.ConfigDict,
  dataset: str,
  *,
  validation_pairs: int,
  crop_size: int,
  batch_size: int,
) -> ml_collections.ConfigDict:
  """Sets, in place, the data section the shipped models' recipes share: the first
  `validation_pairs` pairs of `dataset`'s train split validate and the rest train (TFDS slices),
  the train pairs that nearly copy a test pair (`fusionjax.data.overlap`) are left out of both,
  random `crop_size` crops with dihedral augmentation."""
  from fusionjax.data import overlap  # the data package is not needed to read a config

  config.data.update(
    dataset=dataset,
    train_split=f"train[{validation_pairs}:]",
    eval_split=f"train[:{validation_pairs}]",
    exclude_names=overlap.near_duplicates_of_test(dataset),
    crop_size=crop_size,
    batch_size=batch_size,
    augment="dihedral",
  )
  return config


def pretrained_recipe(
  config: ml_collections.ConfigDict,
  *,
  learning_rate: float,
  warmup_steps: int,
  num_steps: int,
  every_steps: int = 250,
) -> ml_collections.ConfigDict:
  """Sets, in place, what the recipes of the shipped models (configs/pretrained/) share: Adam,
  a linear warm-up from 1e-5 to `learning_rate` over `warmup_steps`, then cosine decay to 1e-5
  at `num_steps`; an EMA of the parameters (decay 0.995, what validation and the shipped weights
  use); validation and checkpoints every `every_steps`; one reading thread (training runs one
  per CPU core)."""
  config.data.num_threads = 1
  config.optim.update(
    optimizer="adam",
    schedule="warmup_cosine",
    init_learning_rate=1e-5,
    learning_rate=learning_rate,
    end_learning_rate=1e-5,
    warmup_steps=warmup_steps,
    ema_decay=0.995,
  )
  config.train.num_steps = num_steps
  config.eval.update(every_steps=every_steps, num_samples=4, baselines=True)
  config.ckpt.update(every_steps=every_steps, keep_last=2)
  return config
