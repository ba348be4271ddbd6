"""Shipped model `s4fusion_ivf`: the paper-size S4Fusion trained on RoadScene (infrared-visible).

Recipe (what trained the weights in fusionjax/pretrained/; docs/pretrained.md is its model card):

  python run.py --config=configs/pretrained/s4fusion_ivf.py --workdir=runs/s4fusion_ivf \
      --config.data.manual_dir=/path/to/data --config.data.data_dir=runs/tfds --mode=train

data: RoadScene train pairs only (docs/data.md layout, `roadscene/train/{ir,vi}`), 154 for
training and 17 held out for validation (TFDS split slices of the prepared dataset); the 50 test
pairs are never read. Loss: MambaDFuse's (20 |F - max(A, B)|_1 + 20 max-gradient L1 + 10
gradient-weighted SSIM), not S4Fusion's, whose weights and ResNet-50 term are unpublished
(docs/architectures.md 3.5). Adam with a linear warm-up and cosine decay, EMA 0.995 of the
parameters (what validation and the shipped weights use).
"""

from fusionjax import config_lib


def get_config(arg=None):
  del arg  # no variants
  config = config_lib.base_config(config_lib.model_config("s4fusion"))
  config.loss.update(
    name="mambadfuse",
    intensity_weight=20.0,
    gradient_weight=20.0,
    ssim_weight=10.0,
    ssim_weighting="gradient",
  )
  config_lib.pretrained_data(config, "roadscene", validation_pairs=17, crop_size=64, batch_size=8)
  return config_lib.pretrained_recipe(config, learning_rate=1e-3, warmup_steps=200, num_steps=3_000)
