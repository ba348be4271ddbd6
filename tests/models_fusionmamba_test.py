"""FusionMamba: parity with the official code, official counts and tensor names, shapes, flags.

Parity uses the parity fixtures (docs/parity.md section 8): seeded, perturbed weights of
the official `VSSM_Fusion` at a reduced width (embed 24, depths [2, 2, 1, 2] / [2, 1, 2, 2]) and
what the official code computed with them on a CT-MRI, a PET-MRI and an infrared-visible pair,
with per-stage activations of the CT-MRI one. The weights go through the public converter with no
config given: it must infer the architecture from the tensor names and shapes.

The parameter counts below were obtained by building the official `VSSM_Fusion`
(millieXie/FusionMamba HEAD, with `torch.Tensor.cuda` made a no-op and stand-ins for the CUDA scan
and timm imports) and summing `p.numel()` over `model.parameters()`: all of them, and those with
requires_grad. The difference is the frozen all-ones LDC `base_mask` tensors, which we do not
store.
"""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from fusionjax import convert
from fusionjax.convert import mapping as torch_mapping
from fusionjax.layers.ldc import LDC
from fusionjax.layers.vss import DVSSBlock
from fusionjax.models import fusionmamba, registry

from model_testing import build, fast_jit, param_count


def _smallest_config(**overrides):
  """The smallest graph with every kind of block (DVSS before a PatchMerging and after a
  PatchExpand, a used and an unused CMFM): compiles are what these CPU tests spend time on."""
  return fusionmamba.TinyConfig(depths=(1, 0), decoder_depths=(0, 1), resize_to=32, **overrides)


# config -> (all official parameters, trainable ones, official state_dict tensors)
OFFICIAL_COUNTS = {
  "paper": (fusionmamba.Config(), 225_419_541, 164_538_645, 1039),
  "ct_mri": (fusionmamba.CtMriConfig(), 141_934_037, 102_286_805, 559),
}


# Tensor names of one official DVSS block ("VSSBlock_new") and one CMFM ("VSSBlock_Cross_new"),
# as `state_dict()` lists them.
DVSS_TENSORS = """
conv_branch.base_mask conv_branch.conv.weight conv_branch.learnable_mask
conv_branch.learnable_theta mlp.fc1.bias mlp.fc1.weight mlp.fc2.bias mlp.fc2.weight norm.bias
norm.weight norm2.bias norm2.weight op.A_logs op.Ds op.conv2d.bias op.conv2d.weight
op.dt_projs_bias op.dt_projs_weight op.in_proj.weight op.out_norm.bias op.out_norm.weight
op.out_proj.weight op.x_proj_weight se.channel_select.bias se.channel_select.weight
se.global_reduce.bias se.global_reduce.weight se.norm.bias se.norm.weight
self_attention_cross_channel.conv.weight""".split()
CMFM_TENSORS = """
Cross_layer.Diff_enhance.lastconv.bias Cross_layer.Diff_enhance.lastconv.weight
Cross_layer.texture_enhance1.base_mask Cross_layer.texture_enhance1.conv.weight
Cross_layer.texture_enhance1.learnable_mask Cross_layer.texture_enhance1.learnable_theta
Cross_layer.texture_enhance2.base_mask Cross_layer.texture_enhance2.conv.weight
Cross_layer.texture_enhance2.learnable_mask Cross_layer.texture_enhance2.learnable_theta
ln_1.bias ln_1.weight ln_2.bias ln_2.weight self_attention_cross.A_logs self_attention_cross.Ds
self_attention_cross.conv2d.bias self_attention_cross.conv2d.weight
self_attention_cross.dt_projs_bias self_attention_cross.dt_projs_weight
self_attention_cross.in_proj1.weight self_attention_cross.in_proj2.weight
self_attention_cross.out_norm.bias self_attention_cross.out_norm.weight
self_attention_cross.out_proj.weight self_attention_cross.x_proj_weight
self_attention_cross_spatial.conv.weight""".split()

