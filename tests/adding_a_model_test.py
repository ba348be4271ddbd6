"""Adding a model is one file and one registration: a toy family defined and registered here,
touching no generic module, fuses files, trains, and converts PyTorch weights."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx
from PIL import Image

from fusionjax import color, config_lib, convert, fuse, models
from fusionjax.convert import mapping
from fusionjax.models import registry
from fusionjax.training.loop import train_and_evaluate


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  """A two-layer CNN: conv3x3(2 -> features), ReLU, conv1x1(features -> 1), plus the mean."""

  features: int = 8


@dataclasses.dataclass(frozen=True)
class ToyTinyConfig(ToyConfig):
  features: int = 2


class ToyFusion(nnx.Module):
  def __init__(self, config: ToyConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.conv = nnx.Conv(2, config.features, (3, 3), rngs=rngs)
    self.head = nnx.Conv(config.features, 1, (1, 1), rngs=rngs)

  def __call__(self, a, b):
    return self.head(jax.nn.relu(self.conv(jnp.concatenate([a, b], -1)))) + (a + b) / 2


def toy_loss(intensity_weight: float = 1.0):
  def loss(a, b, fused):
    intensity = jnp.mean(jnp.abs(fused - jnp.maximum(a, b)))
    return intensity_weight * intensity, {"intensity": intensity}

  return loss


def toy_param_map(config: ToyConfig) -> mapping.ParamMap:
  del config
  return mapping.conv_entries(("conv",), "conv") | mapping.conv_entries(("head",), "head")


TOY = registry.Family(
  name="toyfuse",
  model=ToyFusion,
  variants={"toyfuse": ToyConfig, "toyfuse_tiny": ToyTinyConfig},
  loss=toy_loss,
  inference=registry.InferenceSpec(
    y_convention="full",
    quantize_y=False,
    output="clip",
    official_grey=lambda a, b: (color.opencv_grey(a), color.opencv_grey(b)),
  ),
  torch=registry.TorchSpec(
    param_map=toy_param_map,
    config_fields=lambda state_dict: {"features": state_dict["conv.weight"].shape[0]},
  ),
)


@pytest.fixture(scope="module", autouse=True)
def toy_family():
  registry.register(TOY)
  yield TOY
  registry.unregister(TOY.name)


def test_the_toy_is_a_registered_model_with_its_variants():
  assert {"toyfuse", "toyfuse_tiny"} <= set(models.names())
  assert registry.for_model(models.build("toyfuse_tiny", rngs=nnx.Rngs(0))) is TOY
  assert config_lib.model_config("toyfuse", tiny=True).name == "toyfuse_tiny"


def test_fuses_a_colour_pair_of_files(tmp_path):
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (20, 24), dtype=np.uint8)
  rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
  Image.fromarray(grey).save(tmp_path / "a.png")
  Image.fromarray(rgb).save(tmp_path / "b.png")
  fuser = fuse.model_fuser(models.init(0, "toyfuse_tiny"))
  assert fuser.name == "toyfuse"
  (out,) = fuse.fuse_paths(fuser, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "f.png")
  fused = np.asarray(Image.open(out))
  assert fused.shape == (20, 24, 3) and fused.dtype == np.uint8


def test_trains_with_its_loss_and_evaluates(tmp_path):
  config = config_lib.base_config(config_lib.model_config("toyfuse", tiny=True))
  config.loss.intensity_weight = 2.0
  config.data.dataset = "roadscene"
  config = config_lib.shrink(config, train_split="test")
  config.train.num_steps = 2
  config.eval.update(every_steps=2, metrics=("EN", "SSIM"), baselines=False)
  config.ckpt.update(every_steps=2, best_metric="SSIM")
  train_and_evaluate(config, tmp_path)
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [row["loss/intensity"] for row in logged if "loss/intensity" in row]
  assert losses and all(np.isfinite(losses))
  assert (tmp_path / "checkpoints" / "2").is_dir()


def test_converts_pytorch_weights(tmp_path):
  params = models.init(3, ToyConfig(features=5))
  flat = dict(nnx.to_flat_state(params.state))
  torch_layout = lambda kernel: np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1))
  state_dict = {
    "conv.weight": torch_layout(flat[("conv", "kernel")][...]),
    "conv.bias": np.asarray(flat[("conv", "bias")][...]),
    "head.weight": torch_layout(flat[("head", "kernel")][...]),
    "head.bias": np.asarray(flat[("head", "bias")][...]),
  }
  safetensors.numpy.save_file(state_dict, tmp_path / "toy.safetensors")
  convert.main(["--input", str(tmp_path / "toy.safetensors"), "--output", str(tmp_path / "toy")])
  loaded = convert.load_params(tmp_path / "toy")
  assert loaded.module().config == ToyConfig(features=5)
  a = np.random.default_rng(1).random((1, 8, 8, 1), dtype=np.float32)
  np.testing.assert_allclose(models.apply(loaded, a, a), models.apply(params, a, a), rtol=1e-6)
