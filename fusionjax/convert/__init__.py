"""Importing PyTorch weights of the official models into fusionjax params, without torch.

One package, one job per module:
  torch_file   `load_state_dict(path)`: a `.safetensors` file or a PyTorch zip checkpoint
               (`.pth`/`.pkl`) read through a restricted unpickler; torch is not needed.
  mapping      the one mapping protocol: a `ParamMap` {NNX parameter path: (PyTorch tensor name,
               layout transform)} built from per-block helpers, checked and applied by
               `mapped_arrays` / `load_mapped`. Each model family's `registry.TorchSpec` gives
               its `param_map(config)`, the Config fields a state_dict determines
               (`config_fields`) and the official tensors it has no parameter for (`ignored`).
  weights      `detect_model`, `infer_config`, `convert` (a state_dict -> params, through the
               family's registry record), `save_params` / `load_params` (DIR/config.json +
               DIR/params.safetensors).
  cli          the command `fusionjax-convert --input 10000_E.pth --output DIR [--model NAME]
               [--set FIELD=VALUE ...]`.

The package exports their public names. `weights` and `cli` ask the model registry, whose paper
modules import `mapping`: they are imported on first use of one of their names, so that importing
`fusionjax.convert.mapping` never imports the models.
"""

import importlib

from fusionjax.convert.errors import ConversionError
from fusionjax.convert.torch_file import load_state_dict

_LAZY = {
  **dict.fromkeys(
    (
      "CONFIG_FILE",
      "PARAMS_FILE",
      "convert",
      "detect_model",
      "infer_config",
      "load_params",
      "save_params",
      "seed_rng_state",
    ),
    "weights",
  ),
  **dict.fromkeys(("PROG", "main"), "cli"),
}

__all__ = ["ConversionError", "load_state_dict", *_LAZY]


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted({*globals(), *_LAZY})
