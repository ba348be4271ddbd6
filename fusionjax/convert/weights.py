"""Official PyTorch state_dicts as fusionjax params, through each family's registry record.

Which model, which config:
  `detect_model(state_dict)` names the registered model family whose official tensor layout (the
  names of its `registry.TorchSpec.param_map` and `ignored` tensors at its paper-size Config,
  with every number replaced by "#") the state_dict's names fit. `infer_config(state_dict,
  model_name=None, **overrides)` builds that model's Config from what the tensors determine
  (widths, depths, state sizes: its `TorchSpec.config_fields`) plus `overrides` for the rest
  (e.g. input_fit, scan_impl); an override that contradicts the tensors is refused.

Mapping:
  `convert(state_dict, model_name=None, config=None, **overrides)` builds the model's parameter
  tree (abstractly, no compute) and fills every parameter from the state_dict tensor its
  `TorchSpec.param_map(config)` names (`fusionjax.convert.mapping`). Missing, unexpected and
  misshapen tensors, parameters without a tensor (a config option that the official code lacks)
  and ignored tensors failing their check are all collected and refused in one `ConversionError`
  that counts each kind and names the first few, and says which registered model the tensor names
  look like. The model's RNG streams (dropout, stochastic depth) are no weights: they get fixed
  keys, and the params are in evaluation mode, as `fusionjax.models.init` gives them.

Saving (the command's output format):
  DIR/config.json   {"model": <registered name>, "config": {<Config fields>}}
  DIR/params.safetensors   one float tensor per parameter, keyed by its nnx path joined with "."
  `load_params(DIR)` reads it back into params for `fusionjax.models.apply`.
"""

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from fusionjax.convert import mapping
from fusionjax.convert.errors import ConversionError, counted, name_list
from fusionjax.fuse import atomic_output
from fusionjax.models import registry
from fusionjax.models.functional import Params

ParamPath = tuple[str | int, ...]  # a parameter's path in an nnx.State


def _family_and_config(model_name: str, config) -> tuple[registry.Family, Any]:
  """(family, config) of a registered model; config None gives its registered defaults."""
  family = registry.get(model_name)
  config_cls = family.variants[model_name]
  config = registry.make_config(model_name) if config is None else config
  if not isinstance(config, config_cls):
    raise TypeError(
      f"config for {model_name!r} must be a {config_cls.__qualname__}, "
      f"got {type(config).__qualname__}"
    )
  return family, config


def _torch_spec(family: registry.Family) -> registry.TorchSpec:
  if family.torch is None:
    raise ConversionError(
      f"model {family.name!r} has no PyTorch weight map (its registry record sets no `torch`)"
    )
  return family.torch


def _evaluation_model(model_cls, config):
  model = model_cls(config, rngs=nnx.Rngs(0))
  model.eval()
  return model


def seed_rng_state(flat_state, seed: int = 0):
  """`flat_state` with its RNG variables (dropout, stochastic depth) given real values: a distinct
  key per stream from `seed`, counts at 0. They are no weights: fixed, so conversion is
  deterministic; unused in evaluation mode; distinct streams if the model is trained further."""
  key_paths = [path for path, var in flat_state if isinstance(var, nnx.RngKey)]
  keys = dict(zip(key_paths, jax.random.split(jax.random.key(seed), max(len(key_paths), 1))))
  return [
    (
      path,
      var.replace(keys[path])
      if isinstance(var, nnx.RngKey)
      else var.replace(jnp.zeros(var.shape, var.dtype))
      if isinstance(var, nnx.RngState)
      else var,
    )
    for path, var in flat_state
  ]


@functools.lru_cache(maxsize=8)
def _abstract_split(model_cls, config):
  """(graphdef, flat state) of the model in evaluation mode, without allocating its weights:
  the weights are abstract (ShapeDtypeStruct), the RNG streams seeded (`seed_rng_state`).

  Cached: tracing a model's initialisation takes seconds, and configs are frozen dataclasses.
  """
  graphdef, state = nnx.split(nnx.eval_shape(lambda: _evaluation_model(model_cls, config)))
  return graphdef, seed_rng_state(nnx.to_flat_state(state))


def _weights(flat_state):
  """The entries of a flat state that conversion fills: all but the RNG streams."""
  return [(path, var) for path, var in flat_state if not isinstance(var, nnx.RngState)]


