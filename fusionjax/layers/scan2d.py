"""Flattening image feature maps into scan sequences and back (channels-last throughout).

Sequences come out as `fusionjax.shapes.Sequences` (batch, L, K, C): K scan directions side by
side, ready for `fusionjax.kernels.selective_scan_channels_last` with the directions folded
into the channel axis (dim = K * C) and B/C grouped per direction (G = K).

- VMamba SS2D (`cross_scan` / `cross_merge`): K = 4 full-length scans, L = H * W:
  k0 row-major, k1 column-major, k2 = k0 reversed, k3 = k1 reversed. Merging maps each direction
  back to its pixels and sums the four.
- EfficientVMamba ES2D (`skip_scan` / `skip_merge`): the map is zero-padded to even H and W and
  split into its four stride-2 sub-grids, each scanned once, L = (H/2) * (W/2):
  k0 (even row, even col) row-major, k1 (odd row, even col) column-major,
  k2 (even row, odd col) row-major, k3 (odd row, odd col) column-major.
  Merging writes every sequence back to the pixels it came from: an exact inverse.
- S4Fusion Cross SS2D (`interleave` / `deinterleave`): two modalities' sequences alternate token
  by token, [a_0, b_0, a_1, b_1, ...] (a first), doubling L.
"""

import jax.numpy as jnp
from einops import rearrange

NUM_DIRECTIONS = 4


def _row_major(x):
  return rearrange(x, "b h w c -> b (h w) c")


def _column_major(x):
  return rearrange(x, "b h w c -> b (w h) c")


def cross_scan(x):
  """(batch, H, W, C) -> (batch, H*W, 4, C), the four VMamba directions."""
  rows, cols = _row_major(x), _column_major(x)
  return jnp.stack([rows, cols, rows[:, ::-1], cols[:, ::-1]], axis=2)


def cross_merge(y, height: int, width: int):
  """(batch, H*W, 4, C) -> (batch, H, W, C): each direction mapped back to its pixels, summed.

  `cross_merge(cross_scan(x), H, W) == 4 * x`; it is the adjoint (transpose) of `cross_scan`.
  """
  rows = y[:, :, 0] + y[:, ::-1, 2]
  cols = y[:, :, 1] + y[:, ::-1, 3]
  return rearrange(rows, "b (h w) c -> b h w c", h=height, w=width) + rearrange(
    cols, "b (w h) c -> b h w c", h=height, w=width
  )


def _pad_even(x):
  """Zero-pads bottom and right of (batch, H, W, C) to even H and W."""
  pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
  if pad_h or pad_w:
    x = jnp.pad(x, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)])
  return x


def skip_scan(x):
  """(batch, H, W, C) -> (batch, ceil(H/2)*ceil(W/2), 4, C), the ES2D sub-grid sequences."""
  x = _pad_even(x)
  return jnp.stack(
    [
      _row_major(x[:, 0::2, 0::2]),
      _column_major(x[:, 1::2, 0::2]),
      _row_major(x[:, 0::2, 1::2]),
      _column_major(x[:, 1::2, 1::2]),
    ],
    axis=2,
  )


def skip_merge(y, height: int, width: int):
  """(batch, ceil(H/2)*ceil(W/2), 4, C) -> (batch, H, W, C), the exact inverse of `skip_scan`."""
  half_h, half_w = -(-height // 2), -(-width // 2)
  rows = lambda k: rearrange(y[:, :, k], "b (h w) c -> b h w c", h=half_h, w=half_w)
  cols = lambda k: rearrange(y[:, :, k], "b (w h) c -> b h w c", h=half_h, w=half_w)
  # Even rows hold (k0, k2) alternating by column; odd rows hold (k1, k3).
  even_rows = rearrange([rows(0), rows(2)], "k b h w c -> b h (w k) c")
  odd_rows = rearrange([cols(1), cols(3)], "k b h w c -> b h (w k) c")
  full = rearrange([even_rows, odd_rows], "r b h w c -> b (h r) w c")
  return full[:, :height, :width]


def interleave(a, b):
  """Two (batch, L, ...) sequences -> (batch, 2L, ...) alternating a_0, b_0, a_1, b_1, ..."""
  if a.shape != b.shape:
    raise ValueError(f"interleaved sequences must have one shape, got {a.shape} and {b.shape}")
  return rearrange([a, b], "m b l ... -> b (l m) ...")


def deinterleave(s):
  """(batch, 2L, ...) -> the two (batch, L, ...) sequences `interleave` combined."""
  if s.shape[1] % 2:
    raise ValueError(f"an interleaved sequence has even length, got {s.shape[1]}")
  a_b = rearrange(s, "b (l m) ... -> m b l ...", m=2)
  return a_b[0], a_b[1]
