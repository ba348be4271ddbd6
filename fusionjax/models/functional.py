"""A pure functional face of the models, for notebooks and jax transformations.

    params = init(rng, "mambadfuse_tiny")            # or a Config, or a ConfigDict with `name`
    fused = apply(params, a, b)                      # a, b (batch, H, W, 1) in [0, 1]
    grads = jax.grad(lambda p: loss(apply(p, a, b)))(params)

`Params` is a pytree: the model's nnx.State is its only child (the arrays), its nnx.GraphDef (the
module structure, config choices such as the scan implementation) is static aux data. So params
pass through jax.jit, jax.grad, jax.tree.map and checkpointing like any pytree of arrays.
"""

import dataclasses
from typing import Any

import jax
from flax import nnx

from fusionjax.models import registry


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
  override that model's Config."""
  if isinstance(config, str):
    return registry.lookup(config)[1], registry.make_config(config)
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    for name in registry.names():
      config_cls, model_cls = registry.lookup(name)
      if type(config) is config_cls:  # pylint: disable=unidiomatic-typecheck
        return model_cls, config
    raise TypeError(f"{type(config).__qualname__} is not the Config of a registered model "
                    f"({registry.names()})")
  fields = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  if "name" not in fields:
    raise ValueError(f"a model config mapping needs a `name` field; got fields {sorted(fields)}")
  name = fields.pop("name")
  return registry.lookup(name)[1], registry.make_config(name, **fields)


def build(name_or_config, *, rngs: nnx.Rngs) -> nnx.Module:
  """The NNX model for a registered name, a Config dataclass, or a ConfigDict with `name`."""
  model_cls, config = resolve_config(name_or_config)
  return model_cls(config, rngs=rngs)


def init(rng, config) -> Params:
  """Freshly initialised params, in evaluation mode (no stochastic depth: `apply` fuses).

  rng: a jax PRNG key or an int seed; it seeds every stream (parameters, and dropout for
  `params.module().train()`). config: as for `build`.
  """
  model = build(config, rngs=nnx.Rngs(rng, params=rng))
  model.eval()
  return Params(*nnx.split(model))


def apply(params: Params, a: jax.Array, b: jax.Array) -> jax.Array:
  """Fuses a and b, (batch, H, W, 1) in [0, 1], into (batch, H, W, 1) (the model's __call__)."""
  return params.module()(a, b)
