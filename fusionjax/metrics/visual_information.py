"""VIF as the fusion papers use it: Sheikh-Bovik multi-scale pixel-domain VIF, summed over the
sources.

Both reference code bases compute ``vifp_mscale(S, F)`` (reference = a source,
distorted = the fused image) and report VIF(A -> F) + VIF(B -> F).  It is not
Han et al.'s VIFF (2013), although the Python evaluator names it so.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from fusionjax.metrics.inputs import Convention
from fusionjax.metrics.windows import (
  filter_valid,
  filter_valid_wide,
  gaussian_taps,
  moment_stack,
  row_strips,
)
from fusionjax.shapes import GreyStack

NOISE_VARIANCE = 2.0  # sigma_n^2; ties the metric to 0..255 data
_EPS = 1e-10
SCALES = 4
MIN_SIDE = 41  # smallest side for which the coarsest 3x3 window still fits


@functools.lru_cache(maxsize=SCALES)
def _window_taps(scale: int) -> tuple[float, ...]:
  """Scale s (1..4) uses an N = 2^(5 - s) + 1 Gaussian window with sigma = N / 5."""
  size = 2 ** (SCALES + 1 - scale) + 1
  return tuple(float(tap) for tap in gaussian_taps(size, size / 5.0))


def _information_terms(
  ref_mean, ref_square_mean, dist_mean, dist_square_mean, cross_mean, valid_width: int
) -> tuple[np.ndarray, np.ndarray]:
  """Per-image sums of log10(1 + g^2 s1 / (sv + sn)) and log10(1 + s1 / sn) for one scale,
  over the first ``valid_width`` columns of the local moments.

  Clamping follows the reference, in its order: negative variances -> 0;
  g = s12 / (s1 + 1e-10), sv = s2 - g s12; where s1 < 1e-10: g = 0, sv = s2,
  s1 = 0; where s2 < 1e-10: g = 0, sv = 0; where g < 0: sv = s2, g = 0;
  sv floored at 1e-10.  Where g ends up 0 the first term is 0 whatever sv
  is, so g = max(g, 0) on the pixels with s1, s2 >= 1e-10 and 0 elsewhere,
  and sv = max(s2 - g s12, 1e-10), give the same sums.  The inputs are
  overwritten.
  """
  sigma1_sq = np.subtract(ref_square_mean, ref_mean * ref_mean, out=ref_square_mean)
  np.maximum(sigma1_sq, 0.0, out=sigma1_sq)
  sigma2_sq = np.subtract(dist_square_mean, dist_mean * dist_mean, out=dist_square_mean)
  np.maximum(sigma2_sq, 0.0, out=sigma2_sq)
  ref_mean *= dist_mean
  sigma12 = np.subtract(cross_mean, ref_mean, out=cross_mean)

  gain = np.add(sigma1_sq, _EPS, out=ref_mean)
  np.divide(sigma12, gain, out=gain)
  np.maximum(gain, 0.0, out=gain)
  flat_ref = sigma1_sq < _EPS
  np.copyto(gain, 0.0, where=flat_ref)
  np.copyto(gain, 0.0, where=sigma2_sq < _EPS)
  np.copyto(sigma1_sq, 0.0, where=flat_ref)

  sigma12 *= gain
  noise = np.subtract(sigma2_sq, sigma12, out=sigma12)
  np.maximum(noise, _EPS, out=noise)
  noise += NOISE_VARIANCE
  gain *= gain
  gain *= sigma1_sq
  gain /= noise
  gain += 1.0
  gain[..., valid_width:] = 1.0
  reference = np.multiply(sigma1_sq, 1.0 / NOISE_VARIANCE, out=noise)
  reference += 1.0
  reference[..., valid_width:] = 1.0
  return _log10_sum(gain), _log10_sum(reference)


def _log10_sum(terms: np.ndarray) -> np.ndarray:
  """Sum of log10 over the last two axes of a C-contiguous array (overwritten), taken as the
  logs of products of 8 terms: 8 times fewer logarithms.

  Both terms of VIF lie in [1, 1 + 127.5^2 / sn] (a variance of 0..255 data is
  at most 127.5^2, and g^2 s1 <= s2), so a product of up to 11 of them stays
  below 1e44, far from overflow.
  """
  flat = terms.reshape(terms.shape[:-2] + (-1,))
  size = flat.shape[-1]
  for _ in range(3):
    if size < 2:
      break
    half = size // 2
    if size % 2:
      flat[..., 0] *= flat[..., size - 1]
    np.multiply(flat[..., :half], flat[..., half : 2 * half], out=flat[..., :half])
    size = half
  return np.log10(flat[..., :size]).sum(axis=-1)


def _scale_information(stack: np.ndarray, taps: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
  """Information sums of one scale over the 'valid' windows of a :func:`moment_stack` of
  references and F.  Returns (references, batch) each."""
  count = (stack.shape[0] - 2) // 3
  moments = filter_valid_wide(stack, taps)
  return _information_terms(
    ref_mean=moments[:count],
    ref_square_mean=moments[count + 1 : 2 * count + 1],
    dist_mean=moments[count],
    dist_square_mean=moments[2 * count + 1],
    cross_mean=moments[2 * count + 2 :],
    valid_width=stack.shape[-1] - len(taps) + 1,
  )


def vif_per_source_batch(
  sources: Sequence[GreyStack],
  f: GreyStack,
  convention: Convention = "python",
) -> np.ndarray:
  """vifp_mscale(S_k -> F) for each source of each image.

  Args:
    sources: reference images on 0..255, each a ``GreyStack`` like f.
    f: fused (distorted) images, a ``GreyStack``.
    convention: "python" returns 1.0 where the ratio is NaN (0/0, e.g. a
      constant source); "matlab" keeps the NaN.
  Returns:
    (sources, batch) float64.

  At scale s > 1 every image is first filtered 'valid' with that scale's
  window and decimated by 2; the local means and one-pass variances of each
  scale use that window 'valid' as well, computed strip by strip of rows.
  """
  images = [*sources, f]
  numerator = np.zeros((len(sources), f.shape[0]))
  denominator = np.zeros((len(sources), f.shape[0]))
  for scale in range(1, SCALES + 1):
    taps = _window_taps(scale)
    if scale > 1:
      images = [filter_valid(image, taps, step=2) for image in images]
    for rows in row_strips((len(images),) + images[0].shape, len(taps)):
      strip_numerator, strip_denominator = _scale_information(
        moment_stack([image[..., rows, :] for image in images]), taps
      )
      numerator += strip_numerator
      denominator += strip_denominator
  with np.errstate(invalid="ignore", divide="ignore"):
    ratio = numerator / denominator
  if convention == "python":
    ratio = np.where(np.isnan(ratio), 1.0, ratio)
  return ratio


def vif_batch(
  a: GreyStack, b: GreyStack, f: GreyStack, convention: Convention = "python"
) -> np.ndarray:
  """VIF(A -> F) + VIF(B -> F) for ``GreyStack``s -> (batch,).

  sigma_n^2 = 2; four scales with Gaussian windows 17, 9, 5, 3 (sigma = N/5).
  Images must be at least 41x41.
  """
  return vif_per_source_batch([a, b], f, convention).sum(axis=0)
