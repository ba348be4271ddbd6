"""FusionMamba on green fluorescent protein / phase contrast microscopy pairs.

The paper trains on 30,000 GFP-PC pairs that are not public; the 5 public DPCN-Fusion pairs form
the `test` split of fusionjax's gfp_pc dataset. So a paper-size run needs your own training
pairs: a folder with train/pc and train/gfp (plus test/...) in the staged layout,

  python run.py --config=configs/fusionmamba_gfp.py --workdir=runs/fusionmamba_gfp \
      --config.data.manual_dir=/path/to/gfp_pc

([2, 2, 9, 2] model, 30,000 steps of batch 2 on 256x256 crops, Adam 1.333e-4 x 0.75 per 15,000
steps, loss 10 MSE intensity + 1 gradient + 10 MS-SSIM, the model taking (PC, GFP-Y)), or
`--config.data.train_split=test` to fine-tune on the public pairs (then the evaluation is not
on unseen pairs).

CPU smoke run (tiny model, trained and evaluated on the embedded public pair), a few minutes on
2 CPU cores:

  python run.py --config=configs/fusionmamba_gfp.py:tiny
"""

from fusionjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  config = config_lib.base_config(config_lib.model_config("fusionmamba", tiny=arg.tiny))
  config.loss.update(intensity_weight=10.0, gradient_weight=1.0, ssim_weight=10.0)
  config.data.update(dataset="gfp_pc", crop_size=256, batch_size=2, augment="none")
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
