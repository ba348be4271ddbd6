"""S4Fusion's output head: tokens back to overlapping pixel patches, summed ("Fold").

The overlapping patch embedding (4x4 kernel, stride 3) is inverted by a per-token
Linear(dim -> 16 c, no bias) read as a (c, 4, 4) patch, overlap-ADDED with stride 3 (PyTorch's
`F.fold`: overlaps are summed, not averaged), then a 1x1 conv (c -> 1, bias). c = dim / 4.
"""

import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from fusionjax.layers.torch_init import conv, layer_norm, linear


def overlap_add(patches, stride: int):
  """(batch, h, w, k, k, C) patches -> (batch, (h-1)*stride + k, (w-1)*stride + k, C), summed."""
  batch, h, w, k, _, channels = patches.shape
  out = jnp.zeros((batch, (h - 1) * stride + k, (w - 1) * stride + k, channels), patches.dtype)
  for ki in range(k):
    for kj in range(k):
      out = out.at[
        :, ki : ki + (h - 1) * stride + 1 : stride, kj : kj + (w - 1) * stride + 1 : stride
      ].add(patches[:, :, :, ki, kj])
  return out


class FoldHead(nnx.Module):
  """(batch, h, w, dim) tokens -> (batch, 3(h-1) + 4, 3(w-1) + 4, 1) raw output."""

  KERNEL_SIZE, STRIDE = 4, 3

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.channels = dim // 4
    self.expand = linear(dim, self.KERNEL_SIZE**2 * self.channels, use_bias=False, rngs=rngs)
    # The official module owns this LayerNorm but never applies it; it is kept so that
    # checkpoints load one to one (and the parameter count matches).
    self.unused_norm = layer_norm(self.channels, rngs=rngs)
    self.out_conv = conv(self.channels, 1, 1, rngs=rngs)

  def __call__(self, x):
    patches = rearrange(
      self.expand(x), "b h w (c ki kj) -> b h w ki kj c", ki=self.KERNEL_SIZE, kj=self.KERNEL_SIZE
    )
    return self.out_conv(overlap_add(patches, self.STRIDE))
