"""Blocks of FusionMamba and S4Fusion against independent, loop-by-loop formulations.

The 2-D mixers are checked against an explicit per-direction computation: every direction's
pixel order is built from index arrays, scanned on its own (ungrouped) with its own slice of the
parameters, and written back pixel by pixel. That checks the scan order, the k-major channel
grouping, the selection split and the merge independently of `fusionjax.layers.scan2d`.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax.kernels import selective_scan_channels_last
from fusionjax.layers import cmfm, cmsa, fold, ldc, patches, ssm, vss
from fusionjax.layers.channel_attention import ECA

from model_testing import fast_jit, fill_random, with_scan_impl

ATOL = 2e-5


_apply = fast_jit(lambda module, *args: module(*args))


def _random(key, shape):
  return jax.random.uniform(jax.random.key(key), shape, jnp.float32, -1.0, 1.0)


def _abstract(make, seed=0):
  return fill_random(nnx.eval_shape(lambda: make(nnx.Rngs(seed))), seed)


def _cross_orders(height, width):
  """VMamba's four directions as pixel-index arrays (row-major pixel ids)."""
  pixels = np.arange(height * width).reshape(height, width)
  rows, cols = pixels.reshape(-1), pixels.T.reshape(-1)
  return [rows, cols, rows[::-1], cols[::-1]]


def _skip_orders(height, width):
  """ES2D's four sub-grid sequences as pixel ids of the zero-padded (even) map."""
  pixels = np.arange((height + height % 2) * (width + width % 2)).reshape(
    height + height % 2, width + width % 2
  )
  return [
    pixels[0::2, 0::2].reshape(-1),
    pixels[1::2, 0::2].T.reshape(-1),
    pixels[0::2, 1::2].reshape(-1),
    pixels[1::2, 1::2].T.reshape(-1),
  ]


def _scan_direction(selection_kernel, core, k, seq):
  """One direction on its own: (batch, L, d_inner) -> (batch, L, d_inner)."""
  rank = core.dt_kernel.shape[1]
  state = core.A_log.shape[-1]
  x_dbl = seq @ selection_kernel[k]
  low, b, c = x_dbl[..., :rank], x_dbl[..., rank : rank + state], x_dbl[..., rank + state :]
  return selective_scan_channels_last(
    seq,
    low @ core.dt_kernel[k],
    -jnp.exp(core.A_log[k]),
    b,
    c,
    D=core.D[k],
    delta_bias=core.dt_bias[k],
    delta_softplus=True,
    impl="reference",
  )


def _mixed_map_by_loops(mixer_ssm, x, orders, padded_hw):
  """The merged scan output of `x` (batch, H, W, d) computed direction by direction."""
  batch, height, width, channels = x.shape
  padded = jnp.zeros((batch,) + padded_hw + (channels,)).at[:, :height, :width].set(x)
  flat = padded.reshape(batch, -1, channels)
  out = jnp.zeros_like(flat)
  for k, order in enumerate(orders):
    y = _scan_direction(mixer_ssm.selection.kernel, mixer_ssm.ssm, k, flat[:, order])
    out = out.at[:, order].add(y)
  return out.reshape(padded.shape)[:, :height, :width]


def _ss2d_by_loops(mixer, x, orders, padded_hw):
  inner, z = jnp.split(mixer.in_proj(x), 2, axis=-1)
  inner = jax.nn.silu(mixer.conv(inner))
  y = _mixed_map_by_loops(mixer.ssm, inner, orders, padded_hw)
  return mixer.out_proj(mixer.out_norm(y) * jax.nn.silu(z))


