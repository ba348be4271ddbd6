"""S4Fusion's loss terms, rebuilt from the disassembled official bytecode
(docs/architectures.md 3.5).

The official `utils/loss.cpython-311.pyc` returns four terms; how the unpublished train script
weights them, the softmax temperature c of the information weights and how gray images are fed
to the ResNet-50 are unknown. `S4FusionLoss` therefore takes them as arguments (defaults are our
assumptions, not the authors'). Images are `fusionjax.shapes.Planes`; F is the fused image.

- Sobel S(x) = |x * Kx| + |x * Ky| per channel, zero padding 1.
- information weights (U2Fusion-style, with Sobel): per source, mean over channels and pixels of
  S(feature)^2 for each of ResNet-50's layer1..layer4 outputs, averaged over the four stages;
  (w_ir, w_vis) = softmax(g_ir / c, g_vis / c) per sample, no gradient.
- weighted SSIM: sum_m mean_batch(w_m * mean_pixels(DSSIM(m, F))), kornia's `ssim_loss`
  (Gaussian window 11, sigma 1.5, reflect padding, DSSIM = clip((1 - SSIM) / 2, 0, 1)).
- weighted L1: sum_m mean_batch(w_m * mean_pixels |m - F|).
- gradient: mean |max(S(VIS), S(IR)) - S(F)|.
- perception-enhanced (entropy): p = softmax(ResNet-50 logits of F) + 1e-9; mean_batch of
  -sum p log p.
"""

import dataclasses
import logging

import jax
import jax.numpy as jnp

from fusionjax.layers.resnet import ResNet50, imagenet_input, load_resnet50
from fusionjax.shapes import Features, Planes

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2, SSIM_EPS = 0.01**2, 0.03**2, 1e-12
ENTROPY_EPS = 1e-9
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def _depthwise(x: Features, kernel_hw, padding) -> Features:
  """Cross-correlates every channel with one (kh, kw) kernel."""
  channels = x.shape[-1]
  kernel = jnp.tile(jnp.asarray(kernel_hw, x.dtype)[:, :, None, None], (1, 1, 1, channels))
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    padding,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
  )


def sobel(x: Features) -> Features:
  """|Gx| + |Gy|, same shape, zero padding."""
  pad = [(1, 1), (1, 1)]
  return jnp.abs(_depthwise(x, _SOBEL_X, pad)) + jnp.abs(_depthwise(x, _SOBEL_Y, pad))


def _gaussian_blur(x):
  """Separable normalised Gaussian (11 taps, sigma 1.5), reflect-padded, same size."""
  offsets = jnp.arange(SSIM_WINDOW, dtype=x.dtype) - SSIM_WINDOW // 2
  taps = jnp.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
  taps = taps / taps.sum()
  radius = SSIM_WINDOW // 2
  x = jnp.pad(x, [(0, 0), (radius, radius), (radius, radius), (0, 0)], mode="reflect")
  x = _depthwise(x, taps[None, :], "VALID")
  return _depthwise(x, taps[:, None], "VALID")


def dssim_map(a: Features, b: Features) -> Features:
  """kornia's per-pixel DSSIM, clip((1 - SSIM) / 2, 0, 1), for values in [0, 1]."""
  mu_a, mu_b = _gaussian_blur(a), _gaussian_blur(b)
  var_a = _gaussian_blur(a * a) - mu_a**2
  var_b = _gaussian_blur(b * b) - mu_b**2
  cov = _gaussian_blur(a * b) - mu_a * mu_b
  ssim = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
    (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2) + SSIM_EPS
  )
  return jnp.clip((1 - ssim) / 2, 0, 1)


def _per_sample_mean(x):
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def information_weights(features_ir, features_vis, temperature: float):
  """Per-sample (w_ir, w_vis), each (batch,), from each source's four ResNet-50 stage outputs."""
  gradient_energy = lambda features: jnp.mean(
    jnp.stack([_per_sample_mean(sobel(f) ** 2) for f in features]), axis=0
  )
  logits = jnp.stack([gradient_energy(features_ir), gradient_energy(features_vis)]) / temperature
  weights = jax.lax.stop_gradient(jax.nn.softmax(logits, axis=0))
  return weights[0], weights[1]


