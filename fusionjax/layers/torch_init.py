"""Flax NNX layers initialised and normalised the way the official PyTorch models do it.

One copy of each initialiser the models use (docs/architectures.md sections 0, 1.3, 3.4, 6):

- PyTorch's defaults: `nn.Linear`, `nn.Conv1d`/`nn.Conv2d` draw weight and bias from
  U(+-1/sqrt(fan_in)) (`torch_linear`, `torch_conv`, `torch_uniform_init`); `nn.LayerNorm` has
  eps 1e-5 and computes the variance in two passes (`layer_norm`).
- FusionMamba and S4Fusion (VMamba-style code) re-initialise every `nn.Linear` with timm's
  `trunc_normal_(std=0.02)` and a zero bias. timm truncates at +-2 in absolute value, i.e. at +-100
  standard deviations, so the distribution is a plain normal(0.02): that is what `linear` uses
  (JAX's `truncated_normal` would cut at +-2 standard deviations instead). Their convolutions keep
  PyTorch's default (`conv`).
- Mamba's (mamba_ssm `Mamba.__init__`): the "auto" dt rank (`dt_rank_for`), the dt_proj weight
  (`mamba_dt_kernel_init`) and bias (`mamba_dt_bias_init`), A_log S4D-real (`s4d_real_a_log`).

The Linear layers of the three fusion models (`torch_linear`, `linear`, Mamba's dt_proj) are
`TokenLinear`s: nnx.Linear with its parameters, computed on the inputs as one (tokens, in) matrix
(`over_tokens`), which spares XLA's CPU backend a slow transpose in the backward pass.

Depthwise convolutions are `DepthwiseConv`s (same parameters as a grouped nnx.Conv), initialised
like the convolutions of their model: `torch_depthwise_conv` (MambaDFuse) as `torch_conv`,
`depthwise_conv3x3` (FusionMamba, S4Fusion) as `conv`.

`torch_conv` and `conv` draw their kernels from the same distribution in two float roundings:
`conv` through Flax's variance scaling (U(-1, 1) times the bound), `torch_conv` as U(-bound, bound)
(MambaDFuse). They differ in the last bit for some fan-ins, so each keeps its own, and seeded
initialisations stay what they have been.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.layers.depthwise import DepthwiseConv

LAYER_NORM_EPS = 1e-5
LINEAR_INIT_STD = 0.02
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


def uniform_init(bound: float):
  """Initializer drawing U(-bound, bound)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_uniform_init(fan_in: int):
  """Initializer drawing U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for the weights
  and biases of Linear and Conv layers (and for raw parameters the official code draws so)."""
  return uniform_init(1.0 / math.sqrt(fan_in))


# kaiming_uniform(a=sqrt(5)) as nn.Conv2d uses by default: U(+-1/sqrt(fan_in)), fan_in read off the
# kernel shape (*kernel, in/groups, out), computed as Flax's variance scaling.
torch_default_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def over_tokens(f, x: jax.Array) -> jax.Array:
  """f applied to x (..., in) as one (tokens, in) matrix; the result has x's leading axes.

  For a matmul, the kernel gradient then contracts one axis, not all the leading ones: XLA's CPU
  backend writes the output gradient of a (batch, T, in) product transposed to (out, batch * T)
  in the fused loop that computes it, at a small fraction of memory speed (24-71 ms for 0.6-1.8 M
  floats in MambaDFuse's mixers). On (tokens, in) it needs no transpose.
  """
  flat = f(x.reshape(-1, x.shape[-1]))
  return flat.reshape(*x.shape[:-1], flat.shape[-1])


class TokenLinear(nnx.Linear):
  """nnx.Linear computed `over_tokens`: the same parameters; results may differ in the last bits
  (the matmul blocks differently)."""

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return over_tokens(super().__call__, inputs)


def torch_linear(
  in_features: int, out_features: int, *, use_bias: bool, rngs: nnx.Rngs
) -> nnx.Linear:
  """TokenLinear initialised like torch.nn.Linear: kernel (in, out), bias (out,)."""
  init = torch_uniform_init(in_features)
  return TokenLinear(
    in_features, out_features, use_bias=use_bias, kernel_init=init, bias_init=init, rngs=rngs
  )


