"""After training: a run's checkpoint evaluated (fusionjax.evaluation) or used to fuse pairs
(fusionjax.fuse). Outputs go under the run's workdir, named after the checkpoint step."""

import pathlib

import ml_collections
from flax import nnx

from fusionjax import evaluation, fuse, models
from fusionjax.baselines import Fuser
from fusionjax.training import checkpointing, input as input_lib
from fusionjax.training.state import TrainState


def load_model(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
               which: str = "best") -> tuple[nnx.Module, int]:
  """The model of the run's "best" or "latest" checkpoint, in evaluation mode, with the EMA
  parameters when the run kept them; and the checkpoint's step."""
  abstract = nnx.eval_shape(lambda: models.build(config.model, rngs=nnx.Rngs(config.seed)))
  graph, abstract_state = nnx.split(abstract)
  target = TrainState(model=abstract_state, opt=None,
                      ema=nnx.state(abstract, nnx.Param) if config.optim.ema_decay > 0 else None)
  with checkpointing.RunCheckpoints(pathlib.Path(workdir) / "checkpoints", config.ckpt,
                                    create=False) as checkpoints:
    step = checkpoints.step(which)
    restored = checkpoints.restore(step, target)
  model = nnx.merge(graph, restored.model)
  if restored.ema is not None:
    nnx.update(model, restored.ema)
  model.eval()
  return model, step


def run_fuser(config: ml_collections.ConfigDict, model: nnx.Module) -> Fuser:
  """The fusionjax.fuse fuser of a trained model, named after the configured model."""
  return fuse.model_fuser(model, name=config.model.name, swap_inputs=config.data.swap_inputs)


def evaluate_run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                 which: str = "best", overwrite: bool = False) -> evaluation.Report:
  """Scores a checkpoint on the eval pairs (data.eval_split, eval.num_pairs), with the
  classical baselines when eval.baselines, into workdir/eval/<split>_step<step>/ (metrics.csv,
  summary.md, grid.png, fused/)."""
  model, step = load_model(config, workdir, which)
  methods = [run_fuser(config, model)]
  if config.eval.baselines:
    methods += evaluation.baseline_fusers()
  out_dir = pathlib.Path(workdir) / "eval" / f"{config.data.eval_split}_step{step}"
  return evaluation.evaluate(
      methods, input_lib.eval_pairs(config.data, config.eval.num_pairs), out_dir,
      metric_names=tuple(config.eval.metrics) or None, grid_pairs=config.eval.num_samples,
      overwrite=overwrite)


def fuse_run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
             which: str = "best", input_a: str | None = None, input_b: str | None = None,
             output: str | None = None, overwrite: bool = False) -> list[pathlib.Path]:
  """Fuses with a checkpoint: two image files or two folders (input_a: ir / mri / pc, input_b:
  the other modality) into `output`, or by default the eval pairs into
  workdir/fused/<split>_step<step>/. Returns the written PNGs."""
  model, step = load_model(config, workdir, which)
  fuser = run_fuser(config, model)
  if (input_a is None) != (input_b is None):
    raise ValueError("give both input_a and input_b (two files or two folders), or neither")
  if input_a is None:
    out_dir = output or pathlib.Path(workdir) / "fused" / f"{config.data.eval_split}_step{step}"
    return fuse.fuse_source(fuser, input_lib.eval_pairs(config.data, config.eval.num_pairs),
                            out_dir, overwrite=overwrite)
  path_a, path_b = pathlib.Path(input_a), pathlib.Path(input_b)
  if path_a.is_dir() and path_b.is_dir():
    out_dir = output or pathlib.Path(workdir) / "fused" / f"{path_b.name}_step{step}"
    return fuse.fuse_folders(fuser, path_a, path_b, out_dir, overwrite=overwrite)
  out_path = output or pathlib.Path(workdir) / "fused" / f"{path_a.stem}_step{step}.png"
  return [fuse.fuse_pair(fuser, path_a, path_b, out_path, overwrite=overwrite)]
