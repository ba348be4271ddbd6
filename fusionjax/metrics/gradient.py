"""Gradient metrics: SF, AG, Qabf (Xydeas-Petrovic) and Nabf (Shreyamsha Kumar).

Every function takes ``fusionjax.shapes.GreyStack``s (float64) and returns one value per
image, shape (batch,).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusionjax.metrics.inputs import Convention
from fusionjax.metrics.windows import row_strips
from fusionjax.shapes import GreyStack

_AXES = (-2, -1)

# Qabf's sigmoid constants (identical in the Python evaluator and the MATLAB toolbox).
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8
_QABF_VERTICAL_SHIFT = 4096.0  # above any |Sobel response| of 0..255 data (4 * 255)

# Nabf constants from the toolbox's analysis_nabf.m.
_NABF_TD = 2.0
_NABF_WT_MIN = 0.001
_NABF_LG = 1.5
_NABF_NRG, _NABF_KG, _NABF_SIGMAG = 0.9999, 19.0, 0.5
_NABF_NRA, _NABF_KA, _NABF_SIGMAA = 0.9995, 22.0, 0.5


GRADIENT_METRICS: tuple[str, ...] = ("SF", "AG")


def _sum_of_squares(x: np.ndarray) -> np.ndarray:
  """Per-image sum of x^2 over the last two axes."""
  return np.einsum("...ij,...ij->...", x, x)


def gradient_metrics_batch(
  a: GreyStack,
  b: GreyStack,
  f: GreyStack,
  names: Sequence[str] = GRADIENT_METRICS,
  convention: Convention = "python",
) -> dict[str, np.ndarray]:
  """SF and/or AG (``names``) of the fused ``GreyStack`` f, each (batch,), strip by strip of rows.

  SF = sqrt(RF^2 + CF^2): RF^2 is the mean squared horizontal neighbour
  difference (H x (W-1) terms), CF^2 the vertical one ((H-1) x W terms).
  Both code bases agree.

  AG: sum of sqrt((gx^2 + gy^2) / 2) divided by H*W ("python") or
  (H-1)(W-1) ("matlab").  gx, gy follow the ``gradient`` rule: central
  differences (x[i+1] - x[i-1]) / 2 inside, one-sided first differences on
  the borders.
  """
  height, width = f.shape[-2:]
  row_total = np.zeros(f.shape[:-2])
  column_total = np.zeros(f.shape[:-2])
  gradient_total = np.zeros(f.shape[:-2])
  for rows in row_strips((2,) + f.shape, 1):
    start, stop = rows.start, rows.stop
    strip = f[..., rows, :]
    across = strip[..., 1:] - strip[..., :-1]
    last = min(stop, height - 1)
    down = f[..., start + 1 : last + 1, :] - f[..., start:last, :]
    if "SF" in names:
      row_total += _sum_of_squares(across)
      column_total += _sum_of_squares(down)
    if "AG" in names:
      gx = np.empty(strip.shape)
      np.subtract(strip[..., 2:], strip[..., :-2], out=gx[..., 1:-1])
      gx[..., 1:-1] *= 0.5
      gx[..., 0] = across[..., 0]
      gx[..., -1] = across[..., -1]
      gy = np.empty(strip.shape)
      first = max(start, 1)
      np.subtract(
        f[..., first + 1 : last + 1, :],
        f[..., first - 1 : last - 1, :],
        out=gy[..., first - start : last - start, :],
      )
      gy[..., first - start : last - start, :] *= 0.5
      if start == 0:
        gy[..., 0, :] = down[..., 0, :]
      if stop == height:
        gy[..., -1, :] = f[..., -1, :] - f[..., -2, :]
      gx *= gx
      gy *= gy
      gx += gy
      gx *= 0.5
      gradient_total += np.sqrt(gx, out=gx).sum(axis=_AXES)
  results = {}
  if "SF" in names:
    results["SF"] = np.sqrt(
      row_total / (height * (width - 1)) + column_total / ((height - 1) * width)
    )
  if "AG" in names:
    pixels = (height - 1) * (width - 1) if convention == "matlab" else height * width
    results["AG"] = gradient_total / pixels
  return results


def spatial_frequency_batch(f: GreyStack) -> np.ndarray:
  """SF of a ``GreyStack`` (:func:`gradient_metrics_batch`) -> (batch,)."""
  return gradient_metrics_batch(f, f, f, ["SF"])["SF"]


def average_gradient_batch(f: GreyStack, convention: Convention = "python") -> np.ndarray:
  """AG of a ``GreyStack`` (:func:`gradient_metrics_batch`) -> (batch,)."""
  return gradient_metrics_batch(f, f, f, ["AG"], convention)["AG"]


def _sobel(images: np.ndarray, pad_mode: str) -> tuple[np.ndarray, np.ndarray]:
  """Horizontal and vertical 3x3 Sobel responses as correlations (unscaled), (..., H, W) each.

  Returns (d/dx, d/dy): [1 2 1]^T [-1 0 1] and [-1 0 1]^T [1 2 1], i.e. right
  minus left and bottom minus top, after padding one pixel with ``np.pad``
  mode ``pad_mode`` ("constant": zeros; "reflect": mirror without repeating
  the border pixel).
  """
  padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(1, 1), (1, 1)], mode=pad_mode)
  rows_smoothed = padded[..., :-2, :] + 2.0 * padded[..., 1:-1, :] + padded[..., 2:, :]
  cols_smoothed = padded[..., :-2] + 2.0 * padded[..., 1:-1] + padded[..., 2:]
  return rows_smoothed[..., 2:] - rows_smoothed[..., :-2], cols_smoothed[
    ..., 2:, :
  ] - cols_smoothed[..., :-2, :]


def _qabf_edges(flat: np.ndarray, padded_width: int) -> tuple[np.ndarray, np.ndarray]:
  """Qabf edge strength g and orientation alpha of zero-padded rows, flattened.

  flat: (..., (r + 2) * (W + 2)), r + 2 rows of an image padded with zeros
  (one column on either side; the first and last rows are the neighbours of
  the r rows, zero at the image border).  Returns (..., r * (W + 2) - 2)
  each: entry i (W + 2) + j is pixel (i, j) of the r rows for j < W; the
  rest are junk (edges of windows across two rows).

  The reference convolves (true convolution, zero padding, 'same') with
  [-1 0 1; -2 0 2; -1 0 1] and [1 2 1; 0 0 0; -1 -2 -1]; as correlations those
  give sx = left minus right and sy = bottom minus top, with the [1 2 1]
  smoothing summed as (first + 2 second) + third.  alpha = atan(sy / sx),
  or pi/2 where sx == 0 (atan, not atan2), so the signs matter where one
  image has sx == 0 and the other not.
  """
  row = padded_width
  smoothed = np.multiply(flat[..., row:-row], 2.0)
  smoothed += flat[..., : -2 * row]
  smoothed += flat[..., 2 * row :]
  sx = smoothed[..., :-2] - smoothed[..., 2:]
  smoothed = np.multiply(flat[..., 1:-1], 2.0)
  smoothed += flat[..., :-2]
  smoothed += flat[..., 2:]
  sy = np.subtract(smoothed[..., 2 * row :], smoothed[..., : -2 * row])
  # atan((sy + 4096 [sx == 0]) / sx): sx == 0 is +0 (a difference of equal non-negative sums),
  # and |sy| <= 4 * 255, so the ratio is +inf there, whose atan is pi/2.
  orientation = np.multiply(sx == 0, _QABF_VERTICAL_SHIFT)
  orientation += sy
  with np.errstate(divide="ignore"):
    orientation /= sx
  np.arctan(orientation, out=orientation)
  np.multiply(sx, sx, out=sx)
  np.multiply(sy, sy, out=sy)
  sx += sy
  return np.sqrt(sx, out=sx), orientation


def _qabf_preservation(g_source, a_source, g_fused, a_fused) -> np.ndarray:
  """Q_SF g_S per pixel, with the reference's relative-strength rule.

  G = gF/gS where gS > gF, gS/gF where gS < gF, and -- the quirk both code
  bases share -- gF itself where gS == gF.  The orientation sigmoid's
  argument ka (1 - |aS - aF| / (pi/2) - Da) is taken as
  ka (1 - Da) - (ka / (pi/2)) |aS - aF|.
  """
  strength = np.minimum(g_source, g_fused)
  with np.errstate(divide="ignore", invalid="ignore"):
    strength /= np.maximum(g_source, g_fused)
  np.copyto(strength, g_fused, where=g_source == g_fused)
  strength -= _QABF_DG
  strength *= _QABF_KG
  np.exp(strength, out=strength)
  strength += 1.0
  np.divide(_QABF_TG, strength, out=strength)
  orientation = np.subtract(a_source, a_fused)
  np.abs(orientation, out=orientation)
  orientation *= -_QABF_KA / (np.pi / 2)
  orientation += _QABF_KA * (1.0 - _QABF_DA)
  np.exp(orientation, out=orientation)
  orientation += 1.0
  np.divide(_QABF_TA, orientation, out=orientation)
  strength *= orientation
  strength *= g_source
  return strength


def _qabf_strip_sums(padded: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Sums of Q_AF gA + Q_BF gB and of gA + gB over r rows: padded (3, batch, r + 2, W + 2)
  holds A, B, F as :func:`_qabf_edges` takes them.  Returns (batch,) each."""
  padded_width = padded.shape[-1]
  strength, orientation = _qabf_edges(padded.reshape(padded.shape[:2] + (-1,)), padded_width)
  for junk in range(width, padded_width):
    strength[..., junk::padded_width] = 0.0
  g_a, g_b, g_f = strength
  a_a, a_b, a_f = orientation
  numerator = _qabf_preservation(g_a, a_a, g_f, a_f).sum(axis=-1)
  numerator += _qabf_preservation(g_b, a_b, g_f, a_f).sum(axis=-1)
  return numerator, g_a.sum(axis=-1) + g_b.sum(axis=-1)


