"""Importing PyTorch weights of the official models into fusionjax params, without torch.

Reading:
  `load_state_dict(path)` reads a `.safetensors` file, or a PyTorch zip checkpoint (`.pth`/`.pkl`,
  `torch.save` format of torch >= 1.6) through a restricted unpickler: it resolves only the torch
  tensor-rebuild helpers, the storage types and `collections.OrderedDict`, refuses every other
  global, and reads tensor storages straight from the zip. Nothing pickled is executed and torch
  need not be installed. A checkpoint that wraps its state_dict (`{"params": ...}` as KAIR/
  MambaDFuse saves, `{"model": ...}` as S4Fusion saves, `{"state_dict": ...}`) is unwrapped, and a
  "module." prefix (DataParallel) is dropped.

Which model, which config:
  `detect_model(state_dict)` names the registered model family whose official tensor layout (the
  names with every number replaced by "#") the state_dict's names fit. `infer_config(state_dict,
  model_name=None, **overrides)` builds that model's Config from what the tensors determine
  (widths, depths, state sizes: the module-level `torch_config(state_dict)` of the model's
  module) plus `overrides` for the rest (e.g. input_fit, scan_impl); an override that contradicts
  the tensors is refused.

Mapping:
  `convert(state_dict, model_name=None, config=None, **overrides)` builds the model's parameter
  tree (abstractly, no compute) and fills every parameter from one state_dict tensor. The model
  class says where each parameter comes from with a static method

      torch_source(path: tuple[str | int, ...]) -> TorchSource | None

  living next to the model (see `fusionjax.models.mambadfuse`). `path` is the parameter's path in
  the model's nnx.State; `TorchSource(name, transform)` names the state_dict tensor and, when the
  default layout rule (`flax_layout`) does not fit, how to turn it into our array (e.g. slicing a
  merged tensor). None means the parameter has no PyTorch counterpart (a config option that the
  official code lacks), which makes the conversion fail. Missing, unexpected and misshapen tensors
  are all collected and refused in one `ConversionError` that counts each kind and names the
  first few, and says which registered model the tensor names look like.
  A model whose module instead defines `torch_to_params(state_dict, model)` (an in-place loader,
  as `fusionjax.convert.mapping.load_mapped` builds them) and `torch_names(config)` (every
  official tensor name) is filled by that function on the abstract model; its ValueError becomes
  a ConversionError. The model's RNG streams (dropout, stochastic depth) are no weights: they get
  fixed keys, and the params are in evaluation mode, as `fusionjax.models.init` gives them.

Saving (the command's output format):
  DIR/config.json   {"model": <registered name>, "config": {<Config fields>}}
  DIR/params.safetensors   one float tensor per parameter, keyed by its nnx path joined with "."
  `load_params(DIR)` reads it back into params for `fusionjax.models.apply`.

Command:
  fusionjax-convert --input 10000_E.pth --output DIR [--model NAME] [--set FIELD=VALUE ...]
"""

import argparse
import collections
import dataclasses
import functools
import json
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

ParamPath = tuple[str | int, ...]  # a parameter's path in an nnx.State


class ConversionError(ValueError):
  """A state_dict that does not match the model; the message names every offending tensor."""


NAMES_SHOWN = 5  # how many names an error message lists of each kind


