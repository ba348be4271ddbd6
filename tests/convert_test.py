"""fusionjax.convert: torch-free checkpoint reading, name mapping, its errors, save/load, command.

The fixture `fixtures/convert_torch_checkpoint.pth` was written once by torch 2.13.0 (torch is not
needed to run these tests):

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8
    state = OrderedDict([("linear.weight", base), ("linear.weight_t", base.t()),
        ("rows", base[1:3]), ("param", torch.nn.Parameter(torch.arange(3.0) - 1)),
        ("half", torch.arange(5, dtype=torch.float16) / 4),
        ("bf16", torch.arange(3, dtype=torch.bfloat16) + 0.5),
        ("long", torch.tensor([1, -2, 3])), ("mask", torch.tensor([True, False])),
        ("scalar", torch.tensor(2.5, dtype=torch.float64)), ("empty", torch.zeros(0, 3))])
    torch.save({"params": state, "iteration": 10000}, "convert_torch_checkpoint.pth")

It covers shared storages (a transposed view, a row slice with a storage offset), a Parameter,
and every dtype family.
"""

import json
import os
import pickle
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from fusionjax import convert, fuse, models
from fusionjax.convert import mapping
from fusionjax.models import fusionmamba, mambadfuse, registry, s4fusion

from model_testing import CHEAP_COMPILE, build

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "convert_torch_checkpoint.pth"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OFFICIAL = {
  name: SHARED / "weights" / name / "random_init_seed0.safetensors"
  for name in ("fusionmamba", "mambadfuse", "s4fusion")
}
WEIGHTS = OFFICIAL["mambadfuse"]
needs_shared = pytest.mark.skipif(
  not all(path.is_file() for path in OFFICIAL.values()),
  reason=f"seeded official weights not found under {SHARED}",
)


def test_reads_torch_checkpoint_without_torch():
  state_dict = convert.load_state_dict(FIXTURE)
  base = np.arange(24, dtype=np.float32).reshape(4, 6) / 8
  expected = {
    "linear.weight": base,
    "linear.weight_t": base.T,
    "rows": base[1:3],
    "param": np.arange(3, dtype=np.float32) - 1,
    "half": np.arange(5, dtype=np.float16) / np.float16(4),
    "bf16": np.arange(3).astype(ml_dtypes.bfloat16) + ml_dtypes.bfloat16(0.5),
    "long": np.array([1, -2, 3], np.int64),
    "mask": np.array([True, False]),
    "scalar": np.array(2.5, np.float64),
    "empty": np.zeros((0, 3), np.float32),
  }
  assert list(state_dict) == list(expected)
  for name, value in expected.items():
    assert state_dict[name].dtype == value.dtype, name
    np.testing.assert_array_equal(state_dict[name], value, err_msg=name)
  assert "torch" not in sys.modules


def _torch_style_zip(path: Path, payload: bytes) -> Path:
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", payload)
    archive.writestr("archive/byteorder", "little")
  return path


class _RunsCode:
  """Unpickling this calls os.system, as a malicious checkpoint would."""

  def __init__(self, marker: Path):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_the_mapping_helpers_import_no_model():
  """The paper modules import `fusionjax.convert.mapping`: importing it (and the package) must not
  import the models back; the registry-backed names load on first use."""
  script = (
    "import sys, fusionjax.convert.mapping\n"
    "assert not [m for m in sys.modules if m.startswith('fusionjax.models')]\n"
    "from fusionjax import convert\n"
    "assert callable(convert.convert) and callable(convert.main)\n"
    "assert 'fusionjax.models.mambadfuse' in sys.modules\n"
  )
  subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parent)


def test_refuses_pickled_code(tmp_path):
  marker = tmp_path / "executed"
  path = _torch_style_zip(tmp_path / "evil.pth", pickle.dumps({"w": _RunsCode(marker)}, 2))
  with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global \w+\.system"):
    convert.load_state_dict(path)
  assert not marker.exists()


def test_refuses_legacy_and_unknown_files(tmp_path):
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(pickle.dumps({"w": [1.0]}))
  with pytest.raises(ValueError, match="legacy"):
    convert.load_state_dict(legacy)
  no_tensors = _torch_style_zip(tmp_path / "none.pth", pickle.dumps({"epoch": 3}, 2))
  with pytest.raises(ValueError, match=r"no state_dict found.*\['epoch'\]"):
    convert.load_state_dict(no_tensors)