# The official LDC(3, 2) (models/cross.py) with learnable_mask and theta = 0.3 set, run by
# PyTorch on one input: weight (2, 3, 3, 3), learnable_mask (2, 3), x (1, 3, 4, 5) ->
# y (1, 2, 4, 5).
LDC_WEIGHT = [
  -0.0014408,
  0.1032386,
  -0.1583951,
  -0.1416315,
  -0.074123,
  0.0516069,
  -0.003813,
  0.1525916,
  -0.0170788,
  0.0509247,
  -0.0581609,
  -0.037829,
  -0.1838569,
  -0.1274562,
  -0.0793324,
  0.007129,
  0.0760823,
  0.1154744,
  -0.1304698,
  -0.0838049,
  0.0699012,
  0.1598082,
  -0.0396063,
  0.1440127,
  -0.0310198,
  0.0203639,
  0.174259,
  -0.1785302,
  -0.1211546,
  -0.0487217,
  -0.075017,
  0.166277,
  -0.1247422,
  -0.0885911,
  -0.1344534,
  -0.1802412,
  -0.1123409,
  0.1654297,
  0.0858748,
  0.0932753,
  0.0101213,
  -0.098666,
  0.0325596,
  -0.1796896,
  -0.1390579,
  -0.0992138,
  0.1214241,
  0.1128376,
  -0.0853507,
  -0.0069441,
  0.1230835,
  0.191321,
  0.07638,
  0.0259986,
]
LDC_MASK = [1.3302519, 0.6261109, 1.4074697, 1.319927, 1.4201034, 0.6166452]
LDC_X = [
  0.1643915,
  0.7379194,
  0.0332646,
  0.9941847,
  0.6064286,
  0.5645713,
  0.0724122,
  0.659339,
  0.7150058,
  0.5793276,
  0.9809269,
  0.6501586,
  0.0566339,
  0.9201117,
  0.6697648,
  0.2614731,
  0.0407152,
  0.7850358,
  0.9751613,
  0.0903443,
  0.5273253,
  0.6793862,
  0.2638807,
  0.3905963,
  0.1661351,
  0.263616,
  0.0441664,
  0.488412,
  0.7964629,
  0.7431865,
  0.9697042,
  0.0608736,
  0.438479,
  0.986815,
  0.5818747,
  0.3590012,
  0.0496951,
  0.7326722,
  0.8795862,
  0.900937,
  0.9185794,
  0.5978886,
  0.856369,
  0.3741426,
  0.9060595,
  0.4572209,
  0.3968909,
  0.2514558,
  0.7662155,
  0.7023026,
  0.8180408,
  0.1804658,
  0.2341502,
  0.9731621,
  0.2224794,
  0.2148411,
  0.3662197,
  0.3383952,
  0.1599646,
  0.9040673,
]
LDC_Y = [
  0.1439806,
  0.0597303,
  0.2166806,
  0.4676502,
  -0.1146574,
  0.0390392,
  0.0645785,
  0.0374071,
  -0.021861,
  -0.2221529,
  -0.0185134,
  -0.2871469,
  0.1272067,
  0.0876501,
  -0.2972405,
  -0.1408108,
  -0.0795866,
  -0.2980997,
  -0.4907642,
  -0.4940486,
  -0.1470636,
  0.07648,
  -0.4608364,
  -0.1776022,
  0.0095205,
  0.062546,
  -0.1574905,
  -0.4251185,
  -0.3374707,
  -0.150225,
  0.1419269,
  -0.2154787,
  -0.4782953,
  -0.2124151,
  -0.1964555,
  0.2293949,
  -0.4766445,
  0.0614309,
  0.3424454,
  -0.3106924,
]


