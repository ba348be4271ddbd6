"""Fusing planes by compiled calls: buckets of one padded shape, batches, the compile cache
and the memory budget (steps 3 and 4 of ``fusionjax.fuse``); ``fuse_arrays`` for one pair."""

import dataclasses
import functools
import math
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.baselines import Fuser
from fusionjax.fuse import planes, tiling


@dataclasses.dataclass(frozen=True)
class Options:
  """How pairs are batched, padded and tiled.

  Attributes:
    batch_size: most same-shape pairs (or tiles) per compiled call.
    memory_budget: most device bytes one call may use (arguments incl. parameters, outputs,
      temporaries); whole images that exceed it are tiled. None: ``default_memory_budget()``
      (on a CPU half of the memory available when the call is planned).
    tile_size: if set, tile every image larger than this along an axis with tiles of this
      side (rounded down to the fuser's ``tile_grid``), whatever the budget allows
      (reproducible tiling; more than twice the overlap); None tiles only what does not fit.
    overlap: tile overlap in pixels; None takes the fuser's ``overlap``.
    bucket_multiple: pad planes up to a multiple of this, so that pairs of nearby sizes share
      one compiled call. 1 (default) keeps each size exact: outputs then equal the method's
      whole-image result; larger values trade that for fewer compilations.
  """

  batch_size: int = 8
  memory_budget: int | None = None
  tile_size: int | None = None
  overlap: int | None = None
  bucket_multiple: int = 1

  def __post_init__(self):
    for field in ("batch_size", "memory_budget", "bucket_multiple"):
      if getattr(self, field) is not None and getattr(self, field) < 1:
        raise ValueError(f"Options.{field} must be >= 1, got {getattr(self, field)}")
    if self.overlap is not None and self.overlap < 0:
      raise ValueError(f"Options.overlap must be >= 0, got {self.overlap}")


# --- memory budget -----------------------------------------------------------------------------

# Where Linux reports the memory available to new allocations (MemAvailable).
_MEMINFO = pathlib.Path("/proc/meminfo")
# On a CPU, the share of the available host memory a call may plan for: the rest is headroom
# for the host's own arrays (decoded images, colour conversions) and for other processes.
CPU_BUDGET_FRACTION = 0.5


def available_host_memory() -> int:
  """Bytes of host memory available now: MemAvailable of /proc/meminfo (Linux), else the free
  physical pages, else (neither known) half of the physical memory."""
  try:
    for line in _MEMINFO.read_text().splitlines():
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  page = os.sysconf("SC_PAGE_SIZE")
  try:
    return page * os.sysconf("SC_AVPHYS_PAGES")
  except (ValueError, OSError):
    return page * os.sysconf("SC_PHYS_PAGES") // 2


def default_memory_budget() -> int:
  """Bytes a call may use by default: 90 % of the default accelerator's allocator limit, or
  on a CPU ``CPU_BUDGET_FRACTION`` of the host memory available now (``available_host_memory``),
  so that what other programs use is left alone."""
  stats = jax.devices()[0].memory_stats()
  if stats and "bytes_limit" in stats:
    return int(0.9 * stats["bytes_limit"])
  return int(CPU_BUDGET_FRACTION * available_host_memory())


# --- compiled calls ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _compile(apply, params_treedef, params_specs: tuple, shape: tuple[int, int, int]):
  """(executable, device bytes) of ``apply`` on ``shapes.Planes`` of ``shape``; cached per shape."""
  plane = jax.ShapeDtypeStruct((*shape, 1), jnp.float32)
  params = jax.tree.unflatten(params_treedef, params_specs)
  executable = jax.jit(apply).lower(params, plane, plane).compile()
  memory = executable.memory_analysis()
  device_bytes = (
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    + memory.temp_size_in_bytes
    - memory.alias_size_in_bytes
  )
  return executable, device_bytes


def compiled_call(fuser: Fuser, batch: int, height: int, width: int) -> tiling.CompiledCall:
  """The fuser's call on (batch, height, width, 1) float32 planes, compiled once per shape
  (and process), with the device bytes it needs."""
  leaves, treedef = jax.tree.flatten(fuser.params)
  specs = tuple(jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype) for leaf in leaves)
  executable, device_bytes = _compile(fuser.apply, treedef, specs, (batch, height, width))
  return tiling.CompiledCall(lambda a, b: np.asarray(executable(fuser.params, a, b)), device_bytes)


# --- buckets -----------------------------------------------------------------------------------


