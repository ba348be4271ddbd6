"""Training in several processes, for real: two JAX processes on localhost (2 CPU devices each,
gloo collectives, `run.py` told by environment variables) train like one process with 4
devices, save collectively, and resume to the same parameters after one of them is killed.

Also: each process feeds its own rows of every global batch; `sharding.initialize_distributed`
needs all three variables, and does nothing without.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from run_testing import finished_steps

from fusionjax import config_lib
from fusionjax.training import (
  CheckpointMismatchError,
  checkpointing,
  sharding,
)
from fusionjax.training import (
  input as input_lib,
)
from fusionjax.training import (
  state as state_lib,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 6
CHECKPOINT_EVERY = 2
RUN_TIMEOUT_S = 240  # one run of the job; a hang fails the test instead of blocking CI
LOG_TAIL_CHARS = 12_000  # of each process's log in a failure: all threads' stacks fit
# Two processes sum the gradients (gloo all-reduce) in another order than one process with 4
# devices does; Adam turns those last-bit differences of near-zero gradients into parameter
# differences of up to ~2e-5 after 6 steps (measured; each step moves a parameter by up to the
# learning rate, 1e-3), 1-2e-6 of the parameters' norm. Wrong rows or a wrong data position on
# resume move them by ~1e-3.
MAX_ABS_DIFFERENCE = 1e-4
MAX_NORM_RELATIVE_DIFFERENCE = 1e-5
# A tiny MambaDFuse (it compiles fastest) trained a few steps on 16x16 crops, batch 4.
CONFIG = REPO / "configs" / "mambadfuse_med.py"
OVERRIDES = {
  "train.num_steps": NUM_STEPS,
  "train.log_every_steps": 1,
  "ckpt.every_steps": CHECKPOINT_EVERY,
  "ckpt.keep_last": NUM_STEPS,
  "eval.every_steps": 0,
  "data.crop_size": 16,
  "data.batch_size": 4,
}


def _config():
  config = config_lib.load(f"{CONFIG}:tiny")
  for name, value in OVERRIDES.items():
    section, field = name.split(".")
    config[section][field] = value
  return config


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _command(workdir: pathlib.Path, mode: str) -> list[str]:
  return [
    sys.executable,
    str(REPO / "run.py"),
    f"--config={CONFIG}:tiny",
    f"--mode={mode}",
    f"--workdir={workdir}",
    f"--compilation_cache={workdir.parent / 'xla_cache'}",
    *(f"--config.{name}={value}" for name, value in OVERRIDES.items()),
  ]


def _environments(num_processes: int, devices_per_process: int) -> list[dict[str, str]]:
  """The environment of each process of a localhost job (no job variables for one process)."""
  environment = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_NUM_CPU_DEVICES=str(devices_per_process),
    PYTHONFAULTHANDLER="1",  # SIGABRT prints every thread's stack (see _run)
  )
  if num_processes == 1:
    return [environment]
  job = dict(
    environment,
    JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
    JAX_NUM_PROCESSES=str(num_processes),
  )
  return [dict(job, JAX_PROCESS_ID=str(process_id)) for process_id in range(num_processes)]


def _start(
  workdir: pathlib.Path, num_processes: int, mode: str = "train"
) -> list[subprocess.Popen]:
  """The job's processes, each with 4 / num_processes CPU devices; logs in workdir.<i>.log."""
  processes = []
  for process_id, environment in enumerate(_environments(num_processes, 4 // num_processes)):
    log = (workdir.parent / f"{workdir.name}.{process_id}.log").open("a")
    processes.append(
      subprocess.Popen(
        _command(workdir, mode), env=environment, stdout=log, stderr=subprocess.STDOUT
      )
    )
    log.close()
  return processes


def _log_tails(workdir: pathlib.Path) -> str:
  logs = sorted(workdir.parent.glob(f"{workdir.name}.*.log"))
  return "\n".join(f"--- {log.name}\n{log.read_text()[-LOG_TAIL_CHARS:]}" for log in logs)


def _kill(
  processes: list[subprocess.Popen], sig: int = signal.SIGKILL, wait_s: float | None = None
) -> None:
  """Sends `sig` to the processes still running and waits for them (at most `wait_s` each)."""
  for process in processes:
    if process.poll() is None:
      process.send_signal(sig)
  for process in processes:
    try:
      process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
      pass


def _run(workdir: pathlib.Path, num_processes: int) -> None:
  """Runs the job to its end; fails (killing it) if a process fails or it outlasts the timeout."""
  processes = _start(workdir, num_processes)
  deadline = time.monotonic() + RUN_TIMEOUT_S
  try:
    while any(process.poll() is None for process in processes):
      if time.monotonic() > deadline:
        _kill(processes, signal.SIGABRT, wait_s=10)  # each prints its threads' Python stacks
        pytest.fail(f"timed out; the stacks of the processes at the time:\n{_log_tails(workdir)}")
      failed = [process.returncode for process in processes if process.poll()]
      assert not failed, f"exit codes {failed}\n{_log_tails(workdir)}"
      time.sleep(0.1)
  finally:
    _kill(processes)
  assert all(process.returncode == 0 for process in processes), _log_tails(workdir)


def _run_and_kill_one(workdir: pathlib.Path) -> bool:
  """Starts two processes, SIGKILLs process 1 once a checkpoint is written, then process 0 (it
  fails or hangs without its peer). Returns whether process 0 ended by itself within 3 s."""
  processes = _start(workdir, num_processes=2)
  deadline = time.monotonic() + RUN_TIMEOUT_S
  try:
    while not finished_steps(workdir):
      assert time.monotonic() < deadline, f"no checkpoint in time\n{_log_tails(workdir)}"
      assert all(process.poll() is None for process in processes), _log_tails(workdir)
      time.sleep(0.02)
    _kill(processes[1:])
    try:
      processes[0].wait(timeout=3)
    except subprocess.TimeoutExpired:
      return False
    return True
  finally:
    _kill(processes)


def _stored_floats(workdir: pathlib.Path, step: int, item: str) -> dict[str, np.ndarray]:
  """The floating-point arrays of a checkpoint item, as NumPy arrays (any device count)."""
  checkpointer = ocp.PyTreeCheckpointer()
  path = workdir / "checkpoints" / str(step) / item
  as_numpy = jax.tree.map(
    lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
    checkpointer.metadata(path).item_metadata.tree,
  )
  tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return {
    jax.tree_util.keystr(name): np.asarray(leaf)
    for name, leaf in jax.tree_util.tree_leaves_with_path(tree)
    if np.issubdtype(np.asarray(leaf).dtype, np.floating)
  }


def _assert_same_parameters(workdir: pathlib.Path, reference: pathlib.Path, step: int) -> None:
  for item in ("model", "ema"):
    actual, expected = (_stored_floats(run, step, item) for run in (workdir, reference))
    assert actual.keys() == expected.keys()
    differences = np.concatenate([(actual[name] - expected[name]).ravel() for name in actual])
    norm = np.linalg.norm(np.concatenate([value.ravel() for value in expected.values()]))
    print(
      f"step {step} {item}: max |difference| {np.abs(differences).max():.3g}, "
      f"norm {np.linalg.norm(differences) / norm:.3g} of the parameters'"
    )
    assert np.abs(differences).max() <= MAX_ABS_DIFFERENCE, (item, step)
    assert np.linalg.norm(differences) <= MAX_NORM_RELATIVE_DIFFERENCE * norm, (item, step)


def _logged_steps(workdir: pathlib.Path) -> list[int]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line)["step"] for line in lines]


