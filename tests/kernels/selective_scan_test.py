"""Every selective-scan implementation against an independent float64 definition.

The float64 truth is written here from the recurrence itself (not from the package) and
differentiated by JAX in x64 mode; implementations run in float32 (their contract) or bfloat16.
"""

import functools
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import jax.extend.backend
import jax.numpy as jnp
import numpy as np
import pytest

from fusionjax.kernels import selective_scan, selective_scan_channels_last
from fusionjax.kernels.scan import api as scan_api
from fusionjax.kernels.scan import pallas_gpu, resolve_impl

IMPLS = ("reference", "associative", "chunked", "pallas")
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
EPS32 = float(np.finfo(np.float32).eps)


def truth_float64(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
  """Mamba's selective_scan_ref in float64, (batch, dim, L) layout, returns (y, last_state);
  from `initial_state` (batch, dim, N) where given, zeros otherwise."""
  if B.ndim == 3:  # ungrouped (batch, N, L) is one group
    B, C = B[:, None], C[:, None]
  dim, groups = u.shape[1], B.shape[1]
  if delta_bias is not None:
    delta = delta + delta_bias[None, :, None]
  if delta_softplus:
    delta = jnp.logaddexp(delta, 0.0)
  B_full = jnp.repeat(B, dim // groups, axis=1)  # (batch, dim, N, L)
  C_full = jnp.repeat(C, dim // groups, axis=1)

  def step(state, t):
    state = (
      jnp.exp(delta[:, :, t, None] * A[None]) * state
      + (delta[:, :, t] * u[:, :, t])[..., None] * B_full[..., t]
    )
    return state, jnp.sum(state * C_full[..., t], axis=-1)

  state0 = jnp.zeros((u.shape[0], dim, A.shape[1]), u.dtype)
  last, y = jax.lax.scan(
    step, state0 if initial_state is None else initial_state, jnp.arange(u.shape[2])
  )
  y = jnp.moveaxis(y, 0, -1)
  if D is not None:
    y = y + D[None, :, None] * u
  if z is not None:
    y = y * z * jax.nn.sigmoid(z)
  return y, last


def make_inputs(seed, batch, dim, length, state_dim, groups, with_optional):
  """Fresh random float64 numpy inputs in mamba's layout; optional ones None when not wanted."""
  rng = np.random.default_rng(seed)
  b_shape = (batch, state_dim, length) if groups == 0 else (batch, groups, state_dim, length)
  inputs = dict(
    u=rng.normal(size=(batch, dim, length)),
    delta=rng.normal(size=(batch, dim, length)) * 0.5 + (0.0 if with_optional["softplus"] else 1.0),
    A=-np.exp(rng.normal(size=(dim, state_dim))),
    B=rng.normal(size=b_shape),
    C=rng.normal(size=b_shape),
    D=rng.normal(size=dim) if with_optional["D"] else None,
    z=rng.normal(size=(batch, dim, length)) if with_optional["z"] else None,
    delta_bias=rng.normal(size=dim) * 0.3 if with_optional["delta_bias"] else None,
  )
  if not with_optional["softplus"]:
    inputs["delta"] = np.abs(inputs["delta"])  # keep decays <= 1 without softplus
  with_state = with_optional.get("initial_state", False)
  inputs["initial_state"] = rng.normal(size=(batch, dim, state_dim)) if with_state else None
  return inputs


def loss_and_grads(fn, inputs, dtype, weights):
  """A scalar loss touching y and the last state, and its gradient w.r.t. every array input."""
  names = [k for k in ARG_NAMES if inputs[k] is not None]
  arrays = [jnp.asarray(inputs[k], dtype) for k in names]

  def loss(*arrays):
    y, last = fn(**dict(zip(names, arrays)))
    value = jnp.sum(y.astype(weights.dtype) * weights) + jnp.sum(
      jnp.sin(last.astype(weights.dtype))
    )
    return value, (y, last)

  (_, (y, last)), grads = jax.value_and_grad(loss, argnums=tuple(range(len(names))), has_aux=True)(
    *arrays
  )
  return y, last, dict(zip(names, grads))


def relative_error(actual, expected):
  """Max absolute difference relative to the largest |expected| value."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return np.max(np.abs(actual - expected)) / (np.max(np.abs(expected)) + 1e-12)


def assert_close(actual, expected, rtol, what):
  error = relative_error(actual, expected)
  assert error < rtol, f"{what}: max error {error:.2e} relative to max |value| exceeds {rtol:.1e}"


def case_seed(*case) -> int:
  """A seed fixed per test case (unlike hash(), which changes with PYTHONHASHSEED)."""
  return zlib.crc32(repr(case).encode())


def by_name(y, last, grads) -> dict:
  """Outputs and gradients of `loss_and_grads` under one name each: "y", "last state", "du", ..."""
  return {"y": y, "last state": last, **{f"d{name}": grad for name, grad in grads.items()}}


def rounded_to_float32(arrays):
  return {k: None if v is None else np.float32(v).astype(np.float64) for k, v in arrays.items()}


OPTION_SETS = {
  "all_on": dict(D=True, z=True, delta_bias=True, softplus=True),
  "all_off": dict(D=False, z=False, delta_bias=False, softplus=False),
  "mixed": dict(D=True, z=False, delta_bias=True, softplus=False),
  "from_a_state": dict(D=True, z=True, delta_bias=True, softplus=True, initial_state=True),
}
# A float32 scan rounds every value a few times per step (forward and backward), each rounding as
# large as rounding the inputs once; a correct implementation stays within this many times the
# error that rounding the inputs once causes. Bugs show up orders of magnitude above it.
ROUNDINGS_ALLOWED = 64
LENGTH = 133  # odd, > 2 chunks of 64 (pallas) and of the chunk=48 used below


@functools.cache
def float64_truth(groups, options):
  """Inputs of one case, the float64 truth on their float32 rounding, and its conditioning.

  The truth sees exactly the float32 values the implementations see. Its conditioning is how
  far one float32 rounding of every input moves each output (relative to its largest value):
  exponential growth (softplus off with a negative delta) or a long sequence makes it large.
  """
  opts = OPTION_SETS[options]
  inputs = make_inputs(
    case_seed(groups, options),
    batch=2,
    dim=6,
    length=LENGTH,
    state_dim=5,
    groups=groups,
    with_optional=opts,
  )
  weights = np.float32(np.random.default_rng(7).normal(size=(2, 6, LENGTH))).astype(np.float64)
  truth_fn = lambda **kw: truth_float64(
    **{k: kw.get(k) for k in ARG_NAMES}, delta_softplus=opts["softplus"]
  )
  with jax.enable_x64(True):
    exact = loss_and_grads(truth_fn, inputs, jnp.float64, jnp.asarray(weights))
    rounded = loss_and_grads(
      truth_fn, rounded_to_float32(inputs), jnp.float64, jnp.asarray(weights)
    )
  truth, exact = by_name(*rounded), by_name(*exact)
  conditioning = {what: max(relative_error(exact[what], truth[what]), EPS32) for what in truth}
  return inputs, weights, truth, conditioning


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("groups", [0, 2], ids=["ungrouped", "grouped"])
@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_matches_float64_truth(impl, groups, options):
  """Forward, last state and every gradient, on an odd length that crosses chunk boundaries."""
  inputs, weights, truth, conditioning = float64_truth(groups, options)
  fn = jax.jit(
    lambda **kw: selective_scan(
      **kw,
      delta_softplus=OPTION_SETS[options]["softplus"],
      return_last_state=True,
      impl=impl,
      chunk=48,
    )
  )
  y, last, grads = loss_and_grads(fn, inputs, jnp.float32, jnp.asarray(weights, jnp.float32))
  assert y.dtype == jnp.float32 and last.dtype == jnp.float32
  assert y.shape == (2, 6, LENGTH) and last.shape == (2, 6, 5)
  outputs = by_name(y, last, grads)
  assert set(outputs) == set(truth)
  for what, value in outputs.items():
    assert_close(value, truth[what], ROUNDINGS_ALLOWED * conditioning[what], f"{impl} {what}")


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_inputs(impl):
  """bfloat16 in and out, float32 state: error at bfloat16 resolution, not beyond."""
  opts = OPTION_SETS["all_on"]
  inputs = make_inputs(11, batch=2, dim=4, length=70, state_dim=4, groups=2, with_optional=opts)
  inputs = {
    k: None if v is None else np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64)
    for k, v in inputs.items()
  }  # the truth sees the same rounded inputs
  weights = np.random.default_rng(3).normal(size=(2, 4, 70))
  with jax.enable_x64(True):
    y64, _, grads64 = loss_and_grads(
      lambda **kw: truth_float64(**{k: kw.get(k) for k in ARG_NAMES}, delta_softplus=True),
      inputs,
      jnp.float64,
      jnp.asarray(weights),
    )
  fn = jax.jit(
    lambda **kw: selective_scan(**kw, delta_softplus=True, return_last_state=True, impl=impl)
  )
  y, last, grads = loss_and_grads(fn, inputs, jnp.bfloat16, jnp.asarray(weights, jnp.float32))
  assert y.dtype == jnp.bfloat16 and last.dtype == jnp.float32
  assert_close(y, y64, 1e-2, f"{impl} bf16 y")
  for name in ("u", "delta", "B", "C"):
    assert grads[name].dtype == jnp.bfloat16
    assert_close(grads[name], grads64[name], 3e-2, f"{impl} bf16 d{name}")


def test_layouts_agree():
  """selective_scan (batch, dim, L) is selective_scan_channels_last (batch, L, dim) transposed."""
  x = make_inputs(
    5, batch=1, dim=4, length=9, state_dim=3, groups=2, with_optional=OPTION_SETS["all_on"]
  )
  x = {k: jnp.asarray(v, jnp.float32) for k, v in x.items() if v is not None}
  y = selective_scan(**x, delta_softplus=True, impl="reference")
  t = lambda a: jnp.swapaxes(a, 1, 2)
  y_last = selective_scan_channels_last(
    t(x["u"]),
    t(x["delta"]),
    x["A"],
    jnp.moveaxis(x["B"], -1, 1),
    jnp.moveaxis(x["C"], -1, 1),
    x["D"],
    t(x["z"]),
    x["delta_bias"],
    True,
    impl="reference",
  )
  np.testing.assert_allclose(np.asarray(t(y_last)), np.asarray(y), rtol=1e-6)


def test_delta_softplus_and_its_derivative_at_the_edges():
  """The scan's softplus is jax.nn.softplus, its derivative sigmoid, also where a rewritten
  softplus goes wrong: at 0 (max and abs meet; the derivative must stay 1/2), +-inf, NaN."""
  x = jnp.array([-jnp.inf, -90.0, -20.0, -1.0, -1e-8, 0.0, 1e-8, 1.0, 20.0, 90.0, jnp.inf])
  np.testing.assert_allclose(scan_api._softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=0)
  derivative = jax.vmap(jax.grad(scan_api._softplus))(x)
  np.testing.assert_allclose(derivative, jax.nn.sigmoid(x), rtol=1e-6, atol=0)
  assert np.isnan(scan_api._softplus(jnp.float32(jnp.nan)))


@pytest.mark.parametrize(
  ("length", "taken", "padded"), [(144, 48, 144), (288, 48, 288), (133, 45, 135), (64, 64, 64)]
)
def test_chunked_takes_a_chunk_that_divides_the_length_or_pads_little(
  monkeypatch, length, taken, padded
):
  """With chunk=64 (the longest allowed), L = 144 and 288 run in chunks of 48 (64 would pad 48
  and 32 steps, copying every input), L = 133 in three chunks of 45 (2 padding steps); y is the
  reference's."""
  x = make_inputs(
    3, batch=1, dim=4, length=length, state_dim=3, groups=0, with_optional=OPTION_SETS["all_off"]
  )
  x = {k: jnp.asarray(v, jnp.float32) for k, v in x.items() if v is not None}
  calls, scan_chunked = [], scan_api.scan_chunked

  def recorded(u, delta, A, B, C, state0, chunk):
    calls.append((u.shape[1], chunk))
    return scan_chunked(u, delta, A, B, C, state0, chunk)

  monkeypatch.setattr(scan_api, "scan_chunked", recorded)
  y = selective_scan(**x, impl="chunked", chunk=64)
  assert calls == [(padded, taken)]
  np.testing.assert_allclose(y, selective_scan(**x, impl="reference"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["chunked", "pallas"])
def test_composes_with_remat_and_vmap(impl):
  """Custom VJPs survive jax.checkpoint and jax.vmap (as models use them)."""
  x = make_inputs(
    9, batch=1, dim=4, length=20, state_dim=3, groups=0, with_optional=OPTION_SETS["all_off"]
  )
  x = {k: jnp.asarray(v, jnp.float32) for k, v in x.items() if v is not None}
  run = lambda impl_, u: selective_scan(u, x["delta"], x["A"], x["B"], x["C"], impl=impl_).sum()
  grad_of = lambda impl_: jax.grad(jax.checkpoint(lambda u: run(impl_, u)))(x["u"])
  np.testing.assert_allclose(grad_of(impl), grad_of("reference"), rtol=1e-4, atol=1e-5)
  stacked = jnp.stack([x["u"], 2 * x["u"]])
  vmapped = jax.vmap(lambda u: run(impl, u))(stacked)
  looped = jnp.stack([run("reference", u) for u in stacked])
  np.testing.assert_allclose(vmapped, looped, rtol=1e-4)


# A CUDA GPU to lower for on a machine without one: from jax 0.11 the Triton lowering reads the
# target's compute capability from the abstract device of the current abstract mesh.
H100 = jax.sharding.AbstractMesh(
  (), (), abstract_device=jax.sharding.AbstractDevice("NVIDIA H100", None, "gpu")
)


# Lowering the Triton kernels warns from jax 0.11 that the Triton lowering is deprecated (README,
# "Pallas backend"); tests that lower them on purpose do not repeat it.
lowers_triton_kernels = pytest.mark.filterwarnings(
  "ignore:The Pallas Triton backend is deprecated:DeprecationWarning"
)


def lowered_for_cuda(fn, *args) -> str:
  with jax.sharding.use_abstract_mesh(H100):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


@lowers_triton_kernels
def test_pallas_lowers_for_cuda_without_a_gpu():
  """The GPU path (forward and backward kernels) lowers to a Triton custom call for CUDA."""
  spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  args = (
    spec(2, 48, 200),
    spec(2, 48, 200),
    spec(48, 12),
    spec(2, 4, 12, 200),
    spec(2, 4, 12, 200),
    spec(48),
    spec(2, 48, 200),
    spec(48),
  )

  def loss(*a):
    y, last = selective_scan(*a, delta_softplus=True, return_last_state=True, impl="pallas")
    return y.sum() + last.sum()

  for fn in (
    lambda *a: selective_scan(*a, delta_softplus=True, impl="pallas"),
    jax.grad(loss, argnums=tuple(range(8))),
  ):
    assert "triton" in lowered_for_cuda(fn, *args).lower()


class FakeBackend(NamedTuple):
  platform: str
  platform_version: str


CUDA = FakeBackend("gpu", "cuda 12080")
ROCM = FakeBackend("gpu", "rocm 60302")
FALLBACK = "impl='auto' uses 'chunked'"


@pytest.fixture
def on_backend(monkeypatch):
  """Makes the kernels see another default backend; forgets what "auto" learnt before and after."""
  scan_api._pallas_lowers.cache_clear()

  def simulate(backend):
    monkeypatch.setattr(jax, "default_backend", lambda: backend.platform)
    monkeypatch.setattr(jax.extend.backend, "get_backend", lambda: backend)

  yield simulate
  scan_api._pallas_lowers.cache_clear()


def auto_scan_warnings(times: int) -> list[str]:
  """Runs an impl="auto" scan `times` times (chunked expected); returns the warnings raised."""
  x = make_inputs(
    13, batch=1, dim=2, length=5, state_dim=2, groups=0, with_optional=OPTION_SETS["all_off"]
  )
  x = {k: jnp.asarray(v, jnp.float32) for k, v in x.items() if v is not None}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(times):
      np.testing.assert_allclose(
        selective_scan(**x, impl="auto"), selective_scan(**x, impl="chunked"), rtol=1e-6
      )
  return [str(w.message) for w in caught if FALLBACK in str(w.message)]


@lowers_triton_kernels
def test_auto_picks_per_platform(on_backend):
  assert resolve_impl("auto", "cpu") == "chunked"
  assert resolve_impl("auto", "tpu") == "chunked"
  assert resolve_impl("associative", "rocm") == "associative"
  on_backend(CUDA)
  with jax.sharding.use_abstract_mesh(H100):  # where jax can lower the kernels for CUDA
    assert resolve_impl("auto") == "pallas"
  with pytest.raises(ValueError, match="unknown selective-scan impl 'fast'"):
    resolve_impl("fast")


def test_auto_never_interprets_pallas_on_a_gpu_it_cannot_compile_for(on_backend, monkeypatch):
  """On ROCm the kernels would run in the Pallas interpreter: "auto" takes "chunked", silently."""
  on_backend(ROCM)
  assert scan_api.default_platform() == "rocm"
  monkeypatch.setattr(scan_api, "scan_pallas", lambda *a, **k: pytest.fail("Pallas ran"))
  assert auto_scan_warnings(times=1) == []


def test_auto_falls_back_once_when_the_triton_lowering_is_missing(on_backend, monkeypatch):
  on_backend(CUDA)
  monkeypatch.setattr(pallas_gpu, "plt", None)  # as if `import ...pallas.triton` had failed
  (warning,) = auto_scan_warnings(times=3)
  assert "cannot be imported" in warning
  with pytest.raises(RuntimeError, match="impl='pallas' needs Pallas's Triton lowering"):
    pallas_gpu.scan_pallas(
      *(jnp.zeros((1, 64, 1, 1)),) * 2,
      jnp.zeros((1, 1, 1)),
      *(jnp.zeros((1, 64, 1, 1)),) * 2,
      jnp.zeros((1, 1, 1, 1)),
    )


def test_auto_falls_back_once_when_the_kernels_fail_to_lower(on_backend, monkeypatch):
  on_backend(CUDA)

  def removed(*args, **kwargs):
    raise NotImplementedError("Pallas Triton lowering was removed")

  monkeypatch.setattr(pallas_gpu.pl, "pallas_call", removed)
  (warning,) = auto_scan_warnings(times=3)
  assert "NotImplementedError: Pallas Triton lowering was removed" in warning


def test_the_kernels_survive_the_removal_of_the_triton_lowering():
  """A fresh process where `jax.experimental.pallas.triton` cannot be imported."""
  script = (
    "import sys; sys.modules['jax.experimental.pallas.triton'] = None\n"
    "from fusionjax.kernels.scan import pallas_gpu, selective_scan\n"
    "assert pallas_gpu.plt is None\n"
    "import jax.numpy as jnp; x = jnp.ones((1, 2, 5))\n"
    "selective_scan(x, x, -jnp.ones((2, 3)), jnp.ones((1, 3, 5)), jnp.ones((1, 3, 5)))\n"
  )
  subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parent)


@pytest.mark.parametrize(
  "bad, message",
  [
    (dict(delta=np.zeros((1, 4, 8))), "delta shape"),
    (dict(A=np.zeros((3, 2))), "A must be"),
    (dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9))), "B must be"),
    (dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9))), "L=9"),
    (dict(D=np.zeros(3)), "D must be"),
    (dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9))), "divisible"),
  ],
)
def test_bad_shapes_are_named(bad, message):
  good = dict(
    u=np.zeros((1, 4, 9)),
    delta=np.zeros((1, 4, 9)),
    A=np.zeros((4, 2)),
    B=np.zeros((1, 2, 9)),
    C=np.zeros((1, 2, 9)),
  )
  if "divisible" in message:
    bad = dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9)))
  elif "L=9" in message:
    bad = dict(B=np.zeros((1, 2, 8)), C=np.zeros((1, 2, 8)))
  elif "B must be" in message:
    bad = dict(B=np.zeros((1, 2, 3)), C=np.zeros((1, 2, 3)))
  with pytest.raises(ValueError, match=message):
    selective_scan(**{**good, **bad})