def test_drops_dataparallel_prefix(tmp_path):
  path = tmp_path / "dp.safetensors"
  safetensors.numpy.save_file(
    {"module.a.weight": np.ones((2, 3), np.float32), "module.b": np.zeros(2, np.float32)}, path
  )
  assert sorted(convert.load_state_dict(path)) == ["a.weight", "b"]


def test_layout_transforms():
  linear = np.arange(6.0).reshape(2, 3)  # (out, in)
  np.testing.assert_array_equal(mapping.linear_weight(linear, (3, 2)), linear.T)
  conv = np.arange(120.0).reshape(5, 4, 3, 2)  # (out, in, kh, kw)
  assert mapping.conv_weight(conv, (3, 2, 4, 5))[2, 1, 3, 4] == conv[4, 3, 2, 1]
  conv1d = np.arange(24.0).reshape(6, 1, 4)  # (out, in/groups, k)
  assert mapping.conv_weight(conv1d, (4, 1, 6))[3, 0, 5] == conv1d[5, 0, 3]
  np.testing.assert_array_equal(mapping.identity(linear, (2, 3)), linear)


@pytest.fixture(scope="module")
def official_state_dict():
  return convert.load_state_dict(WEIGHTS)


@needs_shared
def test_convert_maps_names_and_layouts(official_state_dict):
  params = convert.convert(official_state_dict, "mambadfuse")
  flat = {
    ".".join(map(str, path)): np.asarray(var.get_value())
    for path, var in nnx.to_flat_state(params.state)
  }
  sd = official_state_dict
  pairs = {
    "M3_block.4.multi_modal_mamba_block.ssm_c.conv1d.kernel": np.transpose(
      sd["M3_block5.multi_modal_mamba_block.conv1d_c.weight"], (2, 1, 0)
    ),
    "M3_block.0.multi_modal_mamba_block.ssm_b.D": sd["M3_block1.multi_modal_mamba_block.D_b"],
    "M3_block.0.multi_modal_mamba_block.A_b_log": sd["M3_block1.multi_modal_mamba_block.A_b_log"],
    "M3_block.2.norm3.scale": sd["M3_block3.norm3.body.weight"],
    "channel_exchange.1.I2encoder.in_proj.kernel": sd[
      "channel_exchange2.I2encoder.in_proj.weight"
    ].T,
    "feature_re.7.encoder.ssm.dt_proj.bias": sd["feature_re.7.encoder.dt_proj.bias"],
    "patch_embed.norm.scale": sd["patch_embed.norm.weight"],
    "shallow_fusion2.kernel": np.transpose(sd["shallow_fusion2.weight"], (2, 3, 1, 0)),
  }
  for ours, theirs in pairs.items():
    np.testing.assert_array_equal(flat[ours], theirs, err_msg=ours)


@needs_shared
def test_convert_names_every_bad_tensor(official_state_dict):
  sd = dict(official_state_dict)
  del sd["M3_block3.multi_modal_mamba_block.D_c"]
  sd["M3_block6.norm1.body.weight"] = np.ones(60, np.float32)
  sd["conv_last1.weight"] = sd["conv_last1.weight"][:, :5]
  sd["feature_re.0.encoder.x_proj.weight"] = sd["feature_re.0.encoder.x_proj.weight"].T
  with pytest.raises(convert.ConversionError) as error:
    convert.convert(sd, "mambadfuse", mambadfuse.Config())  # inference would see 6 M3 blocks
  message = str(error.value)
  assert (
    "1 PyTorch tensors missing from the state_dict: M3_block3.multi_modal_mamba_block.D_c"
    in message
  )
  assert "1 PyTorch tensors with no NNX parameter: M3_block6.norm1.body.weight" in message
  assert "2 misshapen tensors: conv_last1.weight (30, 5, 3, 3) does not fit" in message
  assert "feature_re.0.encoder.x_proj.weight (120, 36) does not fit" in message


@needs_shared
def test_convert_refuses_parameters_the_official_code_lacks(official_state_dict):
  with pytest.raises(
    convert.ConversionError,
    match=r"5 NNX parameters without a PyTorch tensor: "
    r"M3_block\.0\.multi_modal_mamba_block\.A_c_log",
  ):
    convert.convert(official_state_dict, "mambadfuse", mambadfuse.Config(m3_separate_c_a=True))
  with pytest.raises(TypeError, match="must be a Config"):
    convert.convert(official_state_dict, "mambadfuse", {"embed_dim": 60})