def _filled_params(graphdef, flat_state, arrays: dict[ParamPath, np.ndarray]) -> Params:
  """Params of `graphdef` whose weights at each path of `flat_state` hold `arrays[path]`."""
  state = nnx.from_flat_state(
    [
      (
        path,
        var if isinstance(var, nnx.RngState) else var.replace(jnp.asarray(arrays[path], var.dtype)),
      )
      for path, var in flat_state
    ]
  )
  return Params(graphdef, state)


# ----------------------------------------------------------------------------------------------
# Which model a state_dict is of, and its config.


def _layout_key(name: str) -> str:
  """A tensor name with every number replaced by "#": layers.3.blocks.0.op.Ds ->
  layers.#.blocks.#.op.Ds, M3_block5.norm1 -> M#_block#.norm#."""
  return re.sub(r"\d+", "#", name)


@functools.cache
def _official_layout(spec: registry.TorchSpec, config) -> frozenset[str]:
  """The layout keys of every tensor of the official state_dict built with `config`."""
  names = [name for name, _ in spec.param_map(config).values()] + list(spec.ignored(config))
  return frozenset(map(_layout_key, names))


def _resemblance(state_dict) -> list[tuple[int, str]]:
  """(how many of the state_dict's names fit the family's layout, family), best first, over the
  families with a PyTorch weight map."""
  keys = [_layout_key(name) for name in state_dict]
  fits = []
  for name in registry.families():
    family = registry.get(name)
    if family.torch is not None:
      layout = _official_layout(family.torch, family.config())
      fits.append((sum(key in layout for key in keys), name))
  return sorted(fits, key=lambda fit: -fit[0])


def _fits(fit: int, total: int) -> bool:
  return 2 * fit > total


def _layout_summary(state_dict) -> str:
  """One sentence: which registered model the state_dict's tensor names look like, if any."""
  (fit, family), total = _resemblance(state_dict)[0], len(state_dict)
  if _fits(fit, total):
    return f"its {total} tensor names look like {family!r} ({fit} of {total} fit its layout)"
  return (
    f"its {total} tensor names ({name_list(sorted(state_dict))}) fit no registered "
    f"model (closest: {family!r}, {fit} of {total}); models: {registry.families()}"
  )


def detect_model(state_dict) -> str:
  """The registered model family whose official tensor names most of the state_dict's fit."""
  if not state_dict:
    raise ConversionError("the checkpoint holds no tensors")
  fit, family = _resemblance(state_dict)[0]
  if not _fits(fit, len(state_dict)):
    raise ConversionError(f"unrecognised checkpoint: {_layout_summary(state_dict)}")
  return family


def infer_config(state_dict, model_name: str | None = None, **overrides):
  """(model name, Config) for an official state_dict.

  The model is `model_name` (any registered variant, which must be of the family the tensor
  names show) or else `detect_model`'s family. The Config holds what the tensors determine
  (widths, depths, state sizes, ...), `overrides` for the rest, and that variant's defaults
  otherwise. An override contradicting the tensors, or naming no Config field, is refused.
  """
  family = detect_model(state_dict)
  if model_name is not None and registry.get(model_name).name != family:
    raise ConversionError(
      f"the checkpoint is not a {model_name!r} one: {_layout_summary(state_dict)}"
    )
  model_name = model_name or family
  determined = _torch_spec(registry.get(model_name)).config_fields(state_dict)
  inferred = registry.make_config(model_name, **determined)
  config = registry.with_fields(inferred, model_name, **overrides)
  contradicted = [
    f"{field}={getattr(config, field)!r} (the tensors say {getattr(inferred, field)!r})"
    for field in sorted(set(overrides) & set(determined))
    if getattr(config, field) != getattr(inferred, field)
  ]
  if contradicted:
    raise ConversionError(f"overrides contradict the checkpoint: {', '.join(contradicted)}")
  return model_name, config


# ----------------------------------------------------------------------------------------------
# Mapping a state_dict onto a model's parameters.


