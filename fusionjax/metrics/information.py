"""Histogram metrics: entropy (EN) and mutual information (MI).

Both count grey levels, so every image is first rounded to integers 0..255
(:func:`fusionjax.metrics.inputs.quantise`).  For integer-valued inputs, which
is what the reference pipelines feed them (8-bit PNGs read back), the results
equal the references; for a float F they are the metrics of round(F), where the
Python reference would instead treat every distinct float as its own bin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusionjax.metrics.inputs import Convention, quantise
from fusionjax.metrics.windows import row_strips
from fusionjax.shapes import GreyStack

GREY_LEVELS = 256
HISTOGRAM_METRICS: tuple[str, ...] = ("EN", "MI")


def _histograms(levels: np.ndarray) -> np.ndarray:
  """Per-image counts of each grey level: (batch, H, W) int -> (batch, 256) float64."""
  offsets = np.arange(levels.shape[0])[:, None] * GREY_LEVELS
  flat = (levels.reshape(levels.shape[0], -1) + offsets).ravel()
  counts = np.bincount(flat, minlength=levels.shape[0] * GREY_LEVELS)
  return counts.reshape(levels.shape[0], GREY_LEVELS).astype(np.float64)


def _joint_histograms(a: GreyStack, b: GreyStack, f: GreyStack) -> tuple[np.ndarray, np.ndarray]:
  """Per-image joint counts of round(F) (rows) and round(A), round(B) (columns), (batch, 256,
  256) float64 each.

  The cell indices 256 round(F) + round(S) + 256^2 (index of the image) are
  computed strip by strip of rows (in cache) into two index arrays, counted
  at the end.
  """
  batch = f.shape[0]
  cells = GREY_LEVELS * GREY_LEVELS
  offsets = (np.arange(batch, dtype=np.float64) * cells)[:, None, None]
  indices = np.empty((2,) + f.shape, dtype=np.intp)
  for rows in row_strips((3,) + f.shape, 1):
    fused_rows = np.rint(f[..., rows, :])
    fused_rows *= GREY_LEVELS
    if batch > 1:
      fused_rows += offsets
    for index, source in zip(indices, (a, b), strict=True):
      cell = np.rint(source[..., rows, :])
      cell += fused_rows
      index[..., rows, :] = cell
  return tuple(
    np.bincount(index.ravel(), minlength=batch * cells)
    .reshape(batch, GREY_LEVELS, GREY_LEVELS)
    .astype(np.float64)
    for index in indices
  )


def _entropy_of_counts(counts: np.ndarray, log) -> np.ndarray:
  """-sum p log p over the non-empty bins; counts (batch, ...) -> (batch,)."""
  flat = counts.reshape(counts.shape[0], -1)
  probabilities = flat / flat.sum(axis=1, keepdims=True)
  safe = np.where(probabilities > 0, probabilities, 1.0)
  return -(probabilities * log(safe)).sum(axis=1)


def _mutual_information_nats(joint: np.ndarray) -> np.ndarray:
  """Plug-in MI in nats of (batch, 256, 256) joint counts, clipped at 0 as sklearn does; the
  sum runs over the occupied cells only."""
  total = joint.sum(axis=(1, 2))
  p_first = joint.sum(axis=2) / total[:, None]
  p_second = joint.sum(axis=1) / total[:, None]
  image, first, second = np.nonzero(joint)
  p = joint[image, first, second] / total[image]
  terms = p * np.log(p / (p_first[image, first] * p_second[image, second]))
  return np.maximum(np.bincount(image, weights=terms, minlength=joint.shape[0]), 0.0)


def _mutual_information_matlab_bits(joint: np.ndarray) -> np.ndarray:
  """H(S) + H(F) - H(F, S) in bits of (batch, 256, 256) joint counts [F, S], with levels 254
  and 255 merged in the joint histogram only.

  The merge reproduces the toolbox's ``Hab.m``, which indexes its 256x256
  count with ``value + 1`` in saturating uint8 arithmetic.
  """
  merged = joint.copy()
  merged[:, -2] += merged[:, -1]
  merged[:, -1] = 0.0
  merged[:, :, -2] += merged[:, :, -1]
  merged[:, :, -1] = 0.0
  joint_entropy = _entropy_of_counts(merged, np.log2)
  fused_entropy = _entropy_of_counts(joint.sum(axis=2), np.log2)
  source_entropy = _entropy_of_counts(joint.sum(axis=1), np.log2)
  return source_entropy + fused_entropy - joint_entropy


def histogram_metrics_batch(
  a: GreyStack,
  b: GreyStack,
  f: GreyStack,
  names: Sequence[str] = HISTOGRAM_METRICS,
  convention: Convention = "python",
) -> dict[str, np.ndarray]:
  """EN and/or MI (``names``) of ``GreyStack``s, each (batch,); EN comes from the joint
  histograms of MI when both are asked for."""
  if "MI" not in names:
    return {"EN": entropy_batch(f)}
  joints = _joint_histograms(a, b, f)
  if convention == "matlab":
    mutual_information = sum(_mutual_information_matlab_bits(joint) for joint in joints)
  else:
    mutual_information = sum(_mutual_information_nats(joint) for joint in joints)
  results = {"MI": mutual_information}
  if "EN" in names:
    results["EN"] = _entropy_of_counts(joints[0].sum(axis=2), np.log2)
  return results


def entropy_batch(f: GreyStack) -> np.ndarray:
  """EN in bits of each image of a ``GreyStack`` -> (batch,).

  -sum p log2 p over the 256-bin histogram of round(F); identical in both
  reference code bases.
  """
  return _entropy_of_counts(_histograms(quantise(f)), np.log2)


def mutual_information_batch(
  a: GreyStack, b: GreyStack, f: GreyStack, convention: Convention = "python"
) -> np.ndarray:
  """MI(F; A) + MI(F; B) for ``GreyStack``s -> (batch,).

  convention="python": ``sklearn.metrics.mutual_info_score`` of the rounded
    images, i.e. the plug-in MI of the 256x256 joint histogram in **nats**,
    each term clipped at 0.
  convention="matlab": Tang's toolbox, in **bits**, with gray levels 254 and
    255 merged in the joint histogram (so it exceeds python / ln 2 slightly
    when such pixels exist).
  """
  return histogram_metrics_batch(a, b, f, ["MI"], convention)["MI"]
