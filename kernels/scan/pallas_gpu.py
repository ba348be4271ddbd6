"""Pallas GPU selective scan: fused forward and backward kernels joined by a `jax.custom_vjp`.

Backend: Pallas's Triton lowering, chosen on purpose (see README, "Pallas backend"). It is the only
GPU lowering of jax 0.10 that (a) runs the same kernel under `interpret=True` on CPU, so CI tests
it, (b) cross-lowers for CUDA on a machine without a GPU, and (c) accepts a whole-sequence block
with the state kept in registers. Mosaic GPU copies blocks to shared memory and needs
warpgroup-shaped tiles, i.e. a different kernel; all backend-specific code stays in this file.
The Triton lowering is deprecated from jax 0.11: `cuda_lowering_problem` says when this jax cannot
lower the kernels any more, so that `impl="auto"` falls back to the chunked scan.

Layout (channels-last): grid (batch, D / block_d). One program owns `block_d` channels of one batch
element and walks the whole sequence once with its (block_d, N) state in registers. The forward
kernel writes y and the state entering each chunk of `chunk` steps, (batch, L / chunk, D, N): that
and the inputs are all the backward pass keeps. The backward kernel walks the chunks in reverse,
recomputes each chunk's states from its entry state into a small per-program buffer, then runs
the adjoint recurrence. dB and dC are written as per-program partials that XLA sums
(deterministic, no atomics). Nothing of size (batch, L, D, N) is ever stored.

Same core contract as `reference.scan_reference`.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

try:
  from jax.experimental.pallas import triton as plt
except ImportError:  # deprecated from jax 0.11, to be removed
  plt = None

# Platforms the kernels are compiled for; on every other platform they run interpreted.
COMPILED_PLATFORMS = ("cuda",)
CHUNK = 64
MAX_BLOCK_D = 32
NUM_WARPS = 4


def _channel_block(group_dim: int) -> int:
  """Largest power of two <= MAX_BLOCK_D dividing the group width (blocks never span groups)."""
  block = 1
  while block < MAX_BLOCK_D and group_dim % (2 * block) == 0:
    block *= 2
  return block


def _row(ref, t):
  """Row t of a (L, width) block as a (width,) vector."""
  return ref[pl.ds(t, 1), :][0]


def _forward_kernel(
  u_ref, delta_ref, A_ref, B_ref, C_ref, state0_ref, y_ref, entry_ref, *, num_chunks, chunk
):
  """u, delta, y: (L, bd); A, state0: (bd, N); B, C: (L, N).

  entry: (L/chunk + 1, bd, N), the state entering each chunk, then the state after the last step.
  """
  A = A_ref[...]

  def chunk_body(c, state):
    entry_ref[pl.ds(c, 1), :, :] = state[None]

    def step(i, state):
      t = c * chunk + i
      u_t, delta_t = _row(u_ref, t), _row(delta_ref, t)
      state = (
        jnp.exp(delta_t[:, None] * A) * state + (delta_t * u_t)[:, None] * _row(B_ref, t)[None, :]
      )
      y_ref[pl.ds(t, 1), :] = jnp.sum(state * _row(C_ref, t)[None, :], axis=1)[None, :]
      return state

    return jax.lax.fori_loop(0, chunk, step, state)

  last = jax.lax.fori_loop(0, num_chunks, chunk_body, state0_ref[...])
  entry_ref[pl.ds(num_chunks, 1), :, :] = last[None]


def _backward_kernel(
  u_ref,
  delta_ref,
  A_ref,
  B_ref,
  C_ref,
  dy_ref,
  entry_ref,
  dlast_ref,
  du_ref,
  ddelta_ref,
  dA_ref,
  dB_ref,
  dC_ref,
  dstate0_ref,
  history_ref,
  *,
  num_chunks,
  chunk,
  interpret,
):
  """Inputs as in the forward kernel plus dy (L, bd) and dlast (bd, N).

  Outputs: du, ddelta (L, bd); dA, dstate0 (bd, N); dB, dC partials (L, N) summed over this
  program's channels; history (chunk, bd, N) is scratch holding the states entering each step
  of a chunk.
  """
  A = A_ref[...]

  def chunk_body(k, carry):
    c = num_chunks - 1 - k

    def recompute(i, state):
      t = c * chunk + i
      history_ref[pl.ds(i, 1), :, :] = state[None]
      delta_t = _row(delta_ref, t)
      return (
        jnp.exp(delta_t[:, None] * A) * state
        + (delta_t * _row(u_ref, t))[:, None] * _row(B_ref, t)[None, :]
      )

    jax.lax.fori_loop(0, chunk, recompute, entry_ref[pl.ds(c, 1), :, :][0])
    if not interpret:
      plt.debug_barrier()

    def adjoint(j, carry):
      future, dA_sum = carry
      i = chunk - 1 - j
      t = c * chunk + i
      u_t, delta_t, dy_t = _row(u_ref, t), _row(delta_ref, t), _row(dy_ref, t)
      B_t, C_t = _row(B_ref, t)[None, :], _row(C_ref, t)[None, :]
      previous = history_ref[pl.ds(i, 1), :, :][0]
      decay = jnp.exp(delta_t[:, None] * A)
      state = decay * previous + (delta_t * u_t)[:, None] * B_t
      lam = dy_t[:, None] * C_t + future
      decay_grad = lam * previous * decay
      lam_B = jnp.sum(lam * B_t, axis=1)
      du_ref[pl.ds(t, 1), :] = (delta_t * lam_B)[None, :]
      ddelta_ref[pl.ds(t, 1), :] = (jnp.sum(decay_grad * A, axis=1) + u_t * lam_B)[None, :]
      dB_ref[pl.ds(t, 1), :] = jnp.sum(lam * (delta_t * u_t)[:, None], axis=0)[None, :]
      dC_ref[pl.ds(t, 1), :] = jnp.sum(state * dy_t[:, None], axis=0)[None, :]
      return decay * lam, dA_sum + decay_grad * delta_t[:, None]

    carry = jax.lax.fori_loop(0, chunk, adjoint, carry)
    if not interpret:
      plt.debug_barrier()
    return carry

  dstate0, dA_sum = jax.lax.fori_loop(
    0, num_chunks, chunk_body, (dlast_ref[...], jnp.zeros(A.shape, jnp.float32))
  )
  dA_ref[...] = dA_sum
  dstate0_ref[...] = dstate0


def _specs(batch, length, dim, state_dim, group_dim, block_d, num_chunks):
  """BlockSpecs over the grid (batch, dim / block_d) for the flattened core arrays."""
  group_of = lambda j: j * block_d // group_dim
  return dict(
    seq=pl.BlockSpec((None, length, block_d), lambda b, j: (b, 0, j)),
    A=pl.BlockSpec((block_d, state_dim), lambda b, j: (j, 0)),
    BC=pl.BlockSpec((None, length, None, state_dim), lambda b, j: (b, 0, group_of(j), 0)),
    entry=pl.BlockSpec((None, num_chunks + 1, block_d, state_dim), lambda b, j: (b, 0, j, 0)),
    state=pl.BlockSpec((None, block_d, state_dim), lambda b, j: (b, j, 0)),
    partial=pl.BlockSpec((None, None, length, state_dim), lambda b, j: (b, j, 0, 0)),
    history=pl.BlockSpec((None, None, CHUNK, block_d, state_dim), lambda b, j: (b, j, 0, 0, 0)),
  )


def _flat(u, delta, A, B, C):
  """Core arrays (see reference.py) -> (batch, L, D) sequences and (D, N) A; plus dims.
  States (batch, G, Dg, N) are (batch, D, N) by a reshape."""
  batch, length, groups, group_dim = u.shape
  dim = groups * group_dim
  dims = (batch, length, dim, A.shape[-1], group_dim, _channel_block(group_dim), length // CHUNK)
  return (
    u.reshape(batch, length, dim),
    delta.reshape(batch, length, dim),
    A.reshape(dim, -1),
    B,
    C,
    dims,
  )


def _forward(u, delta, A, B, C, state0, *, interpret):
  u_f, delta_f, A_f, _, _, dims = _flat(u, delta, A, B, C)
  batch, length, dim, state_dim, group_dim, block_d, num_chunks = dims
  specs = _specs(*dims)
  f32 = jnp.float32
  y, entry = pl.pallas_call(
    functools.partial(_forward_kernel, num_chunks=num_chunks, chunk=CHUNK),
    grid=(batch, dim // block_d),
    in_specs=[specs["seq"], specs["seq"], specs["A"], specs["BC"], specs["BC"], specs["state"]],
    out_specs=[specs["seq"], specs["entry"]],
    out_shape=[
      jax.ShapeDtypeStruct((batch, length, dim), f32),
      jax.ShapeDtypeStruct((batch, num_chunks + 1, dim, state_dim), f32),
    ],
    compiler_params=plt.CompilerParams(num_warps=NUM_WARPS, num_stages=1),
    interpret=interpret,
    name="selective_scan_fwd",
  )(u_f, delta_f, A_f, B, C, state0.reshape(batch, dim, state_dim))
  return y.reshape(u.shape), entry


def _on_platform(call, interpret, *args):
  """Runs `call(*args, interpret=...)`: compiled on CUDA, interpreted elsewhere, unless forced.

  With `interpret=None` the choice is made when lowering, so the same traced function runs the
  interpreter on CPU and lowers the real kernel when lowered for CUDA.
  """
  if interpret is not None:
    return call(*args, interpret=interpret)
  compiled = dict.fromkeys(COMPILED_PLATFORMS, functools.partial(call, interpret=False))
  return jax.lax.platform_dependent(
    *args, **compiled, default=functools.partial(call, interpret=True)
  )


def _pallas_fwd(u, delta, A, B, C, state0, interpret):
  y, entry = _on_platform(_forward, interpret, u, delta, A, B, C, state0)
  last = entry[:, -1].reshape(state0.shape)
  return (y, last), (u, delta, A, B, C, entry)


def _pallas_bwd(interpret, residuals, cotangents):
  return _on_platform(_backward, interpret, *residuals, *cotangents)


def _backward(u, delta, A, B, C, entry, dy, dlast, *, interpret):
  u_f, delta_f, A_f, _, _, dims = _flat(u, delta, A, B, C)
  batch, length, dim, state_dim, group_dim, block_d, num_chunks = dims
  specs = _specs(*dims)
  programs = dim // block_d
  f32 = jnp.float32
  seq_shape = jax.ShapeDtypeStruct((batch, length, dim), f32)
  partial_shape = jax.ShapeDtypeStruct((batch, programs, length, state_dim), f32)
  du, ddelta, dA, dB_part, dC_part, dstate0, _ = pl.pallas_call(
    functools.partial(_backward_kernel, num_chunks=num_chunks, chunk=CHUNK, interpret=interpret),
    grid=(batch, programs),
    in_specs=[
      specs["seq"],
      specs["seq"],
      specs["A"],
      specs["BC"],
      specs["BC"],
      specs["seq"],
      specs["entry"],
      specs["state"],
    ],
    out_specs=[
      specs["seq"],
      specs["seq"],
      specs["state"],
      specs["partial"],
      specs["partial"],
      specs["state"],
      specs["history"],
    ],
    out_shape=[
      seq_shape,
      seq_shape,
      jax.ShapeDtypeStruct((batch, dim, state_dim), f32),
      partial_shape,
      partial_shape,
      jax.ShapeDtypeStruct((batch, dim, state_dim), f32),
      jax.ShapeDtypeStruct((batch, programs, CHUNK, block_d, state_dim), f32),
    ],
    compiler_params=plt.CompilerParams(num_warps=NUM_WARPS, num_stages=1),
    interpret=interpret,
    name="selective_scan_bwd",
  )(
    u_f,
    delta_f,
    A_f,
    B,
    C,
    dy.reshape(batch, length, dim),
    entry,
    dlast.reshape(batch, dim, state_dim),
  )
  groups = dim // group_dim
  per_group = lambda p: jnp.moveaxis(
    p.reshape(batch, groups, group_dim // block_d, length, state_dim).sum(2), 1, 2
  )
  return (
    du.reshape(u.shape),
    ddelta.reshape(u.shape),
    dA.sum(0).reshape(A.shape),
    per_group(dB_part),
    per_group(dC_part),
    dstate0.reshape(u.shape[:1] + A.shape),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _scan_padded(u, delta, A, B, C, state0, interpret):
  return _pallas_fwd(u, delta, A, B, C, state0, interpret)[0]


_scan_padded.defvjp(_pallas_fwd, _pallas_bwd)


def scan_pallas(u, delta, A, B, C, state0, *, interpret: bool | None = None):
  """Pallas selective scan; shapes as in `reference`.

  `interpret`: None compiles the kernel on CUDA and interprets it on other platforms (chosen at
  lowering time); True or False forces one.

  Pads L to a multiple of CHUNK (delta = 0 steps leave the state unchanged) and N to a power of
  two (A = B = C = 0 states stay zero), as Triton tiles need, and crops the results.
  """
  if plt is None:
    raise RuntimeError(
      "impl='pallas' needs Pallas's Triton lowering "
      "(jax.experimental.pallas.triton), which this jax does not have; "
      "use impl='chunked'"
    )
  length, state_dim = u.shape[1], A.shape[-1]
  pad_l = -length % CHUNK
  pad_n = pl.next_power_of_2(state_dim) - state_dim
  pad_seq = lambda x: jnp.pad(x, [(0, 0), (0, pad_l)] + [(0, 0)] * (x.ndim - 2))
  pad_state = lambda x: jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad_n)])
  y, last = _scan_padded(
    pad_seq(u),
    pad_seq(delta),
    pad_state(A),
    pad_state(pad_seq(B)),
    pad_state(pad_seq(C)),
    pad_state(state0),
    interpret,
  )
  return y[:, :length], last[..., :state_dim]


def cuda_lowering_problem() -> str | None:
  """Why the compiled kernels cannot be lowered for CUDA by this jax, or None when they can.

  Lowers the forward and backward kernels once, on tiny shapes, for the CUDA device at hand.
  """
  if plt is None:
    return "jax.experimental.pallas.triton cannot be imported"
  seq = jax.ShapeDtypeStruct((1, CHUNK, 1, 1), jnp.float32)
  A = jax.ShapeDtypeStruct((1, 1, 1), jnp.float32)
  state = jax.ShapeDtypeStruct((1, 1, 1, 1), jnp.float32)

  def loss(u, delta, A, B, C, state0):
    y, last = _scan_padded(u, delta, A, B, C, state0, False)
    return y.sum() + last.sum()

  try:
    jax.jit(jax.grad(loss, argnums=tuple(range(6)))).trace(seq, seq, A, seq, seq, state).lower(
      lowering_platforms=COMPILED_PLATFORMS
    )
  except Exception as error:  # any failure to lower means: use another implementation
    return f"{type(error).__name__}: {error}"
  return None
