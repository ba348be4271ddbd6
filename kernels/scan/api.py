"""Public selective-scan entry points with the `mamba_ssm.selective_scan_fn` signature.

The recurrence (per batch b, channel d, state n; h starts at zero):

    delta' = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
    h[t]   = exp(delta'[t] * A[d, n]) * h[t-1] + delta'[t] * B[t, n] * u[t]
    y[t]   = sum_n C[t, n] * h[t, n] + D[d] * u[t]
    out    = y * silu(z)                                   (when z is given)

Computation is float32 whatever the input dtype; the output has u's dtype, the last state is
float32. Every implementation is differentiable with respect to every array argument.
"""

import functools
import warnings
from typing import Literal, get_args

import jax
import jax.extend.backend
import jax.numpy as jnp

from fusionjax.kernels.scan import pallas_gpu
from fusionjax.kernels.scan.associative import scan_associative
from fusionjax.kernels.scan.chunked import DEFAULT_CHUNK, scan_chunked
from fusionjax.kernels.scan.pallas_gpu import scan_pallas
from fusionjax.kernels.scan.reference import scan_reference

Impl = Literal["auto", "reference", "associative", "chunked", "pallas"]
IMPLS: tuple[str, ...] = get_args(Impl)


def default_platform() -> str:
  """JAX's default platform as lowering names it: "cpu", "tpu", "cuda", "rocm", ..."""
  platform = jax.default_backend()
  if platform != "gpu":
    return platform
  version = jax.extend.backend.get_backend().platform_version.lower()  # e.g. "cuda 12080"
  return next((name for name in ("cuda", "rocm") if name in version), platform)


@functools.cache
def _pallas_lowers() -> bool:
  """Whether the Pallas kernels lower for CUDA here; warns once when they do not."""
  problem = pallas_gpu.cuda_lowering_problem()
  if problem:
    warnings.warn(
      f"fusionjax.kernels: the Pallas selective-scan kernels do not lower with this jax "
      f"({jax.__version__}; Pallas's Triton lowering is deprecated from jax 0.11), so "
      f"impl='auto' uses 'chunked'. Reason: {problem}",
      RuntimeWarning,
      stacklevel=3,
    )
  return problem is None


def resolve_impl(impl: str, platform: str | None = None) -> str:
  """Turns "auto" into the fastest correct implementation for `platform` (default: JAX's).

  "auto" is "pallas" where its kernels compile (CUDA, while jax can lower them), "chunked"
  everywhere else: on CPU, TPU and GPUs the kernels are not compiled for (ROCm), the Pallas
  kernels would run in the slow interpreter.
  """
  if impl not in IMPLS:
    raise ValueError(f"unknown selective-scan impl {impl!r}; choose one of {IMPLS}")
  if impl != "auto":
    return impl
  platform = platform or default_platform()
  if platform in pallas_gpu.COMPILED_PLATFORMS and _pallas_lowers():
    return "pallas"
  return "chunked"


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
  """Validates the channels-last shapes; returns (groups, N)."""
  if u.ndim != 3:
    raise ValueError(f"u must be (batch, L, dim), got shape {u.shape}")
  batch, length, dim = u.shape
  if delta.shape != u.shape:
    raise ValueError(f"delta shape {delta.shape} differs from u shape {u.shape}")
  if z is not None and z.shape != u.shape:
    raise ValueError(f"z shape {z.shape} differs from u shape {u.shape}")
  if A.ndim != 2 or A.shape[0] != dim:
    raise ValueError(f"A must be (dim={dim}, N), got shape {A.shape}")
  if jnp.iscomplexobj(A):
    raise ValueError("complex A is not supported; A must be real")
  state_dim = A.shape[1]
  for name, mat in (("B", B), ("C", C)):
    if mat.ndim not in (3, 4) or mat.shape[:2] != (batch, length) or mat.shape[-1] != state_dim:
      raise ValueError(
        f"{name} must be (batch={batch}, L={length}, [G,] N={state_dim}) channels-last, "
        f"got shape {mat.shape}"
      )
  if B.shape != C.shape:
    raise ValueError(f"B shape {B.shape} differs from C shape {C.shape}")
  groups = B.shape[2] if B.ndim == 4 else 1
  if dim % groups:
    raise ValueError(f"dim {dim} is not divisible by the number of B/C groups {groups}")
  for name, vec in (("D", D), ("delta_bias", delta_bias)):
    if vec is not None and vec.shape != (dim,):
      raise ValueError(f"{name} must be (dim={dim},), got shape {vec.shape}")
  return groups, state_dim


@jax.custom_jvp
def _softplus(x):
  """log(1 + exp(x)) for any float x, to jax.nn.softplus's float32 accuracy, with the derivative
  sigmoid(x): jax.nn.softplus differentiates through logaddexp's guards for infinities, which
  costs 7x as much on CPU (2.7 against 0.38 ms for the gradient of 663k values, one core)."""
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@_softplus.defjvp
def _softplus_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  return _softplus(x), jax.nn.sigmoid(x) * dx


