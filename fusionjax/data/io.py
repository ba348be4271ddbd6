"""Reading fusion image pairs from files, with errors that name the file and the problem.

A *record* is the unit every data source in fusionjax yields, whether it reads folders
(``PairedFolderSource``) or a TFDS array_record dataset (``fusionjax.data.builders``)::

    {"name": str, "file_a": bytes, "file_b": bytes, "path_a": str, "path_b": str}

``file_*`` are the encoded image files exactly as distributed (PNG, JPEG, BMP, TIFF) and
``path_*`` say where they came from. ``decode_pair`` turns a record into arrays;
``pair_headers`` checks one from the files' headers alone, without decoding any pixels.
"""

import contextlib
import importlib.resources
import io
import pathlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
from PIL import Image

from fusionjax import shapes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# The array ``decode_image`` makes of each Pillow mode it reads: (channels, dtype). Palette
# images become RGB and bilevel ones grey.
_ARRAYS = {
  "L": (1, np.dtype(np.uint8)),
  "1": (1, np.dtype(np.uint8)),
  "RGB": (3, np.dtype(np.uint8)),
  "P": (3, np.dtype(np.uint8)),
  "F": (1, np.dtype(np.float32)),
  **{mode: (1, np.dtype(np.uint16)) for mode in _UINT16_MODES},
}


class ImageHeader(NamedTuple):
  """What ``decode_image`` returns for an image file, read from its header: the array's
  (height, width, channels) and dtype."""

  height: int
  width: int
  channels: int
  dtype: np.dtype


class ImagePair(NamedTuple):
  """Two files of one pair: ``path_a`` (grey modality) and ``path_b``, sharing ``name``."""

  name: str
  path_a: pathlib.Path
  path_b: pathlib.Path


def sample_dir() -> pathlib.Path:
  """Returns the folder of the real sample pairs shipped inside the package.

  Its layout is ``<dataset>/<split>/<modality>/<name>.png``; ``README.md`` there gives each
  file's source and attribution.
  """
  path = pathlib.Path(str(importlib.resources.files(__package__) / "samples"))
  if not path.is_dir():
    raise FileNotFoundError(f"sample pairs not found at {path}; is fusionjax installed?")
  return path


@contextlib.contextmanager
def _readable(source: str) -> Iterator[None]:
  """Re-raises Pillow's errors on a file it cannot read as a ValueError naming ``source``."""
  try:
    yield
  except (OSError, Image.DecompressionBombError, SyntaxError) as error:
    # Pillow names an unknown format by the repr of the in-memory buffer it was given.
    reason = "no format Pillow reads" if isinstance(error, Image.UnidentifiedImageError) else error
    raise ValueError(f"{source}: not a readable image ({reason})") from error


def _open(data: bytes, source: str) -> tuple[Image.Image, int, np.dtype]:
  """Opens an encoded image, reading its header only (no pixels are decoded).

  Returns:
    the Pillow image (not loaded yet) and the channels and dtype of its ``decode_image`` array.

  Raises:
    ValueError: naming ``source``: not an image Pillow reads, 16-bit colour, an alpha
      channel or another unsupported mode.
  """
  with _readable(source):
    image = Image.open(io.BytesIO(data))
    # Pillow decodes 16-bit-per-channel colour into 8 bits; refuse instead of truncating.
    if image.mode == "RGB" and any(";16" in str(tile.args) for tile in image.tile):
      raise ValueError(
        f"{source}: 16-bit colour images are not supported (Pillow reads them as "
        "8-bit); convert to 8-bit RGB, or pass a uint16 (H, W, 3) array to "
        "fusionjax.color.to_fusion_input directly"
      )
  if image.mode in _ALPHA_MODES:
    raise ValueError(
      f"{source}: image has an alpha channel (mode {image.mode}, "
      f"{len(image.getbands())} channels); fusion inputs must be grey or RGB"
    )
  if image.mode not in _ARRAYS:
    raise ValueError(
      f"{source}: unsupported image mode {image.mode!r}; expected grey (L, 16-bit, float) or RGB"
    )
  return (image, *_ARRAYS[image.mode])


def image_header(data: bytes, source: str) -> ImageHeader:
  """The size, channels and dtype ``decode_image`` would return for an encoded image file,
  from its header: the same errors for a file that is not an image, 16-bit colour, an alpha
  channel or an unsupported mode, without decoding any pixels. Damaged pixel data (a
  truncated file) and NaN in a float image are found only by ``decode_image``."""
  image, channels, dtype = _open(data, source)
  return ImageHeader(image.height, image.width, channels, dtype)


def decode_image(data: bytes, source: str) -> shapes.Image:
  """Decodes an encoded image file with Pillow.

  Args:
    data: the file's bytes (PNG, JPEG, BMP, TIFF, ... anything Pillow reads).
    source: where the bytes came from, used in error messages.

  Returns:
    (H, W, C) array with C = 1 (grey) or 3 (RGB); uint8, uint16 (16-bit grey) or float32
    (float TIFF, checked finite). Palette and bilevel images are expanded to RGB and grey.
  """
  image, _, dtype = _open(data, source)
  mode = image.mode
  with _readable(source):
    image.load()
  if mode == "P":
    image = image.convert("RGB")
  elif mode == "1":
    image = image.convert("L")
  if dtype == np.uint16:
    array = np.asarray(image).astype(np.uint16)
  else:
    array = np.asarray(image, dtype=dtype)
    if dtype == np.float32 and not np.all(np.isfinite(array)):
      raise ValueError(f"{source}: float image contains NaN or infinite values")
  return array.reshape(array.shape[:2] + (-1,))


