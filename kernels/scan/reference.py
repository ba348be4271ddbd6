"""The readable definition of the selective scan: a sequential loop over time.

All implementations in this package compute the same *core* recurrence on float32 inputs that the
public API (`api.py`) has already prepared (bias, softplus, grouping):

    h[t] = exp(delta[t] * A) * h[t-1] + delta[t] * u[t] * B[t]        (h[-1] = state0)
    y[t] = sum_n C[t, n] * h[t, n]

Core layout (channels-last, channels split into G groups of Dg channels that share B and C):
    u, delta: (batch, L, G, Dg)    A: (G, Dg, N)    B, C: (batch, L, G, N)
    state0: (batch, G, Dg, N), the state before the first step (a sequence's start: zeros)
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


def scan_reference(u, delta, A, B, C, state0):
  """Sequential selective scan; see the module docstring for shapes.

  Each step reads its time step of the inputs where they lie (a time-major `lax.scan` over the
  inputs would copy every one of them transposed first); y is gathered time-major and transposed
  once. (Writing y[t] in place into a loop-carried (batch, L, ...) buffer would save that copy,
  but autodiff then copies the whole buffer at every step: gradients in O(L^2) time.)
  """

  def step(state, t):
    at = lambda x: jax.lax.dynamic_index_in_dim(x, t, axis=1, keepdims=False)
    decay, drive = discretize(at(u), at(delta), A, at(B))
    state = decay * state + drive
    return state, jnp.einsum("bgdn,bgn->bgd", state, at(C))

  last_state, y = jax.lax.scan(step, state0, jnp.arange(u.shape[1]))
  return jnp.moveaxis(y, 0, 1), last_state
