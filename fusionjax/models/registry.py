"""The model registry: one `Family` record per paper says everything generic code needs.

A family is registered once (`fusionjax.models` registers the three papers; a test or a user
may register their own). Inference, training, conversion and configs ask the record; none of
them imports a paper module or reads a name's spelling:

    family = registry.get("fusionmamba_tiny")      # by family or variant name
    family.model, family.variants, family.loss, family.inference, family.torch
    registry.for_model(model)                      # the family of an nnx model (or its class)

Config fields are typed (int, float, bool, str, Literal[...], X | None, tuple[X, ...]); values
that arrive as JSON (a list for a tuple) or as command-line text are converted by those types.
"""

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

from fusionjax.color import Convention
from fusionjax.losses.terms import Loss

# Two decoded 8-bit images, (H, W, C) each -> the two grey planes (H, W) the official test
# script feeds the network (uint8, or float in [0, 255] / [0, 1]).
GreyReader = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class SamplingGrid(NamedTuple):
  """Where a network's patch grid lies, so that padding and tiles keep to it (`fusionjax.fuse`).

  Attributes:
    size_multiple: inputs are padded (bottom/right, mirrored) to a multiple of this first.
    tile_grid: tile sides and positions are multiples of this.
    tile_offset: side -> where the network's own padding puts the grid's origin (None: 0).
  """

  size_multiple: int = 1
  tile_grid: int = 1
  tile_offset: Callable[[int], int] | None = None


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
  """How a family's networks meet image files: what its official data pipeline does around the
  network (docs/architectures.md, each paper's data section).

  Attributes:
    y_convention: the Y range of the colour source it was trained on.
    quantize_y: that Y was rounded to 8 bits (read from 8-bit Y files).
    output: "clip" (clip to [0, 1], x 255, round) or "stretch" (also per-image min-max
      stretch, then truncate), as its test script saves.
    official_grey: its test script's own reading of the two files (protocol "official").
    official_size: the square its test script resizes both inputs to, if any.
    sampling_grid: the Config's patch grid (`SamplingGrid`).
  """

  y_convention: Convention
  quantize_y: bool
  output: Literal["clip", "stretch"]
  official_grey: GreyReader
  official_size: int | None = None
  sampling_grid: Callable[[Any], SamplingGrid] = lambda config: SamplingGrid()


@dataclasses.dataclass(frozen=True)
class TorchSpec:
  """How a family's official PyTorch state_dicts map onto its parameters (`fusionjax.convert`).

  Attributes:
    param_map: Config -> `fusionjax.convert.mapping.ParamMap` (each parameter path's official
      tensor name and layout conversion).
    config_fields: an official state_dict -> the Config fields its tensor names and shapes
      determine (widths, depths, state sizes).
    ignored: Config -> {official tensor name: check of its value} for the tensors that have no
      parameter here (constants such as FusionMamba's frozen all-ones LDC masks); none by default.
  """

  param_map: Callable[[Any], Mapping]
  config_fields: Callable[[Mapping[str, np.ndarray]], dict]
  ignored: Callable[[Any], Mapping[str, Callable[[np.ndarray], bool]]] = lambda config: {}


@dataclasses.dataclass(frozen=True)
class Family:
  """One paper's model, registered once.

  Attributes:
    name: the family name, also its paper-size variant's name ("fusionmamba").
    model: the nnx.Module class, built as `model(config, rngs=...)`.
    variants: variant name -> frozen Config dataclass whose defaults are that variant (the
      paper's, released checkpoints', and `tiny_variant` for tests and CPU smoke runs); each
      a subclass of `variants[name]`.
    loss: the loss section's fields (config.loss without `name`) -> the training loss.
    inference: `InferenceSpec`.
    torch: `TorchSpec` for its official PyTorch checkpoints, if any.
  """

  name: str
  model: type
  variants: Mapping[str, type]
  loss: Callable[..., Loss]
  inference: InferenceSpec
  torch: TorchSpec | None = None

  def __post_init__(self):
    if self.name not in self.variants:
      raise ValueError(f"family {self.name!r} needs a variant named {self.name!r}")
    if self.tiny_variant not in self.variants:
      raise ValueError(
        f"family {self.name!r} needs a small variant {self.tiny_variant!r} for "
        "tests and CPU smoke runs"
      )
    base = self.variants[self.name]
    for variant, config_cls in self.variants.items():
      if not (dataclasses.is_dataclass(config_cls) and issubclass(config_cls, base)):
        raise ValueError(
          f"variant {variant!r} of {self.name!r} must be a Config dataclass "
          f"derived from {base.__qualname__}"
        )

  @property
  def tiny_variant(self) -> str:
    """The variant for tests and CPU smoke runs (configs' `:tiny`)."""
    return f"{self.name}_tiny"

  @property
  def config(self) -> type:
    """The family's Config dataclass (its paper-size defaults)."""
    return self.variants[self.name]


