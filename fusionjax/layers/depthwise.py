"""Depthwise (one filter per channel) stride-1 convolution as a sum of shifted multiply-adds.

Every depthwise convolution of the models goes through `DepthwiseConv`: MambaDFuse's causal
conv1d (kernel 4, left padding 3) and its M3 block's 3x3 conv, and the 3x3 conv before every scan
of FusionMamba and S4Fusion (docs/architectures.md). It computes what
`nnx.Conv(feature_group_count=channels)` computes, with the same parameters, but pads the input
once and adds `x[shifted window] * kernel[tap]` for each kernel tap: XLA fuses that into one
elementwise loop, where its grouped convolution is 9-50x slower on CPU for the forward pass and
5-13x for forward + backward (benchmarks/depthwise.py).
"""

import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx


class DepthwiseConv(nnx.Module):
  """(*batch, *spatial, channels) -> (*batch, *out_spatial, channels), channels last, stride 1.

  Parameters as `nnx.Conv(channels, channels, kernel_size, feature_group_count=channels)`:
  `kernel` (*kernel_size, 1, channels) and `bias` (channels,), drawn in that order from
  `rngs.params()` with `kernel_init` and `bias_init`, so initialisations, checkpoints and PyTorch
  mappings are those of the nnx.Conv. `padding` is one (before, after) zero-padding pair per
  spatial axis (e.g. ((k - 1, 0),) for a causal conv1d, ((1, 1), (1, 1)) for a SAME 3x3);
  out_spatial = spatial + before + after - kernel_size + 1. Like nnx.Conv, the output is
  cross-correlation: out[i] = bias + sum_t x_padded[i + t] * kernel[t].
  """

  def __init__(
    self,
    channels: int,
    kernel_size: tuple[int, ...],
    *,
    padding: tuple[tuple[int, int], ...],
    kernel_init: nnx.Initializer,
    bias_init: nnx.Initializer,
    rngs: nnx.Rngs,
  ):
    if len(padding) != len(kernel_size):
      raise ValueError(f"padding {padding} needs one (before, after) pair per axis {kernel_size}")
    self.kernel = nnx.Param(kernel_init(rngs.params(), (*kernel_size, 1, channels), jnp.float32))
    self.bias = nnx.Param(bias_init(rngs.params(), (channels,), jnp.float32))
    self.padding = tuple(tuple(pair) for pair in padding)

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...]
    kernel_size = kernel.shape[:-2]
    taps = kernel.reshape(math.prod(kernel_size), kernel.shape[-1])
    batch_axes = x.ndim - 1 - len(kernel_size)
    padded = jnp.pad(x, [(0, 0)] * batch_axes + list(self.padding) + [(0, 0)])
    out_spatial = [n - k + 1 for n, k in zip(padded.shape[batch_axes:-1], kernel_size)]
    out_shape = (*x.shape[:batch_axes], *out_spatial, x.shape[-1])
    # Taps and bias (C,) broadcast over all leading axes at once (not reshaped to (1, ..., 1, C)):
    # their gradients are then one reduction over all those axes, which XLA's CPU backend runs
    # about 30x faster than the reduction over the non-unit axes alone that a reshape gives in 1-D.
    offsets = itertools.product(*map(range, kernel_size))
    lead = (slice(None),) * batch_axes
    windows = (lead + tuple(slice(o, o + n) for o, n in zip(at, out_spatial)) for at in offsets)
    products = (padded[w] * jnp.broadcast_to(tap, out_shape) for w, tap in zip(windows, taps))
    return sum(products) + jnp.broadcast_to(self.bias[...], out_shape)
