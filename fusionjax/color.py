"""BT.601 colour handling: fuse the luma (Y) of a colour source, then put its chroma back.

The fusion models take one-channel images. A colour source (a visible RGB photo, a PET or
SPECT pseudo-colour scan, a GFP micrograph) is split into Y, which is fused with the other
(grey) source, and Cb/Cr, which are recombined with the fused Y afterwards. Grey sources
(IR, MRI, CT, phase contrast) are fused as they are and stay grey.

Two BT.601 conventions are in use, both with the luma weights Kr = 0.299, Kb = 0.114:

* ``"full"``: Y, Cb and Cr all span [0, 1], chroma centred on 0.5 (JPEG/JFIF, and OpenCV's
  ``COLOR_RGB2YCrCb`` on float images).
* ``"studio"``: Y spans [16/255, 235/255], Cb and Cr span [16/255, 240/255] centred on
  128/255 (MATLAB ``rgb2ycbcr``/``ycbcr2rgb``; its 65.481, 128.553, 24.966 ... coefficients
  are 219/255 and 224/255 times the full-range ones, which is how they are built here).

The inverse transforms are the exact matrix inverses, so RGB -> YCbCr -> RGB is lossless up to
float rounding.

The official test scripts' own 8-bit conversions, which ``fusionjax.fuse.model_fuser(...,
protocol="official")`` reproduces, are here too: ``libpng_grey`` (OpenCV's grey reading of a
colour PNG), ``float32_luma`` (S4Fusion's loader) and ``to_8_bits`` (MATLAB's rounding).

Every array is channels-last; leading dimensions (e.g. a batch) are allowed wherever the shape
says ``...``.
"""

from typing import Literal

import numpy as np
from PIL import Image

Convention = Literal["full", "studio"]

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
# Rows: Y, Cb, Cr as functions of (R, G, B) in [0, 1], full range.
_FULL_MATRIX = np.array(
  [
    [_KR, _KG, _KB],
    [-_KR / (2 * (1 - _KB)), -_KG / (2 * (1 - _KB)), 0.5],
    [0.5, -_KG / (2 * (1 - _KR)), -_KB / (2 * (1 - _KR))],
  ]
)
_MATRIX = {
  "full": _FULL_MATRIX,
  "studio": np.diag([219.0, 224.0, 224.0]) @ _FULL_MATRIX / 255.0,
}
_OFFSET = {
  "full": np.array([0.0, 0.5, 0.5]),
  "studio": np.array([16.0, 128.0, 128.0]) / 255.0,
}
_INVERSE = {name: np.linalg.inv(matrix) for name, matrix in _MATRIX.items()}

_INTEGER_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _check_convention(convention: str) -> None:
  if convention not in _MATRIX:
    raise ValueError(f"unknown Y convention {convention!r}; expected 'full' or 'studio'")


def rgb_to_ycbcr(rgb: np.ndarray, convention: Convention = "full") -> np.ndarray:
  """Converts RGB to YCbCr (BT.601).

  Args:
    rgb: (..., 3) floats in [0, 1].
    convention: "full" or "studio" (module docstring).

  Returns:
    (..., 3) float32 Y, Cb, Cr in the convention's range.
  """
  _check_convention(convention)
  rgb = np.asarray(rgb, dtype=np.float64)
  return (rgb @ _MATRIX[convention].T + _OFFSET[convention]).astype(np.float32)


