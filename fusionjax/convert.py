"""Importing PyTorch weights of the official models into fusionjax params, without torch.

Reading:
  `load_state_dict(path)` reads a `.safetensors` file, or a PyTorch zip checkpoint (`.pth`/`.pkl`,
  `torch.save` format of torch >= 1.6) through a restricted unpickler: it resolves only the torch
  tensor-rebuild helpers, the storage types and `collections.OrderedDict`, refuses every other
  global, and reads tensor storages straight from the zip. Nothing pickled is executed and torch
  need not be installed. A checkpoint that wraps its state_dict (`{"params": ...}` as KAIR/
  MambaDFuse saves, `{"model": ...}` as S4Fusion saves, `{"state_dict": ...}`) is unwrapped, and a
  "module." prefix (DataParallel) is dropped.

Mapping:
  `convert(state_dict, model_name, config)` builds the model's parameter tree (abstractly, no
  compute) and fills every parameter from one state_dict tensor. The model class says where each
  parameter comes from with a static method

      torch_source(path: tuple[str | int, ...]) -> TorchSource | None

  living next to the model (see `fusionjax.models.mambadfuse`). `path` is the parameter's path in
  the model's nnx.State; `TorchSource(name, transform)` names the state_dict tensor and, when the
  default layout rule (`flax_layout`) does not fit, how to turn it into our array (e.g. slicing a
  merged tensor). None means the parameter has no PyTorch counterpart (a config option that the
  official code lacks), which makes the conversion fail. Missing, unexpected and misshapen tensors
  are all collected and refused in one `ConversionError` that names each of them.
  A model whose module instead defines `torch_to_params(state_dict, model)` (an in-place loader,
  as `fusionjax.models.torch_mapping.load_mapped` builds them) is filled by that function on the
  abstract model; its ValueError becomes a ConversionError.

Saving (the command's output format):
  DIR/config.json   {"model": <registered name>, "config": {<Config fields>}}
  DIR/params.safetensors   one float tensor per parameter, keyed by its nnx path joined with "."
  `load_params(DIR)` reads it back into params for `fusionjax.models.apply`.

Command:
  python -m fusionjax.convert --model mambadfuse --input 10000_E.pth --output DIR
"""

import argparse
import collections
import dataclasses
import functools
import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy
from flax import nnx

ParamPath = tuple[str | int, ...]  # a parameter's path in an nnx.State


class ConversionError(ValueError):
  """A state_dict that does not match the model; the message names every offending tensor."""


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
  if path.suffix == ".safetensors":
    state_dict = safetensors.numpy.load_file(path)
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


def _model_class_and_config(model_name: str, config):
  """(model class, config) of a registered model; config None gives its registered defaults."""
  # Importing the package registers every model; imported here, as the model files import us.
  from fusionjax.models import registry  # pylint: disable=g-import-not-at-top
  config_cls, model_cls = registry.lookup(model_name)
  config = registry.make_config(model_name) if config is None else config
  if not isinstance(config, config_cls):
    raise TypeError(f"config for {model_name!r} must be a {config_cls.__qualname__}, "
                    f"got {type(config).__qualname__}")
  return model_cls, config


@functools.lru_cache(maxsize=8)
def _abstract_split(model_cls, config):
  """(graphdef, flat abstract state) of the model, without allocating or computing anything.

  Cached: tracing a model's initialisation takes seconds, and configs are frozen dataclasses.
  """
  model = nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_flat_state(state)


def _params_class():
  from fusionjax.models.functional import Params  # pylint: disable=g-import-not-at-top
  return Params


def _filled_params(graphdef, flat_state, arrays: dict[ParamPath, np.ndarray]):
  """Params of `graphdef` whose variables at each path of `flat_state` hold `arrays[path]`."""
  state = nnx.from_flat_state(
      [(path, var.replace(jnp.asarray(arrays[path], var.dtype))) for path, var in flat_state])
  return _params_class()(graphdef, state)


