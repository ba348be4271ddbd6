"""Many pairs: record sources checked up front, fused bucket by bucket, and written as PNGs
(steps 1 and 6 of ``fusionjax.fuse``)."""

import collections
import contextlib
import logging
import os
import pathlib
import uuid
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from fusionjax.baselines import Fuser
from fusionjax.data import io
from fusionjax.fuse import batching, planes

PathLike = str | os.PathLike

_LOG = logging.getLogger(__name__)


class InputError(ValueError):
  """The pairs to fuse cannot be read: an unreadable or unsupported image, a missing partner,
  sizes that differ, repeated pair names, a file given with a folder. The message names the
  file."""


@contextlib.contextmanager
def _reading_inputs() -> Iterator[None]:
  """Re-raises the ValueErrors of reading and pairing the inputs as ``InputError``."""
  try:
    yield
  except InputError:
    raise
  except ValueError as error:
    raise InputError(str(error)) from error


# --- record sources ----------------------------------------------------------------------------


class FusedPair(NamedTuple):
  """One fused pair: the decoded sources ((H, W, C) as ``io.decode_image`` gives them) and the
  fused uint8 image, (H, W) grey or (H, W, 3) RGB."""

  name: str
  image_a: np.ndarray
  image_b: np.ndarray
  fused: np.ndarray


class PairInfo(NamedTuple):
  """A checked pair of a source: its index, name and size."""

  index: int
  name: str
  height: int
  width: int


def inventory(source: Sequence[dict], fuser: Fuser | None = None) -> list[PairInfo]:
  """Checks every pair of a record source from its files' headers (``io.pair_headers``; no
  pixels are decoded) and lists them; raises on the first bad pair (unreadable file,
  unsupported mode, sizes that differ, with a ``fuser``: an image it cannot read, such as a
  16-bit one for an official protocol; the error names the file) or on a repeated pair name
  (outputs are named after the pairs)."""
  pairs = []
  for index in range(len(source)):
    record = source[index]
    name, header_a, header_b = io.pair_headers(record)
    if fuser is not None and fuser.read_grey is not None:
      # The official reading of a 1 x 1 image of each file's kind (channels, dtype) raises
      # what the reading of the file would (8-bit only).
      try:
        fuser.read_grey(
          *(np.zeros((1, 1, header.channels), header.dtype) for header in (header_a, header_b))
        )
      except ValueError as error:
        raise ValueError(
          f"{error} (files {os.fsdecode(record['path_a'])}, {os.fsdecode(record['path_b'])})"
        ) from None
    pairs.append(PairInfo(index, name, header_a.height, header_a.width))
  repeated = sorted(
    name for name, count in collections.Counter(pair.name for pair in pairs).items() if count > 1
  )
  if repeated:
    raise ValueError(f"pair names repeat in {source!r}: {repeated}")
  return pairs


class FusionJob:
  """The pairs of a record source grouped by bucket shape; iterate to fuse them.

  Iteration decodes the pairs one batch at a time, each image once, and yields ``FusedPair``s
  bucket by bucket (not in source order), with a progress bar. A pair whose pixels cannot be
  decoded (damaged data, which ``inventory`` does not read) raises ``InputError`` when its
  batch comes.

  Args:
    fuser: the method.
    source: random-access records (``fusionjax.data.io``): ``io.PairedFolderSource``, a TFDS
      data source of ``fusionjax.data.builders`` (``dataset_source``), or any sequence of such
      dicts.
    options: batching, tiling and memory.
    pairs: ``inventory(source, fuser)``, if already taken.
    progress: show progress bars (pairs; tiles of tiled images).
  """

  def __init__(
    self,
    fuser: Fuser,
    source: Sequence[dict],
    options: batching.Options = batching.Options(),
    *,
    pairs: Sequence[PairInfo] | None = None,
    progress: bool = True,
  ):
    self.fuser, self.source, self.options, self.progress = fuser, source, options, progress
    self._warned_of_swap = False
    self.pairs = list(inventory(source, fuser) if pairs is None else pairs)
    self._buckets: dict[tuple[int, int], list[int]] = {}
    for pair in self.pairs:
      shape = batching.bucket_shape(fuser, pair.height, pair.width, options)
      self._buckets.setdefault(shape, []).append(pair.index)

  @property
  def names(self) -> list[str]:
    return [pair.name for pair in self.pairs]

  def __len__(self) -> int:
    return len(self.pairs)

  def _decode(self, index: int) -> tuple[str, np.ndarray, np.ndarray, planes.Planes]:
    record = self.source[index]
    with _reading_inputs():
      name, image_a, image_b = io.decode_pair(record)
      # TFDS gives the paths as bytes, folder sources as str.
      path_a, path_b = os.fsdecode(record["path_a"]), os.fsdecode(record["path_b"])
      pair = planes.pair_planes(self.fuser, name, image_a, image_b, path_a, path_b)
    # A model (baselines have no params) gives a poor fusion with its inputs swapped.
    if self.fuser.params is not None and not self._warned_of_swap:
      if planes.looks_swapped(image_a, image_b):
        self._warned_of_swap = True
        with tqdm.external_write_mode():  # not into a progress bar's line
          _LOG.warning(
            "%s (input a) is colour and %s (input b) grey, but %s takes the grey modality "
            "(infrared, MRI, phase contrast) as a and the one that may carry colour (visible, "
            "CT, PET, SPECT, GFP) as b: were the inputs swapped? (said once)",
            path_a,
            path_b,
            self.fuser.name,
          )
    return name, image_a, image_b, pair

  def __iter__(self) -> Iterator[FusedPair]:
    with tqdm(total=len(self), desc=self.fuser.name, unit="pair", disable=not self.progress) as bar:
      for shape, indices in self._buckets.items():
        runner = batching.BucketRunner(self.fuser, shape, len(indices), self.options, self.progress)
        for start in range(0, len(indices), runner.chunk):
          decoded = [self._decode(index) for index in indices[start : start + runner.chunk]]
          fused = runner([pair for *_, pair in decoded])
          for (name, image_a, image_b, pair), fused_y in zip(decoded, fused):
            yield FusedPair(
              name, image_a, image_b, planes.to_uint8(self.fuser, fused_y, pair.chroma)
            )
            bar.update()


