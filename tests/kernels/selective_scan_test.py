"""Every selective-scan implementation against an independent float64 definition.

The float64 truth is written here from the recurrence itself (not from the package) and
differentiated by JAX in x64 mode; implementations run in float32 (their contract) or bfloat16.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionjax.kernels import selective_scan, selective_scan_channels_last
from fusionjax.kernels.scan import resolve_impl

IMPLS = ("reference", "associative", "chunked", "pallas")
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def truth_float64(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
  """Mamba's selective_scan_ref in float64, (batch, dim, L) layout, returns (y, last_state)."""
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
    state = (jnp.exp(delta[:, :, t, None] * A[None]) * state
             + (delta[:, :, t] * u[:, :, t])[..., None] * B_full[..., t])
    return state, jnp.sum(state * C_full[..., t], axis=-1)

  state0 = jnp.zeros((u.shape[0], dim, A.shape[1]), u.dtype)
  last, y = jax.lax.scan(step, state0, jnp.arange(u.shape[2]))
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
  return inputs


def loss_and_grads(fn, inputs, dtype, weights):
  """A scalar loss touching y and the last state, and its gradient w.r.t. every array input."""
  names = [k for k in ARG_NAMES if inputs[k] is not None]
  arrays = [jnp.asarray(inputs[k], dtype) for k in names]

  def loss(*arrays):
    y, last = fn(**dict(zip(names, arrays)))
    value = jnp.sum(y.astype(weights.dtype) * weights) + jnp.sum(jnp.sin(last.astype(weights.dtype)))
    return value, (y, last)

  (_, (y, last)), grads = jax.value_and_grad(loss, argnums=tuple(range(len(names))),
                                             has_aux=True)(*arrays)
  return y, last, dict(zip(names, grads))


def assert_close(actual, expected, rtol, what):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  scale = np.max(np.abs(expected)) + 1e-12
  error = np.max(np.abs(actual - expected)) / scale
  assert error < rtol, f"{what}: max error {error:.2e} relative to max |value| exceeds {rtol:.0e}"


OPTION_SETS = {
    "all_on": dict(D=True, z=True, delta_bias=True, softplus=True),
    "all_off": dict(D=False, z=False, delta_bias=False, softplus=False),
    "mixed": dict(D=True, z=False, delta_bias=True, softplus=False),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("groups", [0, 2], ids=["ungrouped", "grouped"])
@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_matches_float64_truth(impl, groups, options):
  """Forward, last state and every gradient, on an odd length that crosses chunk boundaries."""
  opts = OPTION_SETS[options]
  length = 133  # odd, > 2 chunks of 64 (pallas) and of the chunk=48 used below
  inputs = make_inputs(hash((impl, groups, options)) % 2**31, batch=2, dim=6, length=length,
                       state_dim=5, groups=groups, with_optional=opts)
  weights = np.random.default_rng(7).normal(size=(2, 6, length))
  with jax.enable_x64(True):
    y64, last64, grads64 = loss_and_grads(
        lambda **kw: truth_float64(**{k: kw.get(k) for k in ARG_NAMES},
                                   delta_softplus=opts["softplus"]),
        inputs, jnp.float64, jnp.asarray(weights))
  fn = jax.jit(lambda **kw: selective_scan(**kw, delta_softplus=opts["softplus"],
                                           return_last_state=True, impl=impl, chunk=48))
  y, last, grads = loss_and_grads(fn, inputs, jnp.float32, jnp.asarray(weights, jnp.float32))
  assert y.dtype == jnp.float32 and last.dtype == jnp.float32
  assert y.shape == (2, 6, length) and last.shape == (2, 6, 5)
  assert_close(y, y64, 2e-5, f"{impl} y")
  assert_close(last, last64, 2e-5, f"{impl} last state")
  assert set(grads) == set(grads64)
  for name in grads64:
    assert_close(grads[name], grads64[name], 5e-5, f"{impl} d{name}")


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_inputs(impl):
  """bfloat16 in and out, float32 state: error at bfloat16 resolution, not beyond."""
  opts = OPTION_SETS["all_on"]
  inputs = make_inputs(11, batch=2, dim=4, length=70, state_dim=4, groups=2, with_optional=opts)
  inputs = {k: None if v is None else np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64)
            for k, v in inputs.items()}  # the truth sees the same rounded inputs
  weights = np.random.default_rng(3).normal(size=(2, 4, 70))
  with jax.enable_x64(True):
    y64, _, grads64 = loss_and_grads(
        lambda **kw: truth_float64(**{k: kw.get(k) for k in ARG_NAMES}, delta_softplus=True),
        inputs, jnp.float64, jnp.asarray(weights))
  fn = jax.jit(lambda **kw: selective_scan(**kw, delta_softplus=True, return_last_state=True,
                                           impl=impl))
  y, last, grads = loss_and_grads(fn, inputs, jnp.bfloat16, jnp.asarray(weights, jnp.float32))
  assert y.dtype == jnp.bfloat16 and last.dtype == jnp.float32
  assert_close(y, y64, 1e-2, f"{impl} bf16 y")
  for name in ("u", "delta", "B", "C"):
    assert grads[name].dtype == jnp.bfloat16
    assert_close(grads[name], grads64[name], 3e-2, f"{impl} bf16 d{name}")


