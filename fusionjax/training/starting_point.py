"""Where a fine-tuning run starts (`config.train.init_from`): the parameters of a trained run,
of a params folder, or of a shipped model."""

import json
import pathlib

import ml_collections
from flax import nnx

from fusionjax import config_lib, convert, models
from fusionjax.training import reports


def run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to workdir/config.json (JSON lists back to tuples)."""
  saved = json.loads((workdir / "config.json").read_text())
  saved["model"] = {
    field: tuple(value) if isinstance(value, list) else value
    for field, value in saved["model"].items()
  }
  return ml_collections.ConfigDict(saved)


def initial_params(source: str) -> models.Params:
  """The parameters `source` names: a run folder (its latest checkpoint, the EMA parameters
  where the run kept them), a folder of fusionjax params (what fusionjax-convert and
  fusionjax.training.export write), else a shipped model's name or task. A ConfigError naming
  `source` when none of these holds them."""
  path = pathlib.Path(source)
  try:
    if (path / "checkpoints").is_dir():
      model, _ = reports.load_model(run_config(path), path, "latest")
      return models.Params(*nnx.split(model))
    if path.is_dir():
      return convert.load_params(path)
    return models.pretrained(source)
  except (OSError, ValueError, KeyError) as error:
    raise config_lib.ConfigError(f"train.init_from={source}: {error}") from None
