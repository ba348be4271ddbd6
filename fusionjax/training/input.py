"""Where a run's image pairs come from (the `data` config section), and its training batches."""

import pathlib
from collections.abc import Sequence

import grain
import jax
import ml_collections
import tensorflow_datasets as tfds

from fusionjax import data, models
from fusionjax.config_lib import ConfigError
from fusionjax.data import builders


class _Subset(Sequence):
  """The records of `source` at `indices`, in that order."""

  def __init__(self, source: Sequence[dict], indices: Sequence[int]):
    self._source, self._indices = source, list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict:
    return self._source[self._indices[index]]


def pair_source(data_config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
  """Random-access records (fusionjax.data.io) of `split` of data_config.dataset, without the
  pairs named in data_config.exclude_names.

  Read from TFDS array_record files in data_dir (prepared first from manual_dir when that is
  set too), else from the folders in manual_dir, else from the pairs embedded in the package.
  """
  source = _split_source(data_config, split)
  excluded = set(data_config.get("exclude_names", ()))
  if not excluded:
    return source
  kept = [i for i in range(len(source)) if data.record_name(source[i]) not in excluded]
  return _Subset(source, kept)


def _split_source(data_config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
  if not data_config.dataset:
    raise ConfigError("data.dataset is empty; set it to a fusionjax TFDS dataset name")
  try:
    if data_config.data_dir:
      return builders.data_source(
        data_config.dataset, split, data_config.data_dir, manual_dir=data_config.manual_dir or None
      )
    builder = builders.get_builder(data_config.dataset)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ConfigError(f"unknown data.dataset {data_config.dataset!r}: {error}") from error
  folder = pathlib.Path(data_config.manual_dir) if data_config.manual_dir else data.sample_dir()
  splits = builder.spec.find_splits(folder)
  if split not in splits:
    where = folder if data_config.manual_dir else f"the pairs embedded in the package ({folder})"
    # TFDS orders a prepared split by a hash of the pair names: only its files can be sliced.
    hint = (
      "a slice of a split is read from prepared TFDS files: set data.data_dir too (they are "
      "prepared there from data.manual_dir)"
      if "[" in split
      else "set data.train_split / data.eval_split"
    )
    raise ConfigError(
      f"no {split!r} split of {data_config.dataset!r} in {where} (found {sorted(splits)}); {hint}"
    )
  return data.PairedFolderSource(splits[split].pairs(folder))


def _process_rows(batch: dict, process_index: int, process_count: int) -> dict:
  """The rows of a global `batch` that process `process_index` of `process_count` feeds: the
  `process_index`-th of `process_count` equal contiguous blocks (the order in which
  `jax.make_array_from_process_local_data` places the processes' rows on the mesh)."""
  rows = len(batch["img_a"]) // process_count
  return {
    key: value[process_index * rows : (process_index + 1) * rows] for key, value in batch.items()
  }


def train_batches(config: ml_collections.ConfigDict) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's rows of every training batch.

  Batches are dicts (fusionjax.data.pipeline) of "img_a", "img_b" (batch / processes,
  crop, crop, 1) float32 in [0, 1] and "name"; seeded by config.seed. Every process reads the
  same global batches and keeps its own block of rows, so the same config gives the same
  global batches whatever the number of processes (and so the same training); the price is
  that each process decodes every pair of a global batch.
  """
  data_config = config.data
  source = pair_source(data_config, data_config.train_split)
  global_batches = data.train_dataset(
    source,
    convention=models.family_of(config.model).inference.y_convention,
    crop_size=data_config.crop_size,
    batch_size=data_config.batch_size,
    seed=config.seed,
    augment=data_config.augment,
    skip_smaller_than_crop=data_config.skip_smaller_than_crop,
    process_index=0,
    process_count=1,
    read_options=grain.ReadOptions(
      num_threads=data_config.num_threads, prefetch_buffer_size=2 * data_config.batch_size
    ),
  )
  index, count = jax.process_index(), jax.process_count()
  return iter(global_batches.map(lambda batch: _process_rows(batch, index, count)))


def eval_pairs(data_config: ml_collections.ConfigDict, num_pairs: int) -> Sequence[dict]:
  """The first `num_pairs` records of the eval split (all when 0), for every process."""
  source = pair_source(data_config, data_config.eval_split)
  return source if not num_pairs else [source[i] for i in range(min(num_pairs, len(source)))]
