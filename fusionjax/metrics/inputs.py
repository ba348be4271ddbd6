"""Input checking and conversion shared by every fusion metric.

All metrics work on grey images on the 8-bit scale: values in 0..255, as the
reference evaluators assume (VIF's noise variance, the SSIM constants, the
histogram bins of EN and MI are all tied to that scale).  The helpers here turn
whatever the caller passed into float64 arrays, and reject anything that cannot
be such an image with a ``ValueError`` that names the offending argument.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fusionjax.shapes import GreyImage

Convention = Literal["python", "matlab"]
CONVENTIONS: tuple[str, ...] = ("python", "matlab")

GREY_MIN = 0.0
GREY_MAX = 255.0

# ITU-R BT.601 luma weights, in the order (R, G, B), as OpenCV's BGR2GRAY uses them.
_BT601_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def check_convention(convention: str) -> str:
  """Returns ``convention`` if it is "python" or "matlab"; raises ValueError otherwise."""
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}; got {convention!r}")
  return convention


def _checked_grey(image, name: str) -> tuple[np.ndarray, float]:
  """The image as an array, checked to be a real 2-D grey image on 0..255; and its maximum.

  NaN and infinities are found from the minimum and maximum (NaN propagates
  through both), so the check reads the image twice in its own dtype.
  """
  array = np.asarray(image)
  if array.ndim != 2:
    hint = (
      " (colour images must be converted first, e.g. with rgb_to_grey)" if array.ndim == 3 else ""
    )
    raise ValueError(
      f"{name} must be a 2-D grey image of shape (H, W); got shape {array.shape}{hint}"
    )
  if array.size == 0:
    raise ValueError(f"{name} is empty; got shape {array.shape}")
  if array.dtype == np.bool_ or not (
    np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
  ):
    raise ValueError(
      f"{name} must hold real grey levels (integer or float dtype); got dtype {array.dtype}"
    )
  low, high = float(array.min()), float(array.max())
  if not (np.isfinite(low) and np.isfinite(high)):
    raise ValueError(f"{name} contains NaN or infinite values")
  if low < GREY_MIN or high > GREY_MAX:
    raise ValueError(
      f"{name} must hold grey levels on the 0..255 scale; got values in [{low:g}, {high:g}] "
      "(clip or rescale it first; 0..1 images must be multiplied by 255)"
    )
  return array, high


def as_grey_image(image, name: str) -> GreyImage:
  """Checks one grey image and returns it as a float64 array of shape (H, W).

  Args:
    image: array-like of shape (H, W), integer or float, values in 0..255.
    name: the argument's name, used in error messages.

  Raises:
    ValueError: the array is not 2-D, is empty, is not numeric, holds
      NaN/inf, or has values outside 0..255.  (Each metric checks its own
      minimum size with :func:`check_min_side`.)
  """
  return _checked_grey(image, name)[0].astype(np.float64)


def checked_grey_triple(a, b, f) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Checks two source images and a fused image; returns them as arrays in their own dtypes.

  Raises:
    ValueError: as :func:`as_grey_image`, when the three shapes differ, or
      when all three are float images with values in [0, 1] and not all
      integers (0..1 data where grey levels on 0..255 are due: EN and MI would
      see one or two grey levels; real 0..255 images that dark in all three do
      not occur).  Blank 0/1 images pass.
  """
  checked = [_checked_grey(x, name) for x, name in ((a, "a"), (b, "b"), (f, "f"))]
  images = tuple(array for array, _ in checked)
  shapes = [x.shape for x in images]
  if len(set(shapes)) != 1:
    raise ValueError(
      f"a, b and f must have the same shape; got a {shapes[0]}, b {shapes[1]}, f {shapes[2]}"
    )
  if all(
    np.issubdtype(array.dtype, np.floating) and high <= 1.0 for array, high in checked
  ) and any(np.any(x != np.round(x)) for x in images):
    raise ValueError(
      "a, b and f all hold float values in [0, 1], but the metrics expect grey levels "
      "on the 0..255 scale; multiply 0..1 images by 255 (or pass uint8 images)"
    )
  return images


def as_grey_triple(a, b, f) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Checks two source images and a fused image (:func:`checked_grey_triple`); returns them
  as float64 (H, W) arrays."""
  return tuple(x.astype(np.float64) for x in checked_grey_triple(a, b, f))


def check_min_side(shape: tuple[int, ...], min_side: int, metric: str) -> None:
  """Raises ValueError if the last two axes of ``shape`` are shorter than ``min_side``."""
  height, width = shape[-2:]
  if min(height, width) < min_side:
    raise ValueError(
      f"{metric} needs images of at least {min_side}x{min_side} pixels; got {height}x{width}"
    )


def quantise(images: np.ndarray) -> np.ndarray:
  """Rounds 0..255 grey levels to integers (half to even, like ``np.round``); returns int64.

  EN and MI count grey levels, so F must be integer-valued for them to mean
  anything; the reference rounds F this way before EN.
  """
  return np.rint(images).astype(np.int64)


def _fused_multiply_add_f32(x: np.ndarray, y: np.float32, z: np.ndarray) -> np.ndarray:
  """float32 x * y + z rounded once, like a hardware FMA.

  The float32 product is exact in float64; the float64 sum can round before
  the final float32 rounding, which never changed a grey level on the
  datasets of ``docs/data.md`` (checked against OpenCV on all of their images).
  """
  return (x.astype(np.float64) * np.float64(y) + z.astype(np.float64)).astype(np.float32)


def rgb_to_grey(rgb) -> GreyImage:
  """Converts an RGB image (H, W, 3) on 0..255 to rounded grey levels (H, W), float32.

  Reproduces the reference pipeline's reading step: the image as float32,
  OpenCV's ``COLOR_BGR2GRAY`` rule Y = 0.299 R + 0.587 G + 0.114 B in float32,
  then ``np.round``.  OpenCV evaluates it with fused multiply-adds,
  fma(R, 0.299, fma(B, 0.114, G * 0.587)); that order reproduces OpenCV 5.0's
  output bit for bit on every image of ``docs/data.md``'s datasets, whereas a plain
  float32 sum differs by one grey level on a few pixels.  A 2-D input is
  returned unchanged (as float32).  Note the channel order: this takes RGB
  (as Pillow gives it), not BGR.

  Raises:
    ValueError: the input is neither (H, W) nor (H, W, 3).
  """
  array = np.asarray(rgb)
  if array.ndim == 2:
    return array.astype(np.float32)
  if array.ndim != 3 or array.shape[-1] != 3:
    raise ValueError(
      f"rgb_to_grey expects an (H, W, 3) RGB image or an (H, W) grey image; got shape {array.shape}"
    )
  channels = array.astype(np.float32)
  red, green, blue = (channels[..., i] for i in range(3))
  red_weight, green_weight, blue_weight = _BT601_RGB_WEIGHTS
  green_part = green * green_weight
  grey = _fused_multiply_add_f32(
    red, red_weight, _fused_multiply_add_f32(blue, blue_weight, green_part)
  )
  return np.round(grey).astype(np.float32)
