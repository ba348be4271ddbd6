"""FusionMamba's learnable descriptive convolution (LDC), as the official code computes it.

A full 3x3 convolution, no bias, zero padding 1, whose centre tap is rescaled:

    W'[:, :, centre] = W[:, :, centre] * (1 - theta * m * sum_{3x3} W)

with a learnable per-(in, out) gain m (init 1) and a learnable scalar theta (init 0.5); every
other tap is W. (docs/architectures.md 2.6; the paper's Eq. 5 describes another parameterisation.)
The official module also registers an all-ones, frozen `base_mask` of W's shape; it is a constant
and is not stored here (the converter checks it is all ones).
"""

import jax
from flax import nnx

from fusionjax.layers.torch_init import torch_default_kernel_init


class LDC(nnx.Module):
  """(batch, H, W, in_channels) -> (batch, H, W, out_channels)."""

  def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
    self.kernel = nnx.Param(
      torch_default_kernel_init(rngs.params(), (3, 3, in_channels, out_channels))
    )  # HWIO
    self.centre_gain = nnx.Param(jax.numpy.ones((in_channels, out_channels)))
    self.theta = nnx.Param(jax.numpy.full((1,), 0.5))

  def effective_kernel(self):
    """The (3, 3, in, out) kernel actually convolved."""
    kernel = self.kernel[...]
    tap_sum = kernel.sum(axis=(0, 1))
    centre = kernel[1, 1] * (1 - self.theta[0] * self.centre_gain[...] * tap_sum)
    return kernel.at[1, 1].set(centre)

  def __call__(self, x):
    return jax.lax.conv_general_dilated(
      x,
      self.effective_kernel(),
      window_strides=(1, 1),
      padding=[(1, 1), (1, 1)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