def qabf_batch(a: GreyStack, b: GreyStack, f: GreyStack) -> np.ndarray:
  """Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB).

  Sigmoid constants Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22,
  Da = 0.8.  NaN if neither source has any edge.  Computed strip by strip
  of rows, each copied with its neighbour rows into a zero-bordered buffer.
  """
  height, width = f.shape[-2:]
  images = (a, b, f)
  numerator = np.zeros(f.shape[0])
  denominator = np.zeros(f.shape[0])
  strips = row_strips((3,) + f.shape, 1)
  buffer = np.zeros((3, f.shape[0], strips[0].stop - strips[0].start + 2, width + 2))
  for rows in strips:
    padded = buffer[:, :, : rows.stop - rows.start + 2]
    first, last = max(rows.start - 1, 0), min(rows.stop + 1, height)
    top = first - rows.start + 1
    for index, image in enumerate(images):
      # + 0.0 turns -0.0 grey levels into +0.0, which _qabf_edges relies on.
      np.add(image[:, first:last], 0.0, out=padded[index, :, top : top + last - first, 1:-1])
    if rows.start == 0:
      padded[:, :, 0] = 0.0
    if rows.stop == height:
      padded[:, :, -1] = 0.0
    strip_numerator, strip_denominator = _qabf_strip_sums(padded, width)
    numerator += strip_numerator
    denominator += strip_denominator
  with np.errstate(invalid="ignore", divide="ignore"):
    return numerator / denominator