def dataset_source(name: str, split: str, data_dir: PathLike) -> Sequence[dict]:
  """The records of a prepared fusionjax TFDS dataset split ("roadscene", "harvard/pet_mri",
  ...; ``fusionjax.data.builders.data_source``, built by ``builders.prepare``)."""
  # Imported here: TFDS takes a second to import and only dataset splits need it.
  from fusionjax.data import builders  # pylint: disable=g-import-not-at-top

  return builders.data_source(name, split, data_dir)


# --- files -------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside ``path`` to write the file to, and renames it over
  ``path`` when the block succeeds (removes it when it fails), so no reader ever sees a
  half-written file. The file gets the permissions of the one it replaces, or those of a newly
  created file (the umask's), whatever the writer gave the temporary (safetensors writes 0600).

  Raises:
    FileExistsError: ``path`` exists and not ``overwrite``.
  """
  path = pathlib.Path(path)
  if path.exists() and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
  try:
    yield temporary
    os.chmod(temporary, _permissions_for(path))
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)


def _permissions_for(path: pathlib.Path) -> int:
  """The permission bits of the existing ``path``, or of a file newly created there."""
  if path.exists():
    return path.stat().st_mode & 0o7777
  umask = os.umask(0)  # reading the umask sets it: put it back at once
  os.umask(umask)
  return 0o666 & ~umask


def write_png(image: np.ndarray, path: PathLike, *, overwrite: bool = False) -> pathlib.Path:
  """Writes a uint8 (H, W) or (H, W, 3) image as PNG, atomically (``atomic_output``)."""
  with atomic_output(path, overwrite=overwrite) as temporary:
    Image.fromarray(image).save(temporary, format="PNG")
  return pathlib.Path(path)


def check_outputs(paths: Sequence[pathlib.Path], *, overwrite: bool) -> None:
  """Raises FileExistsError naming the outputs that exist already, unless ``overwrite``."""
  existing = [str(path) for path in paths if path.exists()]
  if existing and not overwrite:
    raise FileExistsError(
      f"{len(existing)} output(s) exist already: "
      f"{io.listing(existing, limit=5)}; pass overwrite=True to replace"
    )


def _check_existing_rule(overwrite: bool, skip_existing: bool) -> None:
  if overwrite and skip_existing:
    raise ValueError(
      "overwrite and skip_existing exclude each other: either replace the "
      "existing outputs or keep them"
    )


def fuse_source(
  fuser: Fuser,
  source: Sequence[dict],
  out_dir: PathLike,
  *,
  options: batching.Options = batching.Options(),
  overwrite: bool = False,
  skip_existing: bool = False,
  progress: bool = True,
) -> list[pathlib.Path]:
  """Fuses every pair of a record source (``FusionJob``) into ``out_dir/<name>.png``.

  Every pair is checked (``inventory``) before any is fused. Outputs that exist already are
  an error, raised before anything is fused, unless ``overwrite`` (replace them) or
  ``skip_existing`` (keep them and fuse only the pairs whose outputs are missing: completes an
  interrupted folder).

  Returns the paths of every pair's output (written or kept), sorted by pair name.

  Raises:
    InputError: a pair cannot be read (the message names the file).
    FileExistsError: outputs exist and neither ``overwrite`` nor ``skip_existing``.
  """
  _check_existing_rule(overwrite, skip_existing)
  with _reading_inputs():
    pairs = inventory(source, fuser)
  out_dir = pathlib.Path(out_dir)
  paths = {pair.name: out_dir / f"{pair.name}.png" for pair in pairs}
  if skip_existing:
    pairs = [pair for pair in pairs if not paths[pair.name].exists()]
  else:
    check_outputs(list(paths.values()), overwrite=overwrite)
  for pair in FusionJob(fuser, source, options, pairs=pairs, progress=progress):
    write_png(pair.fused, paths[pair.name], overwrite=overwrite)
  return [paths[name] for name in sorted(paths)]


def fuse_folders(
  fuser: Fuser,
  dir_a: PathLike,
  dir_b: PathLike,
  out_dir: PathLike,
  *,
  prefix_a: str = "",
  prefix_b: str = "",
  options: batching.Options = batching.Options(),
  overwrite: bool = False,
  skip_existing: bool = False,
  progress: bool = True,
) -> list[pathlib.Path]:
  """Fuses the pairs of two folders, matched by file name (``io.pair_folders``; prefixes are
  stripped from the stems), into ``out_dir``, as ``fuse_source``."""
  with _reading_inputs():
    source = io.PairedFolderSource.from_folders(dir_a, dir_b, prefix_a=prefix_a, prefix_b=prefix_b)
  return fuse_source(
    fuser,
    source,
    out_dir,
    options=options,
    overwrite=overwrite,
    skip_existing=skip_existing,
    progress=progress,
  )


def fuse_pair(
  fuser: Fuser,
  path_a: PathLike,
  path_b: PathLike,
  out_path: PathLike,
  *,
  options: batching.Options = batching.Options(),
  overwrite: bool = False,
  skip_existing: bool = False,
  progress: bool = True,
) -> pathlib.Path:
  """Fuses one pair of image files into the PNG ``out_path`` (a progress bar over the tiles
  of a tiled image); an existing ``out_path`` as in ``fuse_source``."""
  _check_existing_rule(overwrite, skip_existing)
  out_path = pathlib.Path(out_path)
  if out_path.suffix.lower() != ".png":
    raise InputError(
      f"{out_path}: the fused image is written as PNG, so its name must end in .png"
      " (or give an existing folder to fuse into)"
    )
  if skip_existing and out_path.exists():
    return out_path
  check_outputs([out_path], overwrite=overwrite)
  paths = [pathlib.Path(path) for path in (path_a, path_b)]
  for path in paths:
    if not path.is_file():
      raise FileNotFoundError(f"image file not found: {path}")
  source = io.PairedFolderSource([io.ImagePair(out_path.stem, *paths)])
  with _reading_inputs():
    pairs = inventory(source, fuser)
  (pair,) = FusionJob(fuser, source, options, pairs=pairs, progress=progress)
  return write_png(pair.fused, out_path, overwrite=overwrite)


def fuse_paths(
  fuser: Fuser, input_a: PathLike, input_b: PathLike, output: PathLike, **keywords
) -> list[pathlib.Path]:
  """Fuses two image files into the PNG ``output`` (into ``output/<name of a>.png`` when
  ``output`` is a folder), or two folders into the folder ``output``: ``fuse_pair`` or
  ``fuse_folders``, whose keyword arguments it takes. Returns the outputs."""
  path_a, path_b = pathlib.Path(input_a), pathlib.Path(input_b)
  for path in (path_a, path_b):
    if not path.exists():
      raise FileNotFoundError(f"input not found: {path}")
  if path_a.is_dir() and path_b.is_dir():
    return fuse_folders(fuser, path_a, path_b, output, **keywords)
  if path_a.is_dir() or path_b.is_dir():
    kind = lambda path: "folder" if path.is_dir() else "file"
    raise InputError(
      f"give two image files or two folders; {path_a} is a {kind(path_a)} "
      f"and {path_b} a {kind(path_b)}"
    )
  output = pathlib.Path(output)
  if output.is_dir():
    output = output / f"{path_a.stem}.png"
  return [fuse_pair(fuser, path_a, path_b, output, **keywords)]