def ycbcr_to_rgb(ycbcr: np.ndarray, convention: Convention = "full") -> np.ndarray:
  """Converts YCbCr (BT.601) back to RGB, clipped to [0, 1].

  Args:
    ycbcr: (..., 3) Y, Cb, Cr floats in the convention's range.
    convention: "full" or "studio" (module docstring).

  Returns:
    (..., 3) float32 RGB in [0, 1].
  """
  _check_convention(convention)
  ycbcr = np.asarray(ycbcr, dtype=np.float64)
  rgb = (ycbcr - _OFFSET[convention]) @ _INVERSE[convention].T
  return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _to_unit_range(image: np.ndarray) -> np.ndarray:
  """Scales an image to float64 values in [0, 1].

  Args:
    image: any shape; uint8 (divided by 255), uint16 (divided by 65535) or floats that must
      already lie in [0, 1].

  Returns:
    Same shape, float64 in [0, 1].
  """
  image = np.asarray(image)
  if image.dtype in _INTEGER_SCALE:
    return image.astype(np.float64) / _INTEGER_SCALE[image.dtype]
  if not np.issubdtype(image.dtype, np.floating):
    raise ValueError(
      f"unsupported image dtype {image.dtype}; expected uint8, uint16 or float in [0, 1]"
    )
  if not np.all(np.isfinite(image)):
    raise ValueError("image contains NaN or infinite values")
  if image.size and (image.min() < 0.0 or image.max() > 1.0):
    raise ValueError(
      f"float image values must lie in [0, 1], got [{image.min():g}, {image.max():g}]"
    )
  return image.astype(np.float64)


def is_grey(image: np.ndarray) -> bool:
  """Whether an (H, W), (H, W, 1) or (H, W, 3) image is grey: one channel, or three equal ones
  ("grey stored as RGB")."""
  image = np.asarray(image)
  if image.ndim == 2 or image.shape[-1] == 1:
    return True
  return np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(
    image[..., 0], image[..., 2]
  )


