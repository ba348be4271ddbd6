"""TokenLinear: the values and gradients of nnx.Linear on inputs of any rank, in float64, and the
same parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax.layers.torch_init import TokenLinear, over_tokens


def _pair(use_bias: bool):
  make = lambda cls: cls(5, 3, use_bias=use_bias, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
  return make(nnx.Linear), make(TokenLinear)


@pytest.mark.parametrize("shape", [(5,), (7, 5), (2, 9, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("use_bias", [False, True])
def test_token_linear_is_nnx_linear_with_its_gradients(shape, use_bias):
  with jax.enable_x64(True):
    plain, token = _pair(use_bias)
    assert jax.tree.map(np.shape, nnx.state(plain)) == jax.tree.map(np.shape, nnx.state(token))
    x = jnp.asarray(np.random.default_rng(3).normal(size=shape))
    np.testing.assert_allclose(token(x), plain(x), rtol=1e-13, atol=1e-13)
    grads = [
      nnx.grad(lambda m, x: jnp.sum(jnp.sin(m(x))), argnums=(0, 1))(module, x)
      for module in (plain, token)
    ]
    for expected, got in zip(*(jax.tree.leaves(g) for g in grads), strict=True):
      np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_over_tokens_keeps_the_leading_axes_in_order():
  x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
  first_two = over_tokens(lambda tokens: tokens[:, :2], x)
  np.testing.assert_array_equal(first_two, x[..., :2])