def read_image(path: str | pathlib.Path) -> shapes.Image:
  """Reads one image file: ``decode_image`` of its bytes."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"image file not found: {path}")
  return decode_image(path.read_bytes(), str(path))


def _images_by_name(folder: pathlib.Path, prefix: str) -> dict[str, pathlib.Path]:
  if not folder.is_dir():
    raise FileNotFoundError(f"image folder not found: {folder}")
  images: dict[str, pathlib.Path] = {}
  for path in sorted(folder.iterdir()):
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
      continue
    name = path.stem.removeprefix(prefix)
    if name in images:
      raise ValueError(
        f"{folder}: two images for the name {name!r}: {images[name].name}, {path.name}"
      )
    images[name] = path
  return images


def listing(names: Iterable[str], limit: int = 10) -> str:
  """``names`` sorted and comma-joined, the first ``limit`` of them and "and N more"."""
  names = sorted(names)
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def pair_folders(
  dir_a: str | pathlib.Path,
  dir_b: str | pathlib.Path,
  *,
  prefix_a: str = "",
  prefix_b: str = "",
) -> list[ImagePair]:
  """Pairs the images of two folders by file name without extension.

  Files whose suffix is not in ``IMAGE_SUFFIXES``, and hidden files, are ignored.

  Args:
    dir_a, dir_b: the two modality folders.
    prefix_a, prefix_b: removed from the start of the file stems to get the pair name, for
      layouts that prefix each modality (DPCN-Fusion's ``GFP_001.bmp``/``PCI_001.bmp``).

  Returns:
    The pairs sorted by name.

  Raises:
    FileNotFoundError: a folder is missing.
    ValueError: a folder is empty, a name has no partner, or a folder holds two files with
      the same name.
  """
  dir_a, dir_b = pathlib.Path(dir_a), pathlib.Path(dir_b)
  images_a = _images_by_name(dir_a, prefix_a)
  images_b = _images_by_name(dir_b, prefix_b)
  if not images_a and not images_b:
    raise ValueError(f"no images in {dir_a} or {dir_b}")
  problems = [
    f"{len(missing)} image(s) in {here} have no partner in {there}: {listing(missing)}"
    for here, there, missing in (
      (dir_a, dir_b, images_a.keys() - images_b.keys()),
      (dir_b, dir_a, images_b.keys() - images_a.keys()),
    )
    if missing
  ]
  if problems:
    raise ValueError("; ".join(problems))
  return [ImagePair(name, images_a[name], images_b[name]) for name in sorted(images_a)]


def record_name(record: dict) -> str:
  """A record's pair name as str (TFDS records hold bytes)."""
  return _as_str(record["name"])


def _paths(record: dict) -> tuple[str, str, str]:
  """A record's name, path_a and path_b as str."""
  return tuple(_as_str(record[key]) for key in ("name", "path_a", "path_b"))


def _check_sizes(
  name: str, path_a: str, size_a: tuple[int, int], path_b: str, size_b: tuple[int, int]
) -> None:
  """Raises a ValueError naming both files unless the (height, width) sizes agree."""
  if size_a != size_b:
    (height_a, width_a), (height_b, width_b) = size_a, size_b
    raise ValueError(
      f"pair {name!r}: size mismatch, {path_a} is {width_a}x{height_a} (WxH) but "
      f"{path_b} is {width_b}x{height_b}; the two images of a pair must be registered "
      "and the same size"
    )


def decode_pair(record: dict) -> tuple[str, shapes.Image, shapes.Image]:
  """Decodes a record (module docstring) and checks the two images have the same size.

  Returns:
    name: the pair's name (str).
    image_a, image_b: as ``decode_image`` returns them.
  """
  name, path_a, path_b = _paths(record)
  image_a = decode_image(record["file_a"], path_a)
  image_b = decode_image(record["file_b"], path_b)
  _check_sizes(name, path_a, image_a.shape[:2], path_b, image_b.shape[:2])
  return name, image_a, image_b


def pair_headers(record: dict) -> tuple[str, ImageHeader, ImageHeader]:
  """Checks a record (module docstring) as ``decode_pair`` does, from the two files' headers
  (``image_header``: no pixels are decoded).

  Returns:
    name: the pair's name (str).
    header_a, header_b: ``image_header`` of each file.
  """
  name, path_a, path_b = _paths(record)
  header_a = image_header(record["file_a"], path_a)
  header_b = image_header(record["file_b"], path_b)
  _check_sizes(name, path_a, header_a[:2], path_b, header_b[:2])
  return name, header_a, header_b


def _as_str(value: str | bytes | np.ndarray) -> str:
  """TFDS returns Text features as bytes; folder sources give str."""
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class PairedFolderSource:
  """Random-access source of records (module docstring) read from two modality folders.

  Works as a ``grain.MapDataset.source`` and as a TFDS data source does: ``len`` and
  indexing, records sorted by name.
  """

  def __init__(self, pairs: list[ImagePair]):
    self._pairs = list(pairs)

  @classmethod
  def from_folders(
    cls, dir_a: str | pathlib.Path, dir_b: str | pathlib.Path, **prefixes: str
  ) -> "PairedFolderSource":
    """Pairs ``dir_a`` and ``dir_b`` with ``pair_folders`` (same keyword prefixes)."""
    return cls(pair_folders(dir_a, dir_b, **prefixes))

  def __len__(self) -> int:
    return len(self._pairs)

  def __getitem__(self, index: int) -> dict:
    pair = self._pairs[index]
    return {
      "name": pair.name,
      "file_a": pair.path_a.read_bytes(),
      "file_b": pair.path_b.read_bytes(),
      "path_a": str(pair.path_a),
      "path_b": str(pair.path_b),
    }

  def __repr__(self) -> str:
    return f"PairedFolderSource({len(self)} pairs)"
