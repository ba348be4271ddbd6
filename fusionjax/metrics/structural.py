"""Structural similarity metrics: SSIM (both conventions) and the toolbox's "MS_SSIM" (MEF-MS-SSIM).

Every function takes ``fusionjax.shapes.GreyStack``s (float64) and returns one value per
image, shape (batch,).  Variances use one-pass E[x^2] - mu^2
formulas as the references do, in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fusionjax.metrics.inputs import GREY_MAX, Convention
from fusionjax.metrics.windows import (
  box_sums_valid,
  filter_same,
  filter_valid,
  filter_valid_wide,
  gaussian_taps,
  moment_stack,
  row_strips,
)
from fusionjax.shapes import GreyStack

Reduction = Literal["sum", "mean"]

# Python evaluator: scikit-image defaults, with the data_range its float32 call got.
PYTHON_SSIM_WINDOW = 7
PYTHON_SSIM_DATA_RANGE = 2.0  # scikit-image <= 0.19 took the float dtype range [-1, 1]
SSIM_K1, SSIM_K2 = 0.01, 0.03

# MATLAB ``ssim`` defaults: Gaussian sigma 1.5 on 2*ceil(3 sigma)+1 = 11 taps, L = 1 for doubles.
MATLAB_SSIM_SIGMA = 1.5
MATLAB_SSIM_WINDOW = 11
MATLAB_SSIM_DYNAMIC_RANGE = 1.0

# MEF-MS-SSIM (Ma, Zeng & Wang 2015) as in the toolbox's analysis_ms_ssim.m / mef_ssim.m.
MEF_WINDOW = 11
MEF_SIGMA = 1.5
MEF_K = 0.03
MEF_SCALE_WEIGHTS = np.array([0.0448, 0.2856, 0.3001]) / np.sum([0.0448, 0.2856, 0.3001])
MEF_MIN_SIDE = MEF_WINDOW * 2 ** (len(MEF_SCALE_WEIGHTS) - 1)
_MEF_CONTRAST_OFFSET = 0.001
_MEF_MAX_EXPONENT = 10.0
_MATLAB_EPS = float(np.finfo(np.float64).eps)
# A window whose one-pass variance is below this fraction of its mean square is
# treated as flat: the one-pass formula leaves ~1e-14 relative noise there,
# while the smallest non-zero variance of integer data over 121 pixels is 8e-3.
_MEF_FLAT_TOLERANCE = 1e-10


def _reduce(per_source: np.ndarray, reduction: Reduction) -> np.ndarray:
  """Combines (2, batch) per-source values into (batch,) by "sum" or "mean"."""
  if reduction == "sum":
    return per_source.sum(axis=0)
  if reduction == "mean":
    return per_source.mean(axis=0)
  raise ValueError(f"reduction must be 'sum' or 'mean'; got {reduction!r}")


def _mean_ssim(
  means: np.ndarray, count: int, c1: float, c2: float, covariance_scale: float
) -> np.ndarray:
  """Mean over the map of
  ((2 mu_s mu_f + C1)(2 cov + C2)) / ((mu_s^2 + mu_f^2 + C1)(var_s + var_f + C2)).

  Args:
    means: local means laid out as :func:`_moment_stack`, (3 sources + 2, batch, h, w);
      overwritten.
    covariance_scale: factor on the (co)variances (49/48 for sample statistics).
  Returns:
    (sources, batch).
  """
  mu_s, mu_f = means[:count], means[count]
  mu_sf = mu_s * mu_f
  mu_s_sq = mu_s * mu_s
  mu_f_sq = mu_f * mu_f
  structure_num = np.subtract(means[2 * count + 2 :], mu_sf, out=means[2 * count + 2 :])
  structure_num *= 2.0 * covariance_scale
  structure_num += c2
  structure_den = np.subtract(
    means[count + 1 : 2 * count + 1], mu_s_sq, out=means[count + 1 : 2 * count + 1]
  )
  structure_den += means[2 * count + 1]
  structure_den -= mu_f_sq
  structure_den *= covariance_scale
  structure_den += c2
  luminance_num = mu_sf
  luminance_num *= 2.0
  luminance_num += c1
  luminance_den = mu_s_sq
  luminance_den += mu_f_sq
  luminance_den += c1
  luminance_num *= structure_num
  luminance_den *= structure_den
  luminance_num /= luminance_den
  return luminance_num.mean(axis=(-2, -1))


def _python_ssim_map_sums(stack: np.ndarray) -> np.ndarray:
  """Sums over the 'valid' 7x7 windows of the Python evaluator's SSIM map, per source, from
  the :func:`moment_stack` of the sources and F over some rows -> (sources, batch).

  With n = 49 and window sums S, the map is
  ((2 S_s S_f + n^2 C1) (2 (n S_sf - S_s S_f) + n (n - 1) C2)) /
  ((S_s^2 + S_f^2 + n^2 C1) ((n S_ss - S_s^2) + (n S_ff - S_f^2) + n (n - 1) C2)),
  exact up to the final products for integer-valued images.
  """
  count = (stack.shape[0] - 2) // 3
  pixels = float(PYTHON_SSIM_WINDOW * PYTHON_SSIM_WINDOW)
  luminance_c = pixels * pixels * (SSIM_K1 * PYTHON_SSIM_DATA_RANGE) ** 2
  structure_c = pixels * (pixels - 1.0) * (SSIM_K2 * PYTHON_SSIM_DATA_RANGE) ** 2
  sums = filter_valid_wide(stack, (1.0,) * PYTHON_SSIM_WINDOW)
  sum_s, sum_f = sums[:count], sums[count]
  square_s, square_f = sums[count + 1 : 2 * count + 1], sums[2 * count + 1]
  product_sf = sums[2 * count + 2 :]
  sum_f_sq = sum_f * sum_f
  fused_spread = np.multiply(square_f, pixels, out=square_f)
  fused_spread -= sum_f_sq
  fused_spread += structure_c
  sum_f_sq += luminance_c
  cross = sum_s * (2.0 * sum_f)
  luminance_den = np.multiply(sum_s, sum_s, out=sum_s)
  structure_den = np.multiply(square_s, pixels, out=square_s)
  structure_den -= luminance_den
  structure_den += fused_spread
  luminance_den += sum_f_sq
  structure_num = np.multiply(product_sf, 2.0 * pixels, out=product_sf)
  structure_num -= cross
  structure_num += structure_c
  cross += luminance_c
  cross *= structure_num
  luminance_den *= structure_den
  cross /= luminance_den
  cross[..., stack.shape[-1] - PYTHON_SSIM_WINDOW + 1 :] = 0.0
  return cross.sum(axis=(-2, -1))


def ssim_python_per_source(sources: Sequence[np.ndarray], f: np.ndarray) -> np.ndarray:
  """SSIM(F, S) as the Python evaluator gets it from scikit-image, per source.

  sources: each (batch, H, W) like f -> (sources, batch).

  7x7 uniform window, sample covariances (x 49/48), K1 = 0.01, K2 = 0.03,
  data_range = 2 (so C1 = 4e-4, C2 = 3.6e-3 on 0..255 data), the map averaged
  after cropping a 3-pixel border.  The kept windows lie inside the image, so
  scikit-image's padding never enters and 'valid' box sums give the same map
  (:func:`_python_ssim_map_sums`, computed strip by strip).
  """
  images = [*sources, f]
  total = np.zeros((len(sources), f.shape[0]))
  for rows in row_strips((len(images),) + f.shape, PYTHON_SSIM_WINDOW):
    total += _python_ssim_map_sums(moment_stack([image[..., rows, :] for image in images]))
  height, width = f.shape[-2:]
  return total / ((height - PYTHON_SSIM_WINDOW + 1) * (width - PYTHON_SSIM_WINDOW + 1))


def ssim_matlab_per_source(sources: Sequence[np.ndarray], f: np.ndarray) -> np.ndarray:
  """SSIM(F, S) as MATLAB's ``ssim`` gets it on 0..255 doubles, per source.

  sources: each (batch, H, W) like f -> (sources, batch).

  11x11 Gaussian (sigma 1.5, fspecial), replicate padding, 'same'-size map
  averaged over all pixels, population statistics, C1 = (0.01 L)^2,
  C2 = (0.03 L)^2 with L = 1 (the class range of double, although the data
  are on 0..255).  Taken from MathWorks' documentation; not run against MATLAB.
  """
  taps = gaussian_taps(MATLAB_SSIM_WINDOW, MATLAB_SSIM_SIGMA)
  means = filter_same(moment_stack([*sources, f]), taps, pad_mode="edge")
  c1 = (SSIM_K1 * MATLAB_SSIM_DYNAMIC_RANGE) ** 2
  c2 = (SSIM_K2 * MATLAB_SSIM_DYNAMIC_RANGE) ** 2
  return _mean_ssim(means, len(sources), c1, c2, 1.0)


def ssim_batch(
  a: GreyStack,
  b: GreyStack,
  f: GreyStack,
  convention: Convention = "python",
  reduction: Reduction | None = None,
) -> np.ndarray:
  """SSIM(F, A) and SSIM(F, B) combined; ``GreyStack``s -> (batch,).

  convention="python" (default reduction "sum", range [-2, 2]) is the CDDFuse
  evaluator; convention="matlab" (default reduction "mean") is Tang's toolbox.
  Halving the python sum does not give the MATLAB value: the windows,
  padding and constants differ.
  """
  if convention == "matlab":
    return _reduce(ssim_matlab_per_source([a, b], f), reduction or "mean")
  return _reduce(ssim_python_per_source([a, b], f), reduction or "sum")


def _mef_ssim_scale(sources: np.ndarray, f: np.ndarray) -> np.ndarray:
  """One scale of MEF-SSIM (toolbox ``mef_ssim.m``).

  (sources, batch, H, W) and (batch, H, W) -> (batch,).

  Per 11x11 window ('valid'): contrast c_k = ||x_k - mu_k|| + 0.001 (box
  statistics); consistency R = ||sum_k x_k - mean|| / sum_k ||x_k - mu_k||,
  p = min(tan(pi R / 2), 10); weights w_k proportional to (c_k / 11)^p; the
  desired patch r = sum_k w_k (x_k - mu_k) / c_k rescaled to norm max_k c_k;
  score (2 cov(r, F) + C) / (var(r) + var(F) + C) with Gaussian 11x11 /
  sigma 1.5 weighting and C = (0.03 * 255)^2.  The patch r is never formed:
  its Gaussian-weighted variance and covariance with F are expanded into
  local covariances of the sources and F.  A source window whose one-pass
  variance is at rounding level (<= 1e-10 of its mean square) is taken as
  exactly flat, i.e. contributes nothing to r, as its exact deviation does.
  """
  count = sources.shape[0]
  window_pixels = MEF_WINDOW * MEF_WINDOW
  first, second = np.triu_indices(count)
  multiplicity = np.where(first == second, 1.0, 2.0)[:, None, None, None]
  pair_products = sources[first] * sources[second]
  diagonal = np.flatnonzero(first == second)

  box = box_sums_valid(np.concatenate([sources, pair_products]), MEF_WINDOW) / window_pixels
  box_mean, box_pair = box[:count], box[count:]
  box_cov = box_pair - box_mean[first] * box_mean[second]
  flat = box_cov[diagonal] <= _MEF_FLAT_TOLERANCE * box_pair[diagonal]
  box_cov = np.where(flat[first] | flat[second], 0.0, box_cov)
  deviation_norm = np.sqrt(window_pixels * np.maximum(box_cov[diagonal], 0.0))
  contrast = deviation_norm + _MEF_CONTRAST_OFFSET
  sum_variance = np.maximum((multiplicity * box_cov).sum(axis=0), 0.0)

  consistency = (np.sqrt(window_pixels * sum_variance) + _MATLAB_EPS) / (
    deviation_norm.sum(axis=0) + _MATLAB_EPS
  )
  consistency = np.where(consistency > 1, 1 - _MATLAB_EPS, consistency)
  exponent = np.minimum(np.tan(np.pi / 2 * consistency), _MEF_MAX_EXPONENT)
  weights = (contrast / MEF_WINDOW) ** exponent + _MATLAB_EPS
  weights = weights / weights.sum(axis=0)
  # The desired patch is r = sum_k coefficient_k (x_k - mu_k), before rescaling.
  coefficient = weights / contrast
  coupling = multiplicity * coefficient[first] * coefficient[second]
  patch_norm_sq = np.maximum((coupling * window_pixels * box_cov).sum(axis=0), 0.0)

  taps = gaussian_taps(MEF_WINDOW, MEF_SIGMA)
  gaussian = filter_valid(
    np.concatenate([sources, pair_products, sources * f, np.stack([f, f * f])]), taps
  )
  pairs = len(first)
  g_mean = gaussian[:count]
  g_cov = gaussian[count : count + pairs] - g_mean[first] * g_mean[second]
  g_cov = np.where(flat[first] | flat[second], 0.0, g_cov)
  g_mean_f, g_square_f = gaussian[2 * count + pairs], gaussian[2 * count + pairs + 1]
  g_cov_f = gaussian[count + pairs : 2 * count + pairs] - g_mean * g_mean_f
  g_cov_f = np.where(flat, 0.0, g_cov_f)

  has_structure = patch_norm_sq > 0
  rescale = np.where(
    has_structure, contrast.max(axis=0) / np.sqrt(np.where(has_structure, patch_norm_sq, 1.0)), 1.0
  )
  var_r = rescale * rescale * np.maximum((coupling * g_cov).sum(axis=0), 0.0)
  cov_rf = rescale * (coefficient * g_cov_f).sum(axis=0)
  var_f = g_square_f - g_mean_f * g_mean_f
  stability = (MEF_K * GREY_MAX) ** 2
  quality = (2.0 * cov_rf + stability) / (var_r + var_f + stability)
  return quality.mean(axis=(-2, -1))


def _downsample_mean2(images: np.ndarray) -> np.ndarray:
  """MATLAB ``imfilter(x, ones(2)/4, 'symmetric', 'same')`` then ``x(1:2:end, 1:2:end)``.

  The filter's anchor is its top-left tap, so each output is the mean of a
  2x2 block starting at an even (row, column); an odd last row/column is
  paired with itself.  (..., H, W) -> (..., ceil(H/2), ceil(W/2)).
  """
  height, width = images.shape[-2:]
  padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(0, 1), (0, 1)], mode="edge")
  rows = padded[..., 0:height:2, :] + padded[..., 1 : height + 1 : 2, :]
  return (rows[..., 0:width:2] + rows[..., 1 : width + 1 : 2]) / 4.0


def ms_ssim_mef_batch(a: GreyStack, b: GreyStack, f: GreyStack) -> np.ndarray:
  """The toolbox's "MS_SSIM": 3-scale MEF-SSIM of F against the sources; ``GreyStack``s -> (batch,).

  Product over scales of Q_l^{w_l}, w = (0.0448, 0.2856, 0.3001) / sum;
  between scales every image is 2x2 block-averaged and decimated.  This is
  Ma, Zeng & Wang's MEF metric, not Wang's 5-scale MS-SSIM.  Needs images
  of at least 44x44.  A negative scale score gives NaN (MATLAB: complex).
  """
  sources = np.stack([a, b])
  scores = []
  for level in range(len(MEF_SCALE_WEIGHTS)):
    if level > 0:
      sources, f = _downsample_mean2(sources), _downsample_mean2(f)
    scores.append(_mef_ssim_scale(sources, f))
  with np.errstate(invalid="ignore"):
    return np.prod(np.stack(scores) ** MEF_SCALE_WEIGHTS[:, None], axis=0)
