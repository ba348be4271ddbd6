"""torchvision's ResNet-50 (v1.5) in Flax NNX, loading torchvision-layout ImageNet weights.

S4Fusion's loss (docs/architectures.md 3.5) feeds images through a frozen ImageNet ResNet-50 that
returns the logits and the outputs of layer1..layer4. Nothing is downloaded: the user passes a
torchvision checkpoint (e.g. resnet50-0676ba61.pth or resnet50-11ad3fa6.pth, or the same tensors
as .safetensors) to `load_resnet50`.

Layout: NHWC. Bottleneck [3, 4, 6, 3], stride on the 3x3 conv (v1.5); BatchNorm eps 1e-5 with
running statistics (the network is meant to be used frozen, in eval mode).
"""

from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax.convert import mapping as torch_mapping

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
NUM_CLASSES = 1000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu").
_KAIMING_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(in_ch, out_ch, kernel, stride, rngs):
  pad = kernel // 2
  return nnx.Conv(
    in_ch,
    out_ch,
    (kernel, kernel),
    strides=stride,
    padding=((pad, pad),) * 2,
    use_bias=False,
    kernel_init=_KAIMING_FAN_OUT,
    rngs=rngs,
  )


def _batch_norm(channels, rngs):
  return nnx.BatchNorm(channels, epsilon=1e-5, momentum=0.9, use_running_average=True, rngs=rngs)


class Bottleneck(nnx.Module):
  """(batch, H, W, in) -> (batch, H/stride, W/stride, 4 width): 1x1, 3x3 (stride), 1x1 + skip."""

  def __init__(self, in_ch: int, width: int, stride: int, *, rngs: nnx.Rngs):
    out_ch = width * EXPANSION
    self.conv1, self.bn1 = _conv(in_ch, width, 1, 1, rngs), _batch_norm(width, rngs)
    self.conv2, self.bn2 = _conv(width, width, 3, stride, rngs), _batch_norm(width, rngs)
    self.conv3, self.bn3 = _conv(width, out_ch, 1, 1, rngs), _batch_norm(out_ch, rngs)
    if stride != 1 or in_ch != out_ch:
      self.downsample_conv = _conv(in_ch, out_ch, 1, stride, rngs)
      self.downsample_bn = _batch_norm(out_ch, rngs)
    else:
      self.downsample_conv = self.downsample_bn = None

  def __call__(self, x):
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = jax.nn.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    skip = x if self.downsample_conv is None else self.downsample_bn(self.downsample_conv(x))
    return jax.nn.relu(out + skip)


class ResNet50(nnx.Module):
  """`__call__(x)`: (batch, H, W, 3) normalised RGB -> (logits (batch, 1000), [layer1..layer4])."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv1, self.bn1 = _conv(3, 64, 7, 2, rngs), _batch_norm(64, rngs)
    stages, in_ch = [], 64
    for index, (blocks, width) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS)):
      first_stride = 1 if index == 0 else 2
      stage = []
      for block in range(blocks):
        stage.append(Bottleneck(in_ch, width, first_stride if block == 0 else 1, rngs=rngs))
        in_ch = width * EXPANSION
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)
    self.fc = nnx.Linear(in_ch, NUM_CLASSES, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    features = []
    for stage in self.stages:
      for block in stage:
        x = block(x)
      features.append(x)
    return self.fc(jnp.mean(x, axis=(1, 2))), features


def imagenet_input(gray):
  """`fusionjax.shapes.Planes` -> (batch, H, W, 3): replicated and ImageNet-normalised.

  The S4Fusion authors' choice is not recoverable (docs/architectures.md 3.5); this is the
  conventional one.
  """
  mean, std = (jnp.asarray(v).reshape(1, 1, 1, 3) for v in (IMAGENET_MEAN, IMAGENET_STD))
  return (jnp.broadcast_to(gray, gray.shape[:3] + (3,)) - mean) / std


def _batch_norm_entries(path, name):
  return {
    path + ("scale",): (f"{name}.weight", torch_mapping.identity),
    path + ("bias",): (f"{name}.bias", torch_mapping.identity),
    path + ("mean",): (f"{name}.running_mean", torch_mapping.identity),
    path + ("var",): (f"{name}.running_var", torch_mapping.identity),
  }


def torch_param_map() -> torch_mapping.ParamMap:
  """NNX path -> (torchvision `resnet50().state_dict()` name, layout transform)."""
  tm = torch_mapping
  entries = {
    **tm.conv_entries(("conv1",), "conv1", bias=False),
    **_batch_norm_entries(("bn1",), "bn1"),
  }
  for index, blocks in enumerate(STAGE_BLOCKS):
    for block in range(blocks):
      path, name = ("stages", index, block), f"layer{index + 1}.{block}"
      for conv in (1, 2, 3):
        entries |= tm.conv_entries(path + (f"conv{conv}",), f"{name}.conv{conv}", bias=False)
        entries |= _batch_norm_entries(path + (f"bn{conv}",), f"{name}.bn{conv}")
      if block == 0:
        entries |= tm.conv_entries(path + ("downsample_conv",), f"{name}.downsample.0", bias=False)
        entries |= _batch_norm_entries(path + ("downsample_bn",), f"{name}.downsample.1")
  return entries | tm.linear_entries(("fc",), "fc", bias=True)


def torch_to_params(state_dict: Mapping[str, np.ndarray], model: ResNet50) -> None:
  """Loads a torchvision ResNet-50 state_dict into `model` (parameters and BN statistics)."""
  num_batches = {
    name: (lambda value: True) for name in state_dict if name.endswith(".num_batches_tracked")
  }
  torch_mapping.load_mapped(
    model, state_dict, torch_param_map(), ignored=num_batches, variables=(nnx.Param, nnx.BatchStat)
  )


def load_resnet50(path: str | Path) -> ResNet50:
  """A frozen (eval-mode) ResNet-50 holding the torchvision weights in `path`.

  Args:
    path: a torchvision checkpoint (.pth) or the same tensors as .safetensors.
  """
  from fusionjax.convert import load_state_dict  # reads .pth without torch

  model = nnx.eval_shape(lambda: ResNet50(rngs=nnx.Rngs(0)))
  torch_to_params(load_state_dict(path), model)
  model.eval()
  return model
