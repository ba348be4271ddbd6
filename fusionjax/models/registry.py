"""Model registry: each model module registers its (Config dataclass, nnx.Module class) by name."""

import dataclasses
from typing import Any

_MODELS: dict[str, tuple[type, type]] = {}


def register(name: str, config_cls: type):
  """Class decorator registering an nnx.Module under `name` with its frozen Config dataclass."""

  def decorator(model_cls):
    if name in _MODELS:
      raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = (config_cls, model_cls)
    return model_cls

  return decorator


def names() -> list[str]:
  """Registered model names, sorted."""
  return sorted(_MODELS)


def lookup(name: str) -> tuple[type, type]:
  """(Config class, model class) registered under `name`."""
  if name not in _MODELS:
    raise KeyError(f"unknown model {name!r}; registered models: {names()}")
  return _MODELS[name]


def make_config(name: str, **overrides: Any):
  """The Config dataclass of `name` with fields overridden; unknown fields are refused."""
  config_cls, _ = lookup(name)
  fields = {f.name for f in dataclasses.fields(config_cls)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown config fields for model {name!r}: {unknown}; known: {sorted(fields)}")
  return config_cls(**overrides)