def _official_tensor_names(config):
  """Every state_dict name of the official VSSM_Fusion(config), from the lists above."""
  names = [
    f"patch_embed{i}.{t}"
    for i in (1, 2)
    for t in ("proj.weight", "proj.bias", "norm.weight", "norm.bias")
  ]
  levels = len(config.depths)
  for level, depth in enumerate(config.depths):
    names += [f"layers.{level}.blocks.{b}.{t}" for b in range(depth) for t in DVSS_TENSORS]
    if level < levels - 1:
      names += [
        f"layers.{level}.downsample.{t}" for t in ("norm.weight", "norm.bias", "reduction.weight")
      ]
  for stage, depth in enumerate(config.decoder_depths):
    names += [f"layers_up.{stage}.blocks.{b}.{t}" for b in range(depth) for t in DVSS_TENSORS]
    if stage:
      names += [
        f"layers_up.{stage}.upsample.{t}" for t in ("expand.weight", "norm.weight", "norm.bias")
      ]
  names += [f"Cross_block.{level}.{t}" for level in range(levels) for t in CMFM_TENSORS]
  return names + [
    "final_up.expand.weight",
    "final_up.norm.weight",
    "final_up.norm.bias",
    "final_conv.weight",
    "final_conv.bias",
  ]


def _trainable_and_frozen(model):
  """(nnx.Param count, official frozen-mask count = one LDC-kernel-sized mask per LDC)."""
  frozen = sum(
    int(np.prod(var.shape))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
    if path[-1] == "kernel" and path[-2] in ("ldc", "texture_p", "texture_q")
  )
  return param_count(model), frozen


def test_parameter_counts_are_officials():
  """CT-MRI counted whole; the paper model has 16 more DVSS(384) blocks (stage 2: 9 vs 1 in the
  encoder and in the decoder), so it is the CT-MRI count plus 16 such blocks. (Building the
  paper model abstractly takes ~30 s on CI, quadratic in its 887 RNG draws; its tensor list is
  checked name by name below.)"""
  ct_mri = nnx.eval_shape(
    lambda: fusionmamba.FusionMamba(fusionmamba.CtMriConfig(), rngs=nnx.Rngs(0))
  )
  block = nnx.eval_shape(
    lambda: DVSSBlock(
      384, d_state=16, expand=2, mlp_ratio=4.0, drop_path_rate=0.0, rngs=nnx.Rngs(0)
    )
  )
  (_, ct_total, ct_trainable, _), (_, total, trainable, _) = (
    OFFICIAL_COUNTS["ct_mri"],
    OFFICIAL_COUNTS["paper"],
  )
  ct_params, ct_frozen = _trainable_and_frozen(ct_mri)
  assert (ct_params, ct_params + ct_frozen) == (ct_trainable, ct_total)
  block_params, block_frozen = _trainable_and_frozen(block)
  assert ct_params + 16 * block_params == trainable
  assert ct_params + ct_frozen + 16 * (block_params + block_frozen) == total
  paper = fusionmamba.Config()
  assert (
    sum(paper.depths) + sum(paper.decoder_depths)
    == sum(fusionmamba.CtMriConfig().depths) + sum(fusionmamba.CtMriConfig().decoder_depths) + 16
    and paper.dims[2] == 384
  )


@pytest.mark.parametrize("variant", sorted(OFFICIAL_COUNTS))
def test_torch_map_names_every_official_tensor_once(variant):
  config, _, _, num_tensors = OFFICIAL_COUNTS[variant]
  ours = [name for name, _ in fusionmamba.torch_param_map(config).values()]
  ours += list(fusionmamba.frozen_masks(config))
  official = _official_tensor_names(config)
  assert len(official) == num_tensors
  assert sorted(ours) == sorted(official)


