"""Reading PyTorch checkpoints without torch.

`load_state_dict(path)` reads a `.safetensors` file, or a PyTorch zip checkpoint (`.pth`/`.pkl`,
`torch.save` format of torch >= 1.6) through a restricted unpickler: it resolves only the torch
tensor-rebuild helpers, the storage types and `collections.OrderedDict`, refuses every other
global, and reads tensor storages straight from the zip. Nothing pickled is executed and torch
need not be installed. A checkpoint that wraps its state_dict (`{"params": ...}` as KAIR/
MambaDFuse saves, `{"model": ...}` as S4Fusion saves, `{"state_dict": ...}`) is unwrapped, and a
"module." prefix (DataParallel) is dropped.
"""

import collections
import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

_STORAGE_DTYPES = {
  "DoubleStorage": np.float64,
  "FloatStorage": np.float32,
  "HalfStorage": np.float16,
  "BFloat16Storage": ml_dtypes.bfloat16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for a `torch.<X>Storage` class referenced by a checkpoint: only its dtype."""

  dtype: Any


def _rebuild_tensor(
  storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
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
      f"storage of {storage.size} elements"
    )
  view = np.lib.stride_tricks.as_strided(
    storage[storage_offset:],
    shape=size,
    strides=tuple(s * storage.itemsize for s in stride),
    writeable=False,
  )
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
        "read from a checkpoint (no pickled code is run)"
      )
    return _ALLOWED_GLOBALS[(module, name)]

  def persistent_load(self, pid):
    if not (
      isinstance(pid, tuple)
      and len(pid) == 5
      and pid[0] == "storage"
      and isinstance(pid[1], _StorageType)
    ):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    _, storage_type, key, _location, numel = pid
    if key not in self._storages:
      dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
      raw = self._archive.read(f"{self._prefix}data/{key}")
      if len(raw) < numel * dtype.itemsize:
        raise pickle.UnpicklingError(
          f"storage {key} holds {len(raw)} bytes, needs {numel * dtype.itemsize}"
        )
      self._storages[key] = np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))
    return self._storages[key]


def _load_torch_zip(path: Path):
  """The object `torch.load(path)` would return, with tensors as numpy arrays."""
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ValueError(
        f"{path}: not a torch checkpoint (expected one <name>/data.pkl entry, found {pickles})"
      )
    prefix = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    byteorder = (
      archive.read(prefix + "byteorder").decode().strip()
      if prefix + "byteorder" in names
      else "little"
    )
    return _TorchZipUnpickler(archive, prefix, byteorder).load()


def _is_state_dict(obj) -> bool:
  return (
    isinstance(obj, dict)
    and bool(obj)
    and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())
  )


def _unwrap_state_dict(obj, path: str) -> dict[str, np.ndarray]:
  """Finds the state_dict inside a checkpoint object: itself, or under params/state_dict/model."""
  while not _is_state_dict(obj):
    entry = next(
      (k for k in ("params", "state_dict", "model") if isinstance(obj, dict) and k in obj), None
    )
    if entry is None:
      keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
      raise ValueError(
        f"{path}: no state_dict found (a dict of tensors, or one under 'params', "
        f"'state_dict' or 'model'); top level: {keys}"
      )
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
    raise ValueError(
      f"{path}: neither safetensors nor a torch zip checkpoint; checkpoints of the "
      "legacy (torch < 1.6) format are not read, re-save them with torch.save"
    )
  if state_dict and all(name.startswith("module.") for name in state_dict):
    state_dict = {name[len("module.") :]: value for name, value in state_dict.items()}
  return state_dict