def convert(
  state_dict: dict[str, Any], model_name: str | None = None, config=None, **overrides
) -> Params:
  """Maps a PyTorch state_dict of the official code onto our params (in evaluation mode), by the
  model family's `registry.TorchSpec`.

  Args:
    state_dict: tensor name -> array (e.g. from `load_state_dict`).
    model_name: a registered model name, e.g. "mambadfuse"; None: the one the names show.
    config: that model's Config dataclass; None: `infer_config` (from the tensors).
    **overrides: Config fields to set (on `config`, or on the inferred config).

  Returns:
    Params for `fusionjax.models.apply`.

  Raises:
    ConversionError counting every missing, unexpected and misshapen tensor (naming the first
    few of each) and saying which registered model the tensor names look like.
  """
  if config is None:
    model_name, config = infer_config(state_dict, model_name, **overrides)
    family, config = _family_and_config(model_name, config)
  else:
    model_name = model_name or detect_model(state_dict)
    family, config = _family_and_config(model_name, config)
    config = registry.with_fields(config, model_name, **overrides)
  spec = _torch_spec(family)
  graphdef, flat_state = _abstract_split(family.model, config)
  shapes = {path: tuple(var.shape) for path, var in _weights(flat_state)}
  try:
    arrays = mapping.mapped_arrays(
      shapes, state_dict, spec.param_map(config), ignored=spec.ignored(config)
    )
  except ValueError as error:
    raise ConversionError(
      f"state_dict does not match {model_name!r}: {error}; {_layout_summary(state_dict)}"
    ) from None
  return _filled_params(graphdef, flat_state, arrays)


# ----------------------------------------------------------------------------------------------
# Saving and loading converted params.

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


def save_params(
  params, directory, model_name: str, config, *, overwrite: bool = False, dtype=None
) -> None:
  """Writes `params` of model `model_name` built with `config` to DIR/config.json and
  DIR/params.safetensors (see the module docstring); the RNG streams are not saved. `dtype`
  (e.g. jnp.bfloat16) stores the tensors in it instead of their own (`load_params` casts back).

  Refuses to replace existing files unless `overwrite`; each file is written under a temporary
  name and then renamed, so an interrupted run leaves no half-written file.
  """
  directory = Path(directory)
  targets = [directory / PARAMS_FILE, directory / CONFIG_FILE]
  existing = [str(path) for path in targets if path.exists()]
  if existing and not overwrite:
    raise FileExistsError(
      f"{', '.join(existing)} already exist; pass overwrite=True (--overwrite) to replace them"
    )
  tensors = {
    ".".join(map(str, path)): np.ascontiguousarray(var.get_value(), dtype=dtype)
    for path, var in _weights(nnx.to_flat_state(params.state))
  }
  with atomic_output(directory / PARAMS_FILE, overwrite=True) as temporary:
    safetensors.numpy.save_file(tensors, temporary)
  with atomic_output(directory / CONFIG_FILE, overwrite=True) as temporary:
    temporary.write_text(
      json.dumps({"model": model_name, "config": dataclasses.asdict(config)}, indent=1) + "\n"
    )


def _saved_model_and_config(directory: Path) -> tuple[str, dict[str, Any]]:
  """(model name, config fields) of DIR/config.json, checked for its form."""
  path = directory / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
      f"{path} does not exist: {directory} holds no converted params "
      "(fusionjax-convert writes them)"
    )
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from None
  if not (
    isinstance(saved, dict)
    and isinstance(saved.get("model"), str)
    and isinstance(saved.get("config"), dict)
  ):
    raise ValueError(f'{path}: expected {{"model": <name>, "config": {{...}}}}')
  return saved["model"], saved["config"]


def load_params(directory, **overrides) -> Params:
  """Params saved by `save_params`; `overrides` replace config fields (e.g. scan_impl)."""
  directory = Path(directory)
  model_name, fields = _saved_model_and_config(directory)
  config = registry.make_config(model_name, **{**fields, **overrides})
  family, config = _family_and_config(model_name, config)
  graphdef, flat_state = _abstract_split(family.model, config)
  if not (directory / PARAMS_FILE).is_file():
    raise FileNotFoundError(f"{directory / PARAMS_FILE} does not exist")
  tensors = safetensors.numpy.load_file(directory / PARAMS_FILE)
  expected = {
    ".".join(map(str, path)): (path, tuple(var.shape)) for path, var in _weights(flat_state)
  }
  problems = [
    counted(title, names)
    for title, names in (
      ("missing", sorted(set(expected) - set(tensors))),
      ("unexpected", sorted(set(tensors) - set(expected))),
      (
        "misshapen",
        sorted(
          name for name in set(expected) & set(tensors) if tensors[name].shape != expected[name][1]
        ),
      ),
    )
    if names
  ]
  if problems:
    raise ConversionError(
      f"{directory / PARAMS_FILE} does not match its config: " + "; ".join(problems)
    )
  return _filled_params(
    graphdef, flat_state, {path: tensors[name] for name, (path, _) in expected.items()}
  )
