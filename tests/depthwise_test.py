"""DepthwiseConv: values and gradients against XLA's grouped convolution in float64, and the same
parameters and initial values as the nnx.Conv(feature_group_count=channels) it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax.layers.depthwise import DepthwiseConv
from fusionjax.layers.torch_init import torch_default_kernel_init, torch_uniform_init

# (input shape, kernel size, padding): MambaDFuse's causal conv1d, the 3x3 SAME conv of every
# model, and an uneven kernel with uneven padding.
CASES = [
  ((2, 37, 5), (4,), ((3, 0),)),
  ((2, 7, 9, 6), (3, 3), ((1, 1), (1, 1))),
  ((1, 6, 5, 3), (2, 3), ((1, 0), (2, 1))),
]
DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _module(kernel_size, padding, channels, seed=0):
  init = torch_uniform_init(int(np.prod(kernel_size)))
  return DepthwiseConv(
    channels, kernel_size, padding=padding, kernel_init=init, bias_init=init, rngs=nnx.Rngs(seed)
  )


def _reference(x, kernel, bias, padding):
  """XLA's grouped convolution (one group per channel) plus bias."""
  out = jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(1,) * (kernel.ndim - 2),
    padding=padding,
    dimension_numbers=DIMENSION_NUMBERS[kernel.ndim - 2],
    feature_group_count=x.shape[-1],
    precision=jax.lax.Precision.HIGHEST,
  )
  return out + bias.reshape((1,) * (x.ndim - 1) + bias.shape)


@pytest.mark.parametrize("shape, kernel_size, padding", CASES)
def test_matches_grouped_convolution_and_its_gradients_in_float64(shape, kernel_size, padding):
  rng = np.random.default_rng(0)
  channels = shape[-1]
  x = rng.normal(size=shape)
  kernel = rng.normal(size=(*kernel_size, 1, channels))
  bias = rng.normal(size=(channels,))
  with jax.enable_x64(True):
    module = _module(kernel_size, padding, channels)
    graphdef = nnx.graphdef(module)

    def ours(x, kernel, bias):
      state = nnx.State({"kernel": nnx.Param(kernel), "bias": nnx.Param(bias)})
      return nnx.merge(graphdef, state)(x)

    def theirs(x, kernel, bias):
      return _reference(x, kernel, bias, padding)

    args = tuple(jnp.asarray(a, jnp.float64) for a in (x, kernel, bias))
    out = ours(*args)
    expected = theirs(*args)
    assert out.dtype == jnp.float64 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)

    cotangent = jnp.asarray(rng.normal(size=expected.shape))
    grads = jax.grad(lambda *a: jnp.sum(ours(*a) * cotangent), argnums=(0, 1, 2))(*args)
    expected_grads = jax.grad(lambda *a: jnp.sum(theirs(*a) * cotangent), argnums=(0, 1, 2))(*args)
    for grad, expected_grad in zip(grads, expected_grads):
      np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
  "kernel_init, bias_init",
  [
    (torch_uniform_init(4), torch_uniform_init(4)),
    (torch_default_kernel_init, torch_uniform_init(9)),
  ],
)
def test_parameters_and_initial_values_are_those_of_nnx_conv(kernel_init, bias_init):
  channels, kernel_size, padding = 6, (3, 3), ((1, 1), (1, 1))
  ours = DepthwiseConv(
    channels,
    kernel_size,
    padding=padding,
    kernel_init=kernel_init,
    bias_init=bias_init,
    rngs=nnx.Rngs(3),
  )
  grouped = nnx.Conv(
    channels,
    channels,
    kernel_size,
    padding=padding,
    feature_group_count=channels,
    kernel_init=kernel_init,
    bias_init=bias_init,
    rngs=nnx.Rngs(3),
  )
  ours_state, grouped_state = nnx.state(ours, nnx.Param), nnx.state(grouped, nnx.Param)
  assert jax.tree.structure(ours_state) == jax.tree.structure(grouped_state)
  for a, b in zip(jax.tree.leaves(ours_state), jax.tree.leaves(grouped_state)):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 4, channels)), jnp.float32)
  np.testing.assert_allclose(ours(x), grouped(x), rtol=1e-5, atol=1e-6)
