"""FMI: feature mutual information (Haghighat & Razian's "fast-FMI"), as the MATLAB toolbox
computes it.

Every w x w window fully inside the feature maps is scored for each pair
(A, F) and (B, F):

* identical raw windows score 1;
* otherwise each window is min-max normalised (a constant window becomes all
  ones) and divided by its sum, giving a w^2-bin "pdf" in column-major order,
  whose cumulative sum is the "cdf";
* c is the Pearson correlation of the two pdfs; the joint pdf mixes the
  Frechet upper bound min(F_i, S_j) (c >= 0) or lower bound
  max(F_i + S_j - 1, 0) (c < 0), weight c / (bound correlation), with the
  independent product (weight 0 when c = 0 or a pdf has zero spread over the
  bin indices 1..w^2), differenced on the grid;
* joint entropy -sum p log2|p| (negative p occur; MATLAB keeps the real part);
  MI = H_S + H_F - H_joint; score 2 MI / (H_S + H_F), or 0 when MI = 0.

A window's value is the mean of its two scores and FMI is the mean over all
windows.  The short sums that decide exact-zero branches (pdf normalisation,
means, correlations, spreads) are taken left to right as MATLAB's loops do,
since the branch taken for two uniform pdfs depends on that rounding.

Toolbox quirk kept: the fused window is replaced by its normalised version in
the A pass, so the B pass's "identical" test compares B's raw window with that
(unless the A pass found A and F identical).

Feature maps: "pixel" (the toolbox's 'none': raw grey levels), "dct" (``dct2``
of the whole image, then windowed) and "gradient" (MATLAB ``gradient(x)`` with
one output: the x-derivative only).  The toolbox's default 'edge' (its column
labelled "FMI_pixel") needs MATLAB's ``edge`` thinning, and 'wavelet' its
102-tap dmey filter; neither is offered, since neither can be reproduced
without MATLAB to check against.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft

FEATURES: tuple[str, ...] = ("pixel", "dct", "gradient")
_CHUNK_WINDOWS = 8192


def feature_map(image: np.ndarray, feature: str) -> np.ndarray:
  """The toolbox's feature map of one (H, W) float64 image, same shape."""
  if feature == "pixel":
    return image
  if feature == "dct":
    return fft.dctn(image, type=2, norm="ortho")
  if feature == "gradient":
    return np.gradient(image, axis=-1)
  raise ValueError(f"feature must be one of {FEATURES}; got {feature!r}")


def _column_major_windows(feature: np.ndarray, size: int) -> np.ndarray:
  """All size x size windows of an (H, W) map, each flattened column by column: (n, size^2)."""
  windows = sliding_window_view(feature, (size, size))
  return np.swapaxes(windows, -1, -2).reshape(-1, size * size)


def _normalise(windows: np.ndarray) -> np.ndarray:
  """Min-max normalises each row of (n, L) to 0..1; constant rows become ones."""
  low = windows.min(axis=1, keepdims=True)
  high = windows.max(axis=1, keepdims=True)
  constant = high == low
  return np.where(constant, 1.0, (windows - low) / np.where(constant, 1.0, high - low))


def _entropy_bits(probabilities: np.ndarray, axes) -> np.ndarray:
  """-sum p log2|p| over the non-zero entries."""
  nonzero = probabilities != 0
  magnitude = np.where(nonzero, np.abs(probabilities), 1.0)
  return -(probabilities * np.log2(magnitude)).sum(axis=axes)


def _grid_difference(cumulative: np.ndarray) -> np.ndarray:
  """Mass of each cell of a bivariate distribution given on the grid: (n, L, L) -> (n, L, L)."""
  padded = np.pad(cumulative, ((0, 0), (1, 0), (1, 0)))
  return padded[:, 1:, 1:] - padded[:, :-1, 1:] - padded[:, 1:, :-1] + padded[:, :-1, :-1]


def _sequential_sum(values: np.ndarray) -> np.ndarray:
  """Sum along axis 1 strictly left to right, as MATLAB's loops and short ``sum`` calls round.

  Exact-zero tests decide branches here: two uniform pdfs have a Pearson
  correlation of 0/0 in exact arithmetic, and MATLAB's rounding of
  ``mean`` makes it 1.  NumPy's pairwise sums round differently.
  """
  total = values[:, 0].copy()
  for column in range(1, values.shape[1]):
    total += values[:, column]
  return total


def _window_sum(windows: np.ndarray, size: int) -> np.ndarray:
  """MATLAB ``sum(sum(window))`` of column-major flattened windows (n, size^2) -> (n,)."""
  column_sums = [_sequential_sum(windows[:, j * size : (j + 1) * size]) for j in range(size)]
  return _sequential_sum(np.stack(column_sums, axis=1))