def test_save_and_load_params_round_trip(tmp_path):
  config = mambadfuse.TinyConfig()
  params = models.Params(*nnx.split(build(mambadfuse.MambaDFuse, config)))
  convert.save_params(params, tmp_path, "mambadfuse_tiny", config)
  loaded = convert.load_params(tmp_path)
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  chunked = convert.load_params(tmp_path, scan_impl="chunked")
  assert {m.scan_impl for _, m in nnx.iter_graph(chunked.module()) if hasattr(m, "scan_impl")} == {
    "chunked"
  }
  tensors = safetensors.numpy.load_file(tmp_path / convert.PARAMS_FILE)
  del tensors["conv_last3.bias"]
  safetensors.numpy.save_file(tensors, tmp_path / convert.PARAMS_FILE)
  with pytest.raises(convert.ConversionError, match="conv_last3.bias"):
    convert.load_params(tmp_path)

  with pytest.raises(FileExistsError, match="already exist.*--overwrite"):
    convert.save_params(params, tmp_path, "mambadfuse_tiny", config)
  convert.save_params(params, tmp_path, "mambadfuse_tiny", config, overwrite=True)
  np.testing.assert_array_equal(
    convert.load_params(tmp_path).state["conv_last3"]["bias"][...],
    params.state["conv_last3"]["bias"][...],
  )


@pytest.fixture
def umask_022():
  previous = os.umask(0o022)
  yield
  os.umask(previous)


def test_saved_params_get_a_new_files_permissions_or_keep_the_replaced_ones(tmp_path, umask_022):
  # safetensors writes its file 0600: shared or packaged weights would be unreadable to others.
  config = mambadfuse.TinyConfig()
  params = models.Params(*nnx.split(build(mambadfuse.MambaDFuse, config)))
  convert.save_params(params, tmp_path, "mambadfuse_tiny", config)
  mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)
  assert mode(convert.PARAMS_FILE) == mode(convert.CONFIG_FILE) == 0o644
  (tmp_path / convert.PARAMS_FILE).chmod(0o640)
  convert.save_params(params, tmp_path, "mambadfuse_tiny", config, overwrite=True)
  assert mode(convert.PARAMS_FILE) == 0o640


def test_load_params_names_a_missing_or_malformed_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    convert.load_params(tmp_path / "nowhere")
  (tmp_path / convert.CONFIG_FILE).write_text('{"model": "mambadfuse"}')
  with pytest.raises(ValueError, match=r'expected \{"model": <name>, "config"'):
    convert.load_params(tmp_path)


# ----------------------------------------------------------------------------------------------
# The command, for every model: convert, load, apply.

# Overrides of fields the checkpoint does not determine: the fastest CPU scan, and FusionMamba's
# native-resolution mode (a small pair instead of its 256 x 256 resize).
ROUND_TRIP_FIELDS = {
  "mambadfuse": {"scan_impl": "reference"},
  "s4fusion": {"scan_impl": "reference"},
  "fusionmamba": {"scan_impl": "reference", "input_fit": "pad"},
}
_apply = jax.jit(models.apply, compiler_options=CHEAP_COMPILE)


def _numbers(leaf):
  """A params leaf as numbers: RNG keys (dropout streams) as their key data."""
  return (
    jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
  )


@needs_shared
@pytest.mark.parametrize("model_name", sorted(OFFICIAL))
def test_command_round_trips_every_model(tmp_path, model_name):
  """fusionjax-convert (model and config inferred, --set for the rest), then load_params: the
  same params as converting directly, in evaluation mode, fusing through models.apply and
  fuse.model_fuser."""
  fields = ROUND_TRIP_FIELDS[model_name]
  flags = [arg for field, value in fields.items() for arg in ("--set", f"{field}={value}")]
  convert.main(["--input", str(OFFICIAL[model_name]), "--output", str(tmp_path), *flags])
  loaded = convert.load_params(tmp_path)
  direct = convert.convert(convert.load_state_dict(OFFICIAL[model_name]), **fields)
  assert json.loads((tmp_path / convert.CONFIG_FILE).read_text())["model"] == model_name
  assert loaded.graphdef == direct.graphdef
  for ours, theirs in zip(jax.tree.leaves(loaded), jax.tree.leaves(direct), strict=True):
    np.testing.assert_array_equal(_numbers(ours), _numbers(theirs))
  dropouts = [m for _, m in nnx.iter_graph(loaded.module()) if isinstance(m, nnx.Dropout)]
  assert all(dropout.deterministic for dropout in dropouts)
  a, b = jax.random.uniform(jax.random.key(7), (2, 1, 32, 32, 1))
  fused = np.asarray(_apply(loaded, a, b))
  assert fused.shape == (1, 32, 32, 1) and np.all(np.isfinite(fused))
  np.testing.assert_array_equal(fused, _apply(direct, a, b))
  fuser = fuse.model_fuser(loaded)
  np.testing.assert_array_equal(fused, _apply(fuser.params, a, b))


