"""Reading fusion image pairs from files, with errors that name the file and the problem.

A *record* is the unit every data source in fusionjax yields, whether it reads folders
(``PairedFolderSource``) or a TFDS array_record dataset (``fusionjax.data.builders``)::

    {"name": str, "file_a": bytes, "file_b": bytes, "path_a": str, "path_b": str}

``file_*`` are the encoded image files exactly as distributed (PNG, JPEG, BMP, TIFF) and
``path_*`` say where they came from. ``decode_pair`` turns a record into arrays.
"""

import importlib.resources
import io
import pathlib
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


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


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Decodes an encoded image file with Pillow.

    Args:
      data: the file's bytes (PNG, JPEG, BMP, TIFF, ... anything Pillow reads).
      source: where the bytes came from, used in error messages.

    Returns:
      (H, W, C) array with C = 1 (grey) or 3 (RGB); uint8, uint16 (16-bit grey) or float32
      (float TIFF, checked finite). Palette and bilevel images are expanded to RGB and grey.
    """
    try:
        image = Image.open(io.BytesIO(data))
        mode = image.mode
        # Pillow decodes 16-bit-per-channel colour into 8 bits; refuse instead of truncating.
        if mode == "RGB" and any(";16" in str(tile.args) for tile in image.tile):
            raise ValueError(
                f"{source}: 16-bit colour images are not supported (Pillow reads them as "
                "8-bit); convert to 8-bit RGB, or pass a uint16 (H, W, 3) array to "
                "fusionjax.color.to_fusion_input directly"
            )
        image.load()
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:
        raise ValueError(f"{source}: not a readable image ({error})") from error
    if mode in _ALPHA_MODES:
        raise ValueError(
            f"{source}: image has an alpha channel (mode {mode}, {len(image.getbands())} "
            "channels); fusion inputs must be grey or RGB"
        )
    if mode == "P":
        image, mode = image.convert("RGB"), "RGB"
    elif mode == "1":
        image, mode = image.convert("L"), "L"
    if mode in ("L", "RGB"):
        array = np.asarray(image, dtype=np.uint8)
    elif mode in _UINT16_MODES:
        array = np.asarray(image).astype(np.uint16)
    elif mode == "F":
        array = np.asarray(image, dtype=np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{source}: float image contains NaN or infinite values")
    else:
        raise ValueError(
            f"{source}: unsupported image mode {mode!r}; expected grey (L, 16-bit, float) or RGB"
        )
    return array.reshape(array.shape[:2] + (-1,))


def read_image(path: str | pathlib.Path) -> np.ndarray:
    """Reads one image file: ``decode_image`` of its bytes, (H, W, C)."""
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


def _listing(names: Iterable[str], limit: int = 10) -> str:
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
        f"{len(missing)} image(s) in {here} have no partner in {there}: {_listing(missing)}"
        for here, there, missing in (
            (dir_a, dir_b, images_a.keys() - images_b.keys()),
            (dir_b, dir_a, images_b.keys() - images_a.keys()),
        )
        if missing
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return [ImagePair(name, images_a[name], images_b[name]) for name in sorted(images_a)]


def decode_pair(record: dict) -> tuple[str, np.ndarray, np.ndarray]:
    """Decodes a record (module docstring) and checks the two images have the same size.

    Returns:
      name: the pair's name (str).
      image_a, image_b: (H, W, C) arrays as ``decode_image`` returns them.
    """
    name, path_a, path_b = (_as_str(record[key]) for key in ("name", "path_a", "path_b"))
    image_a = decode_image(record["file_a"], path_a)
    image_b = decode_image(record["file_b"], path_b)
    if image_a.shape[:2] != image_b.shape[:2]:
        (height_a, width_a), (height_b, width_b) = image_a.shape[:2], image_b.shape[:2]
        raise ValueError(
            f"pair {name!r}: size mismatch, {path_a} is {width_a}x{height_a} (WxH) but "
            f"{path_b} is {width_b}x{height_b}; the two images of a pair must be registered "
            "and the same size"
        )
    return name, image_a, image_b


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
