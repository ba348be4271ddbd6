"""The selective-SSM parameters of K scan directions, shared by SS2D, ES2D and both Cross SS2Ds.

Sequences arrive as `fusionjax.shapes.Sequences`, D = d_inner (see `fusionjax.layers.scan2d`).
Per direction k the official code holds (docs/architectures.md section 0):

- x_proj_k: d_inner -> dt_rank + 2 N, no bias: the token's low-rank delta, B and C
  (`SelectionProjection`);
- dt_proj_k: dt_rank -> d_inner, whose bias is passed to the scan as delta_bias (softplus on),
  A_k = -exp(A_log_k) of shape (d_inner, N), and the skip D_k (`SelectiveSSM`).

The K directions run as one grouped scan: channels k * d_inner ... (k + 1) * d_inner use B/C
group k. S4Fusion's CMSA gives each modality its own `SelectionProjection` and shares one
`SelectiveSSM`, which is why the two halves are separate modules.

Initialisation is Mamba's: x_proj ~ U(+-1/sqrt(d_inner)) (PyTorch's Linear default, the tensor
being a raw parameter that no model-level init touches); dt_proj weight ~ U(+-dt_rank^-0.5); dt
bias = softplus^-1(dt) with dt = exp(U[log 1e-3, log 1e-1]) clamped at 1e-4; A_log = log(1..N)
(S4D-real); D = 1.
"""

import jax.numpy as jnp
from flax import nnx

from fusionjax.kernels import selective_scan_channels_last
from fusionjax.layers.torch_init import (
  mamba_dt_bias_init,
  mamba_dt_kernel_init,
  s4d_real_a_log,
  torch_uniform_init,
)


class SelectionProjection(nnx.Module):
  """x_proj of K directions: (batch, L, K, d_inner) -> low-rank delta, B, C of every token."""

  def __init__(
    self, num_directions: int, d_inner: int, dt_rank: int, d_state: int, *, rngs: nnx.Rngs
  ):
    self.dt_rank, self.d_state = dt_rank, d_state
    init = torch_uniform_init(d_inner)
    self.kernel = nnx.Param(init(rngs.params(), (num_directions, d_inner, dt_rank + 2 * d_state)))

  def __call__(self, xs):
    """xs (batch, L, K, d_inner) -> delta_low_rank (batch, L, K, R), B and C (batch, L, K, N)."""
    x_dbl = jnp.einsum("blkd,kdc->blkc", xs, self.kernel[...])
    return jnp.split(x_dbl, [self.dt_rank, self.dt_rank + self.d_state], axis=-1)


class SelectiveSSM(nnx.Module):
  """dt_proj, A and D of K directions; runs the grouped selective scan over them.

  `scan_impl` (static, not a parameter) is the kernel's `impl`, "auto" here; models set it on
  every SSM with `set_attributes(scan_impl=..., raise_if_not_found=False)`.
  """

  def __init__(
    self, num_directions: int, d_inner: int, dt_rank: int, d_state: int, *, rngs: nnx.Rngs
  ):
    self.scan_impl = "auto"
    shape = (num_directions, d_inner)
    self.dt_kernel = nnx.Param(
      mamba_dt_kernel_init(dt_rank)(rngs.params(), (num_directions, dt_rank, d_inner))
    )
    self.dt_bias = nnx.Param(mamba_dt_bias_init(rngs.params(), shape))
    self.A_log = nnx.Param(s4d_real_a_log(shape, d_state))
    self.D = nnx.Param(jnp.ones(shape, jnp.float32))

  def __call__(self, u, delta_low_rank, B, C):
    """Scans every direction.

    Args:
      u: (batch, L, K, d_inner) scan input.
      delta_low_rank: (batch, L, K, R), up-projected here by dt_proj.
      B, C: (batch, L, K, N).

    Returns:
      (batch, L, K, d_inner) float32.
    """
    batch, length, directions, d_inner = u.shape
    delta = jnp.einsum("blkr,krd->blkd", delta_low_rank, self.dt_kernel[...])
    flat = lambda x: x.reshape(batch, length, directions * d_inner)
    y = selective_scan_channels_last(
      flat(u),
      flat(delta),
      -jnp.exp(self.A_log[...]).reshape(directions * d_inner, -1),
      B,
      C,
      D=self.D[...].reshape(-1),
      delta_bias=self.dt_bias[...].reshape(-1),
      delta_softplus=True,
      impl=self.scan_impl,
    )
    return y.reshape(u.shape)


class DirectionalSSM(nnx.Module):
  """One `SelectionProjection` feeding one `SelectiveSSM`: the SSM of SS2D and ES2D."""

  def __init__(
    self, num_directions: int, d_inner: int, dt_rank: int, d_state: int, *, rngs: nnx.Rngs
  ):
    self.selection = SelectionProjection(num_directions, d_inner, dt_rank, d_state, rngs=rngs)
    self.ssm = SelectiveSSM(num_directions, d_inner, dt_rank, d_state, rngs=rngs)

  def __call__(self, xs):
    """(batch, L, K, d_inner) -> (batch, L, K, d_inner)."""
    return self.ssm(xs, *self.selection(xs))
