"""MambaDFuse on infrared-visible pairs: the settings of its official code (train_mambadfuse_vif).

Paper-size training on MSRS (1,083 train pairs; docs/architectures.md 1.5-1.6):

  python run.py --config=configs/mambadfuse_vif.py --workdir=runs/mambadfuse_vif \
      --config.data.manual_dir=/path/to/MSRS --config.data.data_dir=/path/to/tfds

10,000 steps of batch 12 (random 128x128 crops, dihedral augmentation), Adam 2e-5 (the
MultiStepLR milestones are never reached), EMA 0.999 (used for evaluation and fusing), loss
20 intensity + 20 gradient + 10 gradient-weighted SSIM. batch_size must divide over the devices.

CPU smoke run (tiny model, the 4 embedded RoadScene pairs, train + evaluate + fuse), a few
minutes on 2 CPU cores:

  python run.py --config=configs/mambadfuse_vif.py:tiny
"""

from fusionjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  config = config_lib.base_config(config_lib.model_config("mambadfuse", tiny=arg.tiny))
  config.loss.update(
    intensity_weight=20.0, gradient_weight=20.0, ssim_weight=10.0, ssim_weighting="gradient"
  )
  config.data.update(
    dataset="roadscene" if arg.tiny else "msrs", crop_size=128, batch_size=12, augment="dihedral"
  )
  config.optim.update(
    optimizer="adam",
    learning_rate=2e-5,
    schedule="multistep",
    boundaries=(250_000, 400_000, 450_000, 475_000, 500_000),
    decay_rate=0.5,
    ema_decay=0.999,
  )
  config.train.num_steps = 10_000
  config.ckpt.every_steps = 1_000
  return config_lib.shrink(config, train_split="test") if arg.tiny else config
