"""ResNet-50 for S4Fusion's loss: torchvision's parameter count and names, loading, shapes."""

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from fusionjax.layers import resnet

from model_testing import fast_jit, fill_random, param_count

TORCHVISION_PARAMETERS = 25_557_032  # torchvision ResNet50_Weights meta "num_params"
TORCHVISION_TENSORS = 320  # len(resnet50().state_dict()), with BN statistics and counters


def _torchvision_names():
  """Every name of torchvision's `resnet50().state_dict()`, from its published structure."""
  bn = lambda n: [
    f"{n}.weight",
    f"{n}.bias",
    f"{n}.running_mean",
    f"{n}.running_var",
    f"{n}.num_batches_tracked",
  ]
  names = ["conv1.weight", *bn("bn1"), "fc.weight", "fc.bias"]
  for layer, blocks in enumerate((3, 4, 6, 3), start=1):
    for block in range(blocks):
      prefix = f"layer{layer}.{block}"
      for i in (1, 2, 3):
        names += [f"{prefix}.conv{i}.weight", *bn(f"{prefix}.bn{i}")]
      if block == 0:
        names += [f"{prefix}.downsample.0.weight", *bn(f"{prefix}.downsample.1")]
  return names


@pytest.fixture(scope="module")
def abstract_resnet():
  return nnx.eval_shape(lambda: resnet.ResNet50(rngs=nnx.Rngs(0)))


def test_parameter_count_and_names_are_torchvisions(abstract_resnet):
  assert param_count(abstract_resnet) == TORCHVISION_PARAMETERS
  ours = [name for name, _ in resnet.torch_param_map().values()]
  counters = [
    name.replace(".running_var", ".num_batches_tracked")
    for name in ours
    if name.endswith(".running_var")
  ]
  names = _torchvision_names()
  assert len(names) == TORCHVISION_TENSORS
  assert sorted(ours + counters) == sorted(names)


def test_load_resnet50_reads_a_torchvision_layout_file(tmp_path, abstract_resnet):
  source = fill_random(nnx.eval_shape(lambda: resnet.ResNet50(rngs=nnx.Rngs(0))), seed=3)
  ours = {
    path: np.asarray(var[...])
    for path, var in nnx.to_flat_state(nnx.state(source, (nnx.Param, nnx.BatchStat)))
  }
  to_torch = {4: lambda a: a.transpose(3, 2, 0, 1), 2: lambda a: a.T, 1: lambda a: a}
  state_dict = {
    name: np.ascontiguousarray(to_torch[ours[path].ndim](ours[path]))
    for path, (name, _) in resnet.torch_param_map().items()
  }
  state_dict |= {
    name.replace(".running_var", ".num_batches_tracked"): np.array(7, np.int64)
    for name in state_dict
    if name.endswith(".running_var")
  }
  save_file(state_dict, str(tmp_path / "resnet50.safetensors"))

  model = resnet.load_resnet50(tmp_path / "resnet50.safetensors")
  loaded = dict(nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))))
  for path, value in ours.items():
    np.testing.assert_array_equal(loaded[path][...], value, err_msg=str(path))
  gray = np.random.default_rng(0).uniform(size=(2, 40, 52, 1)).astype(np.float32)
  logits, features = fast_jit(lambda m, x: m(resnet.imagenet_input(x)))(model, gray)
  assert logits.shape == (2, 1000) and np.all(np.isfinite(logits))
  assert [f.shape for f in features] == [
    (2, 10, 13, 256),
    (2, 5, 7, 512),
    (2, 3, 4, 1024),
    (2, 2, 2, 2048),
  ]
  # Eval mode normalises with the running statistics: the output does not depend on the batch.
  alone, _ = fast_jit(lambda m, x: m(resnet.imagenet_input(x)))(model, gray[:1])
  np.testing.assert_allclose(alone[0], logits[0], rtol=1e-4, atol=1e-4)
