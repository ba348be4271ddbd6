"""Orbax checkpoints of a training run, and resuming from them.

A checkpoint (workdir/checkpoints/<step>/) holds the items "model", "opt", "ema" (when kept),
"data" (the grain iterator's position, one file per process) and "run" (JSON: the model config
and the step). Saves are asynchronous and atomic: a run killed while saving leaves the
previous checkpoints as they were. Which are kept: the latest `ckpt.keep_last`, plus the best
`ckpt.keep_best` by the validation metric `ckpt.best_metric` (a checkpoint saved after a
validation carries its metrics).
"""

import pathlib
from collections.abc import Mapping

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx
from jax.flatten_util import ravel_pytree
from orbax.checkpoint import checkpoint_managers as policies

from fusionjax.training import tree_shapes
from fusionjax.training.state import TrainState

_STATE_ITEMS = ("model", "opt", "ema")


class CheckpointMismatchError(ValueError):
  """A checkpoint does not hold what the configured run needs (another model, no EMA, ...)."""


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
  return {
    "model": ocp.StandardCheckpointHandler(),
    "opt": ocp.StandardCheckpointHandler(),
    "ema": ocp.StandardCheckpointHandler(),
    "run": ocp.JsonCheckpointHandler(),
    "data": grain.checkpoint.CheckpointHandler(),
  }


def _describe_differences(stored: Mapping, expected: Mapping, limit: int = 6) -> str:
  lines = []
  for name, stored_shape, expected_shape in tree_shapes.differences(stored, expected):
    if stored_shape is None:
      lines.append(f"  {name}: missing from the checkpoint")
    elif expected_shape is None:
      lines.append(f"  {name}: not in this model")
    else:
      lines.append(f"  {name}: stored {stored_shape}, expected {expected_shape}")
  more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
  return "\n".join(lines[:limit]) + more


def _abstract(leaf) -> jax.ShapeDtypeStruct:
  """What to restore a leaf as: its shape, dtype and sharding (default: the first device)."""
  sharding = getattr(leaf, "sharding", None) or jax.sharding.SingleDeviceSharding(
    jax.local_devices()[0]
  )
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _node(state: nnx.State, path: tuple) -> nnx.State:
  """The subtree of `state` at `path` (a tuple of keys)."""
  for key in path:
    state = state[key]
  return state


def _per_parameter_layout(
  opt: nnx.State, params: nnx.State, stored: Mapping[str, tuple[int, ...]]
) -> tuple[nnx.State, list[tuple]]:
  """The optimizer state `opt` in the layout of checkpoints written before the optimizer ran on
  raveled parameters (`optim.make_optimizer`): each vector of `opt` that `stored` (a checkpoint's
  leaf shapes) keeps as one array per parameter becomes a subtree shaped like `params`. Returns
  that state and the paths of the vectors so replaced (none when `stored` is not that layout)."""
  legacy = jax.tree.map(lambda leaf: leaf, opt)
  replaced = []
  for path, variable in nnx.to_flat_state(opt):
    name = "/".join(map(str, path))
    if name in stored or not any(key.startswith(name + "/") for key in stored):
      continue
    dtype = variable.get_value().dtype
    _node(legacy, path[:-1])[path[-1]] = jax.tree.map(
      lambda leaf, dtype=dtype: _abstract(leaf).update(dtype=dtype), params
    )
    replaced.append(path)
  return legacy, replaced


def _ravel_subtrees(restored: nnx.State, target: nnx.State, paths: list[tuple]) -> nnx.State:
  """`restored` (in `_per_parameter_layout`) with the subtree at each of `paths` raveled into
  the vector `target` holds there, in the order optax.flatten ravels parameters."""
  variables = dict(nnx.to_flat_state(target))
  for path in paths:
    parent, variable = _node(restored, path[:-1]), variables[path]
    ravel = jax.jit(lambda tree: ravel_pytree(tree)[0], out_shardings=variable.sharding)
    parent[path[-1]] = variable.replace(ravel(parent[path[-1]]))
  return restored


