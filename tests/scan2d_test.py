"""2-D scan flattening: direction orders, exact inverses and adjointness on odd sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionjax.layers import scan2d

SIZES = [(5, 7), (6, 4), (1, 3), (3, 1), (7, 7)]


def _image(height, width, channels=3, seed=0):
  return jnp.asarray(
    np.random.default_rng(seed).normal(size=(2, height, width, channels)), jnp.float32
  )


@pytest.mark.parametrize("height, width", SIZES)
def test_cross_scan_directions(height, width):
  x = _image(height, width)
  seqs = np.asarray(scan2d.cross_scan(x))
  xn = np.asarray(x)
  rows = np.stack([xn[:, i, j] for i in range(height) for j in range(width)], axis=1)
  cols = np.stack([xn[:, i, j] for j in range(width) for i in range(height)], axis=1)
  np.testing.assert_array_equal(seqs[:, :, 0], rows)
  np.testing.assert_array_equal(seqs[:, :, 1], cols)
  np.testing.assert_array_equal(seqs[:, :, 2], rows[:, ::-1])
  np.testing.assert_array_equal(seqs[:, :, 3], cols[:, ::-1])


@pytest.mark.parametrize("height, width", SIZES)
def test_cross_merge_is_the_adjoint_of_cross_scan(height, width):
  x = _image(height, width)
  np.testing.assert_allclose(
    scan2d.cross_merge(scan2d.cross_scan(x), height, width), 4 * x, rtol=1e-6
  )
  y = jnp.asarray(np.random.default_rng(1).normal(size=(2, height * width, 4, 3)), jnp.float32)
  _, vjp = jax.vjp(scan2d.cross_scan, x)
  np.testing.assert_allclose(vjp(y)[0], scan2d.cross_merge(y, height, width), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("height, width", SIZES)
def test_skip_scan_sub_grids_and_exact_inverse(height, width):
  x = _image(height, width)
  seqs = np.asarray(scan2d.skip_scan(x))
  padded = np.pad(np.asarray(x), [(0, 0), (0, height % 2), (0, width % 2), (0, 0)])
  half_h, half_w = padded.shape[1] // 2, padded.shape[2] // 2
  expected = [
    [padded[:, 2 * i, 2 * j] for i in range(half_h) for j in range(half_w)],
    [padded[:, 2 * i + 1, 2 * j] for j in range(half_w) for i in range(half_h)],
    [padded[:, 2 * i, 2 * j + 1] for i in range(half_h) for j in range(half_w)],
    [padded[:, 2 * i + 1, 2 * j + 1] for j in range(half_w) for i in range(half_h)],
  ]
  for k in range(4):
    np.testing.assert_array_equal(seqs[:, :, k], np.stack(expected[k], axis=1))
  np.testing.assert_array_equal(scan2d.skip_merge(jnp.asarray(seqs), height, width), x)


def test_interleave_alternates_and_inverts():
  a = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
  b = -a - 1
  s = scan2d.interleave(a, b)
  assert s.shape == (2, 6, 4, 5)
  np.testing.assert_array_equal(s[:, 0::2], a)
  np.testing.assert_array_equal(s[:, 1::2], b)
  a2, b2 = scan2d.deinterleave(s)
  np.testing.assert_array_equal(a2, a)
  np.testing.assert_array_equal(b2, b)


def test_interleave_rejects_mismatched_and_odd():
  with pytest.raises(ValueError, match="one shape"):
    scan2d.interleave(jnp.zeros((1, 3, 2)), jnp.zeros((1, 4, 2)))
  with pytest.raises(ValueError, match="even length"):
    scan2d.deinterleave(jnp.zeros((1, 5, 2)))