def _normalised_feature_mi(source: np.ndarray, fused: np.ndarray, size: int) -> np.ndarray:
  """2 MI / (H_S + H_F) of each pair of normalised windows, (n, size^2) each -> (n,)."""
  bins = source.shape[1]
  source_pdf = source / _window_sum(source, size)[:, None]
  fused_pdf = fused / _window_sum(fused, size)[:, None]
  source_cdf = np.cumsum(source_pdf, axis=1)
  fused_cdf = np.cumsum(fused_pdf, axis=1)

  source_centred = source_pdf - (_sequential_sum(source_pdf) / bins)[:, None]
  fused_centred = fused_pdf - (_sequential_sum(fused_pdf) / bins)[:, None]
  covariance = _sequential_sum(source_centred * fused_centred)
  spread = np.sqrt(_sequential_sum(source_centred**2) * _sequential_sum(fused_centred**2))
  with np.errstate(divide="ignore", invalid="ignore"):
    correlation = np.where(covariance == 0, 0.0, covariance / spread)

  bin_index = np.arange(1, bins + 1, dtype=np.float64)

  def population_sd(pdf):
    mean = _sequential_sum(bin_index * pdf)
    return np.sqrt(np.maximum(_sequential_sum(bin_index * bin_index * pdf) - mean * mean, 0.0))

  source_sd, fused_sd = population_sd(source_pdf), population_sd(fused_pdf)

  f_cdf = fused_cdf[:, :, None]  # rows i: fused
  s_cdf = source_cdf[:, None, :]  # columns j: source
  upper = 0.5 * (f_cdf + s_cdf - np.abs(f_cdf - s_cdf))
  lower = 0.5 * (f_cdf + s_cdf - 1.0 + np.abs(f_cdf + s_cdf - 1.0))
  positive = correlation >= 0
  bound = np.where(positive[:, None, None], upper, lower)
  independent_cdf = f_cdf * s_cdf
  bound_cov = (bound - independent_cdf).sum(axis=(1, 2))
  degenerate = (source_sd == 0) | (fused_sd == 0) | (positive & (correlation == 0))
  with np.errstate(divide="ignore", invalid="ignore"):
    bound_corr = bound_cov / (fused_sd * source_sd)
    mix = np.where(degenerate, 0.0, correlation / bound_corr)

  mix = mix[:, None, None]
  joint_pdf = (
    mix * _grid_difference(bound) + ((1.0 - mix) * fused_pdf[:, :, None]) * source_pdf[:, None, :]
  )
  joint_entropy = _entropy_bits(joint_pdf, axes=(1, 2))
  source_entropy = _entropy_bits(source_pdf, axes=1)
  fused_entropy = _entropy_bits(fused_pdf, axes=1)
  mutual_information = source_entropy + fused_entropy - joint_entropy
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(
      mutual_information == 0, 0.0, 2.0 * mutual_information / (source_entropy + fused_entropy)
    )


def _window_scores(
  a_windows: np.ndarray, b_windows: np.ndarray, f_windows: np.ndarray, size: int
) -> np.ndarray:
  """(score_AF + score_BF) / 2 for raw size x size windows, flattened (n, size^2) each -> (n,)."""
  a_equal = np.all(a_windows == f_windows, axis=1)
  f_normalised = _normalise(f_windows)
  f_seen_by_b = np.where(a_equal[:, None], f_windows, f_normalised)
  b_equal = np.all(b_windows == f_seen_by_b, axis=1)
  score_af = np.where(
    a_equal, 1.0, _normalised_feature_mi(_normalise(a_windows), f_normalised, size)
  )
  score_bf = np.where(
    b_equal, 1.0, _normalised_feature_mi(_normalise(b_windows), f_normalised, size)
  )
  return (score_af + score_bf) / 2.0


def fmi_single(
  a: np.ndarray, b: np.ndarray, f: np.ndarray, feature: str = "pixel", window: int = 3
) -> float:
  """FMI of one triple of (H, W) float64 images on 0..255 (see the module docstring).

  Args:
    feature: "pixel", "dct" or "gradient".
    window: odd window side w >= 3 (the toolbox's default is 3); every
      w x w window fully inside the image is scored.
  """
  if window < 3 or window % 2 == 0:
    raise ValueError(f"window must be an odd integer >= 3; got {window!r}")
  maps = [_column_major_windows(feature_map(x, feature), window) for x in (a, b, f)]
  total = 0.0
  for start in range(0, maps[0].shape[0], _CHUNK_WINDOWS):
    chunk = slice(start, start + _CHUNK_WINDOWS)
    total += _window_scores(maps[0][chunk], maps[1][chunk], maps[2][chunk], window).sum()
  return total / maps[0].shape[0]