def chunk_length(length: int, longest: int) -> int:
  """The chunk length the "chunked" implementation runs L = `length` steps in, at most `longest`.

  Padding L to a multiple of the chunk copies every input, so the longest chunk that divides L
  is taken where it is at least half of `longest` (L = 144, 288 and 576 with 64: 48, 48 and 64;
  L <= `longest`: one chunk of L). Otherwise L is split into ceil(L / longest) chunks of equal
  length and padded by fewer steps than there are chunks (L = 133 with 64: three chunks of 45).
  """
  limit = min(length, longest)
  divisor = max(d for d in range(1, limit + 1) if length % d == 0)
  if 2 * divisor >= limit:
    return divisor
  return -(-length // -(-length // longest))


def _run_core(impl, u, delta, A, B, C, state0, chunk):
  """Dispatches the float32 core (see reference.py) to one implementation."""
  if impl == "reference":
    return scan_reference(u, delta, A, B, C, state0)
  if impl == "associative":
    return scan_associative(u, delta, A, B, C, state0)
  if impl == "pallas":
    return scan_pallas(u, delta, A, B, C, state0)
  length = u.shape[1]
  chunk = chunk_length(length, chunk)
  pad = -length % chunk
  if pad:  # delta = 0 steps are identity transitions: y is cropped, the last state unchanged.
    widths = lambda x: [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
    u, delta, B, C = (jnp.pad(x, widths(x)) for x in (u, delta, B, C))
  y, last_state = scan_chunked(u, delta, A, B, C, state0, chunk)
  return y[:, :length], last_state


def selective_scan_channels_last(
  u,
  delta,
  A,
  B,
  C,
  D=None,
  z=None,
  delta_bias=None,
  delta_softplus=False,
  return_last_state=False,
  *,
  initial_state=None,
  impl: Impl = "auto",
  chunk: int = DEFAULT_CHUNK,
):
  """Selective scan on channels-last arrays, the layout fusionjax's models use.

  Args:
    u, delta: (batch, L, dim). z: optional (batch, L, dim) gate.
    A: (dim, N) real. B, C: (batch, L, N), or (batch, L, G, N) where channel d uses group
      d // (dim / G). D, delta_bias: optional (dim,).
    delta_softplus: apply softplus to delta + delta_bias.
    return_last_state: also return the state after the last step, (batch, dim, N) float32.
    initial_state: optional (batch, dim, N) state before the first step (default zeros, a
      sequence's start; an extension of mamba's signature): passing the last state of one call
      to the next runs a long sequence in pieces, as one call would (differentiable).
    impl: "reference", "associative", "chunked", "pallas" or "auto" (see `resolve_impl`).
    chunk: the longest chunk of the "chunked" implementation (its backward holds one chunk at a
      time); see `chunk_length` for the one it runs.

  Returns:
    y (batch, L, dim) in u's dtype, and the last state when asked.
  """
  groups, state_dim = _check_shapes(u, delta, A, B, C, D, z, delta_bias)
  impl = resolve_impl(impl)
  batch, length, dim = u.shape
  if initial_state is None:
    initial_state = jnp.zeros((batch, dim, state_dim), jnp.float32)
  elif initial_state.shape != (batch, dim, state_dim):
    raise ValueError(
      f"initial_state must be (batch, dim, N) = {(batch, dim, state_dim)}, "
      f"got shape {initial_state.shape}"
    )
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  u32, delta32, A32, B32, C32 = (f32(x) for x in (u, delta, A, B, C))
  if delta_bias is not None:
    delta32 = delta32 + f32(delta_bias)[None, None]
  if delta_softplus:
    delta32 = _softplus(delta32)
  if B32.ndim == 3:
    B32, C32 = B32[:, :, None], C32[:, :, None]
  group_dim = dim // groups
  y, last_state = _run_core(
    impl,
    u32.reshape(batch, length, groups, group_dim),
    delta32.reshape(batch, length, groups, group_dim),
    A32.reshape(groups, group_dim, state_dim),
    B32,
    C32,
    f32(initial_state).reshape(batch, groups, group_dim, state_dim),
    chunk,
  )
  y = y.reshape(batch, length, dim)
  if D is not None:
    y = y + u32 * f32(D)[None, None]
  if z is not None:
    y = y * jax.nn.silu(f32(z))
  y = y.astype(u.dtype)
  if return_last_state:
    return y, last_state.reshape(batch, dim, state_dim)
  return y


def selective_scan(
  u,
  delta,
  A,
  B,
  C,
  D=None,
  z=None,
  delta_bias=None,
  delta_softplus=False,
  return_last_state=False,
  *,
  initial_state=None,
  impl: Impl = "auto",
  chunk: int = DEFAULT_CHUNK,
):
  """Selective scan with the `mamba_ssm.selective_scan_fn` layout.

  Args:
    u, delta: (batch, dim, L). z: optional (batch, dim, L) gate.
    A: (dim, N) real. B, C: (batch, N, L), or grouped (batch, G, N, L).
    D, delta_bias: optional (dim,).
    delta_softplus, return_last_state, initial_state, impl, chunk: as in
      `selective_scan_channels_last`.

  Returns:
    y (batch, dim, L) in u's dtype, and the last state (batch, dim, N) float32 when asked.
  """
  if u.ndim != 3:
    raise ValueError(f"u must be (batch, dim, L), got shape {u.shape}")
  to_last = lambda x: None if x is None else jnp.swapaxes(x, 1, 2)
  if B.ndim not in (3, 4) or C.ndim not in (3, 4):
    raise ValueError(f"B and C must be (batch, [G,] N, L), got shapes {B.shape} and {C.shape}")
  bc_to_last = lambda x: jnp.moveaxis(x, -1, 1)  # (batch, [G,] N, L) -> (batch, L, [G,] N)
  out = selective_scan_channels_last(
    to_last(u),
    to_last(delta),
    A,
    bc_to_last(B),
    bc_to_last(C),
    D=D,
    z=to_last(z),
    delta_bias=delta_bias,
    delta_softplus=delta_softplus,
    return_last_state=return_last_state,
    initial_state=initial_state,
    impl=impl,
    chunk=chunk,
  )
  if return_last_state:
    return to_last(out[0]), out[1]
  return to_last(out)
