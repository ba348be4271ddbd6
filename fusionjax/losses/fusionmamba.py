"""FusionMamba's training loss."""

import functools

import jax
import jax.numpy as jnp

from fusionjax.losses.terms import Loss, Terms, max_gradient_l1, ms_ssim
from fusionjax.shapes import Planes


def fusionmamba_loss(
  a: Planes,
  b: Planes,
  fused: Planes,
  *,
  intensity_weight: float,
  gradient_weight: float,
  ssim_weight: float,
) -> tuple[jax.Array, Terms]:
  """FusionMamba's loss (its loss.py): the output is clamped to [0, 1] first, then

  intensity = mean (F - max(A, B))^2 (MSE); gradient = `max_gradient_l1`;
  ssim = 0.5 (1 - MS-SSIM(F, A)) + 0.5 (1 - MS-SSIM(F, B)) with `ms_ssim`.
  Paper / pre-2024-08 code weights (intensity, gradient, ssim) = (100, 10, 1); HEAD's
  "CT-MRI" setting (10, 1, 10).

  a: visible Y / MRI, b: IR / CT / PET / SPECT / GFP; H, W >= 16.
  Returns (total, {"intensity", "gradient", "ssim"}).
  """
  fused = jnp.clip(fused, 0.0, 1.0)
  terms = {
    "intensity": jnp.mean((fused - jnp.maximum(a, b)) ** 2),
    "gradient": max_gradient_l1(a, b, fused),
    "ssim": 0.5 * (1 - ms_ssim(fused, a)) + 0.5 * (1 - ms_ssim(fused, b)),
  }
  total = (
    intensity_weight * terms["intensity"]
    + gradient_weight * terms["gradient"]
    + ssim_weight * terms["ssim"]
  )
  return total, terms


def make_loss(**weights) -> Loss:
  """The loss of a config's `loss` section: `fusionmamba_loss` with the section's fields."""
  return functools.partial(fusionmamba_loss, **weights)
