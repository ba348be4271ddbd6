"""After training: a run's checkpoint evaluated (fusionjax.evaluation) or used to fuse pairs
(fusionjax.fuse). Outputs go under the run's workdir, named after the checkpoint step."""

import csv
import logging
import pathlib

import ml_collections
from flax import nnx

from fusionjax import evaluation, fuse, models
from fusionjax.baselines import Fuser
from fusionjax.training import checkpointing
from fusionjax.training import input as input_lib
from fusionjax.training.state import TrainState, evaluation_model

_LOG = logging.getLogger(__name__)
_REPORT_FILES = ("metrics.csv", "summary.md", "grid.png")
# metrics.csv columns that are not float metric values, and their types.
_TEXT_COLUMNS = {"method": str, "name": str, "height": int, "width": int}


def load_model(
  config: ml_collections.ConfigDict, workdir: str | pathlib.Path, which: str = "best"
) -> tuple[nnx.Module, int]:
  """The model of the run's "best" or "latest" checkpoint, in evaluation mode, with the EMA
  parameters when the run kept them; and the checkpoint's step."""
  abstract = nnx.eval_shape(lambda: models.build(config.model, rngs=nnx.Rngs(config.seed)))
  graph, abstract_state = nnx.split(abstract)
  target = TrainState(
    model=abstract_state,
    opt=None,
    ema=nnx.state(abstract, nnx.Param) if config.optim.ema_decay > 0 else None,
  )
  with checkpointing.RunCheckpoints(
    pathlib.Path(workdir) / "checkpoints", config.ckpt, create=False
  ) as checkpoints:
    step = checkpoints.step(which)
    restored = checkpoints.restore(step, target)
  return evaluation_model(graph, restored.model, restored.ema), step


def run_fuser(
  config: ml_collections.ConfigDict, model: nnx.Module, protocol: str = "default"
) -> Fuser:
  """The fusionjax.fuse fuser of a trained model, named after the configured model
  (`protocol` as `fuse.model_fuser`'s)."""
  return fuse.model_fuser(
    model, name=config.model.name, swap_inputs=config.data.swap_inputs, protocol=protocol
  )


def read_report(out_dir: str | pathlib.Path) -> evaluation.Report | None:
  """The report `evaluation.evaluate` wrote into out_dir, or None unless it is complete (its
  files are written atomically, grid.png last)."""
  out_dir = pathlib.Path(out_dir)
  csv_path, table_path, grid_path = (out_dir / name for name in _REPORT_FILES)
  if not all(path.is_file() for path in (csv_path, table_path, grid_path)):
    return None
  with csv_path.open(newline="") as handle:
    rows = [
      {key: _TEXT_COLUMNS.get(key, float)(value) for key, value in row.items()}
      for row in csv.DictReader(handle)
    ]
  return evaluation.Report(out_dir, csv_path, table_path, grid_path, rows, table_path.read_text())


def evaluate_run(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  *,
  which: str = "best",
  options: fuse.Options = fuse.Options(),
  overwrite: bool = False,
  skip_existing: bool = False,
) -> evaluation.Report:
  """Scores a checkpoint on the eval pairs (data.eval_split, eval.num_pairs), with the
  classical baselines when eval.baselines, into workdir/eval/<split>_step<step>/ (metrics.csv,
  summary.md, grid.png, fused/).

  An existing report is an error unless `overwrite` (recompute it) or `skip_existing`
  (return the complete report of this checkpoint step as it is: a rerun reuses it).
  """
  if overwrite and skip_existing:
    raise ValueError("overwrite and skip_existing exclude each other")
  model, step = load_model(config, workdir, which)
  out_dir = pathlib.Path(workdir) / "eval" / f"{config.data.eval_split}_step{step}"
  if skip_existing and (report := read_report(out_dir)) is not None:
    _LOG.info("the report of step %d exists; reusing %s (--overwrite recomputes it)", step, out_dir)
    return report
  methods = [run_fuser(config, model)]
  if config.eval.baselines:
    methods += evaluation.baseline_fusers()
  return evaluation.evaluate(
    methods,
    input_lib.eval_pairs(config.data, config.eval.num_pairs),
    out_dir,
    options=options,
    metric_names=tuple(config.eval.metrics) or None,
    grid_pairs=config.eval.num_samples,
    overwrite=overwrite,
  )


def fuse_run(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  *,
  which: str = "best",
  input_a: str | None = None,
  input_b: str | None = None,
  output: str | None = None,
  protocol: str = "default",
  options: fuse.Options = fuse.Options(),
  overwrite: bool = False,
  skip_existing: bool = False,
) -> list[pathlib.Path]:
  """Fuses with a checkpoint: two image files or two folders (input_a: ir / mri / pc, input_b:
  the other modality) into `output`, or by default the eval pairs into
  workdir/fused/<split>_step<step>/. Existing outputs as in `fuse.fuse_source` (`overwrite`,
  `skip_existing`); `protocol` as `fuse.model_fuser`'s. Returns the PNGs."""
  if (input_a is None) != (input_b is None):
    raise ValueError("give both input_a and input_b (two files or two folders), or neither")
  model, step = load_model(config, workdir, which)
  fuser = run_fuser(config, model, protocol)
  keywords = dict(options=options, overwrite=overwrite, skip_existing=skip_existing)
  fused_dir = pathlib.Path(workdir) / "fused"
  if input_a is None:
    out_dir = output or fused_dir / f"{config.data.eval_split}_step{step}"
    return fuse.fuse_source(
      fuser, input_lib.eval_pairs(config.data, config.eval.num_pairs), out_dir, **keywords
    )
  path_a, path_b = pathlib.Path(input_a), pathlib.Path(input_b)
  default = (
    fused_dir / f"{path_b.name}_step{step}"
    if path_a.is_dir() and path_b.is_dir()
    else fused_dir / f"{path_a.stem}_step{step}.png"
  )
  return fuse.fuse_paths(fuser, path_a, path_b, output or default, **keywords)