def test_selective_ssm_initialisation_is_mambas():
  core = ssm.SelectiveSSM(4, 24, 3, 6, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(
    core.A_log[...], np.broadcast_to(np.log(np.arange(1, 7)), (4, 24, 6)), rtol=1e-6
  )
  np.testing.assert_array_equal(core.D[...], np.ones((4, 24)))
  dt = np.asarray(jax.nn.softplus(core.dt_bias[...]))
  assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6 and np.unique(dt).size == dt.size
  bound = 3**-0.5
  largest = np.abs(core.dt_kernel[...]).max()
  assert bound / 2 < largest <= bound
  selection = ssm.SelectionProjection(4, 24, 3, 6, rngs=nnx.Rngs(1))
  assert selection.kernel.shape == (4, 24, 15)
  assert np.abs(selection.kernel[...]).max() <= 24**-0.5


def test_ss2d_cross_scan_matches_direction_loop():
  height, width = 5, 7
  mixer = with_scan_impl(
    _abstract(lambda r: vss.SS2D(8, expand=1.5, d_state=4, scan="cross", rngs=r)), "chunked"
  )
  x = _random(0, (2, height, width, 8))
  got = _apply(mixer, x)
  want = fast_jit(lambda m, x: _ss2d_by_loops(m, x, _cross_orders(height, width), (height, width)))(
    mixer, x
  )
  np.testing.assert_allclose(got, want, atol=ATOL)


def test_ss2d_skip_scan_matches_subgrid_loop():
  height, width = 5, 7  # odd: zero-padded to 6 x 8, cropped back
  mixer = with_scan_impl(
    _abstract(lambda r: vss.SS2D(8, expand=2, d_state=4, scan="skip", rngs=r)), "chunked"
  )
  x = _random(1, (2, height, width, 8))
  got = _apply(mixer, x)
  padded_hw = (height + height % 2, width + width % 2)
  want = fast_jit(lambda m, x: _ss2d_by_loops(m, x, _skip_orders(height, width), padded_hw))(
    mixer, x
  )
  np.testing.assert_allclose(got, want, atol=ATOL)


def test_cmsa_cross_ss2d_matches_interleaved_loop():
  block = with_scan_impl(
    _abstract(lambda r: cmsa.CrossSS2D(8, expand=1.5, d_state=4, rngs=r)), "chunked"
  )
  ir, vis = _random(2, (2, 3, 5, 8)), _random(3, (2, 3, 5, 8))
  got_ir, got_vis = _apply(block, ir, vis)

  @fast_jit
  def by_loops(block, ir, vis):
    def branch(x):
      inner, z = jnp.split(block.in_proj(x), 2, axis=-1)
      return jax.nn.silu(block.conv(inner)).reshape(2, 15, -1), z

    (x_ir, z_ir), (x_vis, z_vis) = branch(ir), branch(vis)
    mark = jnp.concatenate([x_ir, x_vis], axis=-1) @ block.mark[...]
    outs = [jnp.zeros_like(x_ir), jnp.zeros_like(x_vis)]
    core, rank, state = block.ssm, block.ssm.dt_kernel.shape[1], block.ssm.A_log.shape[-1]
    for k, order in enumerate(_cross_orders(3, 5)):
      u, deltas, bs, cs = [], [], [], []
      for seq, kernel in (
        (x_ir[:, order], block.selection_ir.kernel),
        (x_vis[:, order], block.selection_vis.kernel),
      ):
        x_dbl = seq @ kernel[k]  # taken before the mark
        deltas.append(x_dbl[..., :rank] @ core.dt_kernel[k])
        bs.append(x_dbl[..., rank : rank + state])
        cs.append(x_dbl[..., rank + state :])
        u.append(seq + mark[:, order])
      alternate = lambda pair: jnp.stack(pair, axis=2).reshape(2, 30, -1)  # IR first
      y = selective_scan_channels_last(
        alternate(u),
        alternate(deltas),
        -jnp.exp(core.A_log[k]),
        alternate(bs),
        alternate(cs),
        D=core.D[k],
        delta_bias=core.dt_bias[k],
        delta_softplus=True,
        impl="reference",
      )
      outs[0] = outs[0].at[:, order].add(y[:, 0::2])
      outs[1] = outs[1].at[:, order].add(y[:, 1::2])
    return [
      block.out_proj(block.out_norm(y.reshape(2, 3, 5, -1)) * jax.nn.silu(z))
      for y, z in ((outs[0], z_ir), (outs[1], z_vis))
    ]

  want_ir, want_vis = by_loops(block, ir, vis)
  np.testing.assert_allclose(got_ir, want_ir, atol=ATOL)
  np.testing.assert_allclose(got_vis, want_vis, atol=ATOL)


def test_cmsa_level_accumulates_both_streams_then_sums():
  level = with_scan_impl(
    _abstract(lambda r: cmsa.CMSALevel(8, 2, expand=1.5, d_state=4, rngs=r)), "chunked"
  )

  def by_hand(level, ir, vis):
    for block in level.blocks:
      d_ir, d_vis = block(ir, vis)
      ir, vis = ir + d_ir, vis + d_vis
    return ir + vis

  ir, vis = _random(4, (1, 4, 4, 8)), _random(5, (1, 4, 4, 8))
  np.testing.assert_allclose(_apply(level, ir, vis), fast_jit(by_hand)(level, ir, vis), atol=1e-6)


def test_mixers_do_not_depend_on_the_scan_implementation():
  x = _random(6, (1, 6, 5, 8))
  outputs = []
  mixer = _abstract(lambda r: vss.SS2D(8, expand=2, d_state=4, scan="skip", rngs=r))
  for scan_impl in ("reference", "chunked", "associative", "pallas"):  # pallas: interpreted on CPU
    outputs.append(_apply(with_scan_impl(mixer, scan_impl), x))
  for out in outputs[1:]:
    np.testing.assert_allclose(out, outputs[0], atol=ATOL)


def test_overlap_add_sums_overlaps_like_torch_fold():
  patches_ = np.random.default_rng(0).standard_normal((2, 3, 4, 4, 4, 5)).astype(np.float32)
  want = np.zeros((2, 10, 13, 5), np.float32)
  for i in range(3):
    for j in range(4):
      want[:, 3 * i : 3 * i + 4, 3 * j : 3 * j + 4] += patches_[:, i, j]
  np.testing.assert_allclose(fold.overlap_add(jnp.asarray(patches_), 3), want, atol=1e-6)


def test_fold_head_reads_patches_channel_major():
  head = _abstract(lambda r: fold.FoldHead(8, rngs=r))
  tokens = _random(8, (1, 2, 3, 8))
  expanded = np.asarray(_apply(head.expand, tokens)).reshape(1, 2, 3, 2, 4, 4)  # (c, ki, kj)
  image = np.zeros((1, 7, 10, 2))
  for i in range(2):
    for j in range(3):
      image[0, 3 * i : 3 * i + 4, 3 * j : 3 * j + 4] += expanded[0, i, j].transpose(1, 2, 0)
  out_conv = head.out_conv
  want = image @ np.asarray(out_conv.kernel[...]).reshape(2, 1) + np.asarray(out_conv.bias[...])
  np.testing.assert_allclose(_apply(head, tokens), want, atol=1e-5)


def test_patch_merging_gathers_in_official_order():
  merge = _abstract(lambda r: patches.PatchMerging(3, rngs=r))
  x = _random(9, (1, 5, 4, 3))  # odd last row is dropped
  x_np = np.asarray(x)
  gathered = np.concatenate(
    [x_np[:, 0:4:2, 0::2], x_np[:, 1:4:2, 0::2], x_np[:, 0:4:2, 1::2], x_np[:, 1:4:2, 1::2]],
    axis=-1,
  )
  want = fast_jit(lambda m, g: m.reduction(m.norm(g)))(merge, jnp.asarray(gathered))
  np.testing.assert_allclose(_apply(merge, x), want, atol=1e-6)


def test_patch_expand_depth_to_space_layout():
  expand = _abstract(lambda r: patches.PatchExpand(4, 3, scale=2, rngs=r))
  x = _random(10, (1, 2, 2, 4))
  wide = np.asarray(_apply(expand.expand, x)).reshape(1, 2, 2, 2, 2, 3)  # (p1, p2, c)
  spread = wide.transpose(0, 1, 3, 2, 4, 5).reshape(1, 4, 4, 3)
  np.testing.assert_allclose(_apply(expand, x), _apply(expand.norm, jnp.asarray(spread)), atol=1e-6)


def test_ldc_rescales_only_the_centre_tap():
  conv = ldc.LDC(3, 2, rngs=nnx.Rngs(0))
  gain = np.random.default_rng(1).uniform(0.5, 1.5, (3, 2)).astype(np.float32)
  conv.centre_gain[...] = jnp.asarray(gain)
  kernel = np.asarray(conv.kernel[...])
  want = kernel.copy()
  want[1, 1] = kernel[1, 1] * (1 - 0.5 * gain * kernel.sum(axis=(0, 1)))
  np.testing.assert_allclose(conv.effective_kernel(), want, rtol=1e-6)
  x = _random(11, (1, 5, 6, 3))
  plain = jax.lax.conv_general_dilated(
    x, jnp.asarray(want), (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  np.testing.assert_allclose(conv(x), plain, atol=1e-6)
  assert conv.theta.shape == (1,) and float(conv.theta[0]) == 0.5


def test_eca_is_a_zero_padded_conv_over_channels():
  eca = ECA(rngs=nnx.Rngs(0))
  x = _random(12, (2, 3, 4, 5))
  w = np.asarray(eca.kernel[...])
  pooled = np.pad(np.asarray(x).mean(axis=(1, 2)), [(0, 0), (1, 1)])
  gate = 1 / (1 + np.exp(-(w[0] * pooled[:, :-2] + w[1] * pooled[:, 1:-1] + w[2] * pooled[:, 2:])))
  np.testing.assert_allclose(eca(x), np.asarray(x) * gate[:, None, None], atol=1e-6)


def test_dfem_weights_the_sum_by_the_raw_difference():
  dfem = _abstract(lambda r: cmfm.DFEM(4, rngs=r))
  p, q = _random(13, (2, 3, 3, 4)), _random(14, (2, 3, 3, 4))
  d1, d2 = _apply(dfem, p, q)
  t1, t2 = _apply(dfem.texture_p, p), _apply(dfem.texture_q, q)
  p, q = np.asarray(p), np.asarray(q)
  sig = lambda v: 1 / (1 + np.exp(-v.mean(axis=(1, 2), keepdims=True)))
  np.testing.assert_allclose(d1, t1 + p + sig(p - q) * (p + q), atol=1e-5)
  np.testing.assert_allclose(d2, t2 + q + sig(q - p) * (p + q), atol=1e-5)


def test_cross_es2d_second_gate_flag():
  make = lambda flag: with_scan_impl(
    _abstract(lambda r: cmfm.CrossES2D(8, d_state=4, second_gate_from_first=flag, rngs=r)),
    "chunked",
  )
  p, q = _random(15, (1, 4, 4, 8)), _random(16, (1, 4, 4, 8))
  official, intended = make(True), make(False)
  assert float(jnp.abs(_apply(official, p, q) - _apply(intended, p, q)).max()) > 1e-4
  # With the official slip, in_proj2's z half has no influence.
  kernel = official.in_proj2.kernel[...]
  official.in_proj2.kernel[...] = kernel.at[:, 16:].set(0.0)
  np.testing.assert_allclose(_apply(official, p, q), _apply(make(True), p, q), atol=1e-6)


def test_dvss_drop_path_drops_whole_samples_in_training_only():
  block = with_scan_impl(
    _abstract(
      lambda r: vss.DVSSBlock(8, d_state=4, expand=2, mlp_ratio=2.0, drop_path_rate=0.5, rngs=r)
    ),
    "reference",
  )
  x = _random(17, (16, 2, 2, 8))
  block.eval()
  run = nnx.jit(lambda m, x: m(x))
  np.testing.assert_array_equal(run(block, x), run(block, x))
  block.train()
  trained = np.asarray(run(block, x))
  assert not np.allclose(trained, np.asarray(run(block, x)))
