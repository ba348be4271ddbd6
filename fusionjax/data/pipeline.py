"""grain pipelines from records (``fusionjax.data.io``) to training batches.

A source is anything with ``len`` and integer indexing that returns records: a TFDS
array_record source (``tfds.data_source(...)``, ``builder.as_data_source(split)``) or an
``io.PairedFolderSource``.

Batches are dicts of numpy arrays; ``img_a`` and ``img_b`` are planes, laid out as
``fusionjax.shapes.Planes``::

    img_a:  plane                        grey modality (ir, mri, pc), as read
    img_b:  plane                        the other modality; Y of it when it is colour
    name:   (batch,) str                 pair names
    cb, cr: (batch, H, W, 1) float32     the chroma of a colour img_b, only from
                                         ``to_model_input(..., keep_color=True)``

``img_b``'s Y is in the model's convention (``fusionjax.color.MODEL_Y_CONVENTION``); a colour
``img_a`` is reduced to full-range Y, as the models read that side with OpenCV's grey
conversion. Grey images are never converted.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import grain
import jax
import numpy as np

from fusionjax import color
from fusionjax.data import io

Augment = Literal["none", "flips", "dihedral"]

_IMAGE_KEYS = ("img_a", "img_b", "cb", "cr")


def read_example(record: dict) -> dict:
  """Decodes a record's two images, unconverted: ``img_a``, ``img_b`` and ``name``.

  The arrays are ``fusionjax.shapes.Image``, as ``io.decode_image`` returns them.
  Crop before ``to_model_input`` so that only the crop is colour-converted.
  """
  name, image_a, image_b = io.decode_pair(record)
  return {"img_a": image_a, "img_b": image_b, "name": name}


def to_model_input(
  example: dict,
  convention: color.Convention,
  *,
  keep_color: bool = True,
  quantize: bool = False,
) -> dict:
  """Converts ``read_example``'s images to the batch format above (without B).

  Args:
    example: ``img_a``, ``img_b`` (``Image``) and ``name``, as ``read_example`` gives them.
    convention: Y convention of the model that will fuse the pair.
    keep_color: add ``cb``, ``cr`` when ``img_b`` is colour.
    quantize: round ``img_b``'s Y to the 8-bit grid (``color.to_fusion_input``).
  """
  name = example["name"]
  try:
    y_a, _ = color.to_fusion_input(example["img_a"], "full")
    y_b, cbcr = color.to_fusion_input(example["img_b"], convention, quantize=quantize)
  except ValueError as error:
    raise ValueError(f"pair {name!r}: {error}") from error
  converted = {"img_a": y_a, "img_b": y_b, "name": name}
  if keep_color and cbcr is not None:
    converted["cb"], converted["cr"] = cbcr[..., :1], cbcr[..., 1:]
  return converted


def stack_examples(examples: Sequence[dict]) -> dict:
  """Stacks examples into a batch, with a clear error when they cannot be stacked."""
  names = [example["name"] for example in examples]
  first = examples[0]
  for example in examples[1:]:
    if example.keys() != first.keys():
      raise ValueError(
        f"cannot batch pairs {names}: only some have colour (cb/cr); use batch_size=1"
      )
    shapes = {key: example[key].shape for key in _IMAGE_KEYS if key in example}
    if shapes != {key: first[key].shape for key in shapes}:
      raise ValueError(
        f"cannot batch pairs {names}: image sizes differ "
        f"({first['img_a'].shape[:2]} vs {example['img_a'].shape[:2]}); "
        "use batch_size=1"
      )
  return {key: np.stack([example[key] for example in examples]) for key in first}


def random_crop(example: dict, size: int, rng: np.random.Generator) -> dict:
  """Crops every image of ``example`` to (size, size) at one random position."""
  height, width = example["img_a"].shape[:2]
  if height < size or width < size:
    raise ValueError(
      f"pair {example['name']!r} is {width}x{height} (WxH), smaller than the "
      f"{size}x{size} crop; lower the crop size or set skip_smaller_than_crop"
    )
  top = rng.integers(height - size + 1)
  left = rng.integers(width - size + 1)
  return _apply_to_images(example, lambda image: image[top : top + size, left : left + size])


def random_dihedral(example: dict, rng: np.random.Generator) -> dict:
  """Applies one of the 8 rotations/flips of the square to every image (MambaDFuse)."""
  transform = rng.integers(8)

  def apply(image: np.ndarray) -> np.ndarray:
    image = np.rot90(image, k=transform % 4)
    return image[:, ::-1] if transform >= 4 else image

  return _apply_to_images(example, apply)


def random_flips(example: dict, rng: np.random.Generator) -> dict:
  """Flips every image horizontally, then vertically, each with probability 1/2 (S4Fusion)."""
  horizontal, vertical = rng.random(2) < 0.5

  def apply(image: np.ndarray) -> np.ndarray:
    image = image[:, ::-1] if horizontal else image
    return image[::-1] if vertical else image

  return _apply_to_images(example, apply)


def _apply_to_images(example: dict, function: Callable[[np.ndarray], np.ndarray]) -> dict:
  return {
    key: np.ascontiguousarray(function(value)) if key in _IMAGE_KEYS else value
    for key, value in example.items()
  }


_AUGMENTATIONS = {"dihedral": random_dihedral, "flips": random_flips}


def _process_slice(
  source, process_index: int | None, process_count: int | None
) -> grain.MapDataset:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return grain.MapDataset.source(source)[process_index::process_count]


def train_dataset(
  source,
  *,
  convention: color.Convention,
  crop_size: int,
  batch_size: int,
  seed: int,
  augment: Augment = "dihedral",
  skip_smaller_than_crop: bool = False,
  num_epochs: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
  """Training batches: shuffled, cropped, augmented, repeated.

  Each process reads ``source[process_index::process_count]`` (defaults: this JAX
  process), shuffled with ``seed`` and reshuffled every epoch. A pair gets one random
  (crop_size x crop_size) crop at the same position in both images, then ``augment``
  ("dihedral": one of 8 rotations/flips; "flips": independent horizontal and vertical flips;
  "none"). Batches have ``batch_size`` examples (incomplete ones dropped), no ``cb``/``cr``.
  The same arguments always give the same batches.

  Checkpoint the position with ``it = iter(ds)``, ``it.get_state()``/``it.set_state()`` or
  ``grain.checkpoint.CheckpointSave(it)`` in an Orbax composite.

  Args:
    skip_smaller_than_crop: skip pairs smaller than the crop (S4Fusion's loader does) instead
      of raising an error.
    num_epochs: None repeats forever.
    read_options: grain threads and prefetch; default 4 threads, 64 examples.
  """
  ds = _process_slice(source, process_index, process_count)
  ds = ds.seed(seed).shuffle().repeat(num_epochs)
  ds = ds.map(read_example)
  if skip_smaller_than_crop:
    ds = ds.filter(lambda example: min(example["img_a"].shape[:2]) >= crop_size)
  ds = ds.random_map(lambda example, rng: random_crop(example, crop_size, rng))
  ds = ds.map(lambda example: to_model_input(example, convention, keep_color=False))
  if augment != "none":
    ds = ds.random_map(_AUGMENTATIONS[augment])
  read_options = read_options or grain.ReadOptions(num_threads=4, prefetch_buffer_size=64)
  return ds.to_iter_dataset(read_options).batch(
    batch_size, drop_remainder=True, batch_fn=stack_examples
  )
