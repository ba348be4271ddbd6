"""Tiled inference with overlap blending, and fitting each jitted call into a memory budget.

**Geometry.** Along each axis, tiles of ``tile`` pixels start every ``tile - overlap`` pixels
(rounded down to a multiple of ``align``) and the last one is moved back to end at the border,
so all tiles of an image share one shape (one compilation) and every pixel is covered. With
image and tile sizes multiples of ``align``, every tile starts on the ``align`` grid, so a method
that subsamples by ``align`` samples the same pixels in a tile as in the whole image.

**Blending.** Each tile's output is weighted by a separable window and the weighted outputs
are summed and divided by the summed weights. Along an axis, at every tile edge inside the
image, the window is 0 over the outer quarter of the overlap (where the tile's own border
effects are strongest), rises as sin^2 across the middle half and is 1 beyond; edges on the
image border get no ramp. Where two tiles overlap by exactly ``overlap``, one's sin^2 and the
other's cos^2 sum to 1, so nothing is seen twice and no seam appears. A method whose output
depends only on pixels within ``overlap / 4`` of it (e.g. the Laplacian pyramid, 28 pixels at 4
levels, with ``overlap`` 128) is reproduced to float rounding; a method that sees further (a
Mamba scan sees the whole image) keeps a small difference near tile edges, measured in
``tests/fuse_test.py``.

**Memory budget.** Device memory of a call is what XLA's buffer assignment reports for the
compiled call (``compiled.memory_analysis()``: arguments, incl. parameters, + outputs +
temporaries), so it is known before anything runs. ``plan`` takes the largest batch of whole
images that fits the budget; if a single whole image does not fit, it switches to tiles whose
side comes from the whole image's bytes per pixel and is shrunk until the compiled tile call
fits. Device memory is then bounded by the budget whatever the image size; host memory grows
with the image (``fusionjax.fuse`` documents it).
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

# A call on (batch, height, width, 1) float32 planes a, b -> fused, already compiled.
Call = Callable[[np.ndarray, np.ndarray], np.ndarray]
Compile = Callable[[int, int, int], "CompiledCall"]

_TILE_ALIGN = 16


class PlanError(ValueError):
  """The options leave no way to fuse an image: a ``tile_size`` not above twice the overlap,
  or a memory budget that holds no tile (nor the whole image, where it may not be tiled)."""


_SHRINK = 0.75


@dataclasses.dataclass(frozen=True)
class CompiledCall:
  """A fusion call compiled for one (batch, height, width), and its device memory in bytes."""

  call: Call
  device_bytes: int


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
  """Start offsets of the tiles covering [0, size) (module docstring).

  Args:
    size: image extent along the axis, a multiple of ``align``.
    tile: tile extent, at most ``size``, a multiple of ``align``.
    overlap: least number of pixels shared by neighbouring tiles, at most ``tile - align``.
    align: every start is a multiple of it.
  """
  if not 0 <= overlap <= tile - align and tile <= size:
    raise ValueError(
      f"need 0 <= overlap <= tile - align and tile <= size, got {overlap=}, "
      f"{tile=}, {align=}, {size=}"
    )
  if size % align or tile % align:
    raise ValueError(f"size {size} and tile {tile} must be multiples of align {align}")
  stride = (tile - overlap) // align * align
  count = math.ceil((size - tile) / stride) + 1
  return [min(index * stride, size - tile) for index in range(count)]


def tile_windows(size: int, tile: int, overlap: int, align: int = 1) -> list[np.ndarray]:
  """The blending window of each tile along one axis (module docstring): (tile,) float64 each,
  in the order of ``tile_starts``."""
  starts = tile_starts(size, tile, overlap, align)
  if overlap == 0:
    return [np.ones(tile) for _ in starts]
  margin = overlap / 4
  position = np.arange(tile) + 0.5  # pixel centres
  # sin^2 rising from 0 at `margin` pixels from the edge to 1 at `overlap - margin`.
  rise = np.sin(np.pi / 2 * np.clip((position - margin) / (overlap - 2 * margin), 0, 1)) ** 2
  windows = []
  for start in starts:
    window = np.ones(tile)
    if start > 0:
      window *= rise
    if start + tile < size:
      window *= rise[::-1]
    windows.append(window)
  return windows


def fuse_tiled(
  call: Call,
  a: np.ndarray,
  b: np.ndarray,
  tile: tuple[int, int],
  overlap: int,
  batch: int,
  *,
  align: int = 1,
  progress: bool = False,
) -> np.ndarray:
  """Fuses one pair tile by tile and blends the tiles (module docstring).

  Args:
    call: the fusion call, (batch, tile_h, tile_w, 1) x 2 -> same, numpy float32.
    a, b: (H, W) float32 planes.
    tile: (tile_h, tile_w), each at most the image's extent.
    overlap: blending overlap, less than the tile side along every axis with several tiles.
    batch: tiles per call; the last call is filled up with repeats of its last tile.
    align: tiles start at multiples of it (``tile_starts``).
    progress: show a progress bar over the tiles.

  Returns:
    (H, W) float32 fused plane.
  """
  (height, width), (tile_h, tile_w) = a.shape, tile
  # An axis covered by a single tile needs no blending.
  overlap_y, overlap_x = (overlap if side < size else 0 for side, size in zip(tile, a.shape))
  rows = list(
    zip(
      tile_starts(height, tile_h, overlap_y, align), tile_windows(height, tile_h, overlap_y, align)
    )
  )
  cols = list(
    zip(tile_starts(width, tile_w, overlap_x, align), tile_windows(width, tile_w, overlap_x, align))
  )
  weighted = np.zeros((height, width), np.float64)
  coverage_y, coverage_x = np.zeros(height), np.zeros(width)
  for top, window_y in rows:
    coverage_y[top : top + tile_h] += window_y
  for left, window_x in cols:
    coverage_x[left : left + tile_w] += window_x
  tiles = [(top, left, window_y, window_x) for top, window_y in rows for left, window_x in cols]
  with tqdm(total=len(tiles), desc="tiles", unit="tile", leave=False, disable=not progress) as bar:
    for start in range(0, len(tiles), batch):
      chunk = tiles[start : start + batch]
      filled = chunk + chunk[-1:] * (batch - len(chunk))
      crop = lambda plane: np.stack(
        [plane[top : top + tile_h, left : left + tile_w] for top, left, *_ in filled]
      )[..., None]
      fused = call(crop(a), crop(b))
      for (top, left, window_y, window_x), tile_out in zip(chunk, fused[..., 0]):
        weighted[top : top + tile_h, left : left + tile_w] += (
          np.outer(window_y, window_x) * tile_out
        )
      bar.update(len(chunk))
  return (weighted / np.outer(coverage_y, coverage_x)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Plan:
  """How the images of one shape are run.

  Attributes:
    call: the compiled call to use, for (batch, *tile) or (batch, H, W) inputs.
    batch: whole images (``tile`` None) or tiles per call.
    tile: (tile_h, tile_w), or None for whole-image calls.
  """

  call: CompiledCall
  batch: int
  tile: tuple[int, int] | None


def plan(
  compile_call: Compile,
  height: int,
  width: int,
  count: int,
  *,
  batch_size: int,
  memory_budget: int,
  tile_size: int | None,
  overlap: int,
  align: int = 1,
  canvas: tuple[int, int] | None = None,
) -> Plan:
  """Chooses whole-image batches or tiles for ``count`` images of one shape (module docstring).

  Args:
    compile_call: ``(batch, height, width) -> CompiledCall``, cached by the caller.
    height, width: the (padded) image shape.
    count: images of this shape to run.
    batch_size: most images or tiles per call.
    memory_budget: most device bytes a call may use.
    tile_size: if set, images larger than it along an axis are always tiled with this side
      (and the batch shrunk to fit); if None, tiles are used only when one whole image does
      not fit the budget, with the largest side that fits.
    overlap: tile overlap in pixels.
    align: tile sides are multiples of it (``tile_starts``).
    canvas: the (multiple-of-``align``) shape tiles are cut from, if not height x width.

  Raises:
    PlanError: not even one tile of the smallest usable side (or of ``tile_size``) fits.
  """
  canvas_height, canvas_width = canvas or (height, width)
  if tile_size is not None and (height > tile_size or width > tile_size):
    side = tile_size // align * align
    tile = (min(side, canvas_height), min(side, canvas_width))
    fitted = _largest_batch(compile_call, tile, batch_size, memory_budget)
    if fitted is None:
      raise PlanError(
        f"one {tile[0]}x{tile[1]} tile needs more than the memory budget "
        f"of {memory_budget} bytes; lower tile_size"
      )
    return Plan(*fitted, tile)
  fitted = _largest_batch(compile_call, (height, width), min(batch_size, count), memory_budget)
  if fitted is not None:
    return Plan(*fitted, None)
  if tile_size is not None:
    raise PlanError(
      f"one {height}x{width} image needs more than the memory budget of "
      f"{memory_budget} bytes and is not larger than tile_size {tile_size}"
    )
  single = compile_call(1, height, width)
  multiple = math.lcm(_TILE_ALIGN, align)
  round_down = lambda side: int(side) // multiple * multiple
  smallest = round_down(2 * overlap + 2 * multiple)
  side = round_down(math.sqrt(memory_budget * height * width / single.device_bytes))
  while side >= smallest:
    tile = (min(side, canvas_height), min(side, canvas_width))
    call = compile_call(1, *tile)
    if call.device_bytes <= memory_budget:
      return Plan(call, 1, tile)
    side = round_down(side * _SHRINK)
  raise PlanError(
    f"a {smallest}x{smallest} tile (overlap {overlap}) needs more than the "
    f"memory budget of {memory_budget} bytes"
  )


def _largest_batch(
  compile_call: Compile, shape: tuple[int, int], batch: int, memory_budget: int
) -> tuple[CompiledCall, int] | None:
  """The call and the largest batch <= ``batch`` (halving) that fit the budget, if any."""
  while True:
    call = compile_call(batch, *shape)
    if call.device_bytes <= memory_budget:
      return call, batch
    if batch == 1:
      return None
    batch //= 2
