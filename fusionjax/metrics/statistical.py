"""Global intensity statistics: SD, MSE, PSNR, CC and SCD.

Every function takes ``fusionjax.shapes.GreyStack``s (float64) and returns one value per
image, shape (batch,).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusionjax.metrics.inputs import GREY_MAX, Convention
from fusionjax.metrics.windows import row_strips
from fusionjax.shapes import GreyStack

_AXES = (-2, -1)


STATISTICS: tuple[str, ...] = ("SD", "CC", "SCD", "MSE", "PSNR")


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-image sum of x * y over the last two axes, (batch, h, w) each -> (batch,)."""
  return np.einsum("...ij,...ij->...", x, y)


def statistics_batch(
  a: GreyStack,
  b: GreyStack,
  f: GreyStack,
  names: Sequence[str] = STATISTICS,
  convention: Convention = "python",
) -> dict[str, np.ndarray]:
  """The global-statistics metrics ``names`` (from SD, CC, SCD, MSE, PSNR) of ``GreyStack``s,
  each (batch,): the means of A, B, F, then one pass over the images, strip by
  strip of rows, for their (centred) sums of products.

  Every statistic is the two-pass formula the references use (centre, then
  sum products); the mean of F - A is (sum F - sum A) / (H W), exactly
  the mean of the differences for integer-valued images (all sums exact).
  """
  names = set(names)
  centred_images = names & {"SD", "CC", "SCD"}
  count = f.shape[-2] * f.shape[-1]
  totals: dict[str, np.ndarray] = {}
  peak = np.zeros(f.shape[:-2])

  def accumulate(key: str, value: np.ndarray) -> None:
    totals[key] = totals[key] + value if key in totals else value

  if centred_images:
    sums = {"a": a.sum(axis=_AXES), "b": b.sum(axis=_AXES), "f": f.sum(axis=_AXES)}
    sums["f-a"], sums["f-b"] = sums["f"] - sums["a"], sums["f"] - sums["b"]
    means = {key: (total / count)[:, None, None] for key, total in sums.items()}
  for rows in row_strips((3,) + f.shape, 1):
    a_rows, b_rows, f_rows = a[..., rows, :], b[..., rows, :], f[..., rows, :]
    if centred_images:
      f_centred = f_rows - means["f"]
      accumulate("ff", _dot(f_centred, f_centred))
    if names & {"CC", "SCD"}:
      a_centred, b_centred = a_rows - means["a"], b_rows - means["b"]
      accumulate("aa", _dot(a_centred, a_centred))
      accumulate("bb", _dot(b_centred, b_centred))
    if "CC" in names:
      accumulate("af", _dot(a_centred, f_centred))
      accumulate("bf", _dot(b_centred, f_centred))
    if names & {"SCD", "MSE", "PSNR"}:
      f_minus_a, f_minus_b = f_rows - a_rows, f_rows - b_rows
    if names & {"MSE", "PSNR"}:
      accumulate("mse", _dot(f_minus_a, f_minus_a))
      accumulate("mse", _dot(f_minus_b, f_minus_b))
    if "PSNR" in names:
      np.maximum(peak, f_rows.max(axis=_AXES), out=peak)
    if "SCD" in names:
      f_minus_a -= means["f-a"]
      f_minus_b -= means["f-b"]
      accumulate("(f-b)a", _dot(f_minus_b, a_centred))
      accumulate("(f-b)(f-b)", _dot(f_minus_b, f_minus_b))
      accumulate("(f-a)b", _dot(f_minus_a, b_centred))
      accumulate("(f-a)(f-a)", _dot(f_minus_a, f_minus_a))
  results = {}
  with np.errstate(divide="ignore", invalid="ignore"):
    if "SD" in names:
      results["SD"] = np.sqrt(totals["ff"] / count)
    if "CC" in names:
      results["CC"] = (
        totals["af"] / np.sqrt(totals["aa"] * totals["ff"])
        + totals["bf"] / np.sqrt(totals["bb"] * totals["ff"])
      ) / 2.0
    if "SCD" in names:
      results["SCD"] = totals["(f-b)a"] / np.sqrt(totals["(f-b)(f-b)"] * totals["aa"]) + totals[
        "(f-a)b"
      ] / np.sqrt(totals["(f-a)(f-a)"] * totals["bb"])
    if names & {"MSE", "PSNR"}:
      mse = totals["mse"] / (2.0 * count)
    if "MSE" in names:
      results["MSE"] = mse / (GREY_MAX * GREY_MAX) if convention == "matlab" else mse
    if "PSNR" in names:
      if convention == "matlab":
        results["PSNR"] = 20.0 * np.log10(GREY_MAX / np.sqrt(mse / (GREY_MAX * GREY_MAX)))
      else:
        results["PSNR"] = 10.0 * np.log10(peak * peak / mse)
  return results


def standard_deviation_batch(f: GreyStack) -> np.ndarray:
  """SD: population standard deviation of F (divide by H*W), 0..255 scale."""
  return statistics_batch(f, f, f, ["SD"])["SD"]


def mean_squared_error_batch(
  a: GreyStack, b: GreyStack, f: GreyStack, convention: Convention = "python"
) -> np.ndarray:
  """MSE: [mean((A - F)^2) + mean((B - F)^2)] / 2.

  convention="python" works on the 0..255 scale; "matlab" on 0..1, i.e. the
  python value divided by 255^2.
  """
  return statistics_batch(a, b, f, ["MSE"], convention)["MSE"]


def psnr_batch(
  a: GreyStack, b: GreyStack, f: GreyStack, convention: Convention = "python"
) -> np.ndarray:
  """PSNR in dB from the python-convention MSE (0..255 scale).

  convention="python": 10 log10(max(F)^2 / MSE) -- the peak is max(F), not 255.
  convention="matlab": 20 log10(255 / sqrt(MSE / 255^2)), the toolbox's
    formula, which is the usual 255-peak PSNR plus 20 log10(255) = 48.13 dB.
  Identical images give +inf.
  """
  return statistics_batch(a, b, f, ["PSNR"], convention)["PSNR"]


def correlation_coefficient_batch(a: GreyStack, b: GreyStack, f: GreyStack) -> np.ndarray:
  """CC: [r(A, F) + r(B, F)] / 2 with Pearson r; NaN if an image is constant."""
  return statistics_batch(a, b, f, ["CC"])["CC"]


def scd_batch(a: GreyStack, b: GreyStack, f: GreyStack) -> np.ndarray:
  """SCD (Aslantas & Bendes 2015): r(F - B, A) + r(F - A, B).

  NaN when F equals a source (the difference image is constant), as in both
  reference code bases.
  """
  return statistics_batch(a, b, f, ["SCD"])["SCD"]