def bucket_shape(fuser: Fuser, height: int, width: int, options: Options) -> tuple[int, int]:
  """The padded (height, width) of a pair's planes: at least ``fuser.min_size``, a multiple of
  ``fuser.size_multiple`` and of ``options.bucket_multiple`` (``fuser.resize_to`` squared if
  set)."""
  if fuser.resize_to is not None:  # the planes of every pair are resized to this square
    height = width = fuser.resize_to
  multiple = math.lcm(options.bucket_multiple, fuser.size_multiple)
  return tuple(-(-max(side, fuser.min_size) // multiple) * multiple for side in (height, width))


class BucketRunner:
  """Fuses the planes of one bucket shape by the memory plan for ``count`` of them."""

  def __init__(
    self, fuser: Fuser, shape: tuple[int, int], count: int, options: Options, progress: bool
  ):
    self.fuser, self.shape, self.progress = fuser, shape, progress
    self.overlap = fuser.overlap if options.overlap is None else options.overlap
    if options.tile_size is not None and options.tile_size <= 2 * self.overlap:
      raise tiling.PlanError(
        f"Options.tile_size ({options.tile_size}) must exceed twice the "
        f"overlap ({self.overlap}) of {fuser.name}"
      )
    # Tiles are cut from the plane zero-padded onto the fuser's sampling grid.
    self.canvas_pads = [
      (offset, -(offset + side) % fuser.tile_grid)
      for offset, side in (
        (fuser.tile_offset(side) if fuser.tile_offset else 0, side) for side in shape
      )
    ]
    self.plan = tiling.plan(
      functools.partial(compiled_call, fuser),
      *shape,
      count,
      batch_size=options.batch_size,
      memory_budget=options.memory_budget or default_memory_budget(),
      tile_size=options.tile_size,
      overlap=self.overlap,
      align=fuser.tile_grid,
      canvas=tuple(sum(pads) + side for pads, side in zip(self.canvas_pads, shape)),
    )
    self.chunk = self.plan.batch if self.plan.tile is None else 1

  def __call__(self, group: Sequence[planes.Planes]) -> list[np.ndarray]:
    """Up to ``self.chunk`` pairs -> fused Y planes (H, W) float32, each cropped to its size."""
    pad = lambda plane: np.pad(
      plane, [(0, target - side) for target, side in zip(self.shape, plane.shape)], mode="symmetric"
    )
    stacked_a = np.stack([pad(pair.y_a) for pair in group])
    stacked_b = np.stack([pad(pair.y_b) for pair in group])
    if self.plan.tile is None:
      fill = self.plan.batch - len(group)
      fill_up = lambda stack: np.concatenate([stack, stack[-1:].repeat(fill, 0)])[..., None]
      fused = self.plan.call.call(fill_up(stacked_a), fill_up(stacked_b))[..., 0]
    else:
      (top, _), (left, _) = self.canvas_pads
      fused = [
        tiling.fuse_tiled(
          self.plan.call.call,
          np.pad(a, self.canvas_pads),
          np.pad(b, self.canvas_pads),
          self.plan.tile,
          self.overlap,
          self.plan.batch,
          align=self.fuser.tile_grid,
          progress=self.progress,
        )[top:, left:]
        for a, b in zip(stacked_a, stacked_b)
      ]
    return [plane[: pair.y_a.shape[0], : pair.y_a.shape[1]] for plane, pair in zip(fused, group)]


def fuse_arrays(
  fuser: Fuser, image_a: np.ndarray, image_b: np.ndarray, options: Options = Options()
) -> np.ndarray:
  """Fuses one pair of arrays; no files.

  Args:
    fuser: from ``model_fuser`` or ``baselines.get`` (``as_fuser`` accepts both).
    image_a, image_b: (H, W), (H, W, 1) or (H, W, 3); uint8, uint16 or float in [0, 1].
    options: batching, tiling and memory (``Options``).

  Returns:
    uint8 (H, W) if both sources are grey, else (H, W, 3) RGB.
  """
  image_a, image_b = (np.asarray(image) for image in (image_a, image_b))
  image_a, image_b = (
    image[..., None] if image.ndim == 2 else image for image in (image_a, image_b)
  )
  pair = planes.pair_planes(fuser, "arrays", image_a, image_b, "image_a", "image_b")
  shape = bucket_shape(fuser, *pair.y_a.shape, options)
  (fused_y,) = BucketRunner(fuser, shape, 1, options, progress=False)([pair])
  return planes.to_uint8(fuser, fused_y, pair.chroma)
