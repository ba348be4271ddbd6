"""Test helpers for the models: cheap construction and cheap compilation on a 2-core CPU.

XLA compiles every distinct random-draw shape separately (0.1-0.3 s each here), so really
initialising a model of a few hundred tensors costs 20-30 s. Model-level tests only need
parameters of the right scale: `build` makes the model abstractly (`nnx.eval_shape`, no
computation) and fills every nnx.Param with numpy draws shaped like the real initialisation (the
real initialisers are tested block by block in scan2d_mixers_test.py). `fast_jit` compiles with
XLA's cheap settings, halving compile time, which dominates these tests (each program runs once
or twice).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax import convert


def _fan_in(shape) -> int:
  if len(shape) == 4:  # conv HWIO
    return int(np.prod(shape[:-1]))
  return shape[-2] if len(shape) >= 2 else shape[0]


def _init_like(name: str, shape, rng: np.random.Generator) -> np.ndarray:
  noise = rng.standard_normal(shape)
  if name == "A_log":
    return np.log(np.arange(1, shape[-1] + 1)) + 0.1 * noise
  if name in ("D", "scale", "centre_gain"):
    return 1 + 0.1 * noise
  if name == "theta":
    return 0.5 + 0.05 * noise
  if name == "dt_bias":
    dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), shape))
    return dt + np.log(-np.expm1(-dt))
  if name == "bias":
    return 0.05 * noise
  if name == "mean":  # BatchNorm running statistics
    return 0.1 * noise
  if name == "var":
    return 1 + 0.1 * np.abs(noise)
  return noise / math.sqrt(_fan_in(shape))


def _materialise_rng_state(model: nnx.Module, seed: int) -> None:
  """Gives the (dropout) RNG streams of an abstract model real keys, one per stream."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.RngState))
  if flat:
    nnx.update(model, nnx.from_flat_state(convert.seed_rng_state(flat, seed)))


def fill_random(model: nnx.Module, seed: int) -> nnx.Module:
  """Overwrites every nnx.Param and BatchStat of `model` (real or abstract) with init-like numpy
  draws and gives its RNG streams (dropout) real keys."""
  _materialise_rng_state(model, seed)
  rng = np.random.default_rng(seed)
  flat = nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))
  values = {
    path: type(var)(jnp.asarray(_init_like(str(path[-1]), tuple(var.shape), rng), jnp.float32))
    for path, var in flat
  }
  nnx.update(model, nnx.from_flat_state(values))
  return model


def build(model_cls, config, seed: int = 0) -> nnx.Module:
  """`model_cls(config)` with random init-like parameters, built without compiling."""
  return fill_random(nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(seed))), seed)


def with_scan_impl(module: nnx.Module, scan_impl: str) -> nnx.Module:
  """`module` with `scan_impl` set on every selective-scan module inside it, as models do."""
  module.set_attributes(scan_impl=scan_impl, raise_if_not_found=False)
  return module


def param_count(model: nnx.Module) -> int:
  return sum(int(np.prod(var.shape)) for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)))


CHEAP_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn):
  """`fn(model, *arrays)` jitted functionally with cheap XLA settings.

  The model's state is an input, so its mutations (dropout RNG counts) are not written back; use
  `nnx.jit` where that matters.
  """

  @functools.partial(jax.jit, static_argnums=0, compiler_options=CHEAP_COMPILE)
  def run(graphdef, state, *args):
    return fn(nnx.merge(graphdef, state), *args)

  return lambda model, *args: run(*nnx.split(model), *args)
