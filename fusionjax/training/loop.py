"""The training loop: `train_and_evaluate(config, workdir)`.

workdir/ gets config.json (the resolved config), checkpoints/ (fusionjax.training.
checkpointing), metrics.jsonl and TensorBoard events (train scalars every
train.log_every_steps, validation metrics every eval.every_steps) and samples/ (validation
grids). A workdir that has checkpoints is resumed from its latest one: parameters, optimizer,
EMA, step and data position, so a killed run continues exactly where its checkpoint left it.
A new run with `train.init_from` (a run folder, a params folder or a shipped model) starts its
model and EMA from those parameters, with a new optimizer: fine-tuning.

In a job of several processes (`sharding.initialize_distributed`) every process runs
`train_and_evaluate` with the same config and workdir, on a filesystem they all see: each feeds
its rows of every global batch, all validate the same pairs (so they agree on the best
checkpoint), checkpoints are saved by all together, and process 0 alone writes config.json,
the metrics and the samples.
"""

import logging
import pathlib
import time
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from fusionjax import config_lib, fuse, metrics
from fusionjax.training import checkpointing, sharding, starting_point, steps, validation
from fusionjax.training import input as input_lib
from fusionjax.training import state as state_lib
from fusionjax.training.metric_writer import MetricWriter

_LOG = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """The loss or the gradient became NaN or infinite; training stopped without saving."""


def write_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """workdir/config.json: the resolved config (file defaults + overrides), written atomically."""
  with fuse.atomic_output(workdir / "config.json", overwrite=True) as temporary:
    temporary.write_text(config.to_json_best_effort(indent=2) + "\n")


def _has_checkpoints(workdir: pathlib.Path, ckpt: ml_collections.ConfigDict) -> bool:
  """Whether the run in `workdir` has a checkpoint to resume (then init_from is not read)."""
  if not (workdir / "checkpoints").is_dir():
    return False
  with checkpointing.RunCheckpoints(workdir / "checkpoints", ckpt, create=False) as checkpoints:
    return checkpoints.latest_step() is not None


def _check_best_metric(config: ml_collections.ConfigDict) -> None:
  names = tuple(config.eval.metrics) or metrics.DEFAULT_METRICS
  if config.ckpt.keep_best > 0 and config.ckpt.best_metric not in names:
    raise config_lib.ConfigError(
      f"ckpt.best_metric={config.ckpt.best_metric!r} is not among the "
      f"validation metrics eval.metrics={names}"
    )


