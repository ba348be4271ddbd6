"""Shipped model `mambadfuse_small_pet_mri`: a reduced MambaDFuse trained on Harvard PET-MRI.

Recipe (what trained the weights in fusionjax/pretrained/; docs/pretrained.md is its model card):

  python run.py --config=configs/pretrained/mambadfuse_small_pet_mri.py \
      --workdir=runs/mambadfuse_small_pet_mri --config.data.manual_dir=/path/to/data \
      --config.data.data_dir=runs/tfds --mode=train

The `mambadfuse_small` variant (fusionjax/models/mambadfuse.py: C = 24, N = 8, two blocks of each
kind; the paper model's full-resolution scans take about 30 s a step on one CPU core). Data:
xianming-gu's Harvard PET-MRI train split (docs/data.md layout, `harvard_pet_mri/train/{mri,pet}`,
PET as its Y channel), 16 pairs held out for validation; no test pair is read (no PET-MRI train
pair nearly copies a test pair: fusionjax.data.overlap). MambaDFuse's medical loss (20
intensity, 100 gradient, 50 SSIM averaged over both sources), random 64 x 64 crops with dihedral
augmentation, Adam with a linear warm-up and cosine decay, EMA 0.995 of the parameters (what
validation, the checkpoint choice and the shipped weights use).
"""

from fusionjax import config_lib
from fusionjax.data import overlap


def get_config(arg=None):
  del arg  # no variants
  config = config_lib.base_config(config_lib.model_config("mambadfuse_small"))
  config.loss.update(
    intensity_weight=20.0, gradient_weight=100.0, ssim_weight=50.0, ssim_weighting="equal"
  )
  config.data.update(
    dataset="harvard/pet_mri",
    train_split="train[16:]",
    eval_split="train[:16]",
    exclude_names=overlap.near_duplicates_of_test("harvard/pet_mri"),
    crop_size=64,
    batch_size=4,
    augment="dihedral",
  )
  return config_lib.pretrained_recipe(config, learning_rate=1e-3, warmup_steps=150, num_steps=1_500)
