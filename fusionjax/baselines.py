"""The fuser protocol, and the classical baselines that every results table carries.

A ``Fuser`` is anything fusionjax can run over images: a pure function ``apply(params, a, b)``
on grey planes (``fusionjax.shapes.Planes``) plus the conventions its inputs and outputs follow
(Y convention, output rounding, smallest size, tile overlap). Trained models become fusers with
``fusionjax.fuse.model_fuser(params)``; the three classical baselines here are fusers already,
so ``fusionjax.fuse`` and ``fusionjax.evaluation`` treat both alike::

    fuser = baselines.get("laplacian_pyramid")
    fused = fuser.apply(fuser.params, a, b)          # a, b, fused: Planes

Baselines (pixel-domain, no parameters; ``params`` is None):

* ``mean``: (a + b) / 2.
* ``max_absolute``: at each pixel the source of larger absolute value (on [0, 1] intensities,
  the brighter one): the "choose-max" rule.
* ``laplacian_pyramid``: Burt & Adelson's Laplacian pyramid (the 5-tap binomial filter of
  OpenCV's pyrDown/pyrUp, reflected borders), detail levels fused by max-absolute choice, the
  low-pass residual by averaging, then collapsed (Burt & Kolczynski 1993).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax import color
from fusionjax.shapes import Image, Planes

Output = Literal["clip", "stretch"]


@dataclasses.dataclass(frozen=True, eq=False)
class Fuser:
  """A fusion method and the conventions around it.

  Attributes:
    name: used for output folders and table rows.
    apply: pure and jittable, ``apply(params, a, b) -> fused``, on ``Planes``. Any padding
      the method needs for its own architecture happens inside.
    params: pytree passed as ``apply``'s first argument (None for baselines).
    y_convention: BT.601 range ("full" or "studio", ``fusionjax.color``) of the Y a colour
      ``b`` source is fused as, and of the chroma put back.
    quantize_y: round that Y to the 8-bit grid first, for models trained on 8-bit Y files.
    output: how the fused Y becomes 8 bits. "clip": clip to [0, 1], x 255, round (MambaDFuse's
      and S4Fusion's test scripts). "stretch": clip, per-image min-max stretch to [0, 1],
      x 255, truncate (FusionMamba's test script).
    min_size: smaller images are mirror-padded up to this size before ``apply``.
    size_multiple: images are mirror-padded (bottom, right) to a multiple of this before
      ``apply`` (models pad inside ``apply``: 1).
    tile_grid: the period of the method's sampling grid (pyramid levels, patches): tiles
      have sides and start offsets that are multiples of it, so that each tile samples the
      same pixels as the whole image does.
    tile_offset: for a method that centres its grid with zero padding (S4Fusion), the zero
      pixels its whole-image call puts before an axis of the given size; tiles are then cut
      from the plane padded so, on the same grid.
    overlap: default tile overlap in pixels; ``fusionjax.fuse.tiling`` discards its outer quarter,
      so a quarter of it should cover the method's receptive radius where that is finite.
    read_grey: an official test script's reading, in place of the colour pipeline:
      ``read_grey(image_a, image_b)`` turns the decoded sources (``Image``) into the two
      grey images the script fuses, (H, W) uint8 or float32 in [0, 1]; the fused image is
      saved grey (``fusionjax.fuse.model_fuser(..., protocol="official")``).
    resize_to: with ``read_grey``, both greys are resized (bicubic, Pillow) to this square
      before fusion, and the fused image is saved at that size (FusionMamba's test script).
  """

  name: str
  apply: Callable[[Any, Planes, Planes], Planes]
  params: Any = dataclasses.field(default=None, repr=False)
  y_convention: color.Convention = "full"
  quantize_y: bool = False
  output: Output = "clip"
  min_size: int = 1
  size_multiple: int = 1
  tile_grid: int = 1
  tile_offset: Callable[[int], int] | None = None
  overlap: int = 32
  read_grey: Callable[[Image, Image], tuple[np.ndarray, np.ndarray]] | None = None
  resize_to: int | None = None


def mean(a: Planes, b: Planes) -> Planes:
  """Average fusion."""
  return (a + b) / 2


def max_absolute(a: Planes, b: Planes) -> Planes:
  """Choose-max fusion, per pixel the value of larger magnitude."""
  return jnp.where(jnp.abs(a) >= jnp.abs(b), a, b)


_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0
_KERNEL = np.outer(_BINOMIAL, _BINOMIAL)[:, :, None, None]  # HWIO
_RADIUS = len(_BINOMIAL) // 2
_LAYOUT = ("NHWC", "HWIO", "NHWC")


def _reflect(x: jax.Array) -> jax.Array:
  """Pads H and W by the filter radius, reflected without repeating the edge (H, W >= 3)."""
  return jnp.pad(x, ((0, 0), (_RADIUS, _RADIUS), (_RADIUS, _RADIUS), (0, 0)), mode="reflect")


def _reduce(x: jax.Array) -> jax.Array:
  """pyrDown, blur and keep even rows and columns: (batch, H, W, 1) -> (batch, ceil(H / 2),
  ceil(W / 2), 1)."""
  return jax.lax.conv_general_dilated(
    _reflect(x), _KERNEL, (2, 2), "VALID", dimension_numbers=_LAYOUT
  )


def _expand(x: jax.Array, height: int, width: int) -> jax.Array:
  """pyrUp: samples on the even pixels, zeros between, blur x 4 (one transposed convolution);
  (batch, h, w, 1) -> (batch, height, width, 1), height <= 2 h + 1, width <= 2 w + 1."""
  upsampled = jax.lax.conv_general_dilated(
    _reflect(x),
    4 * _KERNEL,
    (1, 1),
    ((0, 0), (0, 0)),
    lhs_dilation=(2, 2),
    dimension_numbers=_LAYOUT,
  )
  return upsampled[:, _RADIUS : _RADIUS + height, _RADIUS : _RADIUS + width]


def laplacian_pyramid(a: Planes, b: Planes, levels: int = 4) -> Planes:
  """Laplacian-pyramid fusion.

  ``levels`` counts the pyramid levels including the low-pass residual, so H and W must be
  at least ``pyramid_min_size(levels)`` (the residual needs 3 pixels for the reflected blur).
  Details: max-absolute choice per coefficient; residual: average.
  """
  shapes = []
  details = []
  for _ in range(levels - 1):
    shapes.append(a.shape[1:3])
    a_low, b_low = _reduce(a), _reduce(b)
    detail_a = a - _expand(a_low, *a.shape[1:3])
    detail_b = b - _expand(b_low, *b.shape[1:3])
    details.append(max_absolute(detail_a, detail_b))
    a, b = a_low, b_low
  fused = mean(a, b)
  for detail, shape in zip(details[::-1], shapes[::-1]):
    fused = detail + _expand(fused, *shape)
  return fused


def pyramid_min_size(levels: int) -> int:
  """Smallest side ``laplacian_pyramid`` accepts: the residual level must keep 3 pixels for
  the reflected filter (17 -> 9 -> 5 -> 3 at 4 levels)."""
  return 2**levels + 1


def _ignore_params(function: Callable[[Planes, Planes], Planes]):
  def apply(params: None, a: Planes, b: Planes) -> Planes:
    del params
    return function(a, b)

  apply.__name__ = function.__name__
  return apply


_PYRAMID_LEVELS = 4
_PYRAMID_GRID = 2 ** (_PYRAMID_LEVELS - 1)  # the residual samples every 8th pixel
_BASELINES = {
  fuser.name: fuser
  for fuser in (
    Fuser("mean", _ignore_params(mean)),
    Fuser("max_absolute", _ignore_params(max_absolute)),
    # A level-k coefficient sees 2 * 2 * (2^k - 1) pixels around it through the reduce and
    # expand filters: 28 at 4 levels, within the quarter of a 128-pixel overlap that
    # tiling discards (fusionjax.fuse.tiling).
    Fuser(
      "laplacian_pyramid",
      _ignore_params(laplacian_pyramid),
      min_size=pyramid_min_size(_PYRAMID_LEVELS),
      size_multiple=_PYRAMID_GRID,
      tile_grid=_PYRAMID_GRID,
      overlap=128,
    ),
  )
}


def names() -> list[str]:
  """Names of the baselines, sorted."""
  return sorted(_BASELINES)


def get(name: str) -> Fuser:
  """The baseline fuser called ``name``."""
  if name not in _BASELINES:
    raise KeyError(f"unknown baseline {name!r}; baselines: {names()}")
  return _BASELINES[name]
