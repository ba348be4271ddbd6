"""Image-fusion data: reading pairs, sample pairs, grain pipelines.

The TFDS builders live in ``fusionjax.data.builders``; import it (it imports
tensorflow_datasets, not TensorFlow) before ``tfds.data_source("roadscene", ...)``.
"""

from fusionjax.data.io import (
  ImagePair,
  PairedFolderSource,
  decode_image,
  decode_pair,
  pair_folders,
  read_image,
  record_name,
  sample_dir,
)
from fusionjax.data.pipeline import (
  read_example,
  stack_examples,
  to_model_input,
  train_dataset,
)

__all__ = [
  "ImagePair",
  "PairedFolderSource",
  "decode_image",
  "decode_pair",
  "pair_folders",
  "read_example",
  "read_image",
  "record_name",
  "sample_dir",
  "stack_examples",
  "to_model_input",
  "train_dataset",
]
