"""FusionMamba's training loss."""

import jax
import jax.numpy as jnp

from fusionjax.losses.terms import Terms, max_gradient_l1, max_intensity_l1, ms_ssim


def fusionmamba_loss(a: jax.Array, b: jax.Array, fused: jax.Array, *, intensity_weight: float,
                     gradient_weight: float, ssim_weight: float) -> tuple[jax.Array, Terms]:
  """FusionMamba's loss (its loss.py): the output is clamped to [0, 1] first, then

  intensity = mean (F - max(A, B))^2 (MSE); gradient = `max_gradient_l1`;
  ssim = 0.5 (1 - MS-SSIM(F, A)) + 0.5 (1 - MS-SSIM(F, B)) with `ms_ssim`.
  Paper / pre-2024-08 code weights (intensity, gradient, ssim) = (100, 10, 1); HEAD's
  "CT-MRI" setting (10, 1, 10).

  a: visible Y / MRI, b: IR / CT / PET / SPECT / GFP, fused: (batch, H, W, 1), H, W >= 16.
  Returns (total, {"intensity", "gradient", "ssim"}).
  """
  fused = jnp.clip(fused, 0.0, 1.0)
  terms = {
      "intensity": jnp.mean((fused - jnp.maximum(a, b)) ** 2),
      "gradient": max_gradient_l1(a, b, fused),
      "ssim": 0.5 * (1 - ms_ssim(fused, a)) + 0.5 * (1 - ms_ssim(fused, b)),
  }
  total = (intensity_weight * terms["intensity"] + gradient_weight * terms["gradient"]
           + ssim_weight * terms["ssim"])
  return total, terms
