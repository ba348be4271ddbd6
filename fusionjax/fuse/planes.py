"""One pair's planes: the sources to the Y planes a fuser fuses, and the fused Y back to an
8-bit image (steps 2 and 5 of ``fusionjax.fuse``)."""

from typing import NamedTuple

import numpy as np
from PIL import Image

from fusionjax import color
from fusionjax.baselines import Fuser
from fusionjax.data import pipeline


class Planes(NamedTuple):
  """A pair ready to fuse: Y planes (H, W) float32 in [0, 1] and the chroma to put back."""

  y_a: np.ndarray
  y_b: np.ndarray
  chroma: np.ndarray | None  # (H, W, 2) Cb, Cr


def fuse_chroma(
  chroma_a: np.ndarray, chroma_b: np.ndarray, convention: color.Convention
) -> np.ndarray:
  """Mixes two sources' Cb/Cr, (H, W, 2) each, weighting each by its distance from neutral."""
  neutral = color.rgb_to_ycbcr(np.full(3, 0.5), convention)[1:]
  weight_a, weight_b = np.abs(chroma_a - neutral), np.abs(chroma_b - neutral)
  total = weight_a + weight_b
  mixed = (chroma_a * weight_a + chroma_b * weight_b) / np.where(total > 0, total, 1)
  return np.where(total > 0, mixed, neutral).astype(np.float32)


def pair_planes(
  fuser: Fuser, name: str, image_a: np.ndarray, image_b: np.ndarray, source_a: str, source_b: str
) -> Planes:
  """The planes to fuse: ``_colour_planes``, or ``_grey_planes`` for a fuser that reads as an
  official test script does (``Fuser.read_grey``).

  Args:
    image_a, image_b: (H, W, C) as ``io.decode_image`` returns them.
    source_a, source_b: where they came from, for error messages.
  """
  if image_a.shape[:2] != image_b.shape[:2]:
    (height_a, width_a), (height_b, width_b) = image_a.shape[:2], image_b.shape[:2]
    raise ValueError(
      f"size mismatch: {source_a} is {width_a}x{height_a} (WxH) but "
      f"{source_b} is {width_b}x{height_b}"
    )
  try:
    if fuser.read_grey is not None:
      return _grey_planes(fuser, image_a, image_b)
    return _colour_planes(fuser, name, image_a, image_b)
  except ValueError as error:
    raise ValueError(f"{error} (files {source_a}, {source_b})") from None


def looks_swapped(image_a: np.ndarray, image_b: np.ndarray) -> bool:
  """A colour ``a`` beside a grey ``b``: the reverse of the roles fusionjax's models take (``a``
  the grey modality: infrared, MRI, phase contrast; ``b`` the one that may carry colour)."""
  return not color.is_grey(image_a) and color.is_grey(image_b)


def _grey_planes(fuser: Fuser, image_a: np.ndarray, image_b: np.ndarray) -> Planes:
  """``fuser.read_grey``'s greys, resized to ``fuser.resize_to`` if set, in [0, 1]; no chroma."""
  greys = fuser.read_grey(image_a, image_b)
  if fuser.resize_to is not None:
    size = (fuser.resize_to, fuser.resize_to)
    greys = [
      np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BICUBIC)) for grey in greys
    ]
  y_a, y_b = (
    grey.astype(np.float32) / np.float32(255) if grey.dtype == np.uint8 else grey.astype(np.float32)
    for grey in greys
  )
  return Planes(y_a, y_b, None)


def _colour_planes(fuser: Fuser, name: str, image_a: np.ndarray, image_b: np.ndarray) -> Planes:
  """Y planes as training prepares them (``pipeline.to_model_input``: a colour ``a`` gives
  its full-range Y, as the models read that side with OpenCV's grey conversion; ``b`` its Y in
  the fuser's convention) and the chroma of the colour source(s) in the fuser's convention."""
  converted = pipeline.to_model_input(
    {"img_a": image_a, "img_b": image_b, "name": name},
    fuser.y_convention,
    quantize=fuser.quantize_y,
  )
  _, chroma_a = color.to_fusion_input(image_a, fuser.y_convention)
  chroma_b = np.concatenate([converted["cb"], converted["cr"]], -1) if "cb" in converted else None
  if chroma_a is None or chroma_b is None:
    chroma = chroma_b if chroma_a is None else chroma_a
  else:
    chroma = fuse_chroma(chroma_a, chroma_b, fuser.y_convention)
  return Planes(converted["img_a"][..., 0], converted["img_b"][..., 0], chroma)


def to_uint8(fuser: Fuser, fused_y: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
  """Fused Y (H, W) float -> 8-bit image, (H, W) or (H, W, 3), by the fuser's output rule."""
  y = np.clip(fused_y, 0.0, 1.0)
  if fuser.output == "stretch":
    low, high = y.min(), y.max()
    y = (y - low) / (high - low) if high > low else y
  image = color.recolor(y[..., None], chroma, fuser.y_convention) * 255.0
  image = np.floor(image) if fuser.output == "stretch" else np.round(image)
  image = image.astype(np.uint8)
  return image[..., 0] if chroma is None else image