def _nabf_edges(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Nabf edge strength and orientation (toolbox ``sobel_fn``).

  Sobel kernels divided by 8, applied as correlations on the image extended
  by mirroring without repeating the border pixel.  gv is the horizontal
  derivative, gh the vertical one; alpha = atan(gv / gh), 0 where both are 0
  and +-pi/2 where only gh is 0.
  """
  along_x, along_y = _sobel(images, pad_mode="reflect")
  gv, gh = along_x / 8.0, along_y / 8.0
  strength = np.sqrt(gv * gv + gh * gh)
  with np.errstate(divide="ignore", invalid="ignore"):
    orientation = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
  return strength, orientation


def _nabf_preservation(g_source, a_source, g_fused, a_fused) -> np.ndarray:
  """Q_SF = sqrt(Qg Qa) with the min/max relative strength (0 if either is 0)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    relative_strength = np.where(
      (g_source == 0) | (g_fused == 0),
      0.0,
      np.minimum(g_source, g_fused) / np.maximum(g_source, g_fused),
    )
  relative_orientation = np.abs(np.abs(a_source - a_fused) - np.pi / 2) * 2.0 / np.pi
  strength_term = _NABF_NRG / (1.0 + np.exp(-_NABF_KG * (relative_strength - _NABF_SIGMAG)))
  orientation_term = _NABF_NRA / (1.0 + np.exp(-_NABF_KA * (relative_orientation - _NABF_SIGMAA)))
  return np.sqrt(strength_term * orientation_term)


def nabf_batch(
  a: GreyStack, b: GreyStack, f: GreyStack, legacy_tang_argorder: bool = False
) -> np.ndarray:
  """Nabf, Shreyamsha Kumar's fusion-artefact measure, as the MATLAB toolbox computes it.

  Nabf = sum n [(1 - Q_AF) w_A + (1 - Q_BF) w_B] / sum (w_A + w_B), where
  n = 1 where gF > gA and gF > gB, and w_S = g_S^1.5 where g_S >= 2, else 0.001.

  legacy_tang_argorder=True reproduces the toolbox at HEAD, which calls the
  routine as (A, B, F) although it expects (F, A, B): A is then treated as
  the fused image and B, F as the sources.
  """
  if legacy_tang_argorder:
    fused, first, second = a, b, f
  else:
    fused, first, second = f, a, b
  g_1, a_1 = _nabf_edges(first)
  g_2, a_2 = _nabf_edges(second)
  g_f, a_f = _nabf_edges(fused)
  q_1f = _nabf_preservation(g_1, a_1, g_f, a_f)
  q_2f = _nabf_preservation(g_2, a_2, g_f, a_f)
  weight_1 = np.where(g_1 >= _NABF_TD, g_1**_NABF_LG, _NABF_WT_MIN)
  weight_2 = np.where(g_2 >= _NABF_TD, g_2**_NABF_LG, _NABF_WT_MIN)
  artefact = (g_f > g_1) & (g_f > g_2)
  numerator = np.where(artefact, (1.0 - q_1f) * weight_1 + (1.0 - q_2f) * weight_2, 0.0).sum(
    axis=_AXES
  )
  return numerator / (weight_1 + weight_2).sum(axis=_AXES)
