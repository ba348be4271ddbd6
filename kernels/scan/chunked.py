"""Chunked selective scan with a memory-lean hand-written backward pass (`jax.custom_vjp`).

Same core contract as `reference.scan_reference`, where the recurrence and the shapes are
defined; L must be a multiple of `chunk` (the API pads with delta = 0 steps, which leave the
state unchanged). Written for CPUs, where each step of a sequential loop costs a few dispatched
XLA kernels however little it computes:

- The state is held channels-last, (batch, G, N, Dg), so every per-step operation works on
  contiguous channel vectors: the sums C[t] . h[t] and B[t] . lam[t] over the N states and the
  sums over channels (for dB, dC) are matrix-vector products, the A-weighted sum over states (for
  ddelta) a chain of N adds. No step contains a `reduce`: XLA's CPU compiler hands reductions of
  4096 elements or more to YNNPACK, whose per-call cost exceeds a whole step's arithmetic.
- Every sequential pass reads time step t of the inputs where they lie and writes step t of its
  outputs in place: no input is transposed or copied into chunks.

Forward: a loop over chunks, a loop over the chunk's steps inside. y[t] is written over
delta[t], which no later step reads, so without differentiation XLA updates delta's buffer in
place and drops the states entering each chunk, which differentiation keeps:
(L / chunk, batch, G, N, Dg).

Backward, chunk by chunk in reverse:
1. decay = exp(delta * A) for all the chunk's steps at once (one vectorised exp per element);
2. a forward pass over the chunk recomputes, from the state entering it, the states h[t]
   (multiply-adds only, kept for the chunk with the entering state: (chunk + 1, batch, G, N, Dg));
3. a reverse pass runs the adjoint recurrence lam[t] = dL/dh[t] = C[t] dy[t] + decay[t+1] *
   lam[t+1] and forms step t's gradients as it goes: du, ddelta, dB and dC (from h[t]) are
   written in place, dA is accumulated. The gradient with respect to delta[t] * A is
   (decay[t] * lam[t]) * h[t-1], the first factor being what step t passes to t-1.
Nothing of size (batch, L, D, N) is held: memory is O(chunk * batch * D * N) on top of the
inputs and gradients, where autodiff through `reference.scan_reference` stores several
(L, batch, D, N) residuals.
"""

import functools

import jax
import jax.numpy as jnp

DEFAULT_CHUNK = 64


def _at(x, t):
  """Time step t of a (batch, L, ...) array: (batch, ...)."""
  return jax.lax.dynamic_index_in_dim(x, t, axis=1, keepdims=False)


def _write(x, value, t):
  """x with time step t of a (batch, L, ...) array replaced by `value`."""
  return jax.lax.dynamic_update_index_in_dim(x, value, t, axis=1)


def _sum_states(x):
  """(..., N, Dg) -> (..., Dg), summed over the N states as a chain of adds (no `reduce`)."""
  total = x[..., 0, :]
  for n in range(1, x.shape[-2]):
    total = total + x[..., n, :]
  return total


def _dot_states(x, w):
  """sum_n x[..., n, d] * w[..., n]: (..., N, Dg), (..., N) -> (..., Dg), vector times matrix."""
  return jnp.einsum("...nd,...n->...d", x, w)


def _dot_channels(x, w):
  """sum_d x[..., n, d] * w[..., d]: (..., N, Dg), (..., Dg) -> (..., N), matrix times vector."""
  return jnp.einsum("...nd,...d->...n", x, w)


def _drive(u_t, delta_t, B_t):
  """delta[t] * u[t] * B[t] as (batch, G, N, Dg)."""
  return (delta_t * u_t)[..., None, :] * B_t[..., None]


