"""The readable definition of the selective scan: a sequential `lax.scan` over time.

All implementations in this package compute the same *core* recurrence on float32 inputs that the
public API (`api.py`) has already prepared (bias, softplus, grouping):

    h[t] = exp(delta[t] * A) * h[t-1] + delta[t] * u[t] * B[t]        (h[-1] = 0)
    y[t] = sum_n C[t, n] * h[t, n]

Core layout (channels-last, channels split into G groups of Dg channels that share B and C):
    u, delta: (batch, L, G, Dg)    A: (G, Dg, N)    B, C: (batch, L, G, N)
Returns y: (batch, L, G, Dg) and the last state h[L-1]: (batch, G, Dg, N).
"""

import jax
import jax.numpy as jnp


def discretize(u, delta, A, B):
  """Per-step transition and input of the recurrence.

  Args:
    u, delta: (..., G, Dg) one or more time steps.
    A: (G, Dg, N).
    B: (..., G, N).

  Returns:
    decay = exp(delta * A) and drive = delta * u * B, both (..., G, Dg, N).
  """
  lead = (None,) * (delta.ndim - 2)  # broadcast the (G, Dg, N) parameters over leading axes
  decay = jnp.exp(delta[..., None] * A[lead])
  drive = (delta * u)[..., None] * B[..., None, :]
  return decay, drive


def scan_reference(u, delta, A, B, C):
  """Sequential selective scan; see the module docstring for shapes."""
  batch, _, groups, group_dim = u.shape
  state0 = jnp.zeros((batch, groups, group_dim, A.shape[-1]), jnp.float32)

  def step(state, inputs):
    u_t, delta_t, B_t, C_t = inputs
    decay, drive = discretize(u_t, delta_t, A, B_t)
    state = decay * state + drive
    y_t = jnp.einsum("bgdn,bgn->bgd", state, C_t)
    return state, y_t

  time_major = [jnp.moveaxis(x, 1, 0) for x in (u, delta, B, C)]
  last_state, y = jax.lax.scan(step, state0, time_major)
  return jnp.moveaxis(y, 0, 1), last_state
