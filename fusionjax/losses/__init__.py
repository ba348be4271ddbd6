"""Training losses: the shared terms, and one module per paper (its loss as its official code
computes it; docs/architectures.md gives each paper's loss section).

Every loss maps (a, b, fused), each `fusionjax.shapes.Planes`, to (total, {term: value})
scalars.
"""

from fusionjax.losses.fusionmamba import fusionmamba_loss
from fusionjax.losses.mambadfuse import mambadfuse_loss
from fusionjax.losses.terms import (
  Terms,
  filter2d,
  gaussian_window,
  max_gradient_l1,
  max_intensity_l1,
  ms_ssim,
  sobel_gradient,
  ssim,
)

__all__ = [
  "Terms",
  "filter2d",
  "fusionmamba_loss",
  "gaussian_window",
  "mambadfuse_loss",
  "max_gradient_l1",
  "max_intensity_l1",
  "ms_ssim",
  "sobel_gradient",
  "ssim",
]