class RunCheckpoints:
  """The checkpoints of one run directory; use as a context manager (waits for saves)."""

  def __init__(
    self, directory: str | pathlib.Path, ckpt: ml_collections.ConfigDict, *, create: bool = True
  ):
    self.directory = pathlib.Path(directory).absolute()
    if not create and not self.directory.is_dir():
      raise FileNotFoundError(f"no checkpoints at {self.directory}: train first (--mode=train)")
    preserve = [policies.LatestN(n=ckpt.keep_last)]
    best_fn = None
    if ckpt.keep_best > 0:
      best_fn = lambda metrics: metrics[ckpt.best_metric]  # pylint: disable=unnecessary-lambda-assignment
      preserve.append(
        policies.BestN(
          get_metric_fn=best_fn,
          reverse=ckpt.best_mode == "min",
          n=ckpt.keep_best,
          keep_checkpoints_without_metrics=False,
        )
      )
    options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(preserve),
      best_fn=best_fn,
      best_mode=ckpt.best_mode,
      create=create,
      enable_async_checkpointing=True,
    )
    self.manager = ocp.CheckpointManager(
      self.directory, options=options, item_handlers=_item_handlers()
    )

  def __enter__(self) -> "RunCheckpoints":
    return self

  def __exit__(self, *exc_info) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def step(self, which: str) -> int:
    """The step of the "latest" or "best" (by validation metric; latest if none has one)."""
    step = {"latest": self.manager.latest_step, "best": self.manager.best_step}[which]()
    if step is None:
      raise FileNotFoundError(f"no checkpoints in {self.directory}: train first (--mode=train)")
    return step

  def save(
    self,
    step: int,
    state: TrainState,
    data_iterator: grain.DatasetIterator,
    model_config: ml_collections.ConfigDict,
    metrics: Mapping[str, float] | None = None,
  ):
    """Starts an asynchronous save of `state` and the iterator's position at `step`."""
    items = {
      name: ocp.args.StandardSave(getattr(state, name))
      for name in _STATE_ITEMS
      if getattr(state, name) is not None
    }
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    items["run"] = ocp.args.JsonSave({"model": model_config.to_dict(), "step": step})
    self.manager.save(
      step, args=ocp.args.Composite(**items), metrics=None if metrics is None else dict(metrics)
    )

  def _stored_model_name(self, step: int, metadata) -> str:
    """The model name in the "run" item saved at `step` (the JSON item has no metadata of its
    own, so it is read); "unknown" if absent."""
    if "run" not in metadata.keys():
      return "unknown"
    run = self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]
    return run.get("model", {}).get("name", "unknown")

  def _check_compatible(self, step: int, target: Mapping[str, nnx.State | None], metadata) -> None:
    """Raises CheckpointMismatchError naming what differs between the stored items (`metadata`,
    the step's item metadata) and the arrays `target` expects (parameter names and shapes)."""
    stored_model = self._stored_model_name(step, metadata)
    where = f"checkpoint {self.directory / str(step)} (model {stored_model!r})"
    for name, expected in target.items():
      if expected is None:
        continue
      stored = metadata[name] if name in metadata.keys() else None
      if stored is None:
        raise CheckpointMismatchError(
          f"{where} has no {name!r} item"
          + (" (it was trained without optim.ema_decay)" if name == "ema" else "")
        )
      differences = _describe_differences(
        tree_shapes.leaf_shapes(stored.tree), tree_shapes.leaf_shapes(expected)
      )
      if differences:
        raise CheckpointMismatchError(
          f"{where} does not fit this run's {name!r} (another model or model config?):\n"
          f"{differences}\nUse another --workdir, or the config that trained it."
        )

  def _check_process_count(self, step: int) -> None:
    """Raises CheckpointMismatchError unless the data position saved at `step` has a file for
    this process: grain stores one per process, so a job resumes with the number of
    processes that saved it."""
    data = self.directory / str(step) / "data"
    mine = data / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    saved = sorted(data.glob("process_*-of-*.json"))
    if saved and not mine.exists():
      saved_count = saved[0].stem.rpartition("-of-")[2]
      raise CheckpointMismatchError(
        f"checkpoint {data.parent} was saved by a job of {saved_count} process(es); resume "
        f"it with {saved_count} (this job has {jax.process_count()})"
      )

  def restore(
    self, step: int, target: TrainState, data_iterator: grain.DatasetIterator | None = None
  ) -> TrainState:
    """The state saved at `step`, into `target`'s structure, dtypes and shardings; also moves
    `data_iterator` (when given) to the saved position. Items that are None in `target` are
    not read (e.g. opt for evaluation). An "opt" item of a run saved before the optimizer
    raveled the parameters (one array per parameter and Adam moment) is read in that layout and
    raveled, so such runs resume."""
    wanted = {name: getattr(target, name) for name in _STATE_ITEMS}
    raveled = []
    metadata = self.manager.item_metadata(step)
    if wanted["opt"] is not None and "opt" in metadata.keys():
      params = nnx.filter_state(target.model, nnx.Param)
      stored = tree_shapes.leaf_shapes(metadata["opt"].tree)
      wanted["opt"], raveled = _per_parameter_layout(wanted["opt"], params, stored)
    self._check_compatible(step, wanted, metadata)
    items = {
      name: ocp.args.StandardRestore(jax.tree.map(_abstract, tree))
      for name, tree in wanted.items()
      if tree is not None
    }
    if data_iterator is not None:
      self._check_process_count(step)
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = dict(self.manager.restore(step, args=ocp.args.Composite(**items)))
    if raveled:
      restored["opt"] = _ravel_subtrees(restored["opt"], target.opt, raveled)
    return TrainState(
      **{name: restored[name] if tree is not None else None for name, tree in wanted.items()}
    )
