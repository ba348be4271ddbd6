"""Shipped models `mambadfuse_small_<task>_mri`: a reduced MambaDFuse trained on one Harvard
medical task (`task` = pet, ct or spect, all three shipped; the model takes (MRI, other)).

Recipe (what trained the weights in fusionjax/pretrained/; docs/pretrained.md has the model
cards):

  python run.py --config=configs/pretrained/mambadfuse_small_med.py:task=pet \
      --workdir=runs/mambadfuse_small_pet_mri --config.data.manual_dir=/path/to/data \
      --config.data.data_dir=runs/tfds --mode=train

The `mambadfuse_small` variant (fusionjax/models/mambadfuse.py: C = 24, N = 8, two blocks of each
kind; the paper model's full-resolution scans take about 30 s a step on one CPU core), widened to
C = 64 for CT-MRI (the C = 24 and C = 48 models this recipe trained before, each shipped until the
next replaced it, ended lower on validation Qabf: 0.579 and 0.588 against 0.592). Data:
xianming-gu's Harvard train split of the task (docs/data.md layout,
`harvard_<task>_mri/train/{mri,<task>}`, colour modalities as their Y channel): its first 16 pairs
validate, the rest train, and the pairs that nearly copy CDDFuse's test pairs are left out of both
(fusionjax.data.overlap: 13 CT-MRI, 29 SPECT-MRI, none for PET-MRI): 134 training and 13 validation
pairs for CT-MRI, 229 and 16 for PET-MRI, 291 and 13 for SPECT-MRI; no test pair is read.
MambaDFuse's medical loss (20 intensity, 100 gradient, 50 SSIM averaged over both sources; PET-MRI
weighs the gradient 150: at 100 its validation Qabf stayed under max_absolute's), random
64 x 64 crops with dihedral augmentation, Adam with a linear warm-up and cosine decay, EMA 0.995 of
the parameters (what validation and the shipped weights use). CT-MRI trains 4,000 steps (its
validation SF and VIF rose until step 3,000 and moved under 1% after), PET-MRI and SPECT-MRI
1,500: their validation metrics had flattened by step 1,250.
"""

from fusionjax import config_lib

NUM_STEPS = {"ct": 4_000, "pet": 1_500, "spect": 1_500}
EMBED_DIM = {"ct": 64}  # the others: the variant's C = 24
GRADIENT_WEIGHT = {"ct": 100.0, "pet": 150.0, "spect": 100.0}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, {"task": config_lib.MEDICAL_TASKS}, task="pet")
  dataset = f"harvard/{arg.task}_mri"
  model = config_lib.model_config("mambadfuse_small", embed_dim=EMBED_DIM.get(arg.task))
  config = config_lib.base_config(model)
  config.loss.update(
    intensity_weight=20.0,
    gradient_weight=GRADIENT_WEIGHT[arg.task],
    ssim_weight=50.0,
    ssim_weighting="equal",
  )
  config_lib.pretrained_data(config, dataset, validation_pairs=16, crop_size=64, batch_size=4)
  return config_lib.pretrained_recipe(
    config, learning_rate=1e-3, warmup_steps=150, num_steps=NUM_STEPS[arg.task]
  )