def test_layouts_agree():
  """selective_scan (batch, dim, L) is selective_scan_channels_last (batch, L, dim) transposed."""
  x = make_inputs(5, batch=1, dim=4, length=9, state_dim=3, groups=2,
                  with_optional=OPTION_SETS["all_on"])
  x = {k: jnp.asarray(v, jnp.float32) for k, v in x.items()}
  y = selective_scan(**x, delta_softplus=True, impl="reference")
  t = lambda a: jnp.swapaxes(a, 1, 2)
  y_last = selective_scan_channels_last(
      t(x["u"]), t(x["delta"]), x["A"], jnp.moveaxis(x["B"], -1, 1), jnp.moveaxis(x["C"], -1, 1),
      x["D"], t(x["z"]), x["delta_bias"], True, impl="reference")
  np.testing.assert_allclose(np.asarray(t(y_last)), np.asarray(y), rtol=1e-6)


@pytest.mark.parametrize("impl", ["chunked", "pallas"])
def test_composes_with_remat_and_vmap(impl):
  """Custom VJPs survive jax.checkpoint and jax.vmap (as models use them)."""
  x = make_inputs(9, batch=1, dim=4, length=20, state_dim=3, groups=0,
                  with_optional=OPTION_SETS["all_off"])
  x = {k: jnp.asarray(v, jnp.float32) for k, v in x.items() if v is not None}
  run = lambda impl_, u: selective_scan(u, x["delta"], x["A"], x["B"], x["C"], impl=impl_).sum()
  grad_of = lambda impl_: jax.grad(jax.checkpoint(lambda u: run(impl_, u)))(x["u"])
  np.testing.assert_allclose(grad_of(impl), grad_of("reference"), rtol=1e-4, atol=1e-5)
  stacked = jnp.stack([x["u"], 2 * x["u"]])
  vmapped = jax.vmap(lambda u: run(impl, u))(stacked)
  looped = jnp.stack([run("reference", u) for u in stacked])
  np.testing.assert_allclose(vmapped, looped, rtol=1e-4)


def test_pallas_lowers_for_cuda_without_a_gpu():
  """The GPU path (forward and backward kernels) lowers to a Triton custom call for CUDA."""
  spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  args = (spec(2, 48, 200), spec(2, 48, 200), spec(48, 12), spec(2, 4, 12, 200),
          spec(2, 4, 12, 200), spec(48), spec(2, 48, 200), spec(48))

  def loss(*a):
    y, last = selective_scan(*a, delta_softplus=True, return_last_state=True, impl="pallas")
    return y.sum() + last.sum()

  for fn in (lambda *a: selective_scan(*a, delta_softplus=True, impl="pallas"),
             jax.grad(loss, argnums=tuple(range(8)))):
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" in text.lower()


def test_auto_picks_per_backend():
  assert resolve_impl("auto", "cpu") == "chunked"
  assert resolve_impl("auto", "gpu") == "pallas"
  assert resolve_impl("associative", "gpu") == "associative"
  with pytest.raises(ValueError, match="unknown selective-scan impl 'fast'"):
    resolve_impl("fast")


@pytest.mark.parametrize("bad, message", [
    (dict(delta=np.zeros((1, 4, 8))), "delta shape"),
    (dict(A=np.zeros((3, 2))), "A must be"),
    (dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9))), "B must be"),
    (dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9))), "L=9"),
    (dict(D=np.zeros(3)), "D must be"),
    (dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9))), "divisible"),
])
def test_bad_shapes_are_named(bad, message):
  good = dict(u=np.zeros((1, 4, 9)), delta=np.zeros((1, 4, 9)), A=np.zeros((4, 2)),
              B=np.zeros((1, 2, 9)), C=np.zeros((1, 2, 9)))
  if "divisible" in message:
    bad = dict(B=np.zeros((1, 3, 2, 9)), C=np.zeros((1, 3, 2, 9)))
  elif "L=9" in message:
    bad = dict(B=np.zeros((1, 2, 8)), C=np.zeros((1, 2, 8)))
  elif "B must be" in message:
    bad = dict(B=np.zeros((1, 2, 3)), C=np.zeros((1, 2, 3)))
  with pytest.raises(ValueError, match=message):
    selective_scan(**{**good, **bad})