@needs_shared
def test_infers_the_config_from_tensor_names_and_shapes(official_state_dict):
  assert convert.infer_config(official_state_dict) == ("mambadfuse", mambadfuse.Config())
  fewer = {
    name: value
    for name, value in official_state_dict.items()
    if not name.startswith(("feature_re.7.", "M3_block5."))
  }
  assert convert.infer_config(fewer) == (
    "mambadfuse",
    mambadfuse.Config(num_reconstruction_blocks=7, num_m3_blocks=4),
  )
  name, tiny = convert.infer_config(fewer, "mambadfuse_tiny", scan_impl="chunked")
  assert (name, type(tiny), tiny.embed_dim, tiny.num_m3_blocks, tiny.scan_impl) == (
    "mambadfuse_tiny",
    mambadfuse.TinyConfig,
    60,
    4,
    "chunked",
  )
  s4 = convert.load_state_dict(OFFICIAL["s4fusion"])
  assert convert.infer_config(s4) == ("s4fusion", s4fusion.Config())
  two_blocks = {name: value for name, value in s4.items() if ".layers.2." not in name}
  assert convert.infer_config(two_blocks)[1] == s4fusion.Config(fusion_blocks=2)
  assert convert.infer_config(convert.load_state_dict(OFFICIAL["fusionmamba"]))[
    1
  ] == fusionmamba.Config(embed_dim=24, depths=(2, 2, 1, 2), decoder_depths=(2, 1, 2, 2))


def test_config_fields_from_json_and_command_line_text():
  config = registry.make_config("s4fusion", depths=[1, 1, 1], decoder_depths=[1, 1, 1])
  assert config.depths == (1, 1, 1) and hash(config)
  assert registry.parse_field("fusionmamba", "depths", "2,2,1,2") == (2, 2, 1, 2)
  assert registry.parse_field("fusionmamba", "depths", "[2, 2]") == (2, 2)
  assert registry.parse_field("fusionmamba", "mlp_ratio", "2") == 2.0
  assert registry.parse_field("fusionmamba", "second_gate_from_first", "false") is False
  assert registry.parse_field("mambadfuse", "dt_rank", "none") is None
  assert registry.parse_field("mambadfuse", "dt_rank", "3") == 3
  with pytest.raises(ValueError, match="input_fit=crop: 'crop' is not one of"):
    registry.parse_field("fusionmamba", "input_fit", "crop")
  for model in ("mambadfuse", "fusionmamba", "s4fusion"):
    assert registry.parse_field(model, "scan_impl", "chunked") == "chunked"
    with pytest.raises(ValueError, match="scan_impl=fast: 'fast' is not one of"):
      registry.parse_field(model, "scan_impl", "fast")
  with pytest.raises(ValueError, match="'x' is not of type int"):
    registry.parse_field("fusionmamba", "depths", "2,x")
  with pytest.raises(
    ValueError,
    match=r"unknown config fields .*\['embed_dims'\]; known: "
    r"\['d_state', 'decoder_depths'",
  ):
    registry.parse_field("fusionmamba", "embed_dims", "24")


# ----------------------------------------------------------------------------------------------
# Errors: one line on the command line, the same message from Python.


def _command_error(capsys, *argv) -> str:
  with pytest.raises(SystemExit) as exit_info:
    convert.main([str(arg) for arg in argv])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert error.startswith("fusionjax-convert: error: ") and error.count("\n") == 1, error
  return error


def test_missing_input_says_the_file_does_not_exist(tmp_path, capsys):
  missing = tmp_path / "10000_E.pth"
  with pytest.raises(FileNotFoundError, match="10000_E.pth: file does not exist"):
    convert.load_state_dict(missing)
  assert "10000_E.pth: file does not exist" in _command_error(
    capsys, "--input", missing, "--output", tmp_path / "out"
  )
  assert not (tmp_path / "out").exists()


def test_unrecognisable_checkpoint_gets_a_short_summary(tmp_path, capsys):
  path = tmp_path / "other.safetensors"
  safetensors.numpy.save_file(
    {f"encoder.{i}.weight": np.ones(2, np.float32) for i in range(3000)}, path
  )
  message = (
    "unrecognised checkpoint: its 3000 tensor names (encoder.0.weight, "
    "encoder.1.weight, encoder.10.weight, encoder.100.weight, encoder.1000.weight, ... "
    "(+2995 more)) fit no registered model"
  )
  with pytest.raises(convert.ConversionError, match=re.escape(message)):
    convert.convert(convert.load_state_dict(path))
  error = _command_error(capsys, "--input", path, "--output", tmp_path / "out")
  assert message in error and len(error) < 400


