"""Model registry: each model module registers its (Config dataclass, nnx.Module class) by name.

Config fields are typed (int, float, bool, str, Literal[...], X | None, tuple[X, ...]); values
that arrive as JSON (a list for a tuple) or as command-line text are converted by those types.
"""

import dataclasses
import types
import typing
from typing import Any

_MODELS: dict[str, tuple[type, type]] = {}
_NONE_WORDS = ("none", "null")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


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


def families() -> list[str]:
  """One name per model class, sorted: the one whose Config is the base of the class's others
  (e.g. "fusionmamba", not "fusionmamba_tiny")."""
  return sorted(
      name for name, (config_cls, model_cls) in _MODELS.items()
      if not any(other is not config_cls and issubclass(config_cls, other)
                 for other, other_model in _MODELS.values() if other_model is model_cls))


def family_of(name: str) -> str:
  """The family name (see `families`) of the registered model `name`."""
  model_cls = lookup(name)[1]
  return next(family for family in families() if lookup(family)[1] is model_cls)


def lookup(name: str) -> tuple[type, type]:
  """(Config class, model class) registered under `name`."""
  if name not in _MODELS:
    raise KeyError(f"unknown model {name!r}; registered models: {names()}")
  return _MODELS[name]


def _field_types(config_cls: type) -> dict[str, Any]:
  hints = typing.get_type_hints(config_cls)
  return {field.name: hints[field.name] for field in dataclasses.fields(config_cls)}


def _check_known(config_cls: type, fields, model: str) -> None:
  known = _field_types(config_cls)
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(f"unknown config fields for model {model!r}: {unknown}; known: "
                     f"{sorted(known)}")


def _describe(field_type) -> str:
  return getattr(field_type, "__name__", None) or str(field_type).replace("typing.", "")


def _optional_arm(field_type):
  """X of an `X | None` field type, else None."""
  if typing.get_origin(field_type) in (typing.Union, types.UnionType):
    arms = [arm for arm in typing.get_args(field_type) if arm is not type(None)]
    if len(arms) == 1:
      return arms[0]
  return None


def coerce(field_type, value):
  """`value` (a Python or JSON value) as a `field_type` value: lists become tuples, ints become
  floats where a float is due; a value of the wrong kind raises ValueError."""
  if (arm := _optional_arm(field_type)) is not None:
    return None if value is None else coerce(arm, value)
  origin, args = typing.get_origin(field_type), typing.get_args(field_type)
  if origin is tuple and isinstance(value, (list, tuple)):
    element_types = [args[0]] * len(value) if args[-1:] == (Ellipsis,) else list(args)
    if len(element_types) != len(value):
      raise ValueError(f"{value!r} is not of type {_describe(field_type)}")
    return tuple(coerce(t, v) for t, v in zip(element_types, value))
  if origin is typing.Literal:
    if value not in args:
      raise ValueError(f"{value!r} is not one of {list(args)}")
    return value
  if field_type is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  wrong_bool = isinstance(value, bool) and field_type is not bool
  if not isinstance(field_type, type) or not isinstance(value, field_type) or wrong_bool:
    raise ValueError(f"{value!r} is not of type {_describe(field_type)}")
  return value


def _from_text(field_type, text: str):
  """Command-line text as a Python value of `field_type` (before `coerce`)."""
  if (arm := _optional_arm(field_type)) is not None:
    return None if text.strip().lower() in _NONE_WORDS else _from_text(arm, text)
  origin, args = typing.get_origin(field_type), typing.get_args(field_type)
  if origin is tuple:
    items = [item for item in text.strip().strip("()[]").split(",") if item.strip()]
    return [_from_text(args[0], item.strip()) for item in items]
  if field_type is bool:
    if text.strip().lower() not in _BOOL_WORDS:
      raise ValueError(f"{text!r} is not of type bool (true or false)")
    return _BOOL_WORDS[text.strip().lower()]
  if field_type in (int, float):
    try:
      return field_type(text)
    except ValueError:
      raise ValueError(f"{text!r} is not of type {field_type.__name__}") from None
  return text


def parse_field(name: str, field: str, text: str):
  """The value of Config field `field` of model `name` written as `text` on a command line:
  "2,2,1,2" or "[2, 2, 1, 2]" for a tuple, "none" for None, "true"/"false" for a bool."""
  config_cls, _ = lookup(name)
  _check_known(config_cls, [field], name)
  field_type = _field_types(config_cls)[field]
  try:
    return coerce(field_type, _from_text(field_type, text))
  except ValueError as error:
    raise ValueError(f"config field {field}={text}: {error}") from None


def with_fields(config, model: str, **fields: Any):
  """`config` (a Config dataclass of model `model`) with `fields` replaced, converted by their
  field types (JSON lists become tuples); unknown fields are refused, naming the known ones."""
  _check_known(type(config), fields, model)
  types_ = _field_types(type(config))
  converted = {}
  for field, value in fields.items():
    try:
      converted[field] = coerce(types_[field], value)
    except ValueError as error:
      raise ValueError(f"config field {field}: {error}") from None
  return dataclasses.replace(config, **converted)


def make_config(name: str, **overrides: Any):
  """The Config dataclass of `name` with fields overridden (converted by `with_fields`)."""
  config_cls, _ = lookup(name)
  return with_fields(config_cls(), name, **overrides)
