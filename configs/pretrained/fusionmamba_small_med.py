"""Shipped models `fusionmamba_small_<task>_mri`: a reduced FusionMamba trained on one Harvard
medical task (`task` = ct or spect; the model takes (MRI, other)).

Recipe (what trained the weights in fusionjax/pretrained/; docs/pretrained.md has the model
cards):

  python run.py --config=configs/pretrained/fusionmamba_small_med.py:task=ct \
      --workdir=runs/fusionmamba_small_ct_mri --config.data.manual_dir=/path/to/data \
      --config.data.data_dir=runs/tfds --mode=train

The `fusionmamba_small` variant (fusionjax/models/fusionmamba.py: 24 channels, two blocks per
stage; the 164.5M-parameter paper model does not train on 2 CPU cores). Data: xianming-gu's
Harvard train split of the task (docs/data.md layout, `harvard_<task>_mri/train/{mri,<task>}`,
colour modalities as their Y channel): its first 16 pairs validate, the rest train, and the
pairs that nearly copy CDDFuse's test pairs are left out of both (fusionjax.data.overlap: 13
CT-MRI, 29 SPECT-MRI): 134 training and 13 validation pairs for CT-MRI, 291 and 13 for
SPECT-MRI; no test pair is read. FusionMamba's loss with its code's CT-MRI weights (10
intensity, 1 gradient, 10 MS-SSIM), random 128 x 128 crops with dihedral augmentation, Adam with
a linear warm-up and cosine decay, EMA 0.995 of the parameters (what validation and the shipped
weights use).
"""

from fusionjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, {"task": config_lib.MEDICAL_TASKS}, task="ct")
  dataset = f"harvard/{arg.task}_mri"
  config = config_lib.base_config(config_lib.model_config("fusionmamba_small"))
  config.loss.update(intensity_weight=10.0, gradient_weight=1.0, ssim_weight=10.0)
  config_lib.pretrained_data(config, dataset, validation_pairs=16, crop_size=128, batch_size=4)
  return config_lib.pretrained_recipe(config, learning_rate=5e-4, warmup_steps=200, num_steps=3_000)
