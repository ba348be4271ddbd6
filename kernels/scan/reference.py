"""The readable definition of the selective scan: a sequential loop over time.

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
  """Sequential selective scan; see the module docstring for shapes.

  Each step reads its time step of the inputs where they lie (a time-major `lax.scan` would copy
  every input transposed first) and writes y[t] over delta[t], which no later step reads: without
  differentiation XLA updates delta's buffer in place, so the scan allocates no (batch, L, ...)
  array of its own.
  """
  batch, length, groups, group_dim = u.shape
  state_dim = A.shape[-1]

  def at(x, t, width):  # step t of a (batch, L, groups * width) input -> (batch, groups, width)
    return jax.lax.dynamic_index_in_dim(x, t, axis=1, keepdims=False).reshape(batch, groups, width)

  def step(t, carry):
    state, delta_then_y = carry
    decay, drive = discretize(
      at(u, t, group_dim), at(delta_then_y, t, group_dim), A, at(B, t, state_dim)
    )
    state = decay * state + drive
    y_t = jnp.einsum("bgdn,bgn->bgd", state, at(C, t, state_dim))
    return state, jax.lax.dynamic_update_index_in_dim(
      delta_then_y, y_t.reshape(batch, -1), t, axis=1
    )

  u, delta, B, C = (x.reshape(batch, length, -1) for x in (u, delta, B, C))
  state0 = jnp.zeros((batch, groups, group_dim, state_dim), jnp.float32)
  last_state, y = jax.lax.fori_loop(0, length, step, (state0, delta))
  return y.reshape(batch, length, groups, group_dim), last_state
