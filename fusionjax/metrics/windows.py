"""Local-window filters shared by the windowed metrics (VIF, SSIM, MEF-SSIM).

Every filter works on stacks of shape (..., H, W), filters the last two axes
and keeps float64.  The windows are separable, so a k x k window costs two
1-D passes of k taps instead of k^2 multiplications per pixel; that is where
most of the speed over the reference's ``scipy.signal.convolve2d`` comes from.
Callers stack all the images a metric needs into one array and filter it in
one call.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


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


def filter_valid(images: np.ndarray, taps: np.ndarray) -> np.ndarray:
  """Separable 'valid' correlation, as ``convolve2d(x, rot90(outer(taps, taps), 2), 'valid')``.

  Args:
    images: (..., H, W) float64.
    taps: (k,) with k odd.
  Returns:
    (..., H - k + 1, W - k + 1).
  """
  radius = (len(taps) - 1) // 2
  height, width = images.shape[-2:]
  rows = ndimage.correlate1d(images, taps, axis=-2, mode="nearest")[
    ..., radius : height - radius, :
  ]
  return ndimage.correlate1d(rows, taps, axis=-1, mode="nearest")[..., radius : width - radius]


def filter_same(images: np.ndarray, taps: np.ndarray, mode: str) -> np.ndarray:
  """Separable 'same'-size correlation with the given ``scipy.ndimage`` boundary ``mode``.

  Args:
    images: (..., H, W) float64.
    taps: (k,) with k odd.
    mode: e.g. "nearest" (MATLAB 'replicate'), "reflect" (MATLAB 'symmetric').
  Returns:
    (..., H, W).
  """
  rows = ndimage.correlate1d(images, taps, axis=-2, mode=mode)
  return ndimage.correlate1d(rows, taps, axis=-1, mode=mode)


def box_valid(images: np.ndarray, size: int) -> np.ndarray:
  """Mean over every size x size window fully inside the image ('valid'), size odd.

  Uses ``uniform_filter1d``'s running sums (the filter scikit-image's SSIM
  uses), whose cost does not grow with the window.

  Args:
    images: (..., H, W) float64.
  Returns:
    (..., H - size + 1, W - size + 1).
  """
  radius = (size - 1) // 2
  height, width = images.shape[-2:]
  rows = ndimage.uniform_filter1d(images, size, axis=-2)[..., radius : height - radius, :]
  return ndimage.uniform_filter1d(rows, size, axis=-1)[..., radius : width - radius]