@needs_shared
def test_another_models_checkpoint_gets_a_short_summary(tmp_path, capsys):
  fusionmamba_path = OFFICIAL["fusionmamba"]
  error = _command_error(
    capsys, "--model", "mambadfuse", "--input", fusionmamba_path, "--output", tmp_path
  )
  assert "not a 'mambadfuse' one: its 559 tensor names look like 'fusionmamba' (559 of 559" in error
  # The Python API with a config: every kind of problem counted, the first few named.
  with pytest.raises(convert.ConversionError) as as_mambadfuse:
    convert.convert(convert.load_state_dict(fusionmamba_path), "mambadfuse", mambadfuse.Config())
  with pytest.raises(convert.ConversionError) as as_s4fusion:
    convert.convert(convert.load_state_dict(WEIGHTS), "s4fusion", s4fusion.Config())
  for error, theirs, ours in (
    (as_mambadfuse, "fusionmamba", "mambadfuse"),
    (as_s4fusion, "mambadfuse", "s4fusion"),
  ):
    message = str(error.value)
    assert message.startswith(f"state_dict does not match {ours!r}: ")
    assert re.search(r"\d+ [^;]*missing[^;]*: [^;]*, \.\.\. \(\+\d+ more\)", message)
    assert f"look like {theirs!r}" in message and len(message) < 2000, message


@needs_shared
def test_overrides_are_checked(tmp_path, capsys, official_state_dict):
  error = _command_error(capsys, "--input", WEIGHTS, "--output", tmp_path, "--set", "embed_dims=3")
  assert "unknown config fields for model 'mambadfuse': ['embed_dims']; known: [" in error
  with pytest.raises(ValueError, match=r"unknown config fields .*\['embed_dims'\]"):
    convert.convert(official_state_dict, embed_dims=3)
  assert "overrides contradict the checkpoint: embed_dim=32 (the tensors say 60)" in _command_error(
    capsys, "--input", WEIGHTS, "--output", tmp_path, "--set", "embed_dim=32"
  )
  assert "num_m3_blocks=many: 'many' is not of type int" in _command_error(
    capsys, "--input", WEIGHTS, "--output", tmp_path, "--set", "num_m3_blocks=many"
  )
  assert "--set scan_impl: expected FIELD=VALUE" in _command_error(
    capsys, "--input", WEIGHTS, "--output", tmp_path, "--set", "scan_impl"
  )
  assert not list(tmp_path.iterdir())


@needs_shared
def test_command_keeps_existing_params(tmp_path, capsys):
  (tmp_path / convert.CONFIG_FILE).write_text("keep")
  error = _command_error(capsys, "--input", WEIGHTS, "--output", tmp_path)
  assert "config.json already exist; pass overwrite=True (--overwrite)" in error
  assert (tmp_path / convert.CONFIG_FILE).read_text() == "keep"
  assert not (tmp_path / convert.PARAMS_FILE).exists()


def test_command_names_fusionjax_params_given_as_a_checkpoint(tmp_path, capsys):
  config = mambadfuse.TinyConfig()
  params = models.Params(*nnx.split(build(mambadfuse.MambaDFuse, config)))
  convert.save_params(params, tmp_path / "weights", "mambadfuse_tiny", config)
  error = _command_error(
    capsys, "--input", tmp_path / "weights" / convert.PARAMS_FILE, "--output", tmp_path / "out"
  )
  weights_flag = f"--weights={tmp_path / 'weights'}"
  assert (
    f"is fusionjax params already (beside its config.json): fuse with fusionjax {weights_flag}"
    in error
  )
  assert not (tmp_path / "out").exists()


def test_help_lists_the_models_and_usage_errors_are_one_line(capsys):
  with pytest.raises(SystemExit) as exit_info:
    convert.main(["--help"])
  assert exit_info.value.code == 0
  help_text = " ".join(capsys.readouterr().out.split())
  for name in models.names():
    assert name in help_text
  assert "invalid choice: 'mambadfus'" in _command_error(
    capsys, "--model", "mambadfus", "--input", "x.pth", "--output", "out"
  )
  assert "required: --output" in _command_error(capsys, "--input", "x.pth")