def test_two_processes_train_and_resume_like_one(tmp_path):
  reference, job = tmp_path / "one_process", tmp_path / "two_processes"
  _run(reference, num_processes=1)

  ended_alone = _run_and_kill_one(job)
  killed_at = finished_steps(job)
  print(f"killed after checkpoint(s) {killed_at}; process 0 ended by itself: {ended_alone}")
  assert killed_at and killed_at[-1] < NUM_STEPS, "not killed mid-run"
  _assert_same_parameters(job, reference, killed_at[0])
  assert sorted(
    p.name for p in (job / "checkpoints" / str(killed_at[0]) / "data").glob("process_*.json")
  ) == ["process_0-of-2.json", "process_1-of-2.json"]

  # Resumed with --compilation_cache set, as the first run: with jax 0.12.1 the step process 0
  # would load from the cache hung at its first collective, unless the CLI leaves it off.
  _run(job, num_processes=2)
  assert "resumed" in (tmp_path / f"{job.name}.0.log").read_text()
  assert "compilation cache off" in (tmp_path / f"{job.name}.1.log").read_text()
  _assert_same_parameters(job, reference, NUM_STEPS)
  # Only process 0 logs: every step once up to the checkpoint resumed from, then the rest.
  logged = _logged_steps(job)
  assert all(logged.count(step) == 1 for step in range(1, killed_at[-1] + 1)), logged
  assert logged[killed_at[-1] - NUM_STEPS :] == list(range(killed_at[-1] + 1, NUM_STEPS + 1))

  # One process cannot take over the data positions of two: a clear error.
  config = _config()
  state = jax.eval_shape(lambda: state_lib.create(config)[1])  # shapes suffice to check
  with checkpointing.RunCheckpoints(job / "checkpoints", config.ckpt) as checkpoints:
    with pytest.raises(CheckpointMismatchError, match="saved by a job of 2 process"):
      checkpoints.restore(NUM_STEPS, state, input_lib.train_batches(config))


@pytest.mark.parametrize(
  ("process_count", "backend", "usable"), [(1, "cpu", True), (2, "cpu", False), (2, "gpu", True)]
)
def test_only_a_job_of_several_cpu_processes_goes_without_the_compilation_cache(
  process_count, backend, usable, monkeypatch
):
  monkeypatch.setattr(jax, "process_count", lambda: process_count)
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert sharding.compilation_cache_usable() is usable