def to_fusion_input(
  image: np.ndarray, convention: Convention = "full", *, quantize: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
  """Splits a source image into the Y a model fuses and the chroma to put back afterwards.

  A grey image (one channel, or three equal channels, "grey stored as RGB") is returned as
  it is, scaled to [0, 1], whatever the convention: the models read grey sources directly.
  A colour image is converted to YCbCr in ``convention``.

  Args:
    image: (H, W), (H, W, 1) or (H, W, 3); uint8, uint16 or floats in [0, 1]. Four-channel
      (RGBA) and two-channel images are rejected.
    convention: Y convention of the model that will fuse it (its family's
      ``InferenceSpec.y_convention``).
    quantize: round the Y of a colour image to the 8-bit grid (halves up), as the offline
      ``*_Y`` PNG files that MambaDFuse was trained and tested on were stored.

  Returns:
    y: (H, W, 1) float32.
    cbcr: (H, W, 2) float32 Cb and Cr, or None for a grey image.
  """
  _check_convention(convention)
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    channels = image.shape[-1] if image.ndim == 3 else None
    hint = " (RGBA?): remove the alpha channel first" if channels == 4 else ""
    raise ValueError(
      f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {image.shape}{hint}"
    )
  unit = _to_unit_range(image)
  if is_grey(image):
    return unit[..., :1].astype(np.float32), None
  ycbcr = rgb_to_ycbcr(unit, convention)
  y = ycbcr[..., :1]
  if quantize:
    y = (to_8_bits(y) / 255.0).astype(np.float32)
  return y, ycbcr[..., 1:]


def to_8_bits(values: np.ndarray) -> np.ndarray:
  """Floats in [0, 1] -> uint8 levels, rounded half up (MATLAB's conversion to uint8)."""
  return np.floor(np.asarray(values, dtype=np.float64) * 255.0 + 0.5).astype(np.uint8)


def _eight_bit_rgb(rgb: np.ndarray) -> np.ndarray:
  rgb = np.asarray(rgb)
  if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
    raise ValueError(f"expected 8-bit RGB (..., 3), got {rgb.dtype} {rgb.shape}")
  return rgb


def libpng_grey(rgb: np.ndarray) -> np.ndarray:
  """8-bit RGB (..., 3) -> uint8 grey (...) as libpng makes it when OpenCV reads a colour PNG
  with ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``.

  libpng's fixed-point weights (0.299, 0.587 in 1/32768ths, blue the rest), truncated:
  ``(9797 R + 19234 G + 3737 B) >> 15``; R = G = B gives that value back. This is not
  ``round(0.299 R + 0.587 G + 0.114 B)``: on a PET scan the two differ by one grey level on
  about 8 % of the pixels.
  """
  rgb = _eight_bit_rgb(rgb)
  red, green, blue = (rgb[..., channel].astype(np.uint32) for channel in range(3))
  return ((9797 * red + 19234 * green + 3737 * blue) >> 15).astype(np.uint8)


def float32_luma(rgb: np.ndarray) -> np.ndarray:
  """8-bit RGB (..., 3) -> full-range Y (...) float32, computed as S4Fusion's data loader
  does: ``/ 255`` in float32, then ``0.299 R + 0.587 G + 0.114 B`` in float32 arithmetic in
  that order, clamped to [0, 1]. Within one float32 rounding of ``rgb_to_ycbcr``'s Y.
  """
  rgb = _eight_bit_rgb(rgb)
  red, green, blue = np.moveaxis(rgb.astype(np.float32) / np.float32(255.0), -1, 0)
  luma = (np.float32(_KR) * red + np.float32(_KG) * green) + np.float32(_KB) * blue
  return np.clip(luma, 0.0, 1.0)


def recolor(
  fused_y: np.ndarray, cbcr: np.ndarray | None, convention: Convention = "full"
) -> np.ndarray:
  """Recombines a fused Y with the colour source's chroma.

  Args:
    fused_y: (..., H, W, 1) model output; clipped to [0, 1] first, as the models' test
      scripts clamp before saving.
    cbcr: (..., H, W, 2) Cb and Cr from ``to_fusion_input`` (in a batch:
      ``np.concatenate([batch["cb"], batch["cr"]], -1)``), or None for a grey pair.
    convention: the convention ``cbcr`` was computed in.

  Returns:
    (..., H, W, 3) float32 RGB in [0, 1], or the clipped (..., H, W, 1) grey image when
    ``cbcr`` is None.
  """
  fused_y = np.clip(np.asarray(fused_y, dtype=np.float32), 0.0, 1.0)
  if fused_y.shape[-1:] != (1,):
    raise ValueError(f"fused_y must have one channel, got shape {fused_y.shape}")
  if cbcr is None:
    return fused_y
  cbcr = np.asarray(cbcr)
  if cbcr.shape != fused_y.shape[:-1] + (2,):
    raise ValueError(
      f"cbcr shape {cbcr.shape} does not match fused_y shape {fused_y.shape}; "
      f"expected {fused_y.shape[:-1] + (2,)}"
    )
  return ycbcr_to_rgb(np.concatenate([fused_y, cbcr], axis=-1), convention)


# --- the official test scripts' readings of 8-bit files (protocol "official") ---------------


def eight_bit(image: np.ndarray) -> np.ndarray:
  """``image`` if it is 8-bit; a ValueError otherwise (the official scripts read 8 bits)."""
  if image.dtype != np.uint8:
    raise ValueError(
      f"protocol 'official' reads 8-bit images, as the official test scripts "
      f"do; got {image.dtype}: convert to 8 bits or use protocol 'default'"
    )
  return image


def pillow_image(image: np.ndarray) -> Image.Image:
  """An 8-bit (H, W, 1) or (H, W, 3) array as a Pillow "L" or "RGB" image."""
  image = eight_bit(image)
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def opencv_grey(image: np.ndarray) -> np.ndarray:
  """``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` of a PNG: a colour one through libpng's grey
  conversion (``libpng_grey``), a grey one as it is. (OpenCV greys other formats with their
  own codecs' weights, which can differ by one level.)"""
  image = eight_bit(image)
  return image[..., 0] if image.shape[-1] == 1 else libpng_grey(image)


def matlab_y_file(image: np.ndarray) -> np.ndarray:
  """An 8-bit ``*_Y`` file as MATLAB ``rgb2ycbcr`` writes it from an RGB image: the
  studio-range Y rounded to 8 bits, also when R = G = B (black 16, white 235); a one-channel
  image as it is."""
  image = eight_bit(image)
  if image.shape[-1] == 1:
    return image[..., 0]
  return to_8_bits(rgb_to_ycbcr(image / 255.0, "studio")[..., 0])