def test_ldc_loaded_from_official_layout_reproduces_official_output():
  conv = nnx.eval_shape(lambda: LDC(3, 2, rngs=nnx.Rngs(0)))
  state_dict = {
    "ldc.conv.weight": np.reshape(LDC_WEIGHT, (2, 3, 3, 3)),
    "ldc.learnable_mask": np.reshape(LDC_MASK, (2, 3)),
    "ldc.learnable_theta": np.array([0.3]),
    "ldc.base_mask": np.ones((2, 3, 3, 3)),
  }
  torch_mapping.load_mapped(
    conv,
    state_dict,
    torch_mapping.ldc_entries((), "ldc"),
    ignored={"ldc.base_mask": lambda m: bool(np.all(m == 1))},
  )
  x = jnp.asarray(np.reshape(LDC_X, (1, 3, 4, 5)).transpose(0, 2, 3, 1), jnp.float32)
  want = np.reshape(LDC_Y, (1, 2, 4, 5)).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(conv(x), want, atol=2e-6)


def test_convert_checks_names_and_the_frozen_masks():
  config = _smallest_config()
  model = build(fusionmamba.FusionMamba, config)
  shapes = {path: var.shape for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  torch_shape = lambda shape: shape[::-1]  # right for vectors and square Linears only
  state_dict = {
    name: np.zeros(torch_shape(shapes[path]), np.float32)
    for path, (name, _) in fusionmamba.torch_param_map(config).items()
  }
  state_dict |= {name: np.full((3, 3), 2.0) for name in fusionmamba.frozen_masks(config)}
  with pytest.raises(
    convert.ConversionError, match="6 ignored tensors failing their check: .*base_mask"
  ):
    convert.convert(state_dict, "fusionmamba", config)
  del state_dict["Cross_block.1.self_attention_cross.in_proj2.weight"]
  with pytest.raises(convert.ConversionError, match="missing from the state_dict.*in_proj2"):
    convert.convert(state_dict, "fusionmamba", config)


def test_registry_has_paper_ct_mri_and_tiny_variants():
  assert registry.make_config("fusionmamba") == fusionmamba.Config()
  assert registry.make_config("fusionmamba_ct_mri").depths == (2, 2, 1, 2)
  tiny = registry.make_config("fusionmamba_tiny", input_fit="pad")
  assert tiny.input_fit == "pad"
  assert registry.lookup("fusionmamba_tiny")[1] is fusionmamba.FusionMamba
  assert param_count(build(fusionmamba.FusionMamba, tiny)) < 1_000_000
  with pytest.raises(ValueError, match="multiple of 32"):
    fusionmamba.Config(resize_to=100)


@pytest.fixture(scope="module")
def odd_inputs():
  keys = jax.random.split(jax.random.key(0), 2)
  return [jax.random.uniform(k, (2, 27, 30, 1)) for k in keys]  # pad mode: 32 x 32


# The tests below share configs and input shapes so that `fast_jit` reuses compiled programs.
_call = fast_jit(lambda model, a, b: model(a, b))
_network = fast_jit(lambda model, a, b: model.network(a, b))
_chunked = _smallest_config(scan_impl="chunked")
_mirror_pad_to_32 = lambda x: jnp.pad(x, [(0, 0), (0, 5), (0, 2), (0, 0)], mode="symmetric")


def test_resize_mode_runs_the_network_on_the_resized_square(odd_inputs):
  model = build(fusionmamba.FusionMamba, _chunked)
  model.eval()
  out = np.asarray(_call(model, *odd_inputs))
  assert out.shape == (2, 27, 30, 1) and np.all(np.isfinite(out))
  square = [jax.image.resize(x, (2, 32, 32, 1), "cubic") for x in odd_inputs]
  back = jax.image.resize(_network(model, *square), (2, 27, 30, 1), "linear", antialias=False)
  np.testing.assert_allclose(out, back, atol=1e-5)


def test_pad_mode_runs_the_network_on_the_mirror_padded_input(odd_inputs):
  padding = build(fusionmamba.FusionMamba, dataclasses.replace(_chunked, input_fit="pad"))
  padding.eval()
  out = np.asarray(_call(padding, *odd_inputs))
  assert out.shape == (2, 27, 30, 1) and np.all(np.isfinite(out))
  same_weights = build(fusionmamba.FusionMamba, _chunked)  # `network` ignores input_fit
  same_weights.eval()
  whole = _network(same_weights, *map(_mirror_pad_to_32, odd_inputs))
  np.testing.assert_allclose(out, whole[:, :27, :30], atol=1e-6)


def test_output_does_not_depend_on_the_scan_implementation(odd_inputs):
  outputs = []
  for config in (_smallest_config(scan_impl="reference"), _chunked):
    model = build(fusionmamba.FusionMamba, config)
    model.eval()
    outputs.append(np.asarray(_call(model, *odd_inputs)))
  np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)


