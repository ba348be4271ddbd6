"""Training: steps lower the loss, 8-device steps equal 1-device ones, killed runs resume exactly,
NaN stops a run, checkpoints keep the latest and the best, bad inputs fail clearly."""

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from run_testing import finished_steps

from fusionjax import config_lib, convert, models
from fusionjax.training import (
  CheckpointMismatchError,
  NonFiniteLossError,
  checkpointing,
  optim,
  sharding,
  starting_point,
  steps,
)
from fusionjax.training import (
  input as input_lib,
)
from fusionjax.training import (
  state as state_lib,
)
from fusionjax.training.loop import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
# One tiny config per model family; FusionMamba with two levels instead of four (faster to build
# and compile, same code paths).
FAMILIES = {
  "mambadfuse": ("mambadfuse_med.py:tiny", {}),
  "fusionmamba": ("fusionmamba_med.py:tiny", {"depths": (1, 1), "decoder_depths": (1, 1)}),
  "s4fusion": ("s4fusion_vif.py:tiny", {"fusion_blocks": 1}),
}


def tiny_config(family: str, **sections):
  """The family's tiny config with `sections` = {"train": {...}, ...} updates."""
  spec, model = FAMILIES[family]
  config = config_lib.load(str(REPO / "configs" / spec))
  config.model.update(model)
  for section, values in sections.items():
    config[section].update(values)
  return config


def fresh(state):
  """A copy of a state to donate to a jitted step."""
  return jax.tree.map(jnp.copy, state)


# Ten Adam steps at this rate lower every family's loss by 8-10% on one batch.
LOSS_TEST_LEARNING_RATE = 3e-3
LOSS_TEST_STEPS = 10


@functools.cache
def single_device_run(family: str):
  """(config, graphs, initial state, batch (a, b), jitted step) on one device."""
  config = tiny_config(family, optim={"learning_rate": LOSS_TEST_LEARNING_RATE})
  mesh = sharding.make_mesh(jax.devices()[:1])
  graphs, state = state_lib.create(config)
  batch = next(input_lib.train_batches(config))
  a, b = (sharding.global_batch(batch[key], mesh) for key in ("img_a", "img_b"))
  state = jax.device_put(state, sharding.replicated(mesh))
  return config, graphs, state, (a, b), steps.jit_train_step(config, graphs, mesh)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_optimizer_on_raveled_parameters_updates_as_per_parameter_optax(optimizer):
  config = config_lib.base_config(config_lib.model_config("mambadfuse_tiny"))
  config.optim.update(optimizer=optimizer, grad_clip_norm=0.5)
  if optimizer == "adamw":
    config.optim.weight_decay = 0.05
  schedule = optim.make_schedule(config.optim, num_steps=10)
  ours = optim.make_optimizer(config.optim, schedule)
  theirs = optax.chain(
    optax.clip_by_global_norm(0.5),
    optax.adamw(schedule, weight_decay=0.05) if optimizer == "adamw" else optax.adam(schedule),
  )
  keys = iter(jax.random.split(jax.random.key(3), 20))
  params = {"kernel": jax.random.normal(next(keys), (3, 4)), "bias": {"b": jnp.ones((5,))}}
  our_state, their_state = ours.init(params), theirs.init(params)
  # Adam's moments are one vector each: what makes the update a few kernels.
  assert {leaf.shape for leaf in jax.tree.leaves(our_state) if leaf.ndim} == {(17,)}
  for _ in range(3):
    grads = jax.tree.map(lambda x: jax.random.normal(next(keys), x.shape), params)
    our_update, our_state = ours.update(grads, our_state, params)
    their_update, their_state = theirs.update(grads, their_state, params)
    jax.tree.map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8), our_update, their_update
    )
    params = optax.apply_updates(params, our_update)


