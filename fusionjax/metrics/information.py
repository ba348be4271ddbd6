"""Histogram metrics: entropy (EN) and mutual information (MI).

Both count grey levels, so every image is first rounded to integers 0..255
(:func:`fusionjax.metrics.inputs.quantise`).  For integer-valued inputs, which
is what the reference pipelines feed them (8-bit PNGs read back), the results
equal the references; for a float F they are the metrics of round(F), where the
Python reference would instead treat every distinct float as its own bin.
"""

from __future__ import annotations

import numpy as np

from fusionjax.metrics.inputs import Convention, quantise
from fusionjax.shapes import GreyStack

GREY_LEVELS = 256


def _histograms(levels: np.ndarray) -> np.ndarray:
  """Per-image counts of each grey level: (batch, H, W) int -> (batch, 256) float64."""
  offsets = np.arange(levels.shape[0])[:, None] * GREY_LEVELS
  flat = (levels.reshape(levels.shape[0], -1) + offsets).ravel()
  counts = np.bincount(flat, minlength=levels.shape[0] * GREY_LEVELS)
  return counts.reshape(levels.shape[0], GREY_LEVELS).astype(np.float64)


def _joint_histograms(first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """Per-image joint counts: two (batch, H, W) int stacks -> (batch, 256, 256) float64,
  [first, second]."""
  count = first.shape[0]
  cells = GREY_LEVELS * GREY_LEVELS
  offsets = np.arange(count)[:, None] * cells
  flat = (first.reshape(count, -1) * GREY_LEVELS + second.reshape(count, -1) + offsets).ravel()
  counts = np.bincount(flat, minlength=count * cells)
  return counts.reshape(count, GREY_LEVELS, GREY_LEVELS).astype(np.float64)


def _entropy_of_counts(counts: np.ndarray, log) -> np.ndarray:
  """-sum p log p over the non-empty bins; counts (batch, ...) -> (batch,)."""
  flat = counts.reshape(counts.shape[0], -1)
  probabilities = flat / flat.sum(axis=1, keepdims=True)
  safe = np.where(probabilities > 0, probabilities, 1.0)
  return -(probabilities * log(safe)).sum(axis=1)


def entropy_batch(f: GreyStack) -> np.ndarray:
  """EN in bits of each image of a ``GreyStack`` -> (batch,).

  -sum p log2 p over the 256-bin histogram of round(F); identical in both
  reference code bases.
  """
  return _entropy_of_counts(_histograms(quantise(f)), np.log2)


def _mutual_information_nats(first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """Plug-in MI in nats of the joint 256x256 histogram, clipped at 0 as sklearn does."""
  joint = _joint_histograms(first, second)
  total = joint.sum(axis=(1, 2), keepdims=True)
  p_joint = joint / total
  p_first = p_joint.sum(axis=2, keepdims=True)
  p_second = p_joint.sum(axis=1, keepdims=True)
  independent = p_first * p_second
  occupied = p_joint > 0
  ratio = np.where(occupied, p_joint / np.where(occupied, independent, 1.0), 1.0)
  terms = np.where(occupied, p_joint * np.log(ratio), 0.0)
  return np.maximum(terms.sum(axis=(1, 2)), 0.0)


def _mutual_information_matlab_bits(fused: np.ndarray, source: np.ndarray) -> np.ndarray:
  """H(S) + H(F) - H(F, S) in bits, with levels 254 and 255 merged in the joint histogram only.

  The merge reproduces the toolbox's ``Hab.m``, which indexes its 256x256
  count with ``value + 1`` in saturating uint8 arithmetic.
  """
  merged_fused = np.minimum(fused, GREY_LEVELS - 2)
  merged_source = np.minimum(source, GREY_LEVELS - 2)
  joint_entropy = _entropy_of_counts(_joint_histograms(merged_fused, merged_source), np.log2)
  fused_entropy = _entropy_of_counts(_histograms(fused), np.log2)
  source_entropy = _entropy_of_counts(_histograms(source), np.log2)
  return source_entropy + fused_entropy - joint_entropy


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
  levels_a, levels_b, levels_f = quantise(a), quantise(b), quantise(f)
  if convention == "matlab":
    return _mutual_information_matlab_bits(levels_f, levels_a) + _mutual_information_matlab_bits(
      levels_f, levels_b
    )
  return _mutual_information_nats(levels_f, levels_a) + _mutual_information_nats(levels_f, levels_b)
