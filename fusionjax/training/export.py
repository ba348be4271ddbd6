r"""Ships a trained run as a pretrained model (`fusionjax.models.pretrained`).

  python -m fusionjax.training.export --config=configs/pretrained/s4fusion_ivf.py \
      --workdir=runs/s4fusion_ivf --name=s4fusion_ivf --task=ivf --inputs=ir,vi \
      --data="RoadScene train (154 pairs; 17 more held out for validation)" --default

run from the repository root (the entry records the config file relative to it).

writes the run's last checkpoint (its EMA parameters when kept; --checkpoint=best for the one
with the best validation score) to
fusionjax/pretrained/<name>/ in bfloat16 (or --dtype=float32) and its entry to
fusionjax/pretrained/index.json: files' sha256, steps, the training's wall time (from the
run's metrics.jsonl) and recipe, and draws the run's training loss and validation curves into
docs/pretrained/<name>_curves.png (--curves_dir) for its model card. An existing entry of that
name is replaced; its test metrics are kept until `benchmarks/quality.py --update-index`
measures the new weights.

A run fine-tuned from another (its config's train.init_from is runs/<base>, the folder the
recipe of shipped model <base> trains) is exported with --base=<base>: the entry's recipe is
the base's followed by the fine-tuning command, and its steps and hours are the two stages'.
"""

import dataclasses
import json
import logging
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from matplotlib.figure import Figure
from ml_collections import config_flags

from fusionjax import config_lib, convert, models
from fusionjax.models import shipped
from fusionjax.training import reports

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}
HARDWARE = "2 shared CPU cores (x86-64), one run per core"

# Validation metrics drawn in the curves (those the configs validate; others are skipped).
CURVE_METRICS = ("Qabf", "VIF", "SSIM", "MI", "SF", "SD")


def _records(workdir: pathlib.Path) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines if line.strip()]


def wall_time_hours(workdir: pathlib.Path) -> float:
  """Hours the run spent training, from the times of its metrics.jsonl records: the gaps between
  consecutive records, leaving out those where the run stopped (the next record's step goes
  back, as after a resume, or the gap is over ten times the median gap)."""
  records = _records(workdir)
  gaps = [
    (later["time"] - earlier["time"], later["step"] >= earlier["step"])
    for earlier, later in zip(records, records[1:])
  ]
  if not gaps:
    return 0.0
  typical = float(np.median([seconds for seconds, _ in gaps]))
  running = [seconds for seconds, forward in gaps if forward and seconds <= 10 * typical]
  return sum(running) / 3600


def plot_curves(workdir: pathlib.Path, title: str, path: pathlib.Path) -> None:
  """Training loss (left) and validation metrics, each relative to its best value (right),
  against the step, from the run's metrics.jsonl."""
  records = _records(workdir)
  figure = Figure(figsize=(10, 3.6), layout="constrained")
  loss_axes, val_axes = figure.subplots(1, 2)
  train = [record for record in records if "loss" in record]
  loss_axes.plot([r["step"] for r in train], [r["loss"] for r in train])
  loss_axes.set(xlabel="step", ylabel="training loss", yscale="log", title=f"{title}: loss")
  validation = [record for record in records if any(k.startswith("val/") for k in record)]
  for metric in CURVE_METRICS:
    points = [(r["step"], r[f"val/{metric}"]) for r in validation if f"val/{metric}" in r]
    if points:
      steps, values = zip(*points)
      val_axes.plot(steps, [v / max(values) for v in values], marker=".", label=metric)
  val_axes.set(xlabel="step", ylabel="value / best value", title="validation pairs")
  val_axes.legend(fontsize="small")
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=80)


def recipe(config_file: str, workdir: str) -> str:
  return (
    f"python run.py --config={config_file} --workdir={workdir} "
    "--config.data.manual_dir=/path/to/data --config.data.data_dir=runs/tfds --mode=train"
  )


def stages(
  config, config_file: str, name: str, base: shipped.Entry | None
) -> tuple[str, int, float]:
  """(recipe, steps, hours) of the stages before this run: none for a run from scratch; for a
  fine-tuned run (train.init_from), those of `base`, the entry whose recipe trains the run folder
  it starts from. This run's recipe trains in runs/<name>, or runs/<name>_finetune after a base."""
  init_from = config.train.get("init_from", "")
  if not init_from:
    if base is not None:
      raise config_lib.ConfigError(
        f"--base={base.name}: the run is not fine-tuned (no train.init_from)"
      )
    return recipe(config_file, f"runs/{name}"), 0, 0.0
  if base is None:
    raise config_lib.ConfigError(
      f"the run was fine-tuned (train.init_from={init_from}): give --base=NAME, "
      "the shipped model whose recipe trains its starting point"
    )
  if init_from != f"runs/{base.name}":
    raise config_lib.ConfigError(
      f"train.init_from={init_from} is not runs/{base.name}, the folder that "
      f"--base={base.name}'s recipe trains"
    )
  own = recipe(config_file, f"runs/{name}_finetune")
  return f"{base.recipe} && {own}", base.steps, base.wall_time_hours


