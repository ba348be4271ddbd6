"""S4Fusion: exact parity with the official code, parameter count, shapes, gradients, scan impls."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax import convert
from fusionjax.models import registry, s4fusion

from model_testing import build, fast_jit, param_count

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "s4fusion" / "random_init_seed0.safetensors"
REFERENCE = SHARED / "reference" / "s4fusion"
PAIRS = ("FLIR_00211", "FLIR_00977", "FLIR_01130", "FLIR_04269")
PARITY_ATOL = 1e-4
OFFICIAL_PARAMETERS = 3_562_981  # sum of numel over MambaNet().state_dict() (docs/parity.md 7)

needs_shared = pytest.mark.skipif(
  not WEIGHTS.is_file(), reason=f"S4Fusion fixtures not found under {SHARED}"
)


def _nhwc(path):
  return jnp.asarray(np.load(path).transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def official():
  """The paper-size model holding the seeded official-architecture weights."""
  state_dict = convert.load_state_dict(WEIGHTS)
  return convert.convert(state_dict, "s4fusion", s4fusion.Config(scan_impl="reference")).module()


_network = fast_jit(lambda model, ir, vis: model.network(ir, vis))
_call = fast_jit(lambda model, a, b: model(a, b))


def test_paper_size_parameter_count_is_officials():
  model = nnx.eval_shape(lambda: s4fusion.S4Fusion(s4fusion.Config(), rngs=nnx.Rngs(0)))
  assert param_count(model) == OFFICIAL_PARAMETERS


@needs_shared
@pytest.mark.parametrize("name", PAIRS)
def test_raw_output_matches_official_on_real_pairs(official, name):
  ir, vis = _nhwc(REFERENCE / "ivf" / f"{name}_ir.npy"), _nhwc(REFERENCE / "ivf" / f"{name}_vi.npy")
  want = np.load(REFERENCE / "ivf" / f"{name}_out_raw.npy").transpose(0, 2, 3, 1)
  got = np.asarray(_network(official, ir, vis))
  assert got.shape == want.shape == (1, 133, 133, 1)
  assert np.abs(got - want).max() < PARITY_ATOL


@needs_shared
def test_call_pads_and_crops_like_the_official_test_script(official):
  name = PAIRS[0]
  meta = json.loads((REFERENCE / "ivf" / f"{name}.json").read_text())
  (top, bottom), (left, right) = meta["output_crop_rows_cols"]
  crop = lambda x: x[:, top:bottom, left:right]
  ir, vis = _nhwc(REFERENCE / "ivf" / f"{name}_ir.npy"), _nhwc(REFERENCE / "ivf" / f"{name}_vi.npy")
  want = crop(np.load(REFERENCE / "ivf" / f"{name}_out_raw.npy").transpose(0, 2, 3, 1))
  got = _call(official, crop(ir), crop(vis))
  assert got.shape == (1, 128, 128, 1)
  assert np.abs(np.asarray(got) - want).max() < PARITY_ATOL


@needs_shared
def test_stage_activations_match_official(official):
  """Every stage, fed the official input of that stage, reproduces the official output."""
  act = np.load(REFERENCE / "activations" / "activations.npz")
  a = lambda key: jnp.asarray(act[f"vmunet.{key}#call0#out0"])
  ir = _nhwc(REFERENCE / "activations" / "input_ir.npy")
  vis = _nhwc(REFERENCE / "activations" / "input_vi.npy")

  @fast_jit
  def stages(m, ir, vis):
    return {
      "patch_embed_x": m.embed_ir(ir),
      "patch_embed_y": m.embed_vis(vis),
      "layers_x.0.blocks.0": m.encoder_ir[0].blocks[0](a("patch_embed_x")),
      "layers_x.0": m.encoder_ir[0](a("patch_embed_x")),
      "layers_y.0": m.encoder_vis[0](a("patch_embed_y")),
      "layers_x.1": m.encoder_ir[1](a("layers_x.0")),
      "layers_y.2": m.encoder_vis[2](a("layers_y.1")),
      "fusion_layers.0": m.fusion[0](a("patch_embed_x"), a("patch_embed_y")),
      "fusion_layers.2": m.fusion[2](a("layers_x.1"), a("layers_y.1")),
      "layers_up.0": m.decoder[0](a("layers_x.2") + a("layers_y.2")),
      "layers_up.1": m.decoder[1](a("layers_up.0") + a("fusion_layers.2")),
      "layers_up.2": m.decoder[2](a("layers_up.1") + a("fusion_layers.1")),
      "output": m.network(ir, vis),
    }

  got = stages(official, ir, vis)
  want = {key: act[f"vmunet.{key}#call0#out0"] for key in got if key != "output"}
  want["output"] = np.load(REFERENCE / "activations" / "output.npy").transpose(0, 2, 3, 1)
  for key, value in got.items():
    assert np.abs(np.asarray(value) - want[key]).max() < PARITY_ATOL, key


@needs_shared
def test_convert_refuses_incomplete_or_misshapen_state_dicts():
  state_dict = convert.load_state_dict(WEIGHTS)
  config = s4fusion.Config()
  missing = dict(state_dict)
  del missing["vmunet.fusion_layers.0.layers.2.mark_proj"]
  with pytest.raises(convert.ConversionError, match="missing"):
    convert.convert(missing, "s4fusion", config)
  extra = dict(state_dict, **{"vmunet.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(convert.ConversionError, match="no NNX parameter"):
    convert.convert(extra, "s4fusion", config)
  transposed = dict(state_dict)
  name = "vmunet.layers_up.1.upsample.expand.weight"
  transposed[name] = transposed[name].T
  with pytest.raises(convert.ConversionError, match="does not fit"):
    convert.convert(transposed, "s4fusion", config)


@pytest.mark.parametrize(
  "size, padded", [(128, 133), (256, 265), (229, 229), (49, 49), (13, 13), (2, 13)]
)
def test_padded_size_is_the_official_get_rest(size, padded):
  assert s4fusion.padded_size(size) == padded


def test_registry_builds_paper_and_tiny_configs():
  assert registry.make_config("s4fusion") == s4fusion.Config()
  assert registry.lookup("s4fusion")[1] is s4fusion.S4Fusion
  tiny = registry.make_config("s4fusion_tiny", scan_impl="reference")
  assert isinstance(tiny, s4fusion.TinyConfig) and tiny.scan_impl == "reference"
  assert param_count(build(s4fusion.S4Fusion, tiny)) < OFFICIAL_PARAMETERS // 10
  with pytest.raises(ValueError, match="unknown config fields"):
    registry.make_config("s4fusion", depth=3)


def _smallest_config(**overrides):
  """The smallest graph with every kind of block (VSS before a PatchMerging and after a
  PatchExpand, a used and an unused CMSA level): compiles are what these CPU tests spend time
  on."""
  return s4fusion.TinyConfig(depths=(1, 0), decoder_depths=(0, 1), fusion_blocks=1, **overrides)


@pytest.fixture(scope="module")
def odd_inputs():
  keys = jax.random.split(jax.random.key(0), 2)
  return [jax.random.uniform(k, (2, 23, 30, 1)) for k in keys]


def test_odd_sizes_come_back_and_do_not_depend_on_the_scan_implementation(odd_inputs):
  outputs = [
    np.asarray(_call(build(s4fusion.S4Fusion, _smallest_config(scan_impl=scan_impl)), *odd_inputs))
    for scan_impl in ("reference", "chunked")
  ]
  assert outputs[0].shape == (2, 23, 30, 1) and np.all(np.isfinite(outputs[0]))
  np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)


def test_gradients_are_finite_and_reach_every_used_parameter(odd_inputs):
  model = build(s4fusion.S4Fusion, _smallest_config(scan_impl="chunked"))
  loss = lambda m: jnp.mean((m(*odd_inputs) - 0.5) ** 2)
  flat = dict(nnx.to_flat_state(fast_jit(nnx.grad(loss))(model)))
  flat = {path: np.asarray(g[...]) for path, g in flat.items()}  # numpy: no per-shape compiles
  assert all(np.isfinite(g).all() for g in flat.values())
  unused = {path for path in flat if path[:2] in (("fusion", 0), ("head", "unused_norm"))}
  zero = {path for path, g in flat.items() if not g.any()}
  assert zero == unused
