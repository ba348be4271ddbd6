"""Tests for fusionjax.losses: analytic cases and float64 SciPy re-derivations of the SSIMs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from fusionjax import losses

WEIGHTS = dict(intensity_weight=2.0, gradient_weight=3.0, ssim_weight=5.0)


def _images(seed: int, shape=(2, 40, 36, 1)) -> np.ndarray:
  """Smooth random images in [0, 1], (batch, H, W, 1) float32."""
  noise = np.random.default_rng(seed).normal(size=shape)
  smooth = np.cumsum(np.cumsum(noise, axis=1), axis=2)
  low, high = smooth.min(axis=(1, 2, 3), keepdims=True), smooth.max(axis=(1, 2, 3), keepdims=True)
  return ((smooth - low) / (high - low)).astype(np.float32)


def _window(size: int) -> np.ndarray:
  """pytorch-ssim's window: Gaussian (sigma 1.5) centred on size // 2, normalised."""
  profile = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * 1.5**2))
  return np.outer(profile, profile) / profile.sum() ** 2


def _ssim_and_cs(x: np.ndarray, y: np.ndarray, window: np.ndarray, padding: int):
  """Mean SSIM and mean contrast-structure of two 2-D float64 images (pytorch-ssim formulas)."""
  x, y = np.pad(x, padding), np.pad(y, padding)
  blur = lambda image: signal.correlate2d(image, window, mode="valid")
  mu_x, mu_y = blur(x), blur(y)
  var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
  cov = blur(x * y) - mu_x * mu_y
  c1, c2 = 0.01**2, 0.03**2
  cs = (2 * cov + c2) / (var_x + var_y + c2)
  return np.mean((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs), np.mean(cs)


def _ms_ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
  """FusionMamba's pytorch_msssim.msssim(normalize=True) for (batch, H, W, 1) images."""
  x, y = x[..., 0].astype(np.float64), y[..., 0].astype(np.float64)
  ssims, css = [], []
  for _ in range(5):
    window = _window(min(11, *x.shape[1:]))
    values = [_ssim_and_cs(xi, yi, window, 0) for xi, yi in zip(x, y)]
    ssims.append(np.mean([v[0] for v in values]))
    css.append(np.mean([v[1] for v in values]))
    height, width = x.shape[1] // 2, x.shape[2] // 2
    pool = lambda im: im[:, : 2 * height, : 2 * width].reshape(-1, height, 2, width, 2).mean((2, 4))
    x, y = pool(x), pool(y)
  weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
  ssim_powers = ((np.array(ssims) + 1) / 2) ** weights
  cs_powers = ((np.array(css) + 1) / 2) ** weights
  return float(np.prod(cs_powers[:-1] * ssim_powers[-1]))


def test_sobel_gradient_of_a_ramp():
  ramp = jnp.broadcast_to(jnp.arange(12.0) * 0.05, (1, 10, 12))[..., None]  # slope 0.05 along W
  gradient = np.asarray(losses.sobel_gradient(ramp))[0, ..., 0]
  np.testing.assert_allclose(gradient[1:-1, 1:-1], 8 * 0.05, rtol=1e-6)  # (1 + 2 + 1) * 2 steps
  assert gradient[0, 5] > 0.4  # zero padding makes the border an edge


def test_ssim_matches_scipy_reference():
  x, y = _images(0), _images(1)
  expected = np.mean(
    [
      _ssim_and_cs(xi[..., 0].astype(np.float64), yi[..., 0].astype(np.float64), _window(11), 5)[0]
      for xi, yi in zip(x, y)
    ]
  )
  assert float(losses.ssim(x, y)) == pytest.approx(expected, abs=1e-5)
  assert float(losses.ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_matches_scipy_reference():
  # 40x36 -> scales 40x36, 20x18, 10x9, 5x4, 2x2: windows 11, 11, 9, 4, 2 (even ones off-centre).
  x, y = _images(2), _images(3)
  assert float(losses.ms_ssim(x, y)) == pytest.approx(_ms_ssim_reference(x, y), abs=1e-5)
  assert float(losses.ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_refuses_images_below_16_pixels():
  with pytest.raises(ValueError, match="16x16"):
    losses.ms_ssim(jnp.zeros((1, 15, 32, 1)), jnp.zeros((1, 15, 32, 1)))


def test_mambadfuse_loss_is_zero_for_identical_images():
  a = _images(4)
  total, terms = losses.mambadfuse_loss(a, a, a, ssim_weighting="gradient", **WEIGHTS)
  assert float(total) == pytest.approx(0.0, abs=1e-5)
  assert set(terms) == {"intensity", "gradient", "ssim"}


@pytest.mark.parametrize("weighting", ["gradient", "equal"])
def test_mambadfuse_loss_terms_and_weights(weighting):
  a, b, fused = _images(5), _images(6), _images(7)
  total, terms = losses.mambadfuse_loss(a, b, fused, ssim_weighting=weighting, **WEIGHTS)
  detail_a = float(jnp.mean(losses.sobel_gradient(a)))
  detail_b = float(jnp.mean(losses.sobel_gradient(b)))
  weight_a = detail_a / (detail_a + detail_b) if weighting == "gradient" else 0.5
  expected_ssim = 1 - (weight_a * losses.ssim(a, fused) + (1 - weight_a) * losses.ssim(b, fused))
  assert float(terms["ssim"]) == pytest.approx(float(expected_ssim), abs=1e-6)
  assert float(terms["intensity"]) == pytest.approx(
    np.mean(np.abs(fused - np.maximum(a, b))), rel=1e-5
  )
  expected_total = 2 * terms["intensity"] + 3 * terms["gradient"] + 5 * terms["ssim"]
  assert float(total) == pytest.approx(float(expected_total), rel=1e-6)


def test_mambadfuse_gradient_weighting_of_flat_sources():
  a, fused = _images(8), _images(9)
  flat = jnp.zeros_like(a)
  _, terms = losses.mambadfuse_loss(a, flat, fused, ssim_weighting="gradient", **WEIGHTS)
  assert float(terms["ssim"]) == pytest.approx(float(1 - losses.ssim(a, fused)), abs=1e-6)
  _, terms = losses.mambadfuse_loss(flat, flat, fused, ssim_weighting="gradient", **WEIGHTS)
  expected = 1 - 0.5 * (losses.ssim(flat, fused) + losses.ssim(flat, fused))
  assert float(terms["ssim"]) == pytest.approx(float(expected), abs=1e-6)


def test_fusionmamba_loss_terms_and_clamp():
  a, b = _images(10), _images(11)
  fused = _images(12) * 1.6 - 0.3  # partly outside [0, 1]
  total, terms = losses.fusionmamba_loss(a, b, fused, **WEIGHTS)
  clamped = np.clip(fused, 0, 1)
  assert float(terms["intensity"]) == pytest.approx(
    np.mean((clamped - np.maximum(a, b)) ** 2), rel=1e-5
  )
  expected_ssim = 1 - 0.5 * (_ms_ssim_reference(clamped, a) + _ms_ssim_reference(clamped, b))
  assert float(terms["ssim"]) == pytest.approx(expected_ssim, abs=1e-5)
  assert float(total) == pytest.approx(
    float(losses.fusionmamba_loss(a, b, clamped, **WEIGHTS)[0]), rel=1e-6
  )
  # The clamp stops the gradient at pixels outside [0, 1], as torch.clamp does.
  grad = jax.grad(lambda f: losses.fusionmamba_loss(a, b, f, **WEIGHTS)[0])(fused)
  outside = (fused < 0) | (fused > 1)
  assert outside.any() and not np.any(np.asarray(grad)[outside])
  assert np.all(np.isfinite(grad)) and np.any(np.asarray(grad)[~outside])