# Process 1 reaches the first collective this long after process 0: more than the 30 s for which
# JAX's CPU collectives (gloo) wait for a peer, as when only process 0 hits the compilation cache.
LATE_PEER_S = 40
_LATE_PEER_JOB = f"""
import time
import jax
import numpy as np
from fusionjax.training import sharding
sharding.initialize_distributed()
if jax.process_index() == 1:
  time.sleep({LATE_PEER_S})
sharding.wait_for_all_processes("late peer")
mesh = sharding.make_mesh()
rows = sharding.global_batch(np.full((2,), jax.process_index() + 1.0), mesh)
total = jax.jit(lambda x: x.sum(), out_shardings=sharding.replicated(mesh))(rows)
print("sum", float(total.addressable_data(0)))
"""


def test_processes_wait_for_a_late_peer_before_their_collectives():
  processes = [
    subprocess.Popen(
      [sys.executable, "-c", _LATE_PEER_JOB],
      env=environment,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for environment in _environments(num_processes=2, devices_per_process=1)
  ]
  try:
    outputs = [process.communicate(timeout=RUN_TIMEOUT_S)[0] for process in processes]
  finally:
    _kill(processes)
  assert [process.returncode for process in processes] == [0, 0], "\n".join(outputs)
  assert all("sum 6.0" in output for output in outputs), "\n".join(outputs)


def test_a_job_of_several_processes_only_trains(tmp_path):
  workdir = tmp_path / "eval_job"
  processes = _start(workdir, num_processes=2, mode="eval")
  try:
    codes = [process.wait(timeout=RUN_TIMEOUT_S) for process in processes]
  finally:
    _kill(processes)
  assert codes == [2, 2], _log_tails(workdir)
  assert "only trains (--mode=train)" in _log_tails(workdir)
  assert "Traceback" not in _log_tails(workdir)


@pytest.mark.parametrize("process_index", [0, 1])
def test_each_process_feeds_its_block_of_the_global_batch(process_index, monkeypatch):
  config = _config()
  first, second = (next(input_lib.train_batches(config)) for _ in range(2))
  np.testing.assert_array_equal(first["img_a"], second["img_a"])  # seeded
  monkeypatch.setattr(jax, "process_index", lambda: process_index)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  rows = next(input_lib.train_batches(config))
  block = slice(2 * process_index, 2 * process_index + 2)
  for key in ("img_a", "img_b", "name"):
    np.testing.assert_array_equal(rows[key], first[key][block])


_DISTRIBUTED_VARIABLES = (
  sharding.COORDINATOR_VARIABLE,
  sharding.NUM_PROCESSES_VARIABLE,
  sharding.PROCESS_ID_VARIABLE,
  "SLURM_NTASKS",
  "OMPI_COMM_WORLD_SIZE",
)


@pytest.fixture
def calls_to_initialize(monkeypatch):
  """The arguments jax.distributed.initialize would have been called with (it is not called:
  this process is already a single-process JAX runtime)."""
  for name in _DISTRIBUTED_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  calls = []
  monkeypatch.setattr(
    jax.distributed, "initialize", lambda **arguments: calls.append(tuple(arguments.values()))
  )
  return calls


def test_initialize_distributed_is_a_no_op_for_one_process(calls_to_initialize, monkeypatch):
  assert not sharding.initialize_distributed()
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert not sharding.initialize_distributed()
  assert not calls_to_initialize


def test_initialize_distributed_takes_arguments_over_the_environment(
  calls_to_initialize, monkeypatch
):
  monkeypatch.setenv(sharding.COORDINATOR_VARIABLE, "node0:1234")
  monkeypatch.setenv(sharding.NUM_PROCESSES_VARIABLE, "4")
  monkeypatch.setenv(sharding.PROCESS_ID_VARIABLE, "3")
  assert sharding.initialize_distributed()
  assert sharding.initialize_distributed(process_id=0)
  assert calls_to_initialize == [("node0:1234", 4, 3), ("node0:1234", 4, 0)]


def test_initialize_distributed_leaves_a_scheduler_job_to_jax(calls_to_initialize, monkeypatch):
  monkeypatch.setenv("SLURM_NTASKS", "2")
  assert sharding.initialize_distributed()
  assert calls_to_initialize == [(None, None, None)]


def test_initialize_distributed_refuses_an_incomplete_description(calls_to_initialize, monkeypatch):
  monkeypatch.setenv(sharding.COORDINATOR_VARIABLE, "node0:1234")
  with pytest.raises(ValueError, match="missing: JAX_NUM_PROCESSES, JAX_PROCESS_ID"):
    sharding.initialize_distributed()
  monkeypatch.setenv(sharding.NUM_PROCESSES_VARIABLE, "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' is not an integer"):
    sharding.initialize_distributed(process_id=1)
  assert not calls_to_initialize