class _Progress:
  """The host side of the train metrics, one step behind the device: checks that they are
  finite, averages them over train.log_every_steps, writes them, drives the progress bar."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    writer: MetricWriter,
    bar: tqdm,
    checkpoints: checkpointing.RunCheckpoints,
  ):
    self.config, self.writer, self.bar, self.checkpoints = config, writer, bar, checkpoints
    self.window: list[Mapping[str, float]] = []
    self.timer_start: float | None = None  # set when the first step (which compiles) is done
    self.timed_steps = 0

  def __call__(self, step: int, device_metrics: Mapping[str, jax.Array]) -> None:
    values = {name: float(value) for name, value in jax.device_get(device_metrics).items()}
    if not (np.isfinite(values["loss"]) and np.isfinite(values["grad_norm"])):
      latest = self.checkpoints.latest_step()
      kept = (
        f"the last good checkpoint is step {latest} in {self.checkpoints.directory}"
        if latest is not None
        else "no checkpoint had been saved yet"
      )
      raise NonFiniteLossError(
        f"training stopped at step {step}: loss {values['loss']}, gradient norm "
        f"{values['grad_norm']} (learning rate {values['learning_rate']:g}). Nothing was "
        f"saved from this step on; {kept}. Check the inputs for NaN/Inf and lower "
        "optim.learning_rate (or set optim.grad_clip_norm)."
      )
    self.bar.update(step - self.bar.n)
    self.window.append(values)
    now = time.perf_counter()
    if self.timer_start is None:
      self.timer_start = now
    else:
      self.timed_steps += 1
    if step % self.config.train.log_every_steps and step != self.config.train.num_steps:
      return
    scalars = {
      name: float(np.mean([values[name] for values in self.window])) for name in self.window[0]
    }
    postfix = {"loss": f"{scalars['loss']:.4f}"}
    if self.timed_steps:
      scalars["images_per_second"] = (
        self.timed_steps * self.config.data.batch_size / (now - self.timer_start)
      )
      postfix["img/s"] = f"{scalars['images_per_second']:.1f}"
    self.writer.write_scalars(step, scalars)
    self.bar.set_postfix(postfix)
    self.window, self.timer_start, self.timed_steps = [], now, 0

  def restart_timer(self) -> None:
    """Leaves the time spent since the last step (validation, saving) out of images/s."""
    self.timer_start, self.timed_steps = time.perf_counter(), 0


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | pathlib.Path
) -> state_lib.TrainState:
  """Trains `config` in `workdir` (resuming it) to config.train.num_steps, validating every
  config.eval.every_steps and at the end (never when 0). Returns the final state.

  Raises:
    NonFiniteLossError: the loss became NaN/Inf; checkpoints saved before are intact.
    checkpointing.CheckpointMismatchError: workdir holds checkpoints of another model.
  """
  workdir = pathlib.Path(workdir)
  config = config_lib.resolve(config)  # model fields left None become the variant's values
  config_lib.check_training_values(config)
  _check_best_metric(config)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.data.batch_size, mesh)
  graphs, state = state_lib.create(config)
  if config.train.init_from and not _has_checkpoints(workdir, config.ckpt):
    source = config.train.init_from
    state = state_lib.start_from(graphs, state, starting_point.initial_params(source), source)
  state = jax.device_put(state, sharding.replicated(mesh))
  batches = input_lib.train_batches(config)
  eval_source = (
    input_lib.eval_pairs(config.data, config.eval.num_pairs)
    if config.eval.every_steps > 0
    else None
  )
  with checkpointing.RunCheckpoints(workdir / "checkpoints", config.ckpt) as checkpoints:
    latest = checkpoints.latest_step()
    if latest is not None:
      state = checkpoints.restore(latest, state, batches)
      _LOG.info("resumed %s from step %d", workdir, latest)
    if jax.process_index() == 0:
      write_config(config, workdir)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    try:
      return _train(config, graphs, state, batches, eval_source, checkpoints, writer, mesh)
    finally:
      writer.close()


def _train(config, graphs, state, batches, eval_source, checkpoints, writer, mesh):
  num_steps = config.train.num_steps
  input_keys = ("img_b", "img_a") if config.data.swap_inputs else ("img_a", "img_b")
  train_step = steps.jit_train_step(config, graphs, mesh)
  start = state_lib.step(state)
  if start >= num_steps:
    _LOG.info("already trained to step %d (train.num_steps=%d)", start, num_steps)
  else:
    _LOG.info(
      "training %s from step %d to %d; compiling the training step first (on 2 CPU cores "
      "10-20 s for the :tiny configs, a minute or more for paper sizes; the compilation cache "
      "skips it on reruns)",
      config.model.name,
      start,
      num_steps,
    )
  with tqdm(
    total=num_steps, initial=start, unit="step", desc="train", disable=jax.process_index() != 0
  ) as bar:
    progress = _Progress(config, writer, bar, checkpoints)
    pending = None
    for step in range(start + 1, num_steps + 1):
      batch = next(batches)
      inputs = tuple(sharding.global_batch(batch[key], mesh) for key in input_keys)
      if step == start + 1:
        _compile_everywhere(train_step, state, inputs)
      state, step_metrics = train_step(state, *inputs)
      if pending is not None:
        progress(*pending)  # the previous step's metrics: the device is busy with this one
      pending = (step, step_metrics)
      validate_now = config.eval.every_steps > 0 and (
        step % config.eval.every_steps == 0 or step == num_steps
      )
      if not (validate_now or step % config.ckpt.every_steps == 0 or step == num_steps):
        continue
      progress(*pending)  # never save a state whose loss was not checked
      pending = None
      scores = _validate(config, graphs, state, eval_source, writer, step) if validate_now else {}
      best = scores.get(config.ckpt.best_metric, np.nan)
      checkpoints.save(
        step, state, batches, config.model, metrics=scores if np.isfinite(best) else None
      )
      progress.restart_timer()
  return state


def _compile_everywhere(train_step, state, inputs) -> None:
  """Compiles the training step for these arguments (its calls then reuse it) and waits for every
  process to have done so: their first step's collectives would not wait long for a late peer."""
  started = time.perf_counter()
  train_step.lower(state, *inputs).compile()
  _LOG.info("compiled the training step in %.0f s", time.perf_counter() - started)
  sharding.wait_for_all_processes("fusionjax: training step compiled")


def _validate(config, graphs, state, eval_source, writer, step) -> dict[str, float]:
  scores, grid = validation.validate(
    state_lib.eval_model(graphs, state),
    eval_source,
    metric_names=tuple(config.eval.metrics) or None,
    swap_inputs=config.data.swap_inputs,
    num_samples=config.eval.num_samples,
  )
  writer.write_scalars(step, {f"val/{name}": value for name, value in scores.items()})
  if grid is not None:
    writer.write_figure(step, "val_samples", grid)
  _LOG.info(
    "step %d validation: %s",
    step,
    ", ".join(f"{name} {value:.4f}" for name, value in scores.items()),
  )
  return scores