def test_input_residual_scale_adds_the_inputs(odd_inputs):
  square = [_mirror_pad_to_32(x) for x in odd_inputs]
  outs = []
  for scale in (1.0, 2.0):
    config = dataclasses.replace(_chunked, input_residual_scale=scale)
    model = build(fusionmamba.FusionMamba, config)
    model.eval()
    outs.append(_network(model, *square))
  np.testing.assert_allclose(outs[1] - outs[0], square[0] + square[1], atol=1e-5)


def test_gradients_are_finite_and_reach_every_used_parameter(odd_inputs):
  model = build(fusionmamba.FusionMamba, _chunked)
  model.eval()
  loss = lambda m: jnp.mean((m(*odd_inputs) - 0.5) ** 2)
  grads = {
    path: np.asarray(g[...])  # numpy: no per-shape compiles
    for path, g in nnx.to_flat_state(fast_jit(nnx.grad(loss))(model))
  }
  assert all(np.isfinite(g).all() for g in grads.values())
  unused = {
    path
    for path in grads
    if path[:2] == ("fusion", 0) or (path[0] == "fusion" and "unused_conv" in path)
  }
  zero = {path for path, g in grads.items() if not g.any()}
  assert zero == unused


# ----------------------------------------------------------------------------------------------
# Parity with the official code.

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "fusionmamba" / "random_init_seed0.safetensors"
REFERENCE = SHARED / "reference" / "fusionmamba"
CASES = (("ct_mri", "16009"), ("pet_mri", "25015"), ("ivf", "FLIR_00211"))
FIXTURE_CONFIG = fusionmamba.Config(embed_dim=24, depths=(2, 2, 1, 2), decoder_depths=(2, 1, 2, 2))
RAW_TOLERANCE = 1e-4
needs_shared = pytest.mark.skipif(
  not (WEIGHTS.is_file() and REFERENCE.is_dir()),
  reason=f"FusionMamba parity fixtures not found under {SHARED}",
)


def _nhwc(array):
  return jnp.asarray(np.transpose(array, (0, 2, 3, 1)))


def _official_levels(raw: np.ndarray) -> np.ndarray:
  """test.py's post-processing before it truncates: clamp to [0, 1], min-max over the output in
  float32, x255."""
  out = np.clip(raw, 0, 1).astype(np.float32)
  return (out - out.min()) / (out.max() - out.min()) * 255


def _official_saving(raw: np.ndarray) -> np.ndarray:
  """test.py's saved image: the levels truncated to uint8."""
  return _official_levels(raw).astype(np.uint8)


@pytest.fixture(scope="module")
def official():
  """The seeded official weights through the converter, no config given (reference scan)."""
  return convert.convert(convert.load_state_dict(WEIGHTS), scan_impl="reference")


@needs_shared
def test_converter_infers_the_fixture_architecture(official):
  assert dataclasses.replace(official.module().config, scan_impl="auto") == FIXTURE_CONFIG


# One compiled program per input shape for the three cases.
_raw_network = fast_jit(lambda model, a, b: model.network(a, b))


