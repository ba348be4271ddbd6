"""VIF as the fusion papers use it: Sheikh-Bovik multi-scale pixel-domain VIF, summed over the
sources.

Both reference code bases compute ``vifp_mscale(S, F)`` (reference = a source,
distorted = the fused image) and report VIF(A -> F) + VIF(B -> F).  It is not
Han et al.'s VIFF (2013), although the Python evaluator names it so.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusionjax.metrics.inputs import Convention
from fusionjax.metrics.windows import filter_valid, gaussian_taps
from fusionjax.shapes import GreyStack

NOISE_VARIANCE = 2.0  # sigma_n^2; ties the metric to 0..255 data
_EPS = 1e-10
SCALES = 4
MIN_SIDE = 41  # smallest side for which the coarsest 3x3 window still fits


def _window_taps(scale: int) -> np.ndarray:
  """Scale s (1..4) uses an N = 2^(5 - s) + 1 Gaussian window with sigma = N / 5."""
  size = 2 ** (SCALES + 1 - scale) + 1
  return gaussian_taps(size, size / 5.0)


def _information_terms(
  ref_mean, ref_square_mean, dist_mean, dist_square_mean, cross_mean
) -> tuple[np.ndarray, np.ndarray]:
  """Per-image sums of log10(1 + g^2 s1 / (sv + sn)) and log10(1 + s1 / sn) for one scale.

  Clamping follows the reference, in its order: negative variances -> 0;
  g = s12 / (s1 + 1e-10), sv = s2 - g s12; where s1 < 1e-10: g = 0, sv = s2,
  s1 = 0; where s2 < 1e-10: g = 0, sv = 0; where g < 0: sv = s2, g = 0;
  sv floored at 1e-10.  The inputs are overwritten.
  """
  sigma1_sq = np.subtract(ref_square_mean, ref_mean * ref_mean, out=ref_square_mean)
  np.maximum(sigma1_sq, 0.0, out=sigma1_sq)
  sigma2_sq = np.subtract(dist_square_mean, dist_mean * dist_mean, out=dist_square_mean)
  np.maximum(sigma2_sq, 0.0, out=sigma2_sq)
  sigma12 = np.subtract(cross_mean, ref_mean * dist_mean, out=cross_mean)

  gain = sigma12 / (sigma1_sq + _EPS)
  noise = sigma2_sq - gain * sigma12

  flat_ref = sigma1_sq < _EPS
  np.copyto(gain, 0.0, where=flat_ref)
  np.copyto(noise, sigma2_sq, where=flat_ref)
  np.copyto(sigma1_sq, 0.0, where=flat_ref)

  flat_dist = np.broadcast_to(sigma2_sq < _EPS, gain.shape)
  np.copyto(gain, 0.0, where=flat_dist)
  np.copyto(noise, 0.0, where=flat_dist)

  negative_gain = gain < 0
  np.copyto(noise, sigma2_sq, where=negative_gain)
  np.copyto(gain, 0.0, where=negative_gain)
  np.maximum(noise, _EPS, out=noise)

  noise += NOISE_VARIANCE
  information = np.log10(1.0 + gain * gain * sigma1_sq / noise).sum(axis=(-2, -1))
  reference_information = np.log10(1.0 + sigma1_sq / NOISE_VARIANCE).sum(axis=(-2, -1))
  return information, reference_information


def _smooth_and_decimate(images: np.ndarray, taps: np.ndarray) -> np.ndarray:
  """``filter_valid(images, taps)[..., ::2, ::2]``, filtering the second axis only at kept rows."""
  radius = (len(taps) - 1) // 2
  height, width = images.shape[-2:]
  rows = ndimage.correlate1d(images, taps, axis=-2, mode="nearest")[
    ..., radius : height - radius : 2, :
  ]
  return ndimage.correlate1d(rows, taps, axis=-1, mode="nearest")[..., radius : width - radius : 2]


def _scale_information(
  images: np.ndarray, taps: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
  """Information sums of one scale over its 'valid' windows.

  images: (sources + 1, batch, h, w), F last. Returns (sources, batch) each.
  """
  refs, dist = images[:count], images[count]
  # Layout: refs, F, refs^2, F^2, refs * F -- filtered in one call.
  products = np.empty((3 * count + 2,) + images.shape[1:])
  products[: count + 1] = images
  np.multiply(images, images, out=products[count + 1 : 2 * count + 2])
  np.multiply(refs, dist, out=products[2 * count + 2 :])
  moments = filter_valid(products, taps)
  return _information_terms(
    ref_mean=moments[:count],
    ref_square_mean=moments[count + 1 : 2 * count + 1],
    dist_mean=moments[count],
    dist_square_mean=moments[2 * count + 1],
    cross_mean=moments[2 * count + 2 :],
  )


def vif_per_source_batch(
  sources: np.ndarray, f: GreyStack, convention: Convention = "python"
) -> np.ndarray:
  """vifp_mscale(S_k -> F) for each source of each image.

  Args:
    sources: (sources, batch, H, W) float64 reference images on 0..255.
    f: fused (distorted) images, a ``GreyStack``.
    convention: "python" returns 1.0 where the ratio is NaN (0/0, e.g. a
      constant source); "matlab" keeps the NaN.
  Returns:
    (sources, batch) float64.

  At scale s > 1 every image is first filtered 'valid' with that scale's
  window and decimated by 2; the local means and one-pass variances of each
  scale use that window 'valid' as well.
  """
  count = sources.shape[0]
  images = np.concatenate([sources, f[None]])  # (sources + 1, batch, H, W): references, then F
  numerator = np.zeros(sources.shape[:2])
  denominator = np.zeros(sources.shape[:2])
  for scale in range(1, SCALES + 1):
    taps = _window_taps(scale)
    if scale > 1:
      images = _smooth_and_decimate(images, taps)
    scale_numerator, scale_denominator = _scale_information(images, taps, count)
    numerator += scale_numerator
    denominator += scale_denominator
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
  return vif_per_source_batch(np.stack([a, b]), f, convention).sum(axis=0)
