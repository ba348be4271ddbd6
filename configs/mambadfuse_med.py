"""MambaDFuse on medical pairs (MRI with CT, PET or SPECT): its official code's MIF settings.

Paper-size training on the Harvard AANLIB pairs of one task (`task` = ct, pet or spect;
docs/architectures.md 1.5-1.6), e.g. with data laid out as docs/data.md says:

  python run.py --config=configs/mambadfuse_med.py:task=pet --workdir=runs/mambadfuse_pet \
      --config.data.manual_dir=/path/to/data

10,000 steps of batch 12 (random 64x64 crops, dihedral augmentation), Adam 2e-4, EMA 0.999,
loss 20 intensity + 100 gradient + 50 (1 - SSIM averaged over both sources).

CPU smoke run (tiny model, trained on the task's 2 embedded train pairs and evaluated on its 2
test pairs), a few minutes on 2 CPU cores:

  python run.py --config=configs/mambadfuse_med.py:tiny
"""

from fusionjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, {"task": config_lib.MEDICAL_TASKS}, tiny=False, task="ct")
  config = config_lib.base_config(config_lib.model_config("mambadfuse", tiny=arg.tiny))
  config.loss.update(
    intensity_weight=20.0, gradient_weight=100.0, ssim_weight=50.0, ssim_weighting="equal"
  )
  config.data.update(
    dataset=f"harvard/{arg.task}_mri", crop_size=64, batch_size=12, augment="dihedral"
  )
  config.optim.update(
    optimizer="adam",
    learning_rate=2e-4,
    schedule="multistep",
    boundaries=(250_000, 400_000, 450_000, 475_000, 500_000),
    decay_rate=0.5,
    ema_decay=0.999,
  )
  config.train.num_steps = 10_000
  config.ckpt.every_steps = 1_000
  return config_lib.shrink(config, train_split="train") if arg.tiny else config