def weighted_ssim_loss(ir, vis, fused, w_ir, w_vis):
  return sum(
    jnp.mean(w * _per_sample_mean(dssim_map(src, fused))) for src, w in ((ir, w_ir), (vis, w_vis))
  )


def weighted_l1_loss(ir, vis, fused, w_ir, w_vis):
  return sum(
    jnp.mean(w * _per_sample_mean(jnp.abs(src - fused))) for src, w in ((ir, w_ir), (vis, w_vis))
  )


def gradient_loss(ir, vis, fused):
  return jnp.mean(jnp.abs(jnp.maximum(sobel(vis), sobel(ir)) - sobel(fused)))


def entropy_loss(logits):
  """Mean over the batch of the entropy of softmax(logits) + 1e-9, logits (batch, classes)."""
  p = jax.nn.softmax(logits, axis=-1) + ENTROPY_EPS
  return jnp.mean(-jnp.sum(p * jnp.log(p), axis=-1))


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the four terms (unknown in the official release; all 1 is our starting point)."""

  ssim: float = 1.0
  l1: float = 1.0
  gradient: float = 1.0
  entropy: float = 1.0


class S4FusionLoss:
  """The S4Fusion training loss: `loss(ir, vis, fused)` -> (total, {term: value}).

  With `resnet` (a frozen `ResNet50`, see `from_resnet_file`) the information weights come from
  its features and the perception-enhanced entropy term is on. Without it the entropy term is
  off and both sources weigh 1/2, and a warning says so once.
  """

  def __init__(
    self,
    resnet: ResNet50 | None = None,
    *,
    temperature: float = 1.0,
    weights: LossWeights = LossWeights(),
  ):
    self.resnet, self.temperature, self.weights = resnet, temperature, weights
    if resnet is None:
      logging.warning(
        "S4FusionLoss without an ImageNet ResNet-50: the perception-enhanced (entropy) term is "
        "off and the information weights are 1/2 each. Pass S4FusionLoss.from_resnet_file("
        "path) with torchvision resnet50 weights to turn them on."
      )

  @classmethod
  def from_resnet_file(cls, path, **kwargs) -> "S4FusionLoss":
    """Loss using the torchvision ResNet-50 weights in `path` (.pth or .safetensors)."""
    return cls(load_resnet50(path), **kwargs)

  def __call__(self, ir: Planes, vis: Planes, fused: Planes):
    if self.resnet is None:
      half = jnp.full((ir.shape[0],), 0.5, ir.dtype)
      w_ir, w_vis, terms = half, half, {}
    else:
      _, features_ir = self.resnet(imagenet_input(ir))
      _, features_vis = self.resnet(imagenet_input(vis))
      w_ir, w_vis = information_weights(features_ir, features_vis, self.temperature)
      logits, _ = self.resnet(imagenet_input(fused))
      terms = {"entropy": entropy_loss(logits)}
    terms = {
      "ssim": weighted_ssim_loss(ir, vis, fused, w_ir, w_vis),
      "l1": weighted_l1_loss(ir, vis, fused, w_ir, w_vis),
      "gradient": gradient_loss(ir, vis, fused),
      **terms,
    }
    total = sum(getattr(self.weights, name) * value for name, value in terms.items())
    return total, terms


def make_loss(resnet_weights: str = "", temperature: float = 1.0, **weights: float) -> S4FusionLoss:
  """The loss of a config's `loss` section: term `weights` (`LossWeights` fields), the
  softmax `temperature`, and the frozen ImageNet ResNet-50 read from `resnet_weights`
  (torchvision layout) when given."""
  term_weights = LossWeights(**weights)
  if resnet_weights:
    return S4FusionLoss.from_resnet_file(
      resnet_weights, temperature=temperature, weights=term_weights
    )
  return S4FusionLoss(temperature=temperature, weights=term_weights)
