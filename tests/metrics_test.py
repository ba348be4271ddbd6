"""Tests for fusionjax.metrics: hand-computed cases, identities, input checks, reference values."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

import fusionjax.metrics as metrics

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "metrics_reference.json"
REFERENCE = json.loads(FIXTURE.read_text())

needs_shared_data = pytest.mark.skipif(
  not SHARED_DATA.is_dir(),
  reason=f"shared image data not found at {SHARED_DATA} (expected ../shared/data)",
)


def _texture(seed: int, shape=(64, 72)) -> np.ndarray:
  """Smooth-ish random integer image on 0..255 (float64)."""
  rng = np.random.default_rng(seed)
  noise = rng.normal(size=shape)
  smooth = np.cumsum(np.cumsum(noise, axis=0), axis=1)
  smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
  return np.round(smooth * 200 + rng.integers(0, 40, size=shape))


# --- hand-computed cases ------------------------------------------------------------------------


def test_entropy_hand_cases():
  assert metrics.entropy(np.full((4, 4), 17.0)) == 0.0
  assert metrics.entropy(np.array([[0, 255], [255, 0]])) == pytest.approx(1.0, abs=1e-15)
  assert metrics.entropy(np.array([[0, 1], [2, 3]])) == pytest.approx(2.0, abs=1e-15)
  # F is rounded first: 0.4 -> 0 and 2.6 -> 3.
  assert metrics.entropy(np.array([[0.4, 0.0], [2.6, 3.0]])) == pytest.approx(1.0, abs=1e-15)


def test_standard_deviation_and_spatial_frequency_hand_cases():
  image = np.array([[0.0, 2.0], [0.0, 2.0]])
  assert metrics.standard_deviation(image) == pytest.approx(1.0)
  # Horizontal differences are all 2 (RF^2 = 4), vertical all 0.
  assert metrics.spatial_frequency(image) == pytest.approx(2.0)


def test_average_gradient_conventions_hand_case():
  ramp = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
  # gx = 1 everywhere (one-sided on the borders, central inside), gy = 0: sqrt(1/2) per pixel.
  assert metrics.average_gradient(ramp) == pytest.approx(math.sqrt(0.5))
  assert metrics.average_gradient(ramp, convention="matlab") == pytest.approx(
    9 * math.sqrt(0.5) / 4
  )


def test_mutual_information_hand_cases():
  f = np.array([[0, 0], [255, 255]])
  b = np.array([[0, 255], [0, 255]])  # independent of f
  assert metrics.mutual_information(f, b, f) == pytest.approx(math.log(2))
  assert metrics.mutual_information(f, b, f, convention="matlab") == pytest.approx(1.0)
  # MATLAB's joint histogram merges 254 and 255, so F = A = {254, 255} looks like one joint bin.
  top = np.array([[254, 254], [255, 255]])
  assert metrics.mutual_information(top, top, top) == pytest.approx(2 * math.log(2))
  assert metrics.mutual_information(top, top, top, convention="matlab") == pytest.approx(4.0)


def test_mse_and_psnr_hand_cases():
  a, b, f = np.zeros((2, 2)), np.full((2, 2), 2.0), np.ones((2, 2))
  assert metrics.mean_squared_error(a, b, f) == pytest.approx(1.0)
  assert metrics.mean_squared_error(a, b, f, convention="matlab") == pytest.approx(1 / 255**2)
  assert metrics.psnr(a, b, f) == pytest.approx(0.0, abs=1e-12)  # peak is max(F) = 1
  assert metrics.psnr(a, b, f, convention="matlab") == pytest.approx(20 * math.log10(255**2))


def test_correlation_and_scd_hand_cases():
  a, b = _texture(1, (16, 16)) / 2, _texture(2, (16, 16)) / 2
  assert metrics.correlation_coefficient(a, 255 - a, a) == pytest.approx(0.0, abs=1e-12)
  # F = A + B: F - B = A and F - A = B, so both correlations are 1.
  assert metrics.scd(a, b, a + b) == pytest.approx(2.0)
  assert math.isnan(metrics.scd(a, b, a))


def test_qabf_keeps_the_equal_gradient_quirk():
  # On a 0/255 image every non-zero Sobel magnitude is >= 255.  With F = A = B,
  # the references set G = gF (not 1) where the gradients are equal, so the
  # strength sigmoid saturates at Tg and every edge pixel scores the same.
  image = np.zeros((8, 9))
  image[:, 4:] = 255
  expected = 0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2))
  assert metrics.qabf(image, image, image) == pytest.approx(expected, rel=1e-12)


def test_nabf_and_fmi_of_identical_images():
  image = _texture(3)
  assert metrics.nabf(image, image, image) == 0.0
  assert metrics.fmi(image[:12, :12], image[:12, :12], image[:12, :12]) == 1.0


def test_vif_nan_rule_per_convention():
  flat = np.full((48, 48), 90.0)
  texture = _texture(4, (48, 48))
  # A constant source gives VIF 0/0 at every scale: 1.0 in the Python evaluator, NaN in MATLAB.
  assert metrics.vif(flat, texture, texture) == pytest.approx(2.0)
  assert math.isnan(metrics.vif(flat, texture, texture, convention="matlab"))


def test_rgb_to_grey_hand_cases():
  rgb = np.array([[[255, 255, 255], [255, 0, 0]], [[0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
  np.testing.assert_array_equal(metrics.rgb_to_grey(rgb), [[255, 76], [150, 29]])


# --- identities -----------------------------------------------------------------------------------


def test_ssim_of_identical_images():
  image = _texture(5)
  assert metrics.ssim(image, image, image) == pytest.approx(2.0, abs=1e-12)
  assert metrics.ssim(image, image, image, reduction="mean") == pytest.approx(1.0, abs=1e-12)
  assert metrics.ssim(image, image, image, convention="matlab") == pytest.approx(1.0, abs=1e-12)
  flat = np.full((16, 16), 40.0)
  assert metrics.ssim(flat, flat, flat) == pytest.approx(2.0, abs=1e-12)


def test_vif_and_ms_ssim_of_identical_images():
  image = _texture(6)
  assert metrics.vif(image, image, image) == pytest.approx(2.0, abs=1e-9)
  # The desired patch is rescaled to norm ||x - mu|| + 0.001, so not exactly 1.
  assert metrics.ms_ssim_mef(image, image, image) == pytest.approx(1.0, abs=1e-4)


def test_psnr_of_identical_images_is_infinite():
  image = _texture(7)
  assert metrics.psnr(image, image, image) == math.inf


def test_entropy_ignores_pixel_order():
  image = _texture(8)
  shuffled = np.random.default_rng(0).permutation(image.ravel()).reshape(image.shape)
  assert metrics.entropy(shuffled) == pytest.approx(metrics.entropy(image), abs=1e-12)


def test_mutual_information_is_symmetric():
  x, y = _texture(9), _texture(10)
  assert metrics.mutual_information(x, x, y) == pytest.approx(
    metrics.mutual_information(y, y, x), abs=1e-12
  )
  assert metrics.mutual_information(x, y, x) == pytest.approx(
    metrics.mutual_information(y, x, x), abs=1e-12
  )
  for convention in ("python", "matlab"):
    assert metrics.mutual_information(x, x, y, convention=convention) == pytest.approx(
      metrics.mutual_information(y, y, x, convention=convention), abs=1e-12
    )


def test_matlab_conventions_relate_to_python_ones():
  a, b = _texture(11), _texture(12)
  f = np.round((a + b) / 2)
  python = metrics.evaluate(a, b, f)
  matlab = metrics.evaluate(a, b, f, convention="matlab")
  height, width = f.shape
  assert matlab["AG"] == pytest.approx(python["AG"] * height * width / ((height - 1) * (width - 1)))
  assert matlab["MSE"] == pytest.approx(python["MSE"] / 255**2)
  peak = f.max()
  assert matlab["PSNR"] == pytest.approx(
    python["PSNR"] + 20 * math.log10(255) + 20 * math.log10(255 / peak)
  )
  assert f.max() < 254  # no 254/255 levels, so MATLAB's MI is exactly the python value in bits
  assert matlab["MI"] == pytest.approx(python["MI"] / math.log(2))
  for key in ("EN", "SD", "SF", "CC", "SCD", "VIF", "Qabf"):
    assert matlab[key] == python[key]


def test_nabf_legacy_argument_order_swaps_fused_and_first_source():
  a, b, f = _texture(13), _texture(14), _texture(15)
  assert metrics.nabf(a, b, f, legacy_tang_argorder=True) == pytest.approx(metrics.nabf(b, f, a))


def test_evaluate_batch_matches_evaluate():
  a = [_texture(20), _texture(21), _texture(22, (48, 50))]
  b = [_texture(23), _texture(24), _texture(25, (48, 50))]
  f = [np.maximum(x, y) for x, y in zip(a, b, strict=True)]
  names = list(metrics.DEFAULT_METRICS) + ["MS_SSIM", "Nabf"]
  batch = metrics.evaluate_batch(a, b, f, metrics=names)
  stacked = metrics.evaluate_batch(
    np.stack(a[:2]), np.stack(b[:2]), np.stack(f[:2]), chunk_pixels=1, workers=2
  )
  for index in range(3):
    single = metrics.evaluate(a[index], b[index], f[index], metrics=names)
    for name in names:
      assert batch[name][index] == pytest.approx(single[name], rel=1e-12), name
      if index < 2 and name in stacked:
        assert stacked[name][index] == pytest.approx(single[name], rel=1e-12), name


def test_evaluate_returns_the_twelve_keys_in_order():
  a, b = _texture(30), _texture(31)
  result = metrics.evaluate(a, b, np.round((a + b) / 2))
  assert tuple(result) == (
    "EN",
    "SD",
    "SF",
    "AG",
    "MI",
    "SCD",
    "VIF",
    "Qabf",
    "SSIM",
    "PSNR",
    "CC",
    "MSE",
  )
  assert all(isinstance(value, float) for value in result.values())


# --- input validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  ("a", "b", "f", "message"),
  [
    (np.zeros((8, 8)), np.zeros((8, 9)), np.zeros((8, 8)), "same shape"),
    (np.zeros((8, 8, 3)), np.zeros((8, 8)), np.zeros((8, 8)), "a must be a 2-D grey image"),
    (np.zeros((8, 8)), np.zeros((8, 8)), np.zeros(8), "f must be a 2-D grey image"),
    (np.zeros((8, 8)), np.full((8, 8), np.nan), np.zeros((8, 8)), "b contains NaN"),
    (np.zeros((8, 8)), np.zeros((8, 8)), np.full((8, 8), np.inf), "f contains NaN or infinite"),
    (np.zeros((8, 8)), np.zeros((8, 8)), np.full((8, 8), 256.0), "0..255 scale"),
    (np.full((8, 8), -1.0), np.zeros((8, 8)), np.zeros((8, 8)), "0..255 scale"),
    (np.zeros((8, 8), dtype=bool), np.zeros((8, 8)), np.zeros((8, 8)), "dtype bool"),
    (np.zeros((0, 8)), np.zeros((0, 8)), np.zeros((0, 8)), "a is empty"),
    (np.zeros((8, 8)), np.zeros((8, 8)), np.full((8, 8), "1"), "f must hold real grey levels"),
  ],
)
def test_bad_images_raise_value_errors_naming_the_problem(a, b, f, message):
  with pytest.raises(ValueError, match=message):
    metrics.evaluate(a, b, f, metrics=["MSE"])


def test_unit_scale_data_is_refused_with_a_hint():
  """0..1 floats where 0..255 is due would score EN about 0.01: refused, in both entry points."""
  a, b, f = (_texture(seed, (48, 48)) / 255 for seed in (50, 51, 52))
  with pytest.raises(ValueError, match="float values in \\[0, 1\\].*multiply 0..1 images by 255"):
    metrics.evaluate(a, b, f)
  with pytest.raises(ValueError, match="triple 0: a, b and f all hold float values in"):
    metrics.evaluate_batch([a], [b], [f], metrics=["EN"])
  assert metrics.evaluate(a * 255, b * 255, f * 255, metrics=["EN"])["EN"] > 1


def test_colour_input_error_suggests_conversion():
  with pytest.raises(ValueError, match="rgb_to_grey"):
    metrics.entropy(np.zeros((8, 8, 3)))


def test_images_too_small_for_a_metric_are_rejected():
  small = np.zeros((30, 30))
  with pytest.raises(ValueError, match="VIF needs images of at least 41x41"):
    metrics.evaluate(small, small, small)
  with pytest.raises(ValueError, match="MS_SSIM needs images of at least 44x44"):
    metrics.ms_ssim_mef(small, small, small)
  assert metrics.evaluate(small, small, small, metrics=["EN", "SSIM"])["EN"] == 0.0


def test_bad_options_are_rejected():
  image = _texture(40)
  with pytest.raises(ValueError, match="convention"):
    metrics.evaluate(image, image, image, convention="octave")
  with pytest.raises(ValueError, match="unknown metric"):
    metrics.evaluate(image, image, image, metrics=["VIFF"])
  with pytest.raises(ValueError, match="sequence of metric names"):
    metrics.evaluate(image, image, image, metrics="VIF")
  with pytest.raises(ValueError, match="reduction"):
    metrics.ssim(image, image, image, reduction="max")
  with pytest.raises(ValueError, match="feature"):
    metrics.fmi(image, image, image, feature="edge")
  with pytest.raises(ValueError, match="odd"):
    metrics.fmi(image, image, image, window=4)


def test_evaluate_batch_rejects_bad_batches():
  image = _texture(41)
  with pytest.raises(ValueError, match="workers must be >= 1"):
    metrics.evaluate_batch([image], [image], [image], workers=0)
  with pytest.raises(ValueError, match="same number of images"):
    metrics.evaluate_batch([image, image], [image], [image, image])
  with pytest.raises(ValueError, match="triple 1: f contains NaN"):
    metrics.evaluate_batch([image, image], [image, image], [image, np.full_like(image, np.nan)])
  with pytest.raises(ValueError, match=r"a must be an \(N, H, W\) stack .* shape \(64, 72\)"):
    metrics.evaluate_batch(image, [image], [image])
  with pytest.raises(ValueError, match="triple 0: a must be a 2-D grey image"):
    metrics.evaluate_batch([image[None]], [image], [image])


# --- reference values from the real evaluators --------------------------------------------------


def _load_grey(dataset: str, split: str, relative: str) -> np.ndarray:
  from PIL import Image

  with Image.open(SHARED_DATA / dataset / split / relative) as image:
    return metrics.rgb_to_grey(np.asarray(image))


def _fuse(a: np.ndarray, b: np.ndarray, rule: str) -> np.ndarray:
  return {
    "mean": lambda: np.round((a + b) / 2),
    "max": lambda: np.maximum(a, b),
    "copy_a": lambda: a,
  }[rule]()


def _sha256(grey: np.ndarray) -> str:
  return hashlib.sha256(grey.astype(np.uint8).tobytes()).hexdigest()


PYTHON_CASES = REFERENCE["python_evaluator"]["cases"]
OCTAVE_CASES = REFERENCE["matlab_toolbox_octave"]["cases"]


@needs_shared_data
@pytest.mark.parametrize(
  "case", PYTHON_CASES, ids=lambda c: f"{c['dataset']}-{c['b']}-{c['fusion']}"
)
def test_matches_the_cddfuse_python_evaluator(case):
  a = _load_grey(case["dataset"], case["split"], case["a"])
  b = _load_grey(case["dataset"], case["split"], case["b"])
  assert _sha256(a) == case["a_grey_sha256"] and _sha256(b) == case["b_grey_sha256"], (
    "grey inputs differ"
  )
  ours = metrics.evaluate(a, b, _fuse(a, b, case["fusion"]))
  for name, expected in case["values"].items():
    if expected is None:
      assert math.isnan(ours[name]), name
    else:
      # float64 against the evaluator's float32 SSIM/Qabf stays within 1e-5.
      assert ours[name] == pytest.approx(expected, rel=1e-5), name


@needs_shared_data
@pytest.mark.parametrize(
  "case", OCTAVE_CASES, ids=lambda c: f"{c['dataset']}-{c['b']}-{c['fusion']}"
)
def test_matches_the_matlab_toolbox_run_under_octave(case):
  rows, cols = slice(*case["rows"]), slice(*case["cols"])
  a = _load_grey(case["dataset"], case["split"], case["a"])[rows, cols]
  b = _load_grey(case["dataset"], case["split"], case["b"])[rows, cols]
  f = _fuse(a, b, case["fusion"])
  expected = dict(case["values"])
  legacy_nabf = expected.pop("Nabf_legacy")
  ours = metrics.evaluate(a, b, f, convention="matlab", metrics=list(expected))
  for name, value in expected.items():
    assert ours[name] == pytest.approx(value, rel=1e-9), name
  assert metrics.nabf(a, b, f, legacy_tang_argorder=True) == pytest.approx(legacy_nabf, rel=1e-9)


@pytest.mark.parametrize("case", REFERENCE["matlab_toolbox_octave"]["tiny_fmi_cases"])
def test_fmi_single_window_cases_match_octave(case):
  a, b, f = (np.array(case[key], dtype=float) for key in "abf")
  assert metrics.fmi(a, b, f, feature=case["feature"]) == pytest.approx(case["value"], rel=1e-12)


@needs_shared_data
def test_evaluate_batch_over_real_pairs_of_different_sizes():
  cases = PYTHON_CASES[:3] + PYTHON_CASES[-1:]
  a = [_load_grey(c["dataset"], c["split"], c["a"]) for c in cases]
  b = [_load_grey(c["dataset"], c["split"], c["b"]) for c in cases]
  f = [_fuse(x, y, c["fusion"]) for x, y, c in zip(a, b, cases, strict=True)]
  batch = metrics.evaluate_batch(a, b, f)
  for index, case in enumerate(cases):
    for name, expected in case["values"].items():
      assert batch[name][index] == pytest.approx(expected, rel=1e-5), (index, name)


# --- building blocks of the fast paths -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 41, 64), (1, 45, 57), (3, 17, 30)])
@pytest.mark.parametrize("size", [3, 7, 9, 17])
def test_band_matrix_filters_match_convolve2d(shape, size):
  from scipy.signal import convolve2d

  from fusionjax.metrics import windows

  images = np.random.default_rng(size).integers(0, 256, size=shape).astype(float)
  taps = windows.gaussian_taps(size, size / 5.0)
  kernel = np.rot90(np.outer(taps, taps), 2)
  expected = np.stack([convolve2d(image, kernel, mode="valid") for image in images])
  np.testing.assert_allclose(windows.filter_valid(images, taps), expected, rtol=1e-13)
  np.testing.assert_allclose(
    windows.filter_valid(images, taps, step=2), expected[:, ::2, ::2], rtol=1e-13
  )
  wide = windows.filter_valid_wide(images, taps)
  assert wide.shape == expected.shape[:2] + shape[-1:] and np.all(np.isfinite(wide))
  np.testing.assert_allclose(wide[..., : expected.shape[-1]], expected, rtol=1e-13)
  box = np.stack([convolve2d(image, np.ones((size, size)), mode="valid") for image in images])
  np.testing.assert_array_equal(windows.box_sums_valid(images, size), box)  # integer sums: exact
  padded = np.pad(images, [(0, 0), (size // 2, size // 2), (size // 2, size // 2)], mode="edge")
  np.testing.assert_allclose(
    windows.filter_same(images, taps, pad_mode="edge"),
    np.stack([convolve2d(image, kernel, mode="valid") for image in padded]),
    rtol=1e-13,
  )


@pytest.mark.parametrize("height", [7, 17, 41, 100, 481])
@pytest.mark.parametrize("window", [1, 3, 7, 17])
def test_row_strips_cover_every_output_row_once(height, window):
  from fusionjax.metrics import windows

  if height < window:
    return
  strips = windows.row_strips((3, 2, height, 640), window)
  outputs = [row for rows in strips for row in range(rows.start, rows.stop - window + 1)]
  assert outputs == list(range(height - window + 1))
  assert all(rows.stop <= height for rows in strips)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 9, 17, 640])
def test_vif_log_sums_of_products_match_summed_logs(count):
  from fusionjax.metrics import visual_information

  terms = 1.0 + np.random.default_rng(count).random((2, 1, 1, count)) * 8000.0
  expected = np.log10(terms).sum(axis=(-2, -1))
  np.testing.assert_allclose(visual_information._log10_sum(terms.copy()), expected, rtol=1e-14)


def test_qabf_treats_negative_zero_grey_levels_as_zero():
  # A flat -0.0 band on the right border puts sx = (-0) - (+0) = -0 next to the zero padding;
  # its orientation must still be pi/2, where B's edges weigh it.
  a, b = _texture(60), _texture(61)
  f = np.round((a + b) / 2)
  f[:, -20:] = 0.0
  negative = np.where(f == 0, -0.0, f)
  assert np.signbit(negative).any()
  assert metrics.qabf(a, b, negative) == metrics.qabf(a, b, f)
