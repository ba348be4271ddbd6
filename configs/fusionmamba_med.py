"""FusionMamba on medical pairs (MRI with CT, PET or SPECT): its official code's settings.

Paper-size training ([2, 2, 9, 2] model; the released CT-MRI weights are the [2, 2, 1, 2]
`--config.model.name=fusionmamba_ct_mri` variant) on the Harvard pairs of one task (`task` =
ct, pet or spect; docs/architectures.md 2.7-2.8), e.g. with data laid out as docs/data.md says:

  python run.py --config=configs/fusionmamba_med.py:task=ct --workdir=runs/fusionmamba_ct \
      --config.data.manual_dir=/path/to/data

30,000 steps of batch 2 on the whole 256x256 images, no augmentation (the paper rotates the
pairs into 30,000), Adam 1.333e-4 x 0.75 per 15,000 steps; loss 10 MSE intensity + 1 gradient
+ 10 MS-SSIM (HEAD's "CT-MRI" weights). The model takes (MRI, other), as the official code.

CPU smoke run (tiny model trained on the task's 2 embedded train pairs, evaluated and fused on
its 2 test pairs of other subjects), a few minutes on 2 CPU cores (README's quick start):

  python run.py --config=configs/fusionmamba_med.py:tiny
"""

from fusionjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, {"task": config_lib.MEDICAL_TASKS}, tiny=False, task="ct")
  config = config_lib.base_config(config_lib.model_config("fusionmamba", tiny=arg.tiny))
  config.loss.update(intensity_weight=10.0, gradient_weight=1.0, ssim_weight=10.0)
  config.data.update(dataset=f"harvard/{arg.task}_mri", crop_size=256, batch_size=2, augment="none")
  config.optim.update(
    optimizer="adam",
    learning_rate=1.0e-4 / 0.75,
    schedule="exponential",
    decay_every_steps=15_000,
    decay_rate=0.75,
  )
  config.train.num_steps = 30_000
  config.eval.every_steps = 5_000
  config.ckpt.every_steps = 5_000
  return config_lib.shrink(config, train_split="train", fast_compile=True) if arg.tiny else config