def name_list(names: Collection) -> str:
  """The first `NAMES_SHOWN` of `names`, joined, and how many more there are: error messages
  about a whole checkpoint stay a few lines long."""
  names = [str(name) for name in names]
  shown = ", ".join(names[:NAMES_SHOWN])
  return shown + (f", ... (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else "")


def counted(title: str, names: Collection) -> str:
  """"<count> <title>: <first names>"."""
  return f"{len(names)} {title}: {name_list(names)}"


# ----------------------------------------------------------------------------------------------
# Reading PyTorch zip checkpoints without torch.

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for a `torch.<X>Storage` class referenced by a checkpoint: only its dtype."""
  dtype: Any


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
  """`torch._utils._rebuild_tensor_v2` on a 1-D numpy storage: a copied strided view."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, np.ndarray):
    raise pickle.UnpicklingError(f"tensor built on a {type(storage).__name__}, not a storage")
  size, stride = tuple(size), tuple(stride)
  if 0 in size:
    return np.empty(size, storage.dtype)
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if storage_offset < 0 or min(stride, default=0) < 0 or last >= storage.size:
    raise pickle.UnpicklingError(
        f"tensor view (offset {storage_offset}, size {size}, stride {stride}) lies outside its "
        f"storage of {storage.size} elements")
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size,
      strides=tuple(s * storage.itemsize for s in stride), writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  """`torch._utils._rebuild_parameter`: a Parameter is read as its data."""
  del requires_grad, backward_hooks
  return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _TorchZipUnpickler(pickle.Unpickler):
  """Unpickles `data.pkl` of a torch zip checkpoint, allowing only `_ALLOWED_GLOBALS`."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(archive.open(prefix + "data.pkl"))
    self._archive = archive
    self._prefix = prefix
    self._byteorder = ">" if byteorder == "big" else "<"
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(
          f"refusing to load global {module}.{name}: only tensors, storages and OrderedDict are "
          "read from a checkpoint (no pickled code is run)")
    return _ALLOWED_GLOBALS[(module, name)]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    _, storage_type, key, _location, numel = pid
    if key not in self._storages:
      dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
      raw = self._archive.read(f"{self._prefix}data/{key}")
      if len(raw) < numel * dtype.itemsize:
        raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, needs "
                                     f"{numel * dtype.itemsize}")
      self._storages[key] = np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))
    return self._storages[key]


def _load_torch_zip(path: Path):
  """The object `torch.load(path)` would return, with tensors as numpy arrays."""
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ValueError(f"{path}: not a torch checkpoint (expected one <name>/data.pkl entry, found "
                       f"{pickles})")
    prefix = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    byteorder = (archive.read(prefix + "byteorder").decode().strip()
                 if prefix + "byteorder" in names else "little")
    return _TorchZipUnpickler(archive, prefix, byteorder).load()


def _is_state_dict(obj) -> bool:
  return (isinstance(obj, dict) and bool(obj)
          and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()))


def _unwrap_state_dict(obj, path: str) -> dict[str, np.ndarray]:
  """Finds the state_dict inside a checkpoint object: itself, or under params/state_dict/model."""
  while not _is_state_dict(obj):
    entry = next((k for k in ("params", "state_dict", "model")
                  if isinstance(obj, dict) and k in obj), None)
    if entry is None:
      keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
      raise ValueError(f"{path}: no state_dict found (a dict of tensors, or one under 'params', "
                       f"'state_dict' or 'model'); top level: {keys}")
    obj = obj[entry]
  return dict(obj)


def load_state_dict(path) -> dict[str, np.ndarray]:
  """Reads a state_dict from `.safetensors` or a torch zip `.pth`/`.pkl`; torch is not needed.

  Returns tensor name -> numpy array (dtypes as stored), with a "module." prefix on every name
  (DataParallel) removed.
  """
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path}: file does not exist")
  if path.is_dir():
    raise IsADirectoryError(f"{path}: is a directory, not a checkpoint file")
  if path.suffix == ".safetensors":
    try:
      state_dict = safetensors.numpy.load_file(path)
    except safetensors.SafetensorError as error:
      raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
  elif zipfile.is_zipfile(path):
    state_dict = _unwrap_state_dict(_load_torch_zip(path), str(path))
  else:
    raise ValueError(f"{path}: neither safetensors nor a torch zip checkpoint; checkpoints of the "
                     "legacy (torch < 1.6) format are not read, re-save them with torch.save")
  if state_dict and all(name.startswith("module.") for name in state_dict):
    state_dict = {name[len("module."):]: value for name, value in state_dict.items()}
  return state_dict


# ----------------------------------------------------------------------------------------------
# Mapping a state_dict onto a model's parameters.


@dataclasses.dataclass(frozen=True)
class TorchSource:
  """Where one of our parameters comes from: a state_dict name and an optional transform.

  transform: torch array -> our array; None applies `flax_layout` for the parameter's leaf name.
  """
  name: str
  transform: Callable[[np.ndarray], np.ndarray] | None = None


def flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  """PyTorch -> Flax layout for a parameter named `leaf` in Flax.

  "kernel" of ndim 2: Linear (out, in) -> (in, out). "kernel" of ndim >= 3: Conv
  (out, in/groups, *k) -> (*k, in/groups, out). Anything else (bias, LayerNorm scale, raw
  parameters such as A_log) is taken as it is.
  """
  if leaf != "kernel" or array.ndim < 2:
    return array
  if array.ndim == 2:
    return array.T
  return np.transpose(array, (*range(2, array.ndim), 1, 0))


def torch_name(path: ParamPath) -> str:
  """Default PyTorch name of a parameter whose module tree mirrors PyTorch's: the path joined
  with ".", Flax leaf names "kernel" and "scale" read as "weight"."""
  *modules, leaf = (str(p) for p in path)
  return ".".join([*modules, {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)])


def _registry():
  # Importing the package registers every model; imported late, as the model files import us.
  from fusionjax.models import registry  # pylint: disable=g-import-not-at-top
  return registry


def _model_class_and_config(model_name: str, config):
  """(model class, config) of a registered model; config None gives its registered defaults."""
  config_cls, model_cls = _registry().lookup(model_name)
  config = _registry().make_config(model_name) if config is None else config
  if not isinstance(config, config_cls):
    raise TypeError(f"config for {model_name!r} must be a {config_cls.__qualname__}, "
                    f"got {type(config).__qualname__}")
  return model_cls, config


def _model_module(model_name: str):
  """The module defining the registered model (its torch_config, torch_to_params, ...)."""
  return sys.modules[_registry().lookup(model_name)[1].__module__]


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
  return [(path, var.replace(keys[path]) if isinstance(var, nnx.RngKey)
           else var.replace(jnp.zeros(var.shape, var.dtype)) if isinstance(var, nnx.RngState)
           else var) for path, var in flat_state]


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


def _params_class():
  from fusionjax.models.functional import Params  # pylint: disable=g-import-not-at-top
  return Params


def _filled_params(graphdef, flat_state, arrays: dict[ParamPath, np.ndarray]):
  """Params of `graphdef` whose weights at each path of `flat_state` hold `arrays[path]`."""
  state = nnx.from_flat_state(
      [(path, var if isinstance(var, nnx.RngState)
        else var.replace(jnp.asarray(arrays[path], var.dtype))) for path, var in flat_state])
  return _params_class()(graphdef, state)


# ----------------------------------------------------------------------------------------------
# Recognising a checkpoint's model and config.


def _layout_key(name: str) -> str:
  """A tensor name with every number replaced by "#": layers.3.blocks.0.op.Ds ->
  layers.#.blocks.#.op.Ds, M3_block5.norm1 -> M#_block#.norm#."""
  return re.sub(r"\d+", "#", name)


def official_tensor_names(model_name: str, config=None) -> set[str]:
  """Every tensor name of the official state_dict of `model_name` built with `config`."""
  model_cls, config = _model_class_and_config(model_name, config)
  if hasattr(model_cls, "torch_source"):
    _, flat_state = _abstract_split(model_cls, config)
    return {source.name for path, _ in _weights(flat_state)
            if (source := model_cls.torch_source(path)) is not None}
  return set(_model_module(model_name).torch_names(config))


@functools.lru_cache(maxsize=None)
def _family_layout(family: str) -> frozenset[str]:
  return frozenset(map(_layout_key, official_tensor_names(family)))


def _resemblance(state_dict) -> list[tuple[int, str]]:
  """(how many of the state_dict's names fit the family's layout, family), best first."""
  keys = [_layout_key(name) for name in state_dict]
  return sorted(((sum(key in _family_layout(family) for key in keys), family)
                 for family in _registry().families()), key=lambda fit: -fit[0])


def _fits(fit: int, total: int) -> bool:
  return 2 * fit > total


def _layout_summary(state_dict) -> str:
  """One sentence: which registered model the state_dict's tensor names look like, if any."""
  (fit, family), total = _resemblance(state_dict)[0], len(state_dict)
  if _fits(fit, total):
    return f"its {total} tensor names look like {family!r} ({fit} of {total} fit its layout)"
  return (f"its {total} tensor names ({name_list(sorted(state_dict))}) fit no registered "
          f"model (closest: {family!r}, {fit} of {total}); models: {_registry().families()}")


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
  registry = _registry()
  family = detect_model(state_dict)
  if model_name is not None and registry.family_of(model_name) != family:
    raise ConversionError(f"the checkpoint is not a {model_name!r} one: "
                          f"{_layout_summary(state_dict)}")
  model_name = model_name or family
  determined = _model_module(model_name).torch_config(state_dict)
  inferred = registry.make_config(model_name, **determined)
  config = registry.with_fields(inferred, model_name, **overrides)
  contradicted = [f"{field}={getattr(config, field)!r} (the tensors say "
                  f"{getattr(inferred, field)!r})"
                  for field in sorted(set(overrides) & set(determined))
                  if getattr(config, field) != getattr(inferred, field)]
  if contradicted:
    raise ConversionError(f"overrides contradict the checkpoint: {', '.join(contradicted)}")
  return model_name, config


# ----------------------------------------------------------------------------------------------
# Mapping a state_dict onto a model's parameters.


def convert(state_dict: dict[str, Any], model_name: str | None = None, config=None,
            **overrides):
  """Maps a PyTorch state_dict of the official code onto our params (in evaluation mode).

  Uses the model class's `torch_source` name map; a model whose module instead defines
  `torch_to_params(state_dict, model)` (an in-place loader) is filled by that function.

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
    model_cls, config = _model_class_and_config(model_name, config)
  else:
    model_name = model_name or detect_model(state_dict)
    model_cls, config = _model_class_and_config(model_name, config)
    config = _registry().with_fields(config, model_name, **overrides)
  try:
    if hasattr(model_cls, "torch_source"):
      return _convert_by_sources(state_dict, model_cls, config)
    return _convert_by_loader(state_dict, model_name, model_cls, config)
  except ConversionError as error:
    raise ConversionError(f"state_dict does not match {model_name!r}: {error}; "
                          f"{_layout_summary(state_dict)}") from None


def _convert_by_loader(state_dict, model_name: str, model_cls, config):
  """`convert` through the module's in-place `torch_to_params`."""
  loader = getattr(_model_module(model_name), "torch_to_params", None)
  if loader is None:
    raise ConversionError("the model defines no PyTorch name map (a torch_source method, or "
                          "torch_to_params in its module)")
  graphdef, flat_state = _abstract_split(model_cls, config)
  model = nnx.merge(graphdef, nnx.from_flat_state(flat_state))
  try:
    loader(state_dict, model)
  except ValueError as error:
    raise ConversionError(str(error)) from error
  graphdef, state = nnx.split(model)
  unfilled = [".".join(map(str, path)) for path, var in nnx.to_flat_state(state)
              if isinstance(var.get_value(), jax.ShapeDtypeStruct)]
  if unfilled:
    raise ConversionError(counted("variables torch_to_params left unfilled", unfilled))
  return _params_class()(graphdef, state)


def _convert_by_sources(state_dict, model_cls, config):
  """`convert` through `model_cls.torch_source`, collecting every problem before failing."""
  graphdef, flat_state = _abstract_split(model_cls, config)
  arrays, used = {}, {}
  missing, misshapen, unmapped = [], [], []
  for path, var in _weights(flat_state):
    source = model_cls.torch_source(path)
    ours = ".".join(map(str, path))
    if source is None:
      unmapped.append(f"{ours} (no PyTorch counterpart in the official code)")
      continue
    if source.name in used:
      raise ConversionError(f"name map error: {ours} and {used[source.name]} both read "
                            f"{source.name}")
    used[source.name] = ours
    if source.name not in state_dict:
      missing.append(f"{source.name} (for {ours} {tuple(var.shape)})")
      continue
    tensor = np.asarray(state_dict[source.name])
    value = (source.transform(tensor) if source.transform
             else flax_layout(str(path[-1]), tensor))
    if value.shape != tuple(var.shape):
      misshapen.append(f"{source.name}: shape {tensor.shape} gives {value.shape} for {ours}, "
                       f"which needs {tuple(var.shape)}")
      continue
    arrays[path] = value
  unexpected = sorted(set(state_dict) - set(used))
  problems = [counted(title, items) for title, items in (
      ("missing tensors", missing), ("unexpected tensors", unexpected),
      ("misshapen tensors", misshapen), ("parameters the official code lacks", unmapped))
              if items]
  if problems:
    raise ConversionError("; ".join(problems))
  return _filled_params(graphdef, flat_state, arrays)


# ----------------------------------------------------------------------------------------------
# Saving and loading converted params.

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


def save_params(params, directory, model_name: str, config, *, overwrite: bool = False) -> None:
  """Writes `params` of model `model_name` built with `config` to DIR/config.json and
  DIR/params.safetensors (see the module docstring); the RNG streams are not saved.

  Refuses to replace existing files unless `overwrite`; each file is written under a temporary
  name and then renamed, so an interrupted run leaves no half-written file.
  """
  directory = Path(directory)
  targets = [directory / PARAMS_FILE, directory / CONFIG_FILE]
  existing = [str(path) for path in targets if path.exists()]
  if existing and not overwrite:
    raise FileExistsError(f"{', '.join(existing)} already exist; pass overwrite=True "
                          "(--overwrite) to replace them")
  # Imported here: fusionjax.fuse imports the models, which import this module.
  from fusionjax.fuse import atomic_output  # pylint: disable=g-import-not-at-top
  tensors = {".".join(map(str, path)): np.ascontiguousarray(var.get_value())
             for path, var in _weights(nnx.to_flat_state(params.state))}
  with atomic_output(directory / PARAMS_FILE, overwrite=True) as temporary:
    safetensors.numpy.save_file(tensors, temporary)
  with atomic_output(directory / CONFIG_FILE, overwrite=True) as temporary:
    temporary.write_text(json.dumps(
        {"model": model_name, "config": dataclasses.asdict(config)}, indent=1) + "\n")


def _saved_model_and_config(directory: Path) -> tuple[str, dict[str, Any]]:
  """(model name, config fields) of DIR/config.json, checked for its form."""
  path = directory / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: {directory} holds no converted params "
                            "(fusionjax-convert writes them)")
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from None
  if not (isinstance(saved, dict) and isinstance(saved.get("model"), str)
          and isinstance(saved.get("config"), dict)):
    raise ValueError(f'{path}: expected {{"model": <name>, "config": {{...}}}}')
  return saved["model"], saved["config"]


