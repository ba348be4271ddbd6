"""The terms the papers' losses share: Sobel gradients, SSIM, MS-SSIM, max-intensity and
max-gradient L1, as their official code computes them.

Every image is a `fusionjax.shapes.Planes`: `a` and `b` the two sources in the order the
model takes them, `fused` the model output. Each paper's loss (`fusionjax.losses.<family>`)
returns `(total, terms)`: the weighted scalar sum and a dict of its unweighted scalar terms
("intensity", "gradient", "ssim").
All functions are pure and jit/grad/vmap-friendly.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.shapes import Features, Planes

SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], np.float32)
SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], np.float32)
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # dynamic range 1
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

Terms = dict[str, jax.Array]
# (a, b, fused) -> (total, {term: value}), scalars.
Loss = Callable[[Planes, Planes, Planes], tuple[jax.Array, Terms]]


def filter2d(x: Features, kernel: np.ndarray, padding: int) -> Features:
  """Cross-correlation of each channel with a 2-D kernel (PyTorch conv2d with groups=C).

  kernel: (kh, kw); zero `padding` on every side.
  Returns (batch, H + 2 padding - kh + 1, W + 2 padding - kw + 1, C).
  """
  channels = x.shape[-1]
  weights = jnp.broadcast_to(
    jnp.asarray(kernel, x.dtype)[:, :, None, None], kernel.shape + (1, channels)
  )
  return jax.lax.conv_general_dilated(
    x,
    weights,
    window_strides=(1, 1),
    padding=((padding, padding), (padding, padding)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
  )


def sobel_gradient(x: Features) -> Features:
  """|Sobel_x * x| + |Sobel_y * x|, zero padding 1, same shape."""
  return jnp.abs(filter2d(x, SOBEL_X, 1)) + jnp.abs(filter2d(x, SOBEL_Y, 1))


def gaussian_window(size: int, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """Normalised (size, size) Gaussian centred on size // 2, as pytorch-ssim builds it."""
  offsets = np.arange(size, dtype=np.float64) - size // 2
  profile = np.exp(-(offsets**2) / (2 * sigma**2))
  profile /= profile.sum()
  return np.outer(profile, profile).astype(np.float32)


def _ssim_and_contrast_structure(
  x: Features, y: Features, window: np.ndarray, padding: int
) -> tuple[jax.Array, jax.Array]:
  """Mean SSIM and mean contrast-structure term over everything."""
  mu_x, mu_y = filter2d(x, window, padding), filter2d(y, window, padding)
  var_x = filter2d(x * x, window, padding) - mu_x**2
  var_y = filter2d(y * y, window, padding) - mu_y**2
  cov = filter2d(x * y, window, padding) - mu_x * mu_y
  contrast_structure = (2 * cov + SSIM_C2) / (var_x + var_y + SSIM_C2)
  luminance = (2 * mu_x * mu_y + SSIM_C1) / (mu_x**2 + mu_y**2 + SSIM_C1)
  return jnp.mean(luminance * contrast_structure), jnp.mean(contrast_structure)


def ssim(x: Features, y: Features) -> jax.Array:
  """SSIM of pytorch-ssim (MambaDFuse's loss_ssim.py), a scalar.

  11x11 Gaussian window (sigma 1.5), zero padding 5 ("same" size), C1 = 0.01^2, C2 = 0.03^2
  (dynamic range 1); the SSIM map is averaged over batch, pixels and channels.
  """
  return _ssim_and_contrast_structure(x, y, gaussian_window(SSIM_WINDOW), SSIM_WINDOW // 2)[0]


def _average_pool_2x2(x: Features) -> Features:
  """PyTorch avg_pool2d(x, 2): odd sizes drop the last row/column."""
  batch, height, width, channels = x.shape
  x = x[:, : height // 2 * 2, : width // 2 * 2]
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


def ms_ssim(x: Features, y: Features) -> jax.Array:
  """Normalised MS-SSIM of FusionMamba's bundled `pytorch_msssim` (msssim(normalize=True)).

  Five scales with 2x2 average pooling between them; per scale an SSIM with a Gaussian window
  of min(11, H, W) pixels (sigma 1.5) and no padding ("valid"), C1 = 0.01^2, C2 = 0.03^2 (the
  range the code detects for [0, 1] inputs). Per scale the mean SSIM s_i and the mean
  contrast-structure cs_i are mapped v -> (v + 1) / 2, and the result is the code's
  prod_{i<4} cs_i^{w_i} * s_4^{w_4} with w = MS_SSIM_WEIGHTS. A scalar.

  H, W >= 16 (the fifth scale needs one pixel).
  """
  if min(x.shape[1:3]) < 2 ** (len(MS_SSIM_WEIGHTS) - 1):
    raise ValueError(f"ms_ssim needs images of at least 16x16 pixels, got {x.shape[1:3]}")
  ssims, contrast_structures = [], []
  for scale in range(len(MS_SSIM_WEIGHTS)):
    if scale:
      x, y = _average_pool_2x2(x), _average_pool_2x2(y)
    window = gaussian_window(min(SSIM_WINDOW, *x.shape[1:3]))
    mean_ssim, mean_cs = _ssim_and_contrast_structure(x, y, window, padding=0)
    ssims.append(mean_ssim)
    contrast_structures.append(mean_cs)
  weights = jnp.asarray(MS_SSIM_WEIGHTS)
  ssim_powers = ((jnp.stack(ssims) + 1) / 2) ** weights
  cs_powers = ((jnp.stack(contrast_structures) + 1) / 2) ** weights
  return jnp.prod(cs_powers[:-1] * ssim_powers[-1])


def max_intensity_l1(a: Features, b: Features, fused: Features) -> jax.Array:
  """mean |fused - max(a, b)|, a scalar."""
  return jnp.mean(jnp.abs(fused - jnp.maximum(a, b)))


def max_gradient_l1(a: Features, b: Features, fused: Features) -> jax.Array:
  """mean |S(fused) - max(S(a), S(b))| with S = `sobel_gradient`, a scalar (texture loss)."""
  target = jnp.maximum(sobel_gradient(a), sobel_gradient(b))
  return jnp.mean(jnp.abs(sobel_gradient(fused) - target))
