"""Flax NNX layers initialised and normalised the way the official PyTorch models do it.

Both FusionMamba and S4Fusion build their networks from `nn.Linear`, `nn.Conv2d` and
`nn.LayerNorm`, then re-initialise every `nn.Linear` with timm's `trunc_normal_(std=0.02)` and a
zero bias. timm truncates at +-2 in absolute value, i.e. at +-100 standard deviations, so the
distribution is a plain normal(0.02): that is what `linear` uses (JAX's `truncated_normal` would
cut at +-2 standard deviations instead). Convolutions keep PyTorch's default, which is
U(+-1/sqrt(fan_in)) for the weight and for the bias. LayerNorm has eps 1e-5 and computes the
variance in two passes, as PyTorch does.
"""

import math

import jax
from flax import nnx

LAYER_NORM_EPS = 1e-5
LINEAR_INIT_STD = 0.02

# kaiming_uniform(a=sqrt(5)) as nn.Linear/nn.Conv2d use by default: U(+-1/sqrt(fan_in)).
torch_default_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_uniform_init(fan_in: int):
  """Initializer drawing U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default bias init."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jax.numpy.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def linear(in_features: int, out_features: int, *, use_bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
  """(..., in_features) -> (..., out_features); weight ~ normal(0.02), bias zero."""
  return nnx.Linear(in_features, out_features, use_bias=use_bias,
                    kernel_init=nnx.initializers.normal(LINEAR_INIT_STD), rngs=rngs)


def layer_norm(features: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm over the last axis, eps 1e-5, scale 1 and bias 0 (PyTorch's nn.LayerNorm)."""
  return nnx.LayerNorm(features, epsilon=LAYER_NORM_EPS, use_fast_variance=False, rngs=rngs)


def conv(in_features: int, out_features: int, kernel_size: int, *, stride: int = 1,
         padding: int = 0, groups: int = 1, use_bias: bool = True, rngs: nnx.Rngs) -> nnx.Conv:
  """NHWC convolution with PyTorch's default init; `padding` zeros on every side."""
  fan_in = in_features // groups * kernel_size * kernel_size
  return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), strides=stride,
                  padding=((padding, padding),) * 2, feature_group_count=groups, use_bias=use_bias,
                  kernel_init=torch_default_kernel_init, bias_init=torch_uniform_init(fan_in),
                  rngs=rngs)


def depthwise_conv3x3(channels: int, *, rngs: nnx.Rngs) -> nnx.Conv:
  """(batch, H, W, channels) -> same shape: the 3x3 depthwise conv with bias before every scan."""
  return conv(channels, channels, 3, padding=1, groups=channels, rngs=rngs)
