"""Global intensity statistics: SD, MSE, PSNR, CC and SCD.

Every function takes ``fusionjax.shapes.GreyStack``s (float64) and returns one value per
image, shape (batch,).
"""

from __future__ import annotations

import numpy as np

from fusionjax.metrics.inputs import GREY_MAX, Convention
from fusionjax.shapes import GreyStack

_AXES = (-2, -1)


def standard_deviation_batch(f: GreyStack) -> np.ndarray:
  """SD: population standard deviation of F (divide by H*W), 0..255 scale."""
  return f.std(axis=_AXES)


def mean_squared_error_batch(
  a: GreyStack, b: GreyStack, f: GreyStack, convention: Convention = "python"
) -> np.ndarray:
  """MSE: [mean((A - F)^2) + mean((B - F)^2)] / 2.

  convention="python" works on the 0..255 scale; "matlab" on 0..1, i.e. the
  python value divided by 255^2.
  """
  mse = (np.mean((a - f) ** 2, axis=_AXES) + np.mean((b - f) ** 2, axis=_AXES)) / 2.0
  if convention == "matlab":
    return mse / (GREY_MAX * GREY_MAX)
  return mse


def psnr_batch(
  a: GreyStack, b: GreyStack, f: GreyStack, convention: Convention = "python"
) -> np.ndarray:
  """PSNR in dB from the python-convention MSE (0..255 scale).

  convention="python": 10 log10(max(F)^2 / MSE) -- the peak is max(F), not 255.
  convention="matlab": 20 log10(255 / sqrt(MSE / 255^2)), the toolbox's
    formula, which is the usual 255-peak PSNR plus 20 log10(255) = 48.13 dB.
  Identical images give +inf.
  """
  mse = mean_squared_error_batch(a, b, f)
  with np.errstate(divide="ignore"):
    if convention == "matlab":
      return 20.0 * np.log10(GREY_MAX / np.sqrt(mse / (GREY_MAX * GREY_MAX)))
    peak = f.max(axis=_AXES)
    return 10.0 * np.log10(peak * peak / mse)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Pearson correlation of each pair of images; NaN where either is constant."""
  x_centred = x - x.mean(axis=_AXES, keepdims=True)
  y_centred = y - y.mean(axis=_AXES, keepdims=True)
  numerator = (x_centred * y_centred).sum(axis=_AXES)
  denominator = np.sqrt((x_centred**2).sum(axis=_AXES) * (y_centred**2).sum(axis=_AXES))
  with np.errstate(divide="ignore", invalid="ignore"):
    return numerator / denominator


def correlation_coefficient_batch(a: GreyStack, b: GreyStack, f: GreyStack) -> np.ndarray:
  """CC: [r(A, F) + r(B, F)] / 2 with Pearson r; NaN if an image is constant."""
  return (_pearson(a, f) + _pearson(b, f)) / 2.0


def scd_batch(a: GreyStack, b: GreyStack, f: GreyStack) -> np.ndarray:
  """SCD (Aslantas & Bendes 2015): r(F - B, A) + r(F - A, B).

  NaN when F equals a source (the difference image is constant), as in both
  reference code bases.
  """
  return _pearson(f - b, a) + _pearson(f - a, b)
