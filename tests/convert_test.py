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

import os
import pickle
import sys
import zipfile
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from fusionjax import convert, models
from fusionjax.models import mambadfuse

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "convert_torch_checkpoint.pth"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mambadfuse" / "random_init_seed0.safetensors"
needs_shared = pytest.mark.skipif(not WEIGHTS.is_file(),
                                  reason=f"seeded MambaDFuse weights not found at {WEIGHTS}")


def test_reads_torch_checkpoint_without_torch():
  state_dict = convert.load_state_dict(FIXTURE)
  base = np.arange(24, dtype=np.float32).reshape(4, 6) / 8
  expected = {
      "linear.weight": base, "linear.weight_t": base.T, "rows": base[1:3],
      "param": np.arange(3, dtype=np.float32) - 1,
      "half": np.arange(5, dtype=np.float16) / np.float16(4),
      "bf16": np.arange(3).astype(ml_dtypes.bfloat16) + ml_dtypes.bfloat16(0.5),
      "long": np.array([1, -2, 3], np.int64), "mask": np.array([True, False]),
      "scalar": np.array(2.5, np.float64), "empty": np.zeros((0, 3), np.float32),
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
  safetensors.numpy.save_file({"module.a.weight": np.ones((2, 3), np.float32),
                               "module.b": np.zeros(2, np.float32)}, path)
  assert sorted(convert.load_state_dict(path)) == ["a.weight", "b"]


def test_flax_layout():
  linear = np.arange(6.0).reshape(2, 3)  # (out, in)
  np.testing.assert_array_equal(convert.flax_layout("kernel", linear), linear.T)
  conv = np.arange(120.0).reshape(5, 4, 3, 2)  # (out, in, kh, kw)
  assert convert.flax_layout("kernel", conv)[2, 1, 3, 4] == conv[4, 3, 2, 1]
  np.testing.assert_array_equal(convert.flax_layout("scale", linear), linear)


@pytest.fixture(scope="module")
def official_state_dict():
  return convert.load_state_dict(WEIGHTS)


@needs_shared
def test_convert_maps_names_and_layouts(official_state_dict):
  params = convert.convert(official_state_dict, "mambadfuse")
  flat = {".".join(map(str, path)): np.asarray(var.get_value())
          for path, var in nnx.to_flat_state(params.state)}
  sd = official_state_dict
  pairs = {
      "M3_block.4.multi_modal_mamba_block.ssm_c.conv1d.kernel":
          np.transpose(sd["M3_block5.multi_modal_mamba_block.conv1d_c.weight"], (2, 1, 0)),
      "M3_block.0.multi_modal_mamba_block.ssm_b.D": sd["M3_block1.multi_modal_mamba_block.D_b"],
      "M3_block.0.multi_modal_mamba_block.A_b_log":
          sd["M3_block1.multi_modal_mamba_block.A_b_log"],
      "M3_block.2.norm3.scale": sd["M3_block3.norm3.body.weight"],
      "channel_exchange.1.I2encoder.in_proj.kernel":
          sd["channel_exchange2.I2encoder.in_proj.weight"].T,
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
    convert.convert(sd, "mambadfuse")
  message = str(error.value)
  assert "1 missing tensors: M3_block3.multi_modal_mamba_block.D_c" in message
  assert "1 unexpected tensors: M3_block6.norm1.body.weight" in message
  assert "2 misshapen tensors: conv_last1.weight" in message
  assert "feature_re.0.encoder.x_proj.weight: shape (120, 36)" in message


@needs_shared
def test_convert_refuses_parameters_the_official_code_lacks(official_state_dict):
  with pytest.raises(convert.ConversionError, match=r"5 parameters the official code lacks: "
                     r"M3_block\.0\.multi_modal_mamba_block\.A_c_log"):
    convert.convert(official_state_dict, "mambadfuse", mambadfuse.Config(m3_separate_c_a=True))
  with pytest.raises(TypeError, match="must be a Config"):
    convert.convert(official_state_dict, "mambadfuse", {"embed_dim": 60})


def test_save_and_load_params_round_trip(tmp_path):
  config = mambadfuse.TinyConfig()
  params = models.init(0, config)
  convert.save_params(params, tmp_path, "mambadfuse_tiny", config)
  loaded = convert.load_params(tmp_path)
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  chunked = convert.load_params(tmp_path, scan_impl="chunked")
  assert {m.impl for _, m in nnx.iter_graph(chunked.module()) if hasattr(m, "impl")} == {"chunked"}
  tensors = safetensors.numpy.load_file(tmp_path / convert.PARAMS_FILE)
  del tensors["conv_last3.bias"]
  safetensors.numpy.save_file(tensors, tmp_path / convert.PARAMS_FILE)
  with pytest.raises(convert.ConversionError, match="conv_last3.bias"):
    convert.load_params(tmp_path)


@needs_shared
def test_command_writes_loadable_params(tmp_path, official_state_dict):
  convert.main(["--model", "mambadfuse", "--input", str(WEIGHTS), "--output", str(tmp_path)])
  loaded = convert.load_params(tmp_path)
  expected = convert.convert(official_state_dict, "mambadfuse")
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)