def load_params(directory, **overrides):
  """Params saved by `save_params`; `overrides` replace config fields (e.g. scan_impl)."""
  directory = Path(directory)
  model_name, fields = _saved_model_and_config(directory)
  config = _registry().make_config(model_name, **{**fields, **overrides})
  model_cls, config = _model_class_and_config(model_name, config)
  graphdef, flat_state = _abstract_split(model_cls, config)
  if not (directory / PARAMS_FILE).is_file():
    raise FileNotFoundError(f"{directory / PARAMS_FILE} does not exist")
  tensors = safetensors.numpy.load_file(directory / PARAMS_FILE)
  expected = {".".join(map(str, path)): (path, tuple(var.shape))
              for path, var in _weights(flat_state)}
  problems = [counted(title, names) for title, names in (
      ("missing", sorted(set(expected) - set(tensors))),
      ("unexpected", sorted(set(tensors) - set(expected))),
      ("misshapen", sorted(name for name in set(expected) & set(tensors)
                           if tensors[name].shape != expected[name][1]))) if names]
  if problems:
    raise ConversionError(f"{directory / PARAMS_FILE} does not match its config: "
                          + "; ".join(problems))
  return _filled_params(graphdef, flat_state,
                        {path: tensors[name] for name, (path, _) in expected.items()})


