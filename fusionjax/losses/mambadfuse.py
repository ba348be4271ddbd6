"""MambaDFuse's training loss."""

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from fusionjax.losses.terms import (
  Loss,
  Terms,
  max_gradient_l1,
  max_intensity_l1,
  sobel_gradient,
  ssim,
)
from fusionjax.shapes import Planes


def mambadfuse_loss(
  a: Planes,
  b: Planes,
  fused: Planes,
  *,
  intensity_weight: float,
  gradient_weight: float,
  ssim_weight: float,
  ssim_weighting: Literal["gradient", "equal"],
) -> tuple[jax.Array, Terms]:
  """MambaDFuse's loss (its loss_vif.py / loss_med.py, SwinFusion's without the TV term).

  intensity = mean |F - max(A, B)|; gradient = `max_gradient_l1`;
  ssim = 1 - (w_A SSIM(A, F) + w_B SSIM(B, F)) with `ssim`, where for "gradient" weighting
  (VIF) w_A = mean S(A) / (mean S(A) + mean S(B)) over the whole batch and w_B = 1 - w_A
  (0.5 each if both sources are flat), and for "equal" (medical) w_A = w_B = 0.5.
  The code's weights are (20, 20, 10) for VIF and (20, 100, 50) for medical pairs.

  a: IR / MRI, b: visible Y / CT / PET-Y / SPECT-Y.
  Returns (total, {"intensity", "gradient", "ssim"}).
  """
  if ssim_weighting == "gradient":
    detail_a, detail_b = jnp.mean(sobel_gradient(a)), jnp.mean(sobel_gradient(b))
    total_detail = detail_a + detail_b
    weight_a = jnp.where(
      total_detail > 0, detail_a / jnp.where(total_detail > 0, total_detail, 1.0), 0.5
    )
  elif ssim_weighting == "equal":
    weight_a = 0.5
  else:
    raise ValueError(f"ssim_weighting must be 'gradient' or 'equal', got {ssim_weighting!r}")
  terms = {
    "intensity": max_intensity_l1(a, b, fused),
    "gradient": max_gradient_l1(a, b, fused),
    "ssim": 1 - (weight_a * ssim(a, fused) + (1 - weight_a) * ssim(b, fused)),
  }
  total = (
    intensity_weight * terms["intensity"]
    + gradient_weight * terms["gradient"]
    + ssim_weight * terms["ssim"]
  )
  return total, terms


def make_loss(**weights) -> Loss:
  """The loss of a config's `loss` section: `mambadfuse_loss` with the section's fields."""
  return functools.partial(mambadfuse_loss, **weights)
