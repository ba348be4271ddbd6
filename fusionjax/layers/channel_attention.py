"""Per-channel gates from global average pooling: ECA (FusionMamba) and BiAttn (EfficientVMamba).

Both take `fusionjax.shapes.Features` and return them scaled by one sigmoid gate per (sample,
channel).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.layers.torch_init import layer_norm, linear, torch_uniform_init


class ECA(nnx.Module):
  """Efficient channel attention with a fixed kernel of 3 (as the code, not ECA's adaptive k).

  gate = sigmoid(conv1d_over_channels(mean_HW(x))), zero-padded, no bias; output x * gate.
  """

  KERNEL_SIZE = 3

  def __init__(self, *, rngs: nnx.Rngs):
    init = torch_uniform_init(self.KERNEL_SIZE)
    self.kernel = nnx.Param(init(rngs.params(), (self.KERNEL_SIZE,)))

  def __call__(self, x):
    """`Features` -> same shape."""
    pooled = jnp.mean(x, axis=(1, 2))  # (batch, C)
    padded = jnp.pad(pooled, [(0, 0), (1, 1)])
    channels = pooled.shape[-1]
    w = self.kernel[...]
    mixed = sum(w[i] * padded[:, i : i + channels] for i in range(self.KERNEL_SIZE))
    return x * jax.nn.sigmoid(mixed)[:, None, None, :]


class BiAttn(nnx.Module):
  """EfficientVMamba's channel gate: sigmoid(MLP(mean_HW(LN(x)))) applied to the un-normalised x.

  MLP = Linear(C -> int(C / 8)) -> exact GELU -> Linear(-> C), both with bias.
  """

  REDUCTION = 0.125

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    reduced = int(channels * self.REDUCTION)
    self.norm = layer_norm(channels, rngs=rngs)
    self.global_reduce = linear(channels, reduced, use_bias=True, rngs=rngs)
    self.channel_select = linear(reduced, channels, use_bias=True, rngs=rngs)

  def __call__(self, x):
    """`Features` -> same shape."""
    pooled = jnp.mean(self.norm(x), axis=(1, 2), keepdims=True)
    gate = self.channel_select(jax.nn.gelu(self.global_reduce(pooled), approximate=False))
    return x * jax.nn.sigmoid(gate)
