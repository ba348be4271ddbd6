"""FusionMamba on infrared-visible pairs: the settings of its official train.py, paper weights.

Paper-size training ([2, 2, 9, 2] model) on MSRS (the code trains on 30,000 KAIST pairs, which
fusionjax has no builder for; docs/architectures.md 2.7-2.8):

  python run.py --config=configs/fusionmamba_vif.py --workdir=runs/fusionmamba_vif \
      --config.data.manual_dir=/path/to/MSRS --config.data.data_dir=/path/to/tfds

30,000 steps (2 epochs of 15,000) of batch 2, Adam 1.333e-4 x 0.75 per epoch, random 256x256
crops (the code resizes whole frames to 256x256), no augmentation; loss 100 MSE intensity + 10
gradient + 1 MS-SSIM (the paper's IVF weights; HEAD's are 10/1/10). The model takes
(visible, infrared), as the official code does (data.swap_inputs).

CPU smoke run (tiny model, the 4 embedded RoadScene pairs), a few minutes on 2 CPU cores:

  python run.py --config=configs/fusionmamba_vif.py:tiny
"""

from fusionjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  config = config_lib.base_config(config_lib.model_config("fusionmamba", tiny=arg.tiny))
  config.loss.update(intensity_weight=100.0, gradient_weight=10.0, ssim_weight=1.0)
  config.data.update(
    dataset="roadscene" if arg.tiny else "msrs",
    crop_size=256,
    batch_size=2,
    augment="none",
    swap_inputs=True,
  )
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
  return config_lib.shrink(config, train_split="test", fast_compile=True) if arg.tiny else config
