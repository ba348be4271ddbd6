"""Data parallelism over every device: one mesh axis, replicated state, batches split on it.

Multi-host: `initialize_distributed()` joins the job's processes (told explicitly, or detected
from SLURM / Open MPI); each process then feeds its own rows of every global batch
(`global_batch`), and the mesh spans the devices of all processes.
"""

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from fusionjax.config_lib import ConfigError

_LOG = logging.getLogger(__name__)

DATA_AXIS = "data"

# The variables that describe a job explicitly, as initialize_distributed's arguments do. JAX
# reads only the first itself; the other two are fusionjax's.
COORDINATOR_VARIABLE = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_VARIABLE = "JAX_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "JAX_PROCESS_ID"
# How long a process waits at `wait_for_all_processes` for the slowest one: compiling a paper-size
# training step on CPU takes minutes, and only one process may hit the compilation cache.
BARRIER_TIMEOUT_S = 3600
# Jobs of these schedulers are detected by jax.distributed.initialize() from their variables.
_SCHEDULER_PROCESS_COUNT_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _integer_variable(name: str) -> int | None:
  text = os.environ.get(name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{name}={text!r} is not an integer") from None


def _scheduler_job() -> bool:
  """Whether SLURM or Open MPI started this process as one of several."""
  return any((_integer_variable(name) or 1) > 1 for name in _SCHEDULER_PROCESS_COUNT_VARIABLES)


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Joins this process to a job of several with `jax.distributed.initialize`.

  Told explicitly by the arguments or, for those not given, the environment variables
  JAX_COORDINATOR_ADDRESS (host:port of process 0, the same on every process),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID (0 .. JAX_NUM_PROCESSES - 1, one per process): all three
  are needed. In a SLURM or Open MPI job of more than one process, those left unset are
  detected by JAX. Otherwise (a single process) it does nothing.

  Must run before any other JAX call. Returns whether it initialised.

  Raises:
    ValueError: only some of the three are set outside a scheduler's job, or a variable is not
      an integer.
  """
  coordinator_address = coordinator_address or os.environ.get(COORDINATOR_VARIABLE) or None
  if num_processes is None:
    num_processes = _integer_variable(NUM_PROCESSES_VARIABLE)
  if process_id is None:
    process_id = _integer_variable(PROCESS_ID_VARIABLE)
  given = {
    COORDINATOR_VARIABLE: coordinator_address,
    NUM_PROCESSES_VARIABLE: num_processes,
    PROCESS_ID_VARIABLE: process_id,
  }
  missing = [name for name, value in given.items() if value is None]
  if not _scheduler_job():
    if len(missing) == len(given):
      return False
    if missing:
      raise ValueError(
        f"a multi-process run needs {', '.join(given)}; missing: {', '.join(missing)}"
      )
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
  _LOG.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
  return True


def wait_for_all_processes(name: str, timeout_s: int = BARRIER_TIMEOUT_S) -> None:
  """Blocks until every process of the job has called this with `name`; nothing with one process.

  The coordination service's barrier, not a collective: JAX's CPU collectives (gloo) give a peer
  only 30 s to arrive, less than one process may lag another while compiling. A name may be
  waited at only once per job.
  """
  ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)


def compilation_cache_usable() -> bool:
  """Whether this job may use JAX's persistent compilation cache: not a job of several CPU
  processes. Only process 0 writes the cache, and on CPU the cache key holds the process's device
  assignment, so the other processes never find an entry and compile anyway (the job waits for
  them); worse, with jax 0.12.1 a training step process 0 loads from the cache hangs at its first
  collective against the ones its peers compiled (every time on localhost)."""
  return jax.process_count() == 1 or jax.default_backend() != "cpu"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh named DATA_AXIS over `devices` (default: all devices of all processes).

  Auto axis types: XLA propagates the batch sharding through the model's reshapes.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.sharding.Mesh(
    np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, metrics)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The leading (batch) axis is split over the devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> None:
  """Raises a ConfigError unless the global batch splits evenly over devices and processes."""
  devices = mesh.devices.size
  if batch_size % devices or batch_size % jax.process_count():
    raise ConfigError(
      f"data.batch_size={batch_size} must be a multiple of the number of "
      f"devices ({devices}) and processes ({jax.process_count()}); set "
      "--config.data.batch_size accordingly"
    )


def global_batch(local: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
  """This process's rows of a batch, (local batch, ...), as the global batch-sharded array."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local)