# ----------------------------------------------------------------------------------------------
# Command line.

PROG = "fusionjax-convert"


class _ArgumentParser(argparse.ArgumentParser):
  """Reports a command-line error in one line, "fusionjax-convert: error: ...", exit code 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _argument_parser() -> argparse.ArgumentParser:
  models = _registry().names()
  parser = _ArgumentParser(
      prog=PROG,
      description="Convert an official PyTorch checkpoint (.pth/.pkl/.safetensors) into "
                  "fusionjax params (DIR/config.json + DIR/params.safetensors). The model and "
                  "its widths and depths are read off the tensor names and shapes.")
  parser.add_argument("--input", required=True, type=Path, metavar="FILE",
                      help="checkpoint file")
  parser.add_argument("--output", required=True, type=Path, metavar="DIR",
                      help="output directory")
  parser.add_argument("--model", choices=models, metavar="NAME",
                      help=f"registered model: {', '.join(models)}; default: the family the "
                           "tensor names show (a variant picks the defaults of the fields the "
                           "checkpoint does not determine)")
  parser.add_argument("--set", action="append", default=[], dest="fields", metavar="FIELD=VALUE",
                      help="a Config field the checkpoint does not determine, e.g. "
                           "input_fit=pad or scan_impl=chunked (tuples as 2,2,1,2); repeatable")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace params already in DIR")
  return parser


def _parsed_fields(model_name: str, assignments: list[str]) -> dict[str, Any]:
  """{field: value} of --set FIELD=VALUE flags, parsed by the model's Config field types."""
  fields = {}
  for assignment in assignments:
    field, equals, text = assignment.partition("=")
    if not equals:
      raise ValueError(f"--set {assignment}: expected FIELD=VALUE")
    fields[field.strip()] = _registry().parse_field(model_name, field.strip(), text)
  return fields


def _run(args) -> str:
  """Converts as `args` say; returns what was written."""
  state_dict = load_state_dict(args.input)
  model_name = args.model or detect_model(state_dict)
  model_name, config = infer_config(state_dict, model_name,
                                    **_parsed_fields(model_name, args.fields))
  save_params(convert(state_dict, model_name, config), args.output, model_name, config,
              overwrite=args.overwrite)
  return (f"wrote {args.output / PARAMS_FILE} and {args.output / CONFIG_FILE}: {model_name}, "
          f"{config}")


def main(argv=None) -> None:
  """Command line: convert a PyTorch checkpoint into a params directory."""
  parser = _argument_parser()
  args = parser.parse_args(argv)
  try:
    print(_run(args))
  except (OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
    parser.error(str(error))


if __name__ == "__main__":
  main()
