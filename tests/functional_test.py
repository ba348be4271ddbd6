"""The functional face: init(rng, config) -> Params, apply(params, a, b), under jit and grad."""

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from fusionjax import compile_options, models
from fusionjax.layers.mamba import SelectiveScanBranch
from fusionjax.layers.ssm import SelectiveSSM
from fusionjax.models import mambadfuse

# Overrides of TinyConfig that keep its shapes (initialisers compile once per shape).
OVERRIDES = dict(scan_impl="reference", m3_shared_gate=True)


def _leaves_equal(p, q) -> bool:
  return jax.tree.structure(p) == jax.tree.structure(q) and all(
    np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q))
  )


def test_importing_models_registers_every_model():
  # In a fresh interpreter, so that no other fusionjax module has imported a model file.
  names = subprocess.run(
    [sys.executable, "-c", "import fusionjax.models as m; print(' '.join(m.names()))"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.split()
  assert {
    "mambadfuse",
    "mambadfuse_tiny",
    "fusionmamba",
    "fusionmamba_ct_mri",
    "fusionmamba_tiny",
    "s4fusion",
    "s4fusion_tiny",
  } <= set(names)


def test_init_accepts_name_dataclass_and_configdict():
  by_dataclass = models.init(0, mambadfuse.TinyConfig(**OVERRIDES))
  by_configdict = models.init(
    0, ml_collections.ConfigDict({"name": "mambadfuse_tiny", **OVERRIDES})
  )
  by_mapping = models.init(jax.random.key(0), {"name": "mambadfuse_tiny", **OVERRIDES})
  assert _leaves_equal(by_dataclass, by_configdict)
  assert _leaves_equal(by_dataclass, by_mapping)
  assert models.resolve_config("mambadfuse_tiny")[1] == mambadfuse.TinyConfig()
  assert by_dataclass.graphdef == by_configdict.graphdef
  assert not _leaves_equal(by_dataclass, models.init(1, mambadfuse.TinyConfig(**OVERRIDES)))


def test_build_compiled_and_init_agree_with_build():
  """One compiled program draws what `build` draws outside jit, to the last bits (XLA may fuse
  an initializer's arithmetic differently), and advances the caller's rngs as `build` does."""
  config = mambadfuse.TinyConfig(**OVERRIDES)
  rngs, compiled_rngs = nnx.Rngs(params=0), nnx.Rngs(params=0)
  model = models.build(config, rngs=rngs)
  compiled = models.build_compiled(config, rngs=compiled_rngs)
  initialised = models.init(0, config)
  assert isinstance(compiled, mambadfuse.MambaDFuse)
  assert nnx.graphdef(compiled) == nnx.graphdef(model)
  assert _leaves_equal(nnx.state(compiled), initialised.state)
  for got, want in zip(jax.tree.leaves(initialised.state), jax.tree.leaves(nnx.state(model))):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  key_data = lambda r: jax.random.key_data(r.params.key[...])
  assert _leaves_equal(key_data(rngs), key_data(compiled_rngs))
  assert rngs.params.count[...] == compiled_rngs.params.count[...] > 0
  traced = nnx.eval_shape(lambda: models.build_compiled(config, rngs=nnx.Rngs(params=0)))
  assert nnx.graphdef(traced) == nnx.graphdef(model)  # traced rngs: built as `build` does


def test_fast_compile_leaves_out_compiler_options_this_xla_does_not_know(monkeypatch):
  """Newer XLA releases refuse options older ones took (jaxlib 0.12 has no
  xla_cpu_use_fusion_emitters): construction and fast-compiled train steps keep the options this
  XLA compiles with."""
  compile_options.fast_compile.cache_clear()
  known = compile_options.fast_compile()
  assert known.items() >= compile_options.NO_OPTIMISATION.items()
  monkeypatch.setattr(compile_options, "LOOP_EMITTERS", {"xla_no_such_option_anywhere": True})
  compile_options.fast_compile.cache_clear()
  try:
    assert compile_options.fast_compile() == compile_options.NO_OPTIMISATION
  finally:
    compile_options.fast_compile.cache_clear()


@pytest.mark.parametrize("name", ["mambadfuse_tiny", "fusionmamba_tiny", "s4fusion_tiny"])
def test_config_scan_impl_reaches_every_scan_and_survives_split_merge(name):
  model = nnx.eval_shape(
    lambda: models.build({"name": name, "scan_impl": "chunked"}, rngs=nnx.Rngs(0))
  )
  scan_impls = lambda m: [
    node.scan_impl
    for _, node in nnx.iter_modules(m)
    if isinstance(node, (SelectiveSSM, SelectiveScanBranch))
  ]
  assert scan_impls(model) and set(scan_impls(model)) == {"chunked"}
  graphdef, state = nnx.split(model)
  assert set(scan_impls(nnx.merge(graphdef, state))) == {"chunked"}
  model.set_attributes(scan_impl="reference", raise_if_not_found=False)  # static: no state moves
  assert set(scan_impls(model)) == {"reference"}
  assert jax.tree.structure(nnx.state(model)) == jax.tree.structure(state)


def test_config_errors():
  with pytest.raises(KeyError, match="unknown model 'nope'"):
    models.init(0, "nope")
  with pytest.raises(ValueError, match="unknown config fields.*'depth'"):
    models.init(0, {"name": "mambadfuse", "depth": 3})
  with pytest.raises(ValueError, match="needs a `name` field"):
    models.init(0, ml_collections.ConfigDict({"embed_dim": 8}))
  with pytest.raises(TypeError, match="not the Config of a registered model"):
    models.init(0, _UnregisteredConfig())


@dataclasses.dataclass(frozen=True)
class _UnregisteredConfig:
  embed_dim: int = 8


def test_params_are_a_pytree_of_arrays():
  params = models.init(0, mambadfuse.TinyConfig())
  leaves, treedef = jax.tree.flatten(params)
  assert all(isinstance(x, jax.Array) for x in leaves)
  rebuilt = jax.tree.unflatten(treedef, leaves)
  assert isinstance(rebuilt, models.Params) and rebuilt.graphdef == params.graphdef
  doubled = jax.tree.map(lambda x: 2 * x, params)
  np.testing.assert_array_equal(
    doubled.state["conv_last3"]["bias"][...], 2 * params.state["conv_last3"]["bias"][...]
  )


def test_apply_under_jit_and_grad():
  params = models.init(0, mambadfuse.TinyConfig(scan_impl="reference"))
  a, b = (jax.random.uniform(k, (1, 5, 3, 1)) for k in jax.random.split(jax.random.key(1)))

  def loss(params, a, b):
    fused = models.apply(params, a, b)
    return jnp.mean((fused - jnp.maximum(a, b)) ** 2), fused

  loss_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, fused), grads = loss_and_grad(params, a, b)
  assert fused.shape == a.shape
  assert bool(jnp.isfinite(value))
  assert isinstance(grads, models.Params)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))  # every parameter is used
  stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
  (stepped_value, _), _ = loss_and_grad(stepped, a, b)  # same shapes: no recompilation
  assert float(stepped_value) < float(value)


