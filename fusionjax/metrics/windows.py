"""Local-window filters shared by the windowed metrics (VIF, SSIM, MEF-SSIM), and the strips of
rows those metrics are computed in.

Every filter works on stacks of shape (..., H, W), filters the last two axes
and keeps float64.  The windows are separable, and each 1-D pass is a
matrix product (BLAS), several times faster than a loop over the taps such
as ``scipy.ndimage.correlate1d``:

* down the columns, ``_BLOCK`` consecutive output rows are a banded
  (``_BLOCK`` x span) matrix of taps times the input rows they cover;
* along the rows, the rows are filtered as one flat signal, cut into pieces
  that each hold the inputs of ``_BLOCK`` outputs, times a band matrix
  (:func:`_correlate_columns`).

The zeros in the bands cost a few multiplications more than the taps alone.
Every product stays below ``_MAX_GEMM_WORK`` multiply-adds, small enough that
BLAS runs it on the calling thread.  Metrics that sum a map over the image
filter it strip by strip of rows (:func:`row_strips`), so that the filtered
stacks and the arithmetic on them stay in cache, and keep the rows W long
(:func:`filter_valid_wide`): NumPy is much slower on strided views than on
contiguous arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

_BLOCK = 8  # outputs per band matrix: the fastest size for 3- to 17-tap windows
_MAX_GEMM_WORK = 2**18  # m * n * k of one product; OpenBLAS threads only above this
STRIP_PIXELS = 2**15  # pixels of a strip's rows over the stacked images: fits a core's L2 cache


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
  """1-D taps g (size,) with ``np.outer(g, g)`` equal to MATLAB's
  ``fspecial('gaussian', size, sigma)``.

  fspecial normalises exp(-(x^2 + y^2) / (2 sigma^2)) on the size x size grid
  to sum 1 and zeroes entries below eps * max.  That kernel is the outer
  product of the normalised 1-D Gaussian as long as no entry is zeroed, which
  holds for every (size, sigma) used here (the smallest corner ratio,
  size 11 / sigma 1.5, is 1.5e-5).
  """
  offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  taps = np.exp(-(offsets * offsets) / (2.0 * sigma * sigma))
  return taps / taps.sum()


@functools.lru_cache(maxsize=64)
def _band(
  taps: tuple[float, ...], outputs: int, step: int, span: int = 0, transpose: bool = False
) -> np.ndarray:
  """(outputs, max(span, step * (outputs - 1) + k)) matrix whose row q holds the k taps from
  column step * q, zeros elsewhere, or its transpose; C-contiguous, read-only, cached."""
  rows = np.arange(outputs)[:, None]
  band = np.zeros((outputs, max(span, step * (outputs - 1) + len(taps))))
  band[rows, step * rows + np.arange(len(taps))] = taps
  band = np.ascontiguousarray(band.T) if transpose else band
  band.flags.writeable = False
  return band


def _correlate_rows(images: np.ndarray, taps: tuple[float, ...], step: int) -> np.ndarray:
  """'valid' correlation along axis 1 of a C-contiguous (n, H, W) stack, every step-th output.

  Each ``_BLOCK`` output rows are the band matrix times the input rows they cover (a strided
  view), so one matrix product per block, for all images.
  """
  count, height, width = images.shape
  outputs = (height - len(taps)) // step + 1
  out = np.empty((count, outputs, width))
  blocks = outputs // _BLOCK
  band = _band(taps, _BLOCK, step)
  span = band.shape[1]
  chunk = max(1, _MAX_GEMM_WORK // (_BLOCK * span))
  image_stride, row_stride, column_stride = images.strides
  for start in range(0, width, chunk):
    columns = images[:, :, start : start + chunk]
    view = as_strided(
      columns,
      (count, blocks, span, columns.shape[2]),
      (image_stride, step * _BLOCK * row_stride, row_stride, column_stride),
      writeable=False,
    )
    target = out[:, : blocks * _BLOCK, start : start + chunk]
    np.matmul(band, view, out=target.reshape(count, blocks, _BLOCK, columns.shape[2]))
  rest = outputs - blocks * _BLOCK
  if rest:
    band = _band(taps, rest, step)
    first = blocks * _BLOCK * step
    np.matmul(band, images[:, first : first + band.shape[1]], out=out[:, blocks * _BLOCK :])
  return out


def _correlate_columns(images: np.ndarray, taps: tuple[float, ...], step: int = 1) -> np.ndarray:
  """'valid' correlation along axis 1 of a C-contiguous (N, W) array, keeping every step-th
  output (W a multiple of step), returned wide: (N, W / step), of which the first
  (W - k) // step + 1 columns are the result and the rest are finite junk.

  The rows are filtered as one flat signal; an output whose window straddles
  two rows is junk (a weighted sum of real samples), and the last row's
  junk is 0.  8 consecutive outputs read the step * 7 + k samples from their
  first one on; cut from output 8 j on into pieces of 8 m outputs (8 m step
  samples), with m the least number for which these fit in a piece, each
  piece holds the inputs of its first 8 outputs: the pieces (an (n, 8 m step)
  view) times a band give them, and the m offsets j = 0 .. m - 1 give all
  outputs.
  """
  size = len(taps)
  phases = -(-(step * (_BLOCK - 1) + size) // (step * _BLOCK))
  piece = phases * step * _BLOCK
  band = _band(taps, _BLOCK, step, piece, transpose=True)
  chunk = max(1, _MAX_GEMM_WORK // (piece * _BLOCK))
  flat = images.reshape(-1)
  out = np.empty(flat.size // step)
  done = 0
  for phase in range(phases):
    offset = phase * _BLOCK
    pieces = max(0, (flat.size - offset * step) // piece)
    end = offset + pieces * phases * _BLOCK
    inputs = flat[offset * step : end * step].reshape(pieces, piece)
    outputs = out[offset:end].reshape(pieces, phases, _BLOCK)[:, 0]
    whole = pieces // chunk * chunk
    np.matmul(
      inputs[:whole].reshape(-1, chunk, piece),
      band,
      out=outputs[:whole].reshape(-1, chunk, _BLOCK),
    )
    np.matmul(inputs[whole:], band, out=outputs[whole:])
    done = max(done, end - (phases - 1) * _BLOCK)
  last = (flat.size - size) // step + 1
  if done < last:
    out[done:last] = np.correlate(flat[done * step :], taps)[::step]
  out[last:] = 0.0
  return out.reshape(images.shape[0], -1)


def _taps_tuple(taps: Sequence[float]) -> tuple[float, ...]:
  """The taps as a tuple of floats, the key of the cached band matrices."""
  return taps if isinstance(taps, tuple) else tuple(float(tap) for tap in taps)


def filter_valid_wide(images: np.ndarray, taps: Sequence[float]) -> np.ndarray:
  """:func:`filter_valid` with every row kept W long: (..., H - k + 1, W), whose first
  W - k + 1 columns are the result and the others finite junk.

  Faster for callers that compute further on the whole rows and drop the
  junk at the end: NumPy is much slower on strided views than on
  contiguous arrays.
  """
  *leading, height, width = images.shape
  taps = _taps_tuple(taps)
  stack = np.ascontiguousarray(images, dtype=np.float64).reshape(-1, height, width)
  rows = _correlate_rows(stack, taps, 1)
  return _correlate_columns(rows.reshape(-1, width), taps).reshape(*leading, rows.shape[1], width)


def filter_valid(images: np.ndarray, taps: Sequence[float], step: int = 1) -> np.ndarray:
  """Separable 'valid' correlation, as ``convolve2d(x, rot90(outer(taps, taps), 2), 'valid')``,
  keeping every ``step``-th row and column of the result (from the first).

  Args:
    images: (..., H, W) float64, H and W at least len(taps).
    taps: (k,).
  Returns:
    (..., (H - k) // step + 1, (W - k) // step + 1), C-contiguous.
  """
  *leading, height, width = images.shape
  taps = _taps_tuple(taps)
  stack = np.ascontiguousarray(images, dtype=np.float64).reshape(-1, height, width)
  rows = _correlate_rows(stack, taps, step)
  # Columns decimated in the product when step divides W, by slicing otherwise.
  column_step = step if width % step == 0 else 1
  filtered = _correlate_columns(rows.reshape(-1, width), taps, column_step)
  outputs = (width - len(taps)) // step + 1
  kept = filtered[:, : outputs * (step // column_step) : step // column_step]
  return np.ascontiguousarray(kept).reshape(*leading, rows.shape[1], outputs)


def filter_same(images: np.ndarray, taps: np.ndarray, pad_mode: str) -> np.ndarray:
  """Separable 'same'-size correlation (k odd) on the images padded with ``np.pad`` mode
  ``pad_mode``, e.g. "edge" (MATLAB 'replicate') or "symmetric" (MATLAB 'symmetric').

  Args:
    images: (..., H, W) float64.
    taps: (k,) with k odd.
  Returns:
    (..., H, W).
  """
  radius = (len(taps) - 1) // 2
  padding = [(0, 0)] * (images.ndim - 2) + [(radius, radius)] * 2
  return filter_valid(np.pad(images, padding, mode=pad_mode), taps)


def box_sums_valid(images: np.ndarray, size: int) -> np.ndarray:
  """Sum over every size x size window fully inside the image ('valid').

  Exact for integer-valued images (every partial sum is an integer below 2^53).

  Args:
    images: (..., H, W) float64.
  Returns:
    (..., H - size + 1, W - size + 1).
  """
  return filter_valid(images, np.ones(size))


def moment_stack(images: Sequence[np.ndarray]) -> np.ndarray:
  """The images whose local means the windowed metrics need, stacked: (3 k + 2, batch, h, w).

  images: k references, then F, each (batch, h, w).  Layout: the references,
  F, their squares, F^2, then each reference times F.
  """
  count = len(images) - 1
  fused = images[-1]
  stack = np.empty((3 * count + 2,) + fused.shape)
  for index, image in enumerate(images):
    stack[index] = image
    np.multiply(image, image, out=stack[count + 1 + index])
  for index, image in enumerate(images[:count]):
    np.multiply(image, fused, out=stack[2 * count + 2 + index])
  return stack


def row_strips(shape: tuple[int, ...], window: int) -> list[slice]:
  """Overlapping row ranges of a (..., H, W) stack whose 'valid' window x window outputs,
  strip by strip, are the image's outputs in order.

  Metrics that sum a map over the image compute it strip by strip, so that
  the filtered stacks and the arithmetic on them stay in cache; each strip
  spans about ``STRIP_PIXELS`` output pixels over all leading axes, in a
  multiple of ``_BLOCK`` rows (at least ``window`` rows), plus ``window - 1``
  rows of overlap.
  """
  height = shape[-2]
  outputs = height - window + 1
  pixels_per_row = max(1, int(np.prod(shape)) // height)
  rows = -(-max(window, STRIP_PIXELS // pixels_per_row) // _BLOCK) * _BLOCK
  return [
    slice(start, min(outputs, start + rows) + window - 1) for start in range(0, outputs, rows)
  ]
