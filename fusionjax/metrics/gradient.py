"""Gradient metrics: SF, AG, Qabf (Xydeas-Petrovic) and Nabf (Shreyamsha Kumar).

Every function takes ``fusionjax.shapes.GreyStack``s (float64) and returns one value per
image, shape (batch,).
"""

from __future__ import annotations

import numpy as np

from fusionjax.metrics.inputs import Convention
from fusionjax.shapes import GreyStack

_AXES = (-2, -1)

# Qabf's sigmoid constants (identical in the Python evaluator and the MATLAB toolbox).
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8

# Nabf constants from the toolbox's analysis_nabf.m.
_NABF_TD = 2.0
_NABF_WT_MIN = 0.001
_NABF_LG = 1.5
_NABF_NRG, _NABF_KG, _NABF_SIGMAG = 0.9999, 19.0, 0.5
_NABF_NRA, _NABF_KA, _NABF_SIGMAA = 0.9995, 22.0, 0.5


def spatial_frequency_batch(f: GreyStack) -> np.ndarray:
  """SF = sqrt(RF^2 + CF^2).

  RF^2 is the mean squared horizontal neighbour difference (H x (W-1) terms),
  CF^2 the vertical one ((H-1) x W terms).  Both code bases agree.
  """
  row_frequency = np.mean(np.diff(f, axis=-1) ** 2, axis=_AXES)
  column_frequency = np.mean(np.diff(f, axis=-2) ** 2, axis=_AXES)
  return np.sqrt(row_frequency + column_frequency)


def average_gradient_batch(f: GreyStack, convention: Convention = "python") -> np.ndarray:
  """AG: sum of sqrt((gx^2 + gy^2) / 2) divided by H*W ("python") or (H-1)(W-1) ("matlab").

  gx, gy follow the ``gradient`` rule: central differences (x[i+1] - x[i-1]) / 2
  inside, one-sided first differences on the borders.
  """
  gy, gx = np.gradient(f, axis=_AXES)
  total = np.sqrt((gx * gx + gy * gy) / 2.0).sum(axis=_AXES)
  height, width = f.shape[-2:]
  if convention == "matlab":
    return total / ((height - 1) * (width - 1))
  return total / (height * width)


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


def _qabf_edges(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Qabf edge strength g and orientation alpha.

  The reference convolves (true convolution, zero padding, 'same') with
  [-1 0 1; -2 0 2; -1 0 1] and [1 2 1; 0 0 0; -1 -2 -1]; as correlations those
  give sx = left minus right and sy = bottom minus top.  alpha = atan(sy / sx),
  or pi/2 where sx == 0 (atan, not atan2), so the signs matter where one
  image has sx == 0 and the other not.
  """
  along_x, along_y = _sobel(images, pad_mode="constant")
  sx, sy = -along_x, along_y
  strength = np.sqrt(sx * sx + sy * sy)
  vertical = sx == 0
  with np.errstate(divide="ignore", invalid="ignore"):
    orientation = np.where(vertical, np.pi / 2, np.arctan(sy / np.where(vertical, 1.0, sx)))
  return strength, orientation


def _qabf_preservation(g_source, a_source, g_fused, a_fused) -> np.ndarray:
  """Q_SF per pixel, with the reference's relative-strength rule.

  G = gF/gS where gS > gF, gS/gF where gS < gF, and -- the quirk both code
  bases share -- gF itself where gS == gF.
  """
  with np.errstate(divide="ignore", invalid="ignore"):
    relative_strength = np.minimum(g_source, g_fused) / np.maximum(g_source, g_fused)
  equal = g_source == g_fused
  np.copyto(relative_strength, g_fused, where=equal)
  relative_orientation = 1.0 - np.abs(a_source - a_fused) / (np.pi / 2)
  strength_term = _QABF_TG / (1.0 + np.exp(_QABF_KG * (relative_strength - _QABF_DG)))
  orientation_term = _QABF_TA / (1.0 + np.exp(_QABF_KA * (relative_orientation - _QABF_DA)))
  return strength_term * orientation_term


def qabf_batch(a: GreyStack, b: GreyStack, f: GreyStack) -> np.ndarray:
  """Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB).

  Sigmoid constants Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22,
  Da = 0.8.  NaN if neither source has any edge.
  """
  g_a, a_a = _qabf_edges(a)
  g_b, a_b = _qabf_edges(b)
  g_f, a_f = _qabf_edges(f)
  q_af = _qabf_preservation(g_a, a_a, g_f, a_f)
  q_bf = _qabf_preservation(g_b, a_b, g_f, a_f)
  numerator = (q_af * g_a + q_bf * g_b).sum(axis=_AXES)
  with np.errstate(invalid="ignore", divide="ignore"):
    return numerator / (g_a + g_b).sum(axis=_AXES)


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