def convert(state_dict: dict[str, Any], model_name: str, config=None):
  """Maps a PyTorch state_dict of the official code onto our params.

  Uses the model class's `torch_source` name map; a model whose module instead defines
  `torch_to_params(state_dict, model)` (an in-place loader) is filled by that function.

  Args:
    state_dict: tensor name -> array (e.g. from `load_state_dict`).
    model_name: a registered model name, e.g. "mambadfuse".
    config: that model's Config dataclass; None for the registered defaults.

  Returns:
    Params for `fusionjax.models.apply`.

  Raises:
    ConversionError naming every missing, unexpected and misshapen tensor.
  """
  model_cls, config = _model_class_and_config(model_name, config)
  if hasattr(model_cls, "torch_source"):
    return _convert_by_sources(state_dict, model_name, model_cls, config)
  loader = getattr(sys.modules[model_cls.__module__], "torch_to_params", None)
  if loader is None:
    raise ConversionError(f"model {model_name!r} defines no PyTorch name map (a torch_source "
                          "method, or torch_to_params in its module)")
  graphdef, flat_state = _abstract_split(model_cls, config)
  model = nnx.merge(graphdef, nnx.from_flat_state(flat_state))
  try:
    loader(state_dict, model)
  except ValueError as error:
    raise ConversionError(f"state_dict does not match {model_name!r}: {error}") from error
  graphdef, state = nnx.split(model)
  unfilled = [".".join(map(str, path)) for path, var in nnx.to_flat_state(state)
              if isinstance(var.get_value(), jax.ShapeDtypeStruct)]
  if unfilled:
    raise ConversionError(f"{model_name!r}: torch_to_params left variables unfilled: {unfilled}")
  return _params_class()(graphdef, state)


def _convert_by_sources(state_dict, model_name: str, model_cls, config):
  """`convert` through `model_cls.torch_source`, collecting every problem before failing."""
  graphdef, flat_state = _abstract_split(model_cls, config)
  arrays, used = {}, {}
  missing, misshapen, unmapped = [], [], []
  for path, var in flat_state:
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
  problems = [(title, items) for title, items in (
      ("missing tensors", missing), ("unexpected tensors", unexpected),
      ("misshapen tensors", misshapen), ("parameters the official code lacks", unmapped))
              if items]
  if problems:
    raise ConversionError(f"state_dict does not match {model_name!r}: " + "; ".join(
        f"{len(items)} {title}: " + ", ".join(items) for title, items in problems))
  return _filled_params(graphdef, flat_state, arrays)


# ----------------------------------------------------------------------------------------------
# Saving and loading converted params.

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


def save_params(params, directory, model_name: str, config) -> None:
  """Writes `params` of model `model_name` built with `config` to DIR/config.json and
  DIR/params.safetensors (see the module docstring)."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  tensors = {".".join(map(str, path)): np.ascontiguousarray(var.get_value())
             for path, var in nnx.to_flat_state(params.state)}
  safetensors.numpy.save_file(tensors, directory / PARAMS_FILE)
  (directory / CONFIG_FILE).write_text(json.dumps(
      {"model": model_name, "config": dataclasses.asdict(config)}, indent=1) + "\n")


def load_params(directory, **overrides):
  """Params saved by `save_params`; `overrides` replace config fields (e.g. scan_impl)."""
  from fusionjax.models import registry  # pylint: disable=g-import-not-at-top
  directory = Path(directory)
  saved = json.loads((directory / CONFIG_FILE).read_text())
  config = registry.make_config(saved["model"], **{**saved["config"], **overrides})
  model_cls, config = _model_class_and_config(saved["model"], config)
  graphdef, flat_state = _abstract_split(model_cls, config)
  tensors = safetensors.numpy.load_file(directory / PARAMS_FILE)
  expected = {".".join(map(str, path)): (path, tuple(var.shape)) for path, var in flat_state}
  bad = sorted(set(expected) ^ set(tensors)) + sorted(
      name for name in set(expected) & set(tensors) if tensors[name].shape != expected[name][1])
  if bad:
    raise ConversionError(f"{directory / PARAMS_FILE} does not match its config: {bad}")
  return _filled_params(graphdef, flat_state,
                        {path: tensors[name] for name, (path, _) in expected.items()})


def main(argv=None) -> None:
  """Command line: convert a PyTorch checkpoint into a params directory."""
  parser = argparse.ArgumentParser(
      prog="python -m fusionjax.convert",
      description="Convert an official PyTorch checkpoint (.pth/.pkl/.safetensors) into "
                  "fusionjax params (DIR/config.json + DIR/params.safetensors).")
  parser.add_argument("--model", required=True, help="registered model name, e.g. mambadfuse")
  parser.add_argument("--input", required=True, type=Path, help="checkpoint file")
  parser.add_argument("--output", required=True, type=Path, help="output directory")
  args = parser.parse_args(argv)
  _, config = _model_class_and_config(args.model, None)
  params = convert(load_state_dict(args.input), args.model, config)
  save_params(params, args.output, args.model, config)
  print(f"wrote {args.output / PARAMS_FILE} and {args.output / CONFIG_FILE}")


if __name__ == "__main__":
  main()