class _TwoParameters(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.scale = nnx.Param(jax.random.normal(rngs.params(), (3,)))
    self.shift = nnx.Param(jax.random.normal(rngs.params(), (2, 2)))

  def __call__(self, a, b):
    return a * self.scale[...].sum() + b * self.shift[...].prod()


def test_train_step_reports_the_global_gradient_norm():
  model = _TwoParameters(nnx.Rngs(5))
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  graphs = state_lib.Graphs(
    train=nnx.graphdef(model), eval=nnx.graphdef(model), opt=nnx.graphdef(optimizer)
  )
  state = state_lib.TrainState(model=nnx.state(model), opt=nnx.state(optimizer), ema=None)
  a, b = jnp.linspace(0, 1, 8).reshape(2, 2, 2, 1), jnp.linspace(1, 3, 8).reshape(2, 2, 2, 1)
  loss_fn = lambda a, b, fused: (jnp.mean((fused - a) ** 2), {})  # noqa: E731
  grads = jax.grad(lambda m: loss_fn(a, b, m(a, b))[0])(model)
  expected = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
  _, metrics = steps.train_step(graphs, loss_fn, optax.constant_schedule(1e-3), 0.0, state, a, b)
  np.testing.assert_allclose(metrics["grad_norm"], expected, rtol=1e-6)


def assert_same_step(before, expected, actual, metrics_rtol):
  """The (state, metrics) pairs `expected` and `actual` of one step from state `before` agree:
  metrics to `metrics_rtol`, parameter updates as far as float32 gradients allow.

  Adam's first update is u = lr * g / (|g| + eps), eps = 1e-8: a full step (about lr) wherever
  |g| >> eps, where the two updates must agree to 5% of lr. Near or under eps (A_log and dt
  gradients of tiny models are) a gradient's float32 rounding error, from another summation order
  (partial sums and an all-reduce, or another compile), moves u by lr * (1 - |u| / lr)^2 * dg / eps;
  seen: 0.07 lr against 0.15 lr. So each element may also differ by that much for dg = eps / 2.
  A wrong gradient flips or rescales whole steps (2 lr apart)."""
  (expected_state, expected_metrics), (actual_state, actual_metrics) = expected, actual
  for name, value in expected_metrics.items():
    assert float(actual_metrics[name]) == pytest.approx(float(value), rel=metrics_rtol), name
  lr = LOSS_TEST_LEARNING_RATE

  def assert_same_update(start, expected_param, actual_param):
    expected_update, actual_update = expected_param - start, actual_param - start
    step_fraction = np.minimum(np.abs(expected_update), np.abs(actual_update)) / lr
    tolerance = lr * (0.05 + 0.5 * (1 - np.minimum(step_fraction, 1)) ** 2)
    np.testing.assert_array_less(np.abs(expected_update - actual_update), tolerance)

  params = lambda s: jax.device_get(nnx.to_pure_dict(nnx.state(s.model, nnx.Param)))
  jax.tree.map(assert_same_update, params(before), params(expected_state), params(actual_state))


def test_fast_compiled_step_equals_the_optimised_step():
  """FusionMamba's tiny configs compile the step unoptimised (faster to compile, slower to run):
  the same step up to float32 rounding."""
  config, graphs, state, (a, b), fast_step = single_device_run("fusionmamba")
  assert config.train.fast_compile
  assert not config_lib.load(str(REPO / "configs" / "fusionmamba_med.py")).train.fast_compile
  optimised = config.copy_and_resolve_references()
  optimised.train.fast_compile = False
  optimised_step = steps.jit_train_step(optimised, graphs, sharding.make_mesh(jax.devices()[:1]))
  fast_state, fast_metrics = fast_step(fresh(state), a, b)
  optimised_state, optimised_metrics = optimised_step(fresh(state), a, b)
  # float32 sums over the batch's pixels and the gradients' elements, in another order: the
  # loss and the gradient norm move by up to ~1e-5 of themselves.
  assert_same_step(state, (optimised_state, optimised_metrics), (fast_state, fast_metrics), 5e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_few_steps_lower_the_loss(family):
  config, _, state, (a, b), train_step = single_device_run(family)
  state = fresh(state)
  losses = []
  for _ in range(LOSS_TEST_STEPS):
    state, metrics = train_step(state, a, b)
    losses.append(float(metrics["loss"]))
  assert all(np.isfinite(losses)), losses
  assert losses[-1] < 0.95 * losses[0], losses
  assert state_lib.step(state) == LOSS_TEST_STEPS
  assert float(metrics["learning_rate"]) == pytest.approx(
    float(steps.optim.make_schedule(config.optim, config.train.num_steps)(LOSS_TEST_STEPS - 1))
  )


def test_sharded_step_equals_single_device_step():
  config, graphs, state, (a, b), single_step = single_device_run("mambadfuse")
  assert config.data.batch_size == 8 and len(jax.devices()) == 8
  mesh = sharding.make_mesh()
  sharded_a, sharded_b = (jax.device_put(x, sharding.batch_sharded(mesh)) for x in (a, b))
  assert len(sharded_a.sharding.device_set) == 8
  sharded_state, sharded_metrics = steps.jit_train_step(config, graphs, mesh)(
    jax.device_put(fresh(state), sharding.replicated(mesh)), sharded_a, sharded_b
  )
  single_state, single_metrics = single_step(fresh(state), a, b)
  assert sharded_state.model["conv_last3"]["kernel"][...].sharding.is_fully_replicated
  assert_same_step(state, (single_state, single_metrics), (sharded_state, sharded_metrics), 1e-5)


def test_eval_model_uses_the_ema_parameters():
  _, graphs, state, _, _ = single_device_run("mambadfuse")
  assert state.ema is not None  # mambadfuse keeps an EMA
  ema = jax.tree.map(lambda x: x + 1.0, state.ema)
  model = state_lib.eval_model(graphs, state.replace(ema=ema))
  np.testing.assert_array_equal(model.conv_last3.kernel[...], ema["conv_last3"]["kernel"][...])


def _saved_tiny_params(folder: pathlib.Path, seed: int, **model) -> nnx.State:
  """Saves the params of a tiny MambaDFuse (seed `seed`, `model` fields changed) in `folder`
  as fusionjax-convert does; returns their parameters."""
  config = config_lib.resolve(tiny_config("mambadfuse"))
  config.model.update(model)
  model_config = models.resolve_config(config.model.to_dict())[1]
  params = models.init(seed, model_config)
  convert.save_params(params, folder, config.model.name, model_config)
  return nnx.state(params.module(), nnx.Param)


def _largest_difference(tree, other) -> float:
  differences = jax.tree.map(
    lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), tree, other
  )
  return max(jax.tree.leaves(differences))


def test_fine_tuning_starts_from_the_params_of_init_from(tmp_path):
  saved = _saved_tiny_params(tmp_path / "params", seed=7)  # not the run's seed (0)
  learning_rate = 1e-4  # one Adam step moves each parameter by at most this
  config = tiny_config(
    "mambadfuse",
    train={"num_steps": 1, "init_from": str(tmp_path / "params")},
    optim={"schedule": "constant", "learning_rate": learning_rate, "ema_decay": 0.0},
    eval={"every_steps": 0},
  )
  graphs, fresh_state = state_lib.create(config_lib.resolve(config))
  fresh_params = nnx.state(nnx.merge(graphs.train, fresh_state.model), nnx.Param)
  assert _largest_difference(fresh_params, saved) > 100 * learning_rate
  state = train_and_evaluate(config, tmp_path / "run")
  trained = nnx.state(nnx.merge(graphs.train, state.model), nnx.Param)
  assert 0 < _largest_difference(trained, saved) <= 1.01 * learning_rate
  # The run folder is itself a starting point: its latest checkpoint.
  from_run = nnx.state(starting_point.initial_params(str(tmp_path / "run")).module(), nnx.Param)
  assert _largest_difference(from_run, trained) == 0


@pytest.mark.parametrize(
  "source, message",
  [
    (
      "other",
      r"train.init_from=.*other: its parameters are not config.model's \(\d+ differ in name or "
      r"shape, e.g. [\w/]+: \(16,?.*\) in it, \(8,?.*\) in config.model\)",
    ),
    ("empty", r"train.init_from=.*empty: .*config.json does not exist"),
    ("nope", "train.init_from=nope: no pretrained model 'nope'; shipped: "),
  ],
)
def test_init_from_another_model_or_nothing_is_a_config_error(tmp_path, source, message):
  _saved_tiny_params(tmp_path / "other", seed=0, embed_dim=16)
  (tmp_path / "empty").mkdir()
  config = config_lib.resolve(tiny_config("mambadfuse"))
  graphs, state = state_lib.create(config)
  path = str(tmp_path / source) if source != "nope" else source
  with pytest.raises(config_lib.ConfigError, match=message):
    state_lib.start_from(graphs, state, starting_point.initial_params(path), path)


def _stored(workdir: pathlib.Path, step: int, item: str):
  return ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / str(step) / item)


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
  num_steps = 16
  command = [
    sys.executable,
    str(REPO / "run.py"),
    f"--config={REPO / 'configs/mambadfuse_med.py'}:tiny",
    "--mode=train",
    f"--compilation_cache={tmp_path / 'xla_cache'}",
    f"--config.train.num_steps={num_steps}",
    "--config.ckpt.every_steps=3",
    "--config.eval.every_steps=0",
    "--config.data.crop_size=16",
  ]
  environment = dict(os.environ, JAX_PLATFORMS="cpu")
  run = lambda workdir: subprocess.run(  # pylint: disable=unnecessary-lambda-assignment
    command + [f"--workdir={workdir}"], env=environment, capture_output=True, text=True, timeout=300
  )
  uninterrupted = run(tmp_path / "uninterrupted")
  assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
  assert "compiling the training step first" in uninterrupted.stderr  # announced

  killed = subprocess.Popen(
    command + [f"--workdir={tmp_path / 'killed'}"],
    env=environment,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.monotonic() + 300
  while not finished_steps(tmp_path / "killed") and time.monotonic() < deadline:
    assert killed.poll() is None, "the run ended before its first checkpoint"
    time.sleep(0.02)
  killed.send_signal(signal.SIGKILL)
  assert killed.wait() == -signal.SIGKILL
  assert 0 < finished_steps(tmp_path / "killed")[-1] < num_steps, "not killed mid-run"

  resumed = run(tmp_path / "killed")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed" in resumed.stderr
  for item in ("model", "opt", "ema"):
    jax.tree.map(
      np.testing.assert_array_equal,
      _stored(tmp_path / "uninterrupted", num_steps, item),
      _stored(tmp_path / "killed", num_steps, item),
    )
  assert (tmp_path / "killed" / "metrics.jsonl").read_text().count("\n") > 0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # Adam's first update moves every parameter by about the learning rate: the second step's
  # forward pass overflows.
  config = tiny_config(
    "mambadfuse",
    train={"num_steps": 5},
    ckpt={"every_steps": 1},
    eval={"every_steps": 0},
    optim={"learning_rate": 1e30},
  )
  with pytest.raises(NonFiniteLossError, match=r"step 2: loss (nan|inf).*step 1 in"):
    train_and_evaluate(config, tmp_path)
  assert finished_steps(tmp_path) == [1]
  recorded = json.loads((tmp_path / "config.json").read_text())["model"]
  assert recorded == {
    "name": "mambadfuse_tiny",
    **dataclasses.asdict(models.resolve_config("mambadfuse_tiny")[1]),
  }
  stored = _stored(tmp_path, 1, "model")
  assert all(
    np.all(np.isfinite(leaf))
    for leaf in jax.tree.leaves(stored)
    if np.issubdtype(np.asarray(leaf).dtype, np.floating)
  )


def _file_digests(directory: pathlib.Path) -> dict[str, str]:
  return {
    str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(directory.rglob("*"))
    if path.is_file()
  }


def test_checkpoint_of_another_model_is_refused_and_left_intact(tmp_path):
  config, _, state, _, _ = single_device_run("mambadfuse")
  with checkpointing.RunCheckpoints(tmp_path / "checkpoints", config.ckpt) as checkpoints:
    checkpoints.save(0, state, input_lib.train_batches(config), config.model)
  (tmp_path / "config.json").write_text("{}")
  before = _file_digests(tmp_path)
  other = tiny_config("mambadfuse", model={"embed_dim": 12})
  with pytest.raises(
    CheckpointMismatchError,
    match=r"model 'mambadfuse_tiny'.*\n.*stored \(8,\), "
    r"expected \(12,\)",
  ):
    train_and_evaluate(other, tmp_path)
  assert _file_digests(tmp_path) == before


def test_checkpoints_keep_the_latest_and_the_best(tmp_path):
  config, _, state, _, _ = single_device_run("mambadfuse")
  config = config.copy_and_resolve_references()
  config.ckpt.update(keep_last=2, keep_best=1, best_metric="Qabf", best_mode="max")
  iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
  scores = {2: 0.9, 4: 0.5}
  with checkpointing.RunCheckpoints(tmp_path, config.ckpt) as checkpoints:
    for step in range(1, 6):
      checkpoints.save(
        step,
        state,
        iterator,
        config.model,
        metrics={"Qabf": scores[step]} if step in scores else None,
      )
  with checkpointing.RunCheckpoints(tmp_path, config.ckpt, create=False) as checkpoints:
    assert checkpoints.manager.all_steps() == [2, 4, 5]
    assert (checkpoints.step("best"), checkpoints.step("latest")) == (2, 5)
    restored = checkpoints.restore(2, state.replace(opt=None))
  assert restored.opt is None
  jax.tree.map(
    np.testing.assert_array_equal, jax.device_get(restored.model), jax.device_get(state.model)
  )


@pytest.mark.parametrize(
  "sections, message",
  [
    ({"data": {"batch_size": 0}}, "data.batch_size must be at least 1, got 0"),
    ({"data": {"crop_size": 0}}, "data.crop_size must be at least 1, got 0"),
    ({"train": {"num_steps": -1}}, "train.num_steps must be at least 1, got -1"),
    ({"optim": {"learning_rate": -1.0}}, "optim.learning_rate must be positive, got -1.0"),
    ({"optim": {"ema_decay": 1.0}}, r"optim.ema_decay must be in \[0, 1\), got 1.0"),
    ({"ckpt": {"best_metric": "PSNR"}}, "ckpt.best_metric='PSNR' is not among"),
  ],
)
def test_training_values_out_of_range_are_config_errors_before_the_run_starts(
  tmp_path, sections, message
):
  config = tiny_config("mambadfuse", **sections)
  with pytest.raises(config_lib.ConfigError, match=message):
    train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_bad_inputs_fail_clearly(tmp_path):
  config = tiny_config("mambadfuse", data={"manual_dir": str(tmp_path / "missing")})
  with pytest.raises(FileNotFoundError, match="missing"):
    input_lib.pair_source(config.data, "test")
  config = tiny_config("mambadfuse", data={"eval_split": "validation"})
  with pytest.raises(config_lib.ConfigError, match="no 'validation' split .* embedded in the"):
    input_lib.pair_source(config.data, config.data.eval_split)
  with pytest.raises(config_lib.ConfigError, match=r"'train\[2:\]' .*: set data.data_dir too"):
    input_lib.pair_source(config.data, "train[2:]")
  with pytest.raises(config_lib.ConfigError, match="multiple of the number of devices"):
    sharding.check_batch_size(12, sharding.make_mesh())
  with pytest.raises(FileNotFoundError, match="train first"):
    checkpointing.RunCheckpoints(tmp_path / "checkpoints", config.ckpt, create=False)
