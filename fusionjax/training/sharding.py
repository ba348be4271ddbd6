"""Data parallelism over every device: one mesh axis, replicated state, batches split on it.

Multi-host: `initialize_distributed()` joins the job's processes when the environment describes
one; each process then feeds its own slice of every batch (`global_batch`), and the mesh spans
the devices of all processes.
"""

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

_LOG = logging.getLogger(__name__)

DATA_AXIS = "data"

# Variables that make a process one of several: jax.distributed.initialize() reads the first
# itself; SLURM and Open MPI jobs are detected by it from theirs.
_PROCESS_COUNT_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` (auto-detecting its arguments) when the environment
  sets JAX_COORDINATOR_ADDRESS or describes a SLURM / Open MPI job of more than one process.

  Must run before any other JAX call. Returns whether it initialised.
  """
  multi_process = any(int(os.environ.get(name, "1")) > 1 for name in _PROCESS_COUNT_VARIABLES)
  if not (os.environ.get("JAX_COORDINATOR_ADDRESS") or multi_process):
    return False
  jax.distributed.initialize()
  _LOG.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
  return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh named DATA_AXIS over `devices` (default: all devices of all processes).

  Auto axis types: XLA propagates the batch sharding through the model's reshapes.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, metrics)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The leading (batch) axis is split over the devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> None:
  """Raises ValueError unless the global batch splits evenly over devices and processes."""
  devices = mesh.devices.size
  if batch_size % devices or batch_size % jax.process_count():
    raise ValueError(f"data.batch_size={batch_size} must be a multiple of the number of "
                     f"devices ({devices}) and processes ({jax.process_count()}); set "
                     "--config.data.batch_size accordingly")


def global_batch(local: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
  """This process's rows of a batch, (local batch, ...), as the global batch-sharded array."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local)
