"""A pure functional face of the models, for notebooks and jax transformations.

    params = init(rng, "mambadfuse_tiny")            # or a Config, or a ConfigDict with `name`
    fused = apply(params, a, b)                      # a, b, fused: `fusionjax.shapes.Planes`
    grads = jax.grad(lambda p: loss(apply(p, a, b)))(params)

`Params` is a pytree: the model's nnx.State is its only child (the arrays), its nnx.GraphDef (the
module structure, config choices such as the scan implementation) is static aux data. So params
pass through jax.jit, jax.grad, jax.tree.map and checkpointing like any pytree of arrays.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax import compile_options
from fusionjax.models import registry
from fusionjax.shapes import Planes


@dataclasses.dataclass(frozen=True)
class Params:
  """A model as a pytree: `graphdef` (static) and `state` (the parameter arrays)."""

  graphdef: Any
  state: nnx.State

  def module(self) -> nnx.Module:
    """The NNX module these params describe (e.g. for `.network` or submodules)."""
    return nnx.merge(self.graphdef, self.state)


jax.tree_util.register_dataclass(Params, data_fields=["state"], meta_fields=["graphdef"])


def resolve_config(config) -> tuple[type, Any]:
  """(model class, Config dataclass) for a registered name, a Config dataclass instance, or an
  ml_collections ConfigDict / mapping whose `name` is a registered model and whose other fields
  override that model's Config; fields that are None keep the default of the variant `name`
  names (`fusionjax.config_lib.model_config` leaves the fields it was not given None)."""
  if isinstance(config, str):
    return registry.lookup(config)[1], registry.make_config(config)
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    return registry.for_config(config)[1].model, config
  fields = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  if "name" not in fields:
    raise ValueError(f"a model config mapping needs a `name` field; got fields {sorted(fields)}")
  name = fields.pop("name")
  overrides = {field: value for field, value in fields.items() if value is not None}
  return registry.lookup(name)[1], registry.make_config(name, **overrides)


def family_of(config) -> registry.Family:
  """The family of a model config (anything `build` takes)."""
  model_cls, _ = resolve_config(config)
  return registry.for_model(model_cls)


def build(name_or_config, *, rngs: nnx.Rngs) -> nnx.Module:
  """The NNX model for a registered name, a Config dataclass, or a ConfigDict with `name`."""
  model_cls, config = resolve_config(name_or_config)
  return model_cls(config, rngs=rngs)


@functools.cache
def _jitted_construction(model_cls, config, rngs_graph: nnx.GraphDef):
  """(jitted, graphs): `jitted` maps the state of an nnx.Rngs of graph `rngs_graph` to the
  state of the pair (model_cls(config, rngs), rngs); `graphs[-1]` is that pair's graph once
  `jitted` has been traced (it does not depend on the shapes it was traced for)."""
  graphs = []

  def construct(rngs_state: nnx.State) -> nnx.State:
    rngs = nnx.merge(rngs_graph, rngs_state)
    graph, state = nnx.split((model_cls(config, rngs=rngs), rngs))
    graphs.append(graph)
    return state

  # Construction runs once: compiled for compile time, not run time.
  return jax.jit(construct, compiler_options=compile_options.fast_compile()), graphs


def build_compiled(name_or_config, *, rngs: nnx.Rngs) -> nnx.Module:
  """`build` as one compiled program, instead of one compile per initializer shape outside jit
  (1.3-2.4x faster for the tiny configs on CPU, measured; the values may differ from `build`'s
  in the last bits). The model draws from a copy of `rngs`; `rngs` is advanced as `build`
  advances it. Under a transformation that traces `rngs` (jax.eval_shape, jax.jit) it builds
  as `build` does: the enclosing program compiles the construction, and compiler options only
  go to a top-level jit."""
  rngs_graph, rngs_state = nnx.split(rngs)
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(rngs_state)):
    return build(name_or_config, rngs=rngs)
  model_cls, config = resolve_config(name_or_config)
  jitted, graphs = _jitted_construction(model_cls, config, rngs_graph)
  state = jitted(rngs_state)
  model, used_rngs = nnx.merge(graphs[-1], state)
  nnx.update(rngs, nnx.state(used_rngs))
  return model


def init(rng, config) -> Params:
  """Freshly initialised params, in evaluation mode (no stochastic depth: `apply` fuses).

  rng: a jax PRNG key or an int seed; it seeds every stream (parameters, and dropout for
  `params.module().train()`). config: as for `build`.
  """
  model = build_compiled(config, rngs=nnx.Rngs(rng, params=rng))
  model.eval()
  return Params(*nnx.split(model))


def check_inputs(a, b) -> None:
  """Raises ValueError unless a and b are `Planes` of one shape with finite values. Shapes are
  checked under jit and grad too; values only where they are concrete (not while tracing),
  since a traced value cannot be inspected."""
  for name, image in (("a", a), ("b", b)):
    if np.ndim(image) != 4 or np.shape(image)[-1] != 1:
      raise ValueError(f"{name} must be (batch, H, W, 1) grey planes; got shape {np.shape(image)}")
  if np.shape(a) != np.shape(b):
    raise ValueError(
      f"a and b must have the same shape; got a {np.shape(a)} and b "
      f"{np.shape(b)} (crop or resize one source to the other's size)"
    )
  for name, image in (("a", a), ("b", b)):
    if not isinstance(image, jax.core.Tracer) and not bool(jnp.isfinite(image).all()):
      raise ValueError(
        f"{name} contains NaN or infinite values; every output pixel would be "
        "NaN (the scans mix the whole image)"
      )


def apply(params: Params, a: Planes, b: Planes) -> Planes:
  """Fuses the planes a and b (the model's __call__).

  Raises:
    ValueError: the inputs are not `Planes` of one shape, or (when not traced) hold
      NaN or infinite values (`check_inputs`).
  """
  check_inputs(a, b)
  return params.module()(a, b)