def _forward(u, delta, A, B, C, state0, chunk):
  """Returns (y, last_state) and the residuals: inputs plus the state entering each chunk."""
  A_t = jnp.swapaxes(A, -1, -2)[None]  # (1, G, N, Dg)

  def chunk_step(c, carry):
    state, delta_then_y, entries = carry
    entries = jax.lax.dynamic_update_index_in_dim(entries, state, c, axis=0)

    def step(k, carry):
      state, delta_then_y = carry
      t = c * chunk + k
      delta_t = _at(delta_then_y, t)
      state = jnp.exp(delta_t[..., None, :] * A_t) * state + _drive(_at(u, t), delta_t, _at(B, t))
      y_t = _dot_states(state, _at(C, t))
      return state, _write(delta_then_y, y_t, t)

    state, delta_then_y = jax.lax.fori_loop(0, chunk, step, (state, delta_then_y))
    return state, delta_then_y, entries

  state = jnp.swapaxes(state0, -1, -2)
  entries = jnp.zeros((u.shape[1] // chunk, *state.shape), jnp.float32)
  last_state, y, entries = jax.lax.fori_loop(
    0, u.shape[1] // chunk, chunk_step, (state, delta, entries)
  )
  return (y, jnp.swapaxes(last_state, -1, -2)), (u, delta, A, B, C, entries)


def _backward(chunk, residuals, cotangents):
  """Gradients with respect to u, delta, A, B, C and state0; see the module docstring."""
  u, delta, A, B, C, entries = residuals
  dy, dlast = cotangents
  A_t = jnp.swapaxes(A, -1, -2)[None]  # (1, G, N, Dg)
  num_chunks = u.shape[1] // chunk

  def chunk_step(i, carry):
    start = (num_chunks - 1 - i) * chunk
    delta_c = jax.lax.dynamic_slice_in_dim(delta, start, chunk, axis=1)
    decay = jnp.exp(delta_c[..., None, :] * A_t[:, None])  # (batch, chunk, G, N, Dg)

    def recompute(k, states):  # states[k + 1] = h[k] = decay[k] * h[k-1] + drive[k]
      t = start + k
      state = _at(decay, k) * states[k] + _drive(_at(u, t), _at(delta, t), _at(B, t))
      return jax.lax.dynamic_update_index_in_dim(states, state, k + 1, axis=0)

    states = jnp.zeros((chunk + 1, *entries.shape[1:]), jnp.float32)
    states = jax.lax.fori_loop(0, chunk, recompute, states.at[0].set(entries[num_chunks - 1 - i]))

    def adjoint(j, carry):  # to_past = decay[t+1] * lam[t+1], what step t receives from later
      to_past, dA, du, ddelta, dB, dC = carry
      k = chunk - 1 - j
      t = start + k
      u_t, delta_t, B_t, C_t, dy_t = (_at(x, t) for x in (u, delta, B, C, dy))
      lam = dy_t[..., None, :] * C_t[..., None] + to_past
      to_past = _at(decay, k) * lam
      gate = to_past * states[k]  # dL/d(delta[t] * A) = lam[t] * decay[t] * h[t-1]
      lam_B = _dot_states(lam, B_t)
      return (
        to_past,
        dA + gate * delta_t[..., None, :],
        _write(du, delta_t * lam_B, t),
        _write(ddelta, _sum_states(gate * A_t) + u_t * lam_B, t),
        _write(dB, _dot_channels(lam, delta_t * u_t), t),
        _write(dC, _dot_channels(states[k + 1], dy_t), t),
      )

    return jax.lax.fori_loop(0, chunk, adjoint, carry)

  dA_per_batch = jnp.zeros((u.shape[0], *A_t.shape[1:]), jnp.float32)  # summed over batch last
  to_past, dA, du, ddelta, dB, dC = jax.lax.fori_loop(
    0,
    num_chunks,
    chunk_step,
    (jnp.swapaxes(dlast, -1, -2), dA_per_batch, *(jnp.zeros_like(x) for x in (u, u, B, B))),
  )
  dA = jnp.swapaxes(jnp.sum(dA, axis=0), -1, -2)
  return du, ddelta, dA, dB, dC, jnp.swapaxes(to_past, -1, -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def scan_chunked(u, delta, A, B, C, state0, chunk: int):
  """Chunked selective scan; shapes as in `reference`, L a multiple of `chunk`."""
  return _forward(u, delta, A, B, C, state0, chunk)[0]


scan_chunked.defvjp(_forward, _backward)