_NONE_WORDS = ("none", "null")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_FAMILIES: dict[str, Family] = {}
_VARIANTS: dict[str, Family] = {}


def register(family: Family) -> Family:
  """Registers `family` and its variants; a name registered already is refused."""
  taken = sorted(set(family.variants) & set(_VARIANTS))
  if family.name in _FAMILIES or taken:
    raise ValueError(f"model names registered twice: {taken or [family.name]}")
  _FAMILIES[family.name] = family
  _VARIANTS.update(dict.fromkeys(family.variants, family))
  return family


def unregister(name: str) -> None:
  """Removes the family `name` and its variants (e.g. one a test registered)."""
  family = _FAMILIES.pop(name)
  for variant in family.variants:
    del _VARIANTS[variant]


def names() -> list[str]:
  """Registered model (variant) names, sorted."""
  return sorted(_VARIANTS)


def families() -> list[str]:
  """Registered family names, sorted."""
  return sorted(_FAMILIES)


def get(name: str) -> Family:
  """The family of a family or variant name."""
  if name not in _VARIANTS:
    raise KeyError(f"unknown model {name!r}; registered models: {names()}")
  return _VARIANTS[name]


def for_model(model) -> Family:
  """The family of an nnx model (or model class)."""
  model_cls = model if isinstance(model, type) else type(model)
  for family in _FAMILIES.values():
    if issubclass(model_cls, family.model):
      return family
  raise ValueError(
    f"{model_cls.__qualname__} is not the model of a registered family ({families()})"
  )


def for_config(config) -> tuple[str, Family]:
  """(variant name, family) of a Config dataclass instance."""
  for variant, family in _VARIANTS.items():
    if type(config) is family.variants[variant]:  # pylint: disable=unidiomatic-typecheck
      return variant, family
  raise TypeError(
    f"{type(config).__qualname__} is not the Config of a registered model ({names()})"
  )


def lookup(name: str) -> tuple[type, type]:
  """(Config class, model class) registered under `name`."""
  family = get(name)
  return family.variants[name], family.model


def field_types(config_cls: type) -> dict[str, Any]:
  """{field name: type annotation} of a Config dataclass."""
  hints = typing.get_type_hints(config_cls)
  return {field.name: hints[field.name] for field in dataclasses.fields(config_cls)}


def _check_known(config_cls: type, fields, model: str) -> None:
  known = field_types(config_cls)
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(
      f"unknown config fields for model {model!r}: {unknown}; known: {sorted(known)}"
    )


def _describe(field_type) -> str:
  return getattr(field_type, "__name__", None) or str(field_type).replace("typing.", "")


def optional_arm(field_type):
  """X of an `X | None` field type, else None."""
  if typing.get_origin(field_type) in (typing.Union, types.UnionType):
    arms = [arm for arm in typing.get_args(field_type) if arm is not type(None)]
    if len(arms) == 1:
      return arms[0]
  return None


def coerce(field_type, value):
  """`value` (a Python or JSON value) as a `field_type` value: lists become tuples, ints become
  floats where a float is due; a value of the wrong kind raises ValueError."""
  if (arm := optional_arm(field_type)) is not None:
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
  if (arm := optional_arm(field_type)) is not None:
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
  field_type = field_types(config_cls)[field]
  try:
    return coerce(field_type, _from_text(field_type, text))
  except ValueError as error:
    raise ValueError(f"config field {field}={text}: {error}") from None


def with_fields(config, model: str, **fields: Any):
  """`config` (a Config dataclass of model `model`) with `fields` replaced, converted by their
  field types (JSON lists become tuples); unknown fields are refused, naming the known ones."""
  _check_known(type(config), fields, model)
  types_ = field_types(type(config))
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