@needs_shared
@pytest.mark.parametrize("task,name", CASES)
def test_raw_output_and_saved_image_match_official(official, task, name):
  """The official call is model(x1 = visible / MRI, x2 = IR / CT / PET): our (a, b)."""
  case = json.loads((REFERENCE / task / f"{name}.json").read_text())
  assert case["call"].startswith("model(A, B)") and case["A_is"] in ("mri", "vi")
  a, b = (_nhwc(np.load(REFERENCE / task / f"{name}_{x}.npy")) for x in ("A", "B"))
  want = np.load(REFERENCE / task / f"{name}_out_raw.npy")
  got = np.asarray(_raw_network(official.module(), a, b)).transpose(0, 3, 1, 2)
  assert got.shape == want.shape == (1, 1, 256, 256)
  assert np.abs(got - want).max() < RAW_TOLERANCE
  saved = np.asarray(Image.open(REFERENCE / task / f"{name}_fused.png"), np.int16)
  np.testing.assert_array_equal(_official_saving(want[0, 0]), saved)
  ours = _official_saving(got[0, 0]).astype(np.int16)
  assert ours.shape == saved.shape and np.abs(ours - saved).max() <= 1
  # Truncation flips a level only where the official value lies within the raw error (x255) of
  # a level: how many pixels do so depends on the CPU's float rounding, not on the model.
  levels = _official_levels(want[0, 0])
  distance_to_level = np.abs(levels - np.round(levels))
  assert np.all(distance_to_level[ours != saved] < 255 * RAW_TOLERANCE)


@needs_shared
def test_stage_activations_match_official(official):
  """Every stage, fed the official input of that stage, reproduces the official output (the
  whole output is the ct_mri case, checked by the raw-output test)."""
  activations = np.load(REFERENCE / "activations" / "activations.npz")
  index = json.loads((REFERENCE / "activations" / "index.json").read_text())
  layouts = {entry["key"]: entry["layout"] for entry in index["activations"]}
  act = lambda key: jnp.asarray(activations[f"{key}#out0"])
  a, b = (_nhwc(np.load(REFERENCE / "activations" / f"input_{x}.npy")) for x in ("A", "B"))
  np.testing.assert_array_equal(
    np.load(REFERENCE / "activations" / "output.npy"),
    np.load(REFERENCE / "ct_mri" / "16009_out_raw.npy"),
  )

  @fast_jit
  def stages(m, a, b):
    return {
      "patch_embed1#call0": m.embed_a(a),
      "patch_embed2#call0": m.embed_b(b),
      "layers.0.blocks.0#call0": m.encoder[0].blocks[0](act("patch_embed1#call0")),
      "layers.0#call0": m.encoder[0](act("patch_embed1#call0")),
      "layers.1.blocks.0#call0": m.encoder[1].blocks[0](act("layers.0#call0")),
      "layers.1#call1": m.encoder[1](act("layers.0#call1")),
      "layers.2#call0": m.encoder[2](act("layers.1#call0")),
      "layers.3#call1": m.encoder[3](act("layers.2#call1")),
      "Cross_block.0#call0": m.fusion[0](act("patch_embed1#call0"), act("patch_embed2#call0")),
      "Cross_block.2#call0": m.fusion[2](act("layers.1#call0"), act("layers.1#call1")),
      "layers_up.0#call0": m.decoder[0](act("layers.3#call0") + act("layers.3#call1")),
      "layers_up.1#call0": m.decoder[1](act("layers_up.0#call0") + act("Cross_block.3#call0")),
      "layers_up.3#call0": m.decoder[3](act("layers_up.2#call0") + act("Cross_block.1#call0")),
      "final_up#call0": m.head_expand(act("layers_up.3#call0")),
      "final_conv#call0": m.head_conv(act("final_up#call0")),
    }

  got = {key: np.asarray(value) for key, value in stages(official.module(), a, b).items()}
  want = {key: activations[f"{key}#out0"] for key in got}
  for key in got:
    if layouts[f"{key}#out0"] == "NCHW":
      got[key] = got[key].transpose(0, 3, 1, 2)
    assert got[key].shape == want[key].shape, key
    assert np.abs(got[key] - want[key]).max() < RAW_TOLERANCE, key