@pytest.mark.parametrize("name", ["mambadfuse_tiny", "fusionmamba_tiny", "s4fusion_tiny"])
def test_every_model_fuses_through_init_and_apply(name):
  """init gives an evaluation-mode model (FusionMamba's stochastic depth off): apply is a
  deterministic function of (params, a, b), at any size."""
  a, b = jax.random.uniform(jax.random.key(1), (2, 1, 37, 45, 1))
  fused = jax.jit(models.apply)
  params = models.init(0, name)
  first, second = fused(params, a, b), fused(params, a, b)
  assert first.shape == (1, 37, 45, 1) and bool(jnp.all(jnp.isfinite(first)))
  np.testing.assert_array_equal(first, second)


def test_apply_refuses_mismatched_or_non_finite_inputs():
  params = models.init(0, mambadfuse.TinyConfig(scan_impl="reference"))
  a = jax.random.uniform(jax.random.key(2), (1, 6, 5, 1))
  with pytest.raises(ValueError, match=r"same shape; got a \(1, 6, 5, 1\) and b \(1, 4, 5, 1\)"):
    models.apply(params, a, a[:, :4])
  with pytest.raises(ValueError, match=r"b must be \(batch, H, W, 1\)"):
    models.apply(params, a, a[..., 0])
  with pytest.raises(ValueError, match="a contains NaN"):
    models.apply(params, a.at[0, 3, 2, 0].set(jnp.nan), a)
  with pytest.raises(ValueError, match="b contains NaN or infinite"):
    models.apply(params, a, np.asarray(a.at[0, 0, 0, 0].set(jnp.inf)))
  # Under tracing the shapes are still checked; values cannot be, and tracing works.
  with pytest.raises(ValueError, match="same shape"):
    jax.jit(models.apply)(params, a, a[:, :4])
  assert jax.eval_shape(models.apply, params, a, a).shape == a.shape
