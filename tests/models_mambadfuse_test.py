"""MambaDFuse: exact parity with the official PyTorch code, shapes, jit, gradients, scan impls.

Parity uses the parity fixtures (docs/parity.md section 5): seeded, perturbed weights
of the official architecture and what the official code computed with them. The raw-output parity
runs the paper-size network on all 16 reference pairs (136x136 after padding), with the fastest
CPU scan implementation ("reference"): about 5 s each on a 2-core CPU, most of this file's time.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from fusionjax import convert, models
from fusionjax.layers.mamba import (
  M3Block,
  Mamba,
  MultiModalMamba,
  SelectiveScanBranch,
  exchange_even_channels,
  run_residual_stack,
)
from fusionjax.models import mambadfuse

from model_testing import build, with_scan_impl

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mambadfuse" / "random_init_seed0.safetensors"
REFERENCE = SHARED / "reference" / "mambadfuse"
TASKS = ("ivf", "ct_mri", "pet_mri", "spect_mri")
PAIRS = (
  sorted(
    (task, p.name[: -len(".json")]) for task in TASKS for p in (REFERENCE / task).glob("*.json")
  )
  if REFERENCE.is_dir()
  else []
)
needs_shared = pytest.mark.skipif(
  not (WEIGHTS.is_file() and REFERENCE.is_dir()),
  reason=f"parity fixtures not found under {SHARED} (shared/weights/mambadfuse and "
  "shared/reference/mambadfuse)",
)

OFFICIAL_PARAMETERS = 1_347_271
RAW_TOLERANCE = 1e-4


def nhwc(x: np.ndarray) -> jax.Array:
  """PyTorch NCHW -> our NHWC."""
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def max_abs_diff(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))


@pytest.fixture(scope="module")
def seed_params():
  """The seeded official weights converted into our paper-size model, reference scan."""
  config = mambadfuse.Config(scan_impl="reference")
  return convert.convert(convert.load_state_dict(WEIGHTS), "mambadfuse", config)


@pytest.fixture(scope="module")
def raw_network():
  return jax.jit(lambda params, a, b: params.module().network(a, b))


# ----------------------------------------------------------------------------------------------
# Parity with the official code.


@needs_shared
def test_reference_fixtures_present():
  assert len(PAIRS) == 16, PAIRS


@needs_shared
@pytest.mark.parametrize("task,name", PAIRS)
def test_raw_output_and_saved_image_match_official(seed_params, raw_network, task, name):
  a, b = (np.load(REFERENCE / task / f"{name}_{x}.npy") for x in ("A", "B"))
  expected = nhwc(np.load(REFERENCE / task / f"{name}_out_raw.npy"))
  ours = raw_network(seed_params, nhwc(a), nhwc(b))
  assert ours.shape == expected.shape
  assert max_abs_diff(ours, expected) < RAW_TOLERANCE
  # The official saving: crop, clamp to [0, 1], x255, round; equal up to .5-boundary rounding.
  height, width = json.loads((REFERENCE / task / f"{name}.json").read_text())["output_crop"]
  saved = np.asarray(Image.open(REFERENCE / task / f"{name}_fused.png"), np.int16)
  image = np.round(np.clip(np.asarray(ours[0, :height, :width, 0]), 0, 1) * 255)
  assert np.abs(image - saved).max() <= 1


@needs_shared
@pytest.mark.parametrize("task,name", PAIRS)
def test_mirror_pad_reproduces_official_network_input(task, name):
  meta = json.loads((REFERENCE / task / f"{name}.json").read_text())
  height, width = meta["output_crop"]
  for x in ("A", "B"):
    fed = nhwc(np.load(REFERENCE / task / f"{name}_{x}.npy"))
    np.testing.assert_array_equal(mambadfuse.mirror_pad(fed[:, :height, :width], 8), fed)


def _teacher_forced_stages(model, ref, a, b):
  """Our output for every recorded official activation, each stage fed the official inputs.

  ref: key -> official activation, images already NHWC. Returns the same keys.
  """
  img = lambda tokens: mambadfuse.to_image(tokens, *a.shape[1:3])
  lrelu = mambadfuse.lrelu
  out = {}
  for call, x in ((0, a), (1, b)):
    c1, l1, c2, l2 = (
      f"{m}#call{n}#out0"
      for m, n in (
        ("low_level_feature_extraction1", call),
        ("lrelu", 2 * call),
        ("low_level_feature_extraction2", call),
        ("lrelu", 2 * call + 1),
      )
    )
    out[c1] = model.low_level_feature_extraction1(x)
    out[l1] = lrelu(ref[c1])
    out[c2] = model.low_level_feature_extraction2(ref[l1])
    out[l2] = lrelu(ref[c2])
    out[f"patch_embed#call{call}#out0"] = model.patch_embed(ref[l2])
  for name, embed in (
    ("high_level_feature_extraction1", "patch_embed#call0#out0"),
    ("high_level_feature_extraction2", "patch_embed#call1#out0"),
  ):
    stack, tokens = getattr(model, name), ref[embed]
    out[f"{name}#call0#out0"], out[f"{name}#call0#out1"] = run_residual_stack(stack, tokens)
  first_block, tokens = model.high_level_feature_extraction1[0], ref["patch_embed#call0#out0"]
  out["high_level_feature_extraction1.0.encoder#call0#out0"] = first_block.encoder(
    first_block.norm(tokens)
  )
  (
    out["high_level_feature_extraction1.0#call0#out0"],
    out["high_level_feature_extraction1.0#call0#out1"],
  ) = first_block(tokens, jnp.zeros_like(tokens))
  stage_inputs = [
    ref[f"high_level_feature_extraction{i}#call0#out{j}"]
    for j, i in ((0, 1), (0, 2), (1, 1), (1, 2))
  ]
  first = model.channel_exchange[0]
  swapped, _ = exchange_even_channels(
    first.norm1(stage_inputs[0] + stage_inputs[2]), first.norm2(stage_inputs[1] + stage_inputs[3])
  )
  out["channel_exchange1.I1encoder#call0#out0"] = first.I1encoder(swapped)
  for k, stage in enumerate(model.channel_exchange, start=1):
    for j, value in enumerate(stage(*stage_inputs)):
      out[f"channel_exchange{k}#call0#out{j}"] = value
    stage_inputs = [ref[f"channel_exchange{k}#call0#out{j}"] for j in range(4)]
  i1, i2 = img(stage_inputs[0]), img(stage_inputs[1])
  out["shallow_fusion1#call0#out0"] = model.shallow_fusion1(jnp.concatenate([i1, i2], -1))
  i1 = ref["shallow_fusion1#call0#out0"] + i1
  out["shallow_fusion2#call0#out0"] = model.shallow_fusion2(jnp.concatenate([i2, i1], -1))
  i2 = ref["shallow_fusion2#call0#out0"] + i2
  for call, image in ((2, i1), (3, i2), (4, (i1 + i2) / 2)):
    out[f"patch_embed#call{call}#out0"] = model.patch_embed(image)
  tokens1, tokens2, fusion = (ref[f"patch_embed#call{c}#out0"] for c in (2, 3, 4))
  block = model.M3_block[0]
  twice = lambda norm, x: norm(norm(x))
  out["M3_block1.multi_modal_mamba_block#call0#out0"] = block.multi_modal_mamba_block(
    twice(block.norm1, fusion), twice(block.norm2, tokens2), twice(block.norm3, tokens1)
  )
  residual = jnp.zeros_like(fusion)
  for k, block in enumerate(model.M3_block, start=1):
    (out[f"M3_block{k}#call0#out0"], out[f"M3_block{k}#call0#out1"]) = block(
      tokens1, residual, tokens2, fusion, *a.shape[1:3]
    )
    fusion, residual = ref[f"M3_block{k}#call0#out0"], ref[f"M3_block{k}#call0#out1"]
  out["patch_embed#call5#out0"] = model.patch_embed(img(fusion))
  (out["feature_re#call0#out0"], out["feature_re#call0#out1"]) = run_residual_stack(
    model.feature_re, ref["patch_embed#call5#out0"]
  )
  out["conv_last1#call0#out0"] = model.conv_last1(img(ref["feature_re#call0#out0"]))
  out["lrelu#call4#out0"] = lrelu(ref["conv_last1#call0#out0"])
  out["conv_last2#call0#out0"] = model.conv_last2(ref["lrelu#call4#out0"])
  out["lrelu#call5#out0"] = lrelu(ref["conv_last2#call0#out0"])
  out["conv_last3#call0#out0"] = model.conv_last3(ref["lrelu#call5#out0"])
  return out


@needs_shared
def test_every_stage_matches_official_activations(seed_params):
  """Each recorded official activation, reproduced from the official inputs of its stage."""
  index = json.loads((REFERENCE / "activations" / "index.json").read_text())
  with np.load(REFERENCE / "activations" / "activations.npz") as npz:
    ref = {k: nhwc(v) if v.ndim == 4 else jnp.asarray(v) for k, v in npz.items()}
  a, b = (nhwc(np.load(REFERENCE / "activations" / f"input_{x}.npy")) for x in ("A", "B"))
  ours = jax.jit(lambda params, ref, a, b: _teacher_forced_stages(params.module(), ref, a, b))(
    seed_params, ref, a, b
  )
  keys = [entry["key"] for entry in index["activations"]]
  assert sorted(ours) == sorted(keys)
  diffs = {k: max_abs_diff(ours[k], ref[k]) / max(1.0, float(jnp.abs(ref[k]).max())) for k in keys}
  assert max(diffs.values()) < 1e-5, {k: d for k, d in diffs.items() if d >= 1e-5}


@needs_shared
def test_small_input_output_matches_official(seed_params, raw_network):
  a, b = (nhwc(np.load(REFERENCE / "activations" / f"input_{x}.npy")) for x in ("A", "B"))
  expected = nhwc(np.load(REFERENCE / "activations" / "output.npy"))
  assert max_abs_diff(raw_network(seed_params, a, b), expected) < RAW_TOLERANCE


# ----------------------------------------------------------------------------------------------
# Size, structure and config.


def _abstract_model(config) -> nnx.Module:
  return nnx.eval_shape(lambda: models.build(config, rngs=nnx.Rngs(0)))


def _parameter_count(config_or_model) -> int:
  model = (
    config_or_model if isinstance(config_or_model, nnx.Module) else _abstract_model(config_or_model)
  )
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def paper_model():
  """The paper-size model, abstract (shapes only)."""
  return _abstract_model("mambadfuse")


def test_parameter_count_matches_official(paper_model):
  assert _parameter_count(paper_model) == OFFICIAL_PARAMETERS


def test_mixer_parameter_counts_match_official():
  count = lambda module: sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
  assert count(nnx.eval_shape(lambda: Mamba(60, rngs=nnx.Rngs(0)))) == 29_160
  assert count(nnx.eval_shape(lambda: MultiModalMamba(60, rngs=nnx.Rngs(0)))) == 71_160


@needs_shared
def test_parameter_names_and_shapes_cover_the_official_state_dict(paper_model):
  tensors = json.loads(WEIGHTS.with_suffix(".json").read_text())["tensors"]
  params = dict(nnx.to_flat_state(nnx.state(paper_model)))
  param_map = mambadfuse.torch_param_map(mambadfuse.Config())
  assert set(param_map) == set(params)
  sources = {name: params[path].size for path, (name, _) in param_map.items()}
  assert set(sources) == set(tensors)
  assert all(sources[name] == int(np.prod(shape)) for name, shape in tensors.items())


def test_paper_variants_add_only_a_c():
  tiny = lambda **variant: mambadfuse.TinyConfig(**variant)
  base = _parameter_count(tiny())
  assert _parameter_count(tiny(m3_separate_c_a=True)) == base + 16 * 4  # A_c: (d_inner, N)
  assert _parameter_count(tiny(m3_shared_gate=True, m3_norm_twice=False)) == base


def _perturbed(module, seed):
  """`module` with every parameter moved by N(0, 0.3): LayerNorms stop being idempotent."""
  graphdef, state = nnx.split(module)
  rng = np.random.default_rng(seed)
  return nnx.merge(
    graphdef, jax.tree.map(lambda x: x + 0.3 * rng.standard_normal(x.shape, np.float32), state)
  )


@pytest.mark.parametrize(
  "variant", [{"norm_twice": False}, {"shared_gate": True}, {"separate_c_a": True}]
)
def test_paper_variants_change_the_m3_block(variant):
  official_kwargs = {"norm_twice": True, "shared_gate": False, "separate_c_a": False}
  build = lambda **kw: _perturbed(
    with_scan_impl(M3Block(8, mamba_kwargs=dict(d_state=4), rngs=nnx.Rngs(0), **kw), "reference"), 1
  )
  official, paper = build(**official_kwargs), build(**{**official_kwargs, **variant})
  if "separate_c_a" in variant:  # same A_c as A_b: identical; a different A_c changes the output
    mixer = paper.multi_modal_mamba_block
    mixer.A_c_log[...] = mixer.A_b_log[...] + 0.5
  tokens = [jax.random.normal(k, (1, 12, 8)) for k in jax.random.split(jax.random.key(0), 4)]
  run = nnx.jit(lambda block, *t: block(*t, 3, 4)[0])
  assert max_abs_diff(run(paper, *tokens), run(official, *tokens)) > 1e-3


def test_scan_impl_reaches_every_branch():
  model = _abstract_model(mambadfuse.TinyConfig(scan_impl="chunked"))
  branches = [node for _, node in nnx.iter_graph(model) if isinstance(node, SelectiveScanBranch)]
  assert len(branches) == 2 + 2 + 3 + 1  # extraction, token swap, M3, reconstruction
  assert {branch.scan_impl for branch in branches} == {"chunked"}


@pytest.mark.parametrize(
  "height,width,expected",
  [
    (3, 3, 6),  # shorter than its padding: only its own flipped copy is appended
    (4, 5, 8),
    (8, 7, 16),  # a multiple still grows by a full window
  ],
)
def test_mirror_pad_follows_official_rule(height, width, expected):
  x = jnp.arange(height * width, dtype=jnp.float32).reshape(1, height, width, 1)
  padded = mambadfuse.mirror_pad(x, 8)
  assert padded.shape[1] == expected
  rows = padded[0, :, 0, 0] // width
  np.testing.assert_array_equal(
    rows, np.concatenate([np.arange(height), np.arange(height)[::-1]])[:expected]
  )


# ----------------------------------------------------------------------------------------------
# Tiny model: shapes, jit, gradients, scan implementations.


@pytest.fixture(scope="module")
def small_pair():
  keys = jax.random.split(jax.random.key(7), 2)
  return tuple(jax.random.uniform(k, (2, 9, 7, 1)) for k in keys)


@pytest.fixture(scope="module")
def small_outputs(small_pair):
  """The fused pair and, per scan impl, the raw network output on the padded pair; all from
  identical params."""
  padded = [mambadfuse.mirror_pad(x, 8) for x in small_pair]
  network = jax.jit(lambda params, a, b: params.module().network(a, b))
  params = {
    scan_impl: models.init(0, mambadfuse.TinyConfig(scan_impl=scan_impl))
    for scan_impl in ("reference", "chunked", "pallas")
  }
  outputs = {scan_impl: network(p, *padded) for scan_impl, p in params.items()}
  outputs["fused"] = jax.jit(models.apply)(params["reference"], *small_pair)
  return outputs


def test_odd_sizes_keep_their_shape(small_outputs):
  fused, raw = small_outputs["fused"], small_outputs["reference"]
  assert fused.shape == (2, 9, 7, 1)
  assert raw.shape == (2, 16, 8, 1)  # padded to the next multiple of 8 above each size
  assert bool(jnp.all(jnp.isfinite(fused))) and float(jnp.std(fused)) > 0


def test_call_is_padded_network_cropped(small_outputs):
  np.testing.assert_array_equal(small_outputs["fused"], small_outputs["reference"][:, :9, :7])


@pytest.mark.parametrize("scan_impl", ["chunked", "pallas"])
def test_output_does_not_depend_on_scan_impl(small_outputs, scan_impl):
  np.testing.assert_allclose(
    small_outputs[scan_impl], small_outputs["reference"], rtol=1e-4, atol=1e-6
  )


def test_jit_matches_eager():
  mixer = _perturbed(with_scan_impl(Mamba(8, d_state=4, rngs=nnx.Rngs(3)), "reference"), 0)
  tokens = jax.random.normal(jax.random.key(0), (1, 12, 8))
  np.testing.assert_allclose(
    nnx.jit(lambda m, t: m(t))(mixer, tokens), mixer(tokens), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize("chunk", [5, 16])  # a ragged last chunk; whole chunks
def test_token_chunks_compute_what_the_whole_sequence_computes(chunk):
  """Every mixer runs long inputs chunk by chunk, carrying conv history and scan state; the
  output and the gradients equal one call on all 64 tokens (float32 round-off)."""
  config = mambadfuse.TinyConfig(scan_impl="chunked")
  pair = [jax.random.uniform(k, (1, 8, 8, 1)) for k in jax.random.split(jax.random.key(5), 2)]
  loss = lambda model, a, b: jnp.mean(model.network(a, b) ** 2)
  value_and_grad = nnx.jit(nnx.value_and_grad(loss))
  whole, whole_grads = value_and_grad(build(mambadfuse.MambaDFuse, config, seed=2), *pair)
  model = build(mambadfuse.MambaDFuse, config, seed=2)
  model.set_attributes(token_chunk=chunk, raise_if_not_found=False)
  chunked, chunked_grads = value_and_grad(model, *pair)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5)
  # Per parameter: the largest difference against the gradient's largest entry. XLA fuses the
  # chunked program differently (float32 sums in another order: 1e-6 of the loss, 1.3e-5 of a
  # gradient measured); a lost carry or a misplaced chunk is off by the gradient's own size.
  jax.tree.map(
    lambda x, y: np.testing.assert_array_less(np.max(np.abs(x - y)), 1e-4 * np.max(np.abs(y))),
    nnx.to_pure_dict(nnx.state(chunked_grads)),
    nnx.to_pure_dict(nnx.state(whole_grads)),
  )
