"""S4Fusion on infrared-visible pairs: paper appendix A.1 and its code's data pipeline.

The official training script and loss weights are unpublished; the loss is rebuilt from the
released bytecode (fusionjax.losses.s4fusion), its weights, the softmax temperature and
the warm-up length here are our assumptions (docs/architectures.md 3.5-3.6). Paper-size
training on MSRS (the paper adds 70% of M3FD and RoadScene):

  python run.py --config=configs/s4fusion_vif.py --workdir=runs/s4fusion_vif \
      --config.data.manual_dir=/path/to/MSRS --config.data.data_dir=/path/to/tfds \
      --config.loss.resnet_weights=/path/to/resnet50-0676ba61.pth

57,600 steps (800 epochs of 72) of batch 20, random 229x229 crops (smaller pairs skipped) with
random horizontal and vertical flips, AdamW (PyTorch's default weight decay 0.01), warm-up
3e-4 -> 1.5e-3 over 720 steps then cosine to 6e-4. Without resnet_weights (torchvision
ImageNet ResNet-50) the perception term is off and both sources weigh 1/2.

CPU smoke run (tiny model, the 4 embedded RoadScene pairs), a few minutes on 2 CPU cores:

  python run.py --config=configs/s4fusion_vif.py:tiny
"""

from fusionjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  config = config_lib.base_config(config_lib.model_config("s4fusion", tiny=arg.tiny))
  config.loss.update(
    resnet_weights="", temperature=1.0, ssim=1.0, l1=1.0, gradient=1.0, entropy=1.0
  )
  config.data.update(
    dataset="roadscene" if arg.tiny else "msrs",
    crop_size=229,
    batch_size=20,
    augment="flips",
    skip_smaller_than_crop=True,
  )
  config.optim.update(
    optimizer="adamw",
    weight_decay=0.01,
    schedule="warmup_cosine",
    init_learning_rate=3e-4,
    learning_rate=1.5e-3,
    end_learning_rate=6e-4,
    warmup_steps=720,
  )
  config.train.num_steps = 57_600
  config.eval.every_steps = 2_880
  config.ckpt.every_steps = 2_880
  return config_lib.shrink(config, train_split="test") if arg.tiny else config