def export(
  config,
  config_file: str,
  workdir: pathlib.Path,
  *,
  name: str,
  task: str,
  inputs: tuple[str, str],
  data: str,
  default: bool,
  dtype: str,
  hardware: str,
  which: str = "latest",
  base: shipped.Entry | None = None,
) -> shipped.Entry:
  """Writes the run's checkpoint as shipped model `name` and its index entry; returns it. A
  fine-tuned run's entry counts the steps and hours of `base` too (`stages`)."""
  commands, base_steps, base_hours = stages(config, config_file, name, base)
  model, step = reports.load_model(config, workdir, which)
  params = models.Params(*nnx.split(model))
  _, model_config = models.resolve_config(config.model)
  directory = shipped.PRETRAINED_DIR / name
  convert.save_params(
    params, directory, config.model.name, model_config, overwrite=True, dtype=DTYPES[dtype]
  )
  existing = shipped.read_index()
  previous = next((entry for entry in existing if entry.name == name), None)
  entries = [entry for entry in existing if entry.name != name]
  if default:
    entries = [
      dataclasses.replace(entry, default=False) if entry.task == task else entry
      for entry in entries
    ]
  files = (convert.CONFIG_FILE, convert.PARAMS_FILE)
  item = shipped.Entry(
    name=name,
    model=config.model.name,
    task=task,
    default=default or not any(entry.task == task and entry.default for entry in entries),
    inputs=inputs,
    data=data,
    recipe=commands,
    config=config_file,
    steps=base_steps + step,
    wall_time_hours=round(base_hours + wall_time_hours(workdir), 2),
    hardware=hardware,
    dtype=dtype,
    sha256={file: shipped.file_sha256(directory / file) for file in files},
    test_metrics=previous.test_metrics if previous else {},
  )
  shipped.write_index([*entries, item])
  return item


def define_flags() -> None:
  """The command line's flags, defined only when this runs as a program: importing the module
  (tests, other tools beside run.py) leaves absl's global flags alone."""
  config_flags.DEFINE_config_file("config", None, "the run's config file", lock_config=True)
  flags.DEFINE_string("workdir", None, "the run's folder")
  flags.DEFINE_string("name", None, "the shipped model's name")
  flags.DEFINE_enum("task", None, list(shipped.TASKS), "its task")
  flags.DEFINE_list("inputs", None, "roles of the model's inputs a,b (e.g. ir,vi)")
  flags.DEFINE_string("data", None, "what it was trained on and what was held out")
  flags.DEFINE_bool("default", False, "make it its task's default model")
  flags.DEFINE_enum("dtype", "bfloat16", list(DTYPES), "storage dtype of the weights")
  flags.DEFINE_string("hardware", HARDWARE, "what it was trained on")
  flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "which checkpoint")
  flags.DEFINE_string("curves_dir", "docs/pretrained", "where the curves go")
  flags.DEFINE_string(
    "base",
    None,
    "a fine-tuned run's shipped starting point: its recipe, steps and hours come first",
  )


def _fail(message: str) -> None:
  print(f"export: error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad flag or config file reported as one `export: error:` line."""
  try:
    config_lib.check_config_flag(argv)
    return flags.FLAGS(argv)
  except (flags.Error, FileNotFoundError, ValueError) as error:
    _fail(str(error).strip())


def main(argv):
  options = flags.FLAGS
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  for flag in ("config", "workdir", "name", "task", "inputs", "data"):
    if options[flag].value is None:
      _fail(f"--{flag} is required")
  if len(options.inputs) != 2:
    _fail(f"--inputs needs two roles a,b; got {options.inputs}")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every restore stage
  path, colon, arg = options["config"].config_filename.partition(":")
  try:
    base = shipped.pretrained_entry(options.base) if options.base else None
    item = export(
      config_lib.resolve(options.config),
      f"{pathlib.Path(path).resolve().relative_to(pathlib.Path.cwd())}{colon}{arg}",
      pathlib.Path(options.workdir),
      name=options.name,
      task=options.task,
      inputs=tuple(options.inputs),
      data=options.data,
      default=options.default,
      dtype=options.dtype,
      hardware=options.hardware,
      which=options.checkpoint,
      base=base,
    )
  except (FileNotFoundError, config_lib.ConfigError, shipped.PretrainedError) as error:
    _fail(str(error))
  plot_curves(
    pathlib.Path(options.workdir),
    item.name,
    pathlib.Path(options.curves_dir) / f"{item.name}_curves.png",
  )
  print(json.dumps(item.to_json(), indent=1))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
