"""Chunked selective scan with a memory-lean hand-written backward pass (`jax.custom_vjp`).

The sequence is cut into chunks of `chunk` steps and the state is carried from chunk to chunk.

Forward under differentiation: one sequential pass whose step is the reference step, fused by
XLA into a single loop body; it keeps only the state entering each chunk, (L / chunk, batch, G,
Dg, N). Without differentiation the flat reference scan runs (the same recurrence, faster).

Backward, chunk by chunk in reverse: the chunk's transitions exp(delta * A) and drives are
computed for all its steps at once (one vectorised exp per element, shared by both recurrences);
the states are recomputed and the adjoint recurrence lam[t] = dL/dh[t] is run with
multiply-adds only; then every gradient of the chunk is formed in vectorised passes. Nothing of
size (batch, L, D, N) is held: memory is O(chunk * batch * D * N) on top of the inputs, where
autodiff through `reference.scan_reference` stores several (L, batch, D, N) residuals.

Same core contract as `reference.scan_reference`; L must be a multiple of `chunk` (the API pads
with delta = 0 steps, which leave the state unchanged).
"""

import functools

import jax
import jax.numpy as jnp

from fusionjax.kernels.scan.reference import discretize, scan_reference

DEFAULT_CHUNK = 64


def _to_chunks(x, chunk):
  """(batch, L, ...) -> (L/chunk, chunk, batch, ...): chunk-major, then time-major."""
  batch, length = x.shape[:2]
  x = x.reshape(batch, length // chunk, chunk, *x.shape[2:])
  return jnp.moveaxis(x, 0, 2)


def _from_chunks(x):
  """(L/chunk, chunk, batch, ...) -> (batch, L, ...)."""
  x = jnp.moveaxis(x, 2, 0)
  return x.reshape(x.shape[0], -1, *x.shape[3:])


def _forward(u, delta, A, B, C, chunk):
  """Returns (y, last_state) and the residuals: inputs plus per-chunk entry states."""
  batch, _, groups, group_dim = u.shape
  state0 = jnp.zeros((batch, groups, group_dim, A.shape[-1]), jnp.float32)

  def step(state, inputs):
    u_t, delta_t, B_t, C_t = inputs
    decay, drive = discretize(u_t, delta_t, A, B_t)
    state = decay * state + drive
    return state, jnp.sum(state * C_t[..., None, :], axis=-1)

  def chunk_step(entry, inputs):
    last, y_c = jax.lax.scan(step, entry, inputs)
    return last, (y_c, entry)

  chunks = [_to_chunks(x, chunk) for x in (u, delta, B, C)]
  last_state, (y, entries) = jax.lax.scan(chunk_step, state0, chunks)
  return (_from_chunks(y), last_state), (u, delta, A, B, C, entries)


def _states_before_each_step(decay, drive, entry):
  """h[t-1] for each step t of a chunk, from h[t] = decay[t] * h[t-1] + drive[t].

  decay, drive: (chunk, batch, G, Dg, N); entry: (batch, G, Dg, N).
  Returns (chunk, batch, G, Dg, N).
  """

  def step(state, inputs):
    a_t, b_t = inputs
    return a_t * state + b_t, state

  return jax.lax.scan(step, entry, (decay, drive))[1]


def _adjoints(decay, output_grad, future):
  """lam[t] = output_grad[t] + decay[t+1] * lam[t+1], backwards through a chunk.

  decay, output_grad: (chunk, batch, G, Dg, N); future: decay * lam of the step after the chunk.
  Returns lam (chunk, batch, G, Dg, N) and decay[0] * lam[0], the previous chunk's `future`.
  """

  def step(carry, inputs):
    a_t, g_t = inputs
    lam_t = g_t + carry
    return a_t * lam_t, lam_t

  to_past, lam = jax.lax.scan(step, future, (decay, output_grad), reverse=True)
  return lam, to_past


def _backward(chunk, residuals, cotangents):
  u, delta, A, B, C, entries = residuals
  dy, dlast = cotangents

  def chunk_step(carry, inputs):
    future, dA_sum = carry
    u_c, delta_c, B_c, C_c, dy_c, entry = inputs
    decay, drive = discretize(u_c, delta_c, A, B_c)
    previous = _states_before_each_step(decay, drive, entry)
    lam, to_past = _adjoints(decay, dy_c[..., None] * C_c[..., None, :], future)
    states = decay * previous + drive
    decay_grad = lam * previous * decay  # dL/d(delta * A)
    lam_B = jnp.sum(lam * B_c[..., None, :], axis=-1)
    du_c = delta_c * lam_B
    ddelta_c = jnp.sum(decay_grad * A[None, None], axis=-1) + u_c * lam_B
    dA_sum = dA_sum + jnp.sum(decay_grad * delta_c[..., None], axis=(0, 1))
    dB_c = jnp.sum(lam * (delta_c * u_c)[..., None], axis=-2)
    dC_c = jnp.sum(states * dy_c[..., None], axis=-2)
    return (to_past, dA_sum), (du_c, ddelta_c, dB_c, dC_c)

  chunks = [_to_chunks(x, chunk) for x in (u, delta, B, C, dy)]
  (_, dA), grads = jax.lax.scan(
    chunk_step, (dlast, jnp.zeros_like(A)), (*chunks, entries), reverse=True
  )
  du, ddelta, dB, dC = (_from_chunks(g) for g in grads)
  return du, ddelta, dA, dB, dC


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def scan_chunked(u, delta, A, B, C, chunk: int):
  """Chunked selective scan; shapes as in `reference`, L a multiple of `chunk`.

  Not differentiated, nothing needs the per-chunk states: the flat sequential scan of the
  reference computes the same recurrence faster (no loop nest, no stored states).
  """
  del chunk
  return scan_reference(u, delta, A, B, C)


scan_chunked.defvjp(_forward, _backward)