def linear(in_features: int, out_features: int, *, use_bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
  """(..., in_features) -> (..., out_features); weight ~ normal(0.02), bias zero (timm's init)."""
  return TokenLinear(
    in_features,
    out_features,
    use_bias=use_bias,
    kernel_init=nnx.initializers.normal(LINEAR_INIT_STD),
    rngs=rngs,
  )


def layer_norm(features: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm over the last axis, eps 1e-5, scale 1 and bias 0 (PyTorch's nn.LayerNorm; also
  MambaDFuse's WithBias_LayerNorm)."""
  return nnx.LayerNorm(features, epsilon=LAYER_NORM_EPS, use_fast_variance=False, rngs=rngs)


def torch_conv(
  in_features: int,
  out_features: int,
  kernel_size: tuple[int, ...],
  *,
  padding,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """Stride-1 nnx.Conv with bias initialised like torch.nn.Conv1d/2d, the kernel as U(-b, b).

  Kernel (*kernel_size, in, out); `padding` is one (before, after) pair per spatial axis.
  """
  init = torch_uniform_init(in_features * math.prod(kernel_size))
  return nnx.Conv(
    in_features,
    out_features,
    kernel_size,
    padding=padding,
    kernel_init=init,
    bias_init=init,
    rngs=rngs,
  )


def conv(
  in_features: int,
  out_features: int,
  kernel_size: int,
  *,
  stride: int = 1,
  padding: int = 0,
  use_bias: bool = True,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """NHWC convolution with PyTorch's default init, the kernel by `torch_default_kernel_init`;
  `padding` zeros on every side."""
  fan_in = in_features * kernel_size * kernel_size
  return nnx.Conv(
    in_features,
    out_features,
    (kernel_size, kernel_size),
    strides=stride,
    padding=((padding, padding),) * 2,
    use_bias=use_bias,
    kernel_init=torch_default_kernel_init,
    bias_init=torch_uniform_init(fan_in),
    rngs=rngs,
  )


def torch_depthwise_conv(
  channels: int, kernel_size: tuple[int, ...], *, padding, rngs: nnx.Rngs
) -> DepthwiseConv:
  """Depthwise conv initialised like torch.nn.Conv1d/2d(groups=channels), as `torch_conv`: kernel
  (*kernel_size, 1, channels) and bias U(+-1/sqrt(prod(kernel_size))), the kernel as U(-b, b);
  `padding` is one (before, after) pair per spatial axis."""
  init = torch_uniform_init(math.prod(kernel_size))
  return DepthwiseConv(
    channels, kernel_size, padding=padding, kernel_init=init, bias_init=init, rngs=rngs
  )


def depthwise_conv3x3(channels: int, *, rngs: nnx.Rngs) -> DepthwiseConv:
  """(batch, H, W, channels) -> same shape: the 3x3 depthwise conv with bias before every scan,
  initialised as `conv` (the kernel by `torch_default_kernel_init`), zero padding 1."""
  return DepthwiseConv(
    channels,
    (3, 3),
    padding=((1, 1), (1, 1)),
    kernel_init=torch_default_kernel_init,
    bias_init=torch_uniform_init(9),
    rngs=rngs,
  )


def dt_rank_for(d_model: int) -> int:
  """Mamba's "auto" dt rank, ceil(d_model / 16), from the block width (not d_inner)."""
  return math.ceil(d_model / 16)


def mamba_dt_kernel_init(dt_rank: int):
  """dt_proj weight: U(+-dt_rank^-0.5) (Mamba's dt_init="random", dt_scale 1)."""
  return uniform_init(dt_rank**-0.5)


def mamba_dt_bias_init(key, shape, dtype=jnp.float32):
  """dt_proj bias: the inverse softplus of dt = exp(U[log 1e-3, log 1e-1]) clamped at >= 1e-4, so
  that softplus of it lies log-uniformly in [1e-3, 1e-1]."""
  log_dt = jax.random.uniform(key, shape, dtype, math.log(DT_MIN), math.log(DT_MAX))
  dt = jnp.maximum(jnp.exp(log_dt), DT_FLOOR)
  return dt + jnp.log(-jnp.expm1(-dt))


def s4d_real_a_log(shape: tuple[int, ...], d_state: int) -> jax.Array:
  """A_log = log([1, ..., N]) (S4D-real) for every channel: shape + (N,); A = -exp(A_log)."""
  return jnp.broadcast_to(jnp.log(jnp.arange(1, d_state + 1, dtype=jnp.float32)), (*shape, d_state))
