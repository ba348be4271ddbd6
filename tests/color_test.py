"""Tests for fusionjax.color: BT.601 conventions, fusion input, recolouring."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from fusionjax import color
from fusionjax.data import io

REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference"
CONVENTIONS = ("full", "studio")


def _all_corners_and_random(count: int = 20_000) -> np.ndarray:
  """(count + 8, 3) uint8 RGB: the cube's corners plus uniform random colours."""
  corners = np.array(np.meshgrid([0, 255], [0, 255], [0, 255])).reshape(3, -1).T
  rng = np.random.default_rng(0)
  return np.concatenate([corners, rng.integers(0, 256, (count, 3))]).astype(np.uint8)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_rgb_ycbcr_round_trip_is_exact_within_a_grey_level(convention):
  rgb = _all_corners_and_random()
  ycbcr = color.rgb_to_ycbcr(rgb / 255.0, convention)
  back = color.ycbcr_to_rgb(ycbcr, convention)
  assert np.abs(back - rgb / 255.0).max() < 1e-5
  np.testing.assert_array_equal(np.round(back * 255.0).astype(np.uint8), rgb)


def test_full_range_known_values():
  ycbcr = color.rgb_to_ycbcr(np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 0, 1]]), "full")
  np.testing.assert_allclose(ycbcr[0], [0, 0.5, 0.5], atol=1e-7)
  np.testing.assert_allclose(ycbcr[1], [1, 0.5, 0.5], atol=1e-6)
  np.testing.assert_allclose(ycbcr[2], [0.299, 0.5 - 0.299 / 1.772, 1.0], atol=1e-6)
  np.testing.assert_allclose(ycbcr[3], [0.114, 1.0, 0.5 - 0.114 / 1.402], atol=1e-6)


def test_studio_range_matches_matlab_rgb2ycbcr():
  # MATLAB rgb2ycbcr: Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]) ...
  matlab = np.array(
    [
      [65.481, 128.553, 24.966],
      [-37.797, -74.203, 112.0],
      [112.0, -93.786, -18.214],
    ]
  )
  rgb = _all_corners_and_random(1000) / 255.0
  expected = (rgb @ matlab.T + [16.0, 128.0, 128.0]) / 255.0
  np.testing.assert_allclose(color.rgb_to_ycbcr(rgb, "studio"), expected, atol=2e-6)
  black, white = color.rgb_to_ycbcr(np.array([[0, 0, 0], [1, 1, 1]]), "studio")
  np.testing.assert_allclose(black * 255, [16, 128, 128], atol=1e-4)
  np.testing.assert_allclose(white * 255, [235, 128, 128], atol=1e-4)


def test_studio_inverse_uses_the_1164_scale():
  # ycbcr2rgb: R = 1.164 (Y - 16) + 1.596 (Cr - 128), on 0..255 values.
  rgb = color.ycbcr_to_rgb(np.array([100.0, 128.0, 150.0]) / 255.0, "studio")
  assert rgb[0] * 255 == pytest.approx(1.164 * 84 + 1.596 * 22, abs=0.05)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_colour_source_recolours_to_itself(convention):
  rgb = _all_corners_and_random(64 * 64 - 8).reshape(64, 64, 3)
  y, cbcr = color.to_fusion_input(rgb, convention)
  assert y.shape == (64, 64, 1) and y.dtype == np.float32
  assert cbcr.shape == (64, 64, 2) and cbcr.dtype == np.float32
  recoloured = color.recolor(y, cbcr, convention)
  assert recoloured.shape == (64, 64, 3)
  assert np.abs(recoloured - rgb / 255.0).max() < 1e-5


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_grey_sources_stay_grey(convention):
  grey = np.random.default_rng(1).integers(0, 256, (8, 9), dtype=np.uint8)
  for image in (grey, grey[..., None], np.repeat(grey[..., None], 3, axis=-1)):
    y, cbcr = color.to_fusion_input(image, convention)
    assert cbcr is None
    np.testing.assert_array_equal(y[..., 0], grey / np.float32(255.0))
  np.testing.assert_array_equal(color.recolor(y, None, convention), y)


def test_recolor_with_neutral_chroma_gives_grey_rgb():
  y = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4, 1)
  rgb = color.recolor(y, np.full((3, 4, 2), 0.5, np.float32), "full")
  np.testing.assert_allclose(rgb, np.repeat(y, 3, axis=-1), atol=1e-6)


def test_recolor_clips_and_handles_batches():
  fused = np.array([-0.5, 0.3, 1.7], np.float32).reshape(1, 1, 3, 1).repeat(2, axis=0)
  cbcr = np.full((2, 1, 3, 2), 0.5, np.float32)
  rgb = color.recolor(fused, cbcr, "full")
  assert rgb.shape == (2, 1, 3, 3)
  np.testing.assert_allclose(rgb[0, 0, :, 0], [0.0, 0.3, 1.0], atol=1e-6)


def test_sixteen_bit_input_is_scaled_by_65535():
  rng = np.random.default_rng(2)
  rgb8 = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
  rgb16 = rgb8.astype(np.uint16) * 257  # the same colours on the 16-bit scale
  for convention in CONVENTIONS:
    y8, cbcr8 = color.to_fusion_input(rgb8, convention)
    y16, cbcr16 = color.to_fusion_input(rgb16, convention)
    np.testing.assert_allclose(y16, y8, atol=1e-6)
    np.testing.assert_allclose(cbcr16, cbcr8, atol=1e-6)
  grey16 = np.array([[0, 1, 65535]], np.uint16)
  y, cbcr = color.to_fusion_input(grey16)
  assert cbcr is None
  np.testing.assert_allclose(y[0, :, 0], [0, 1 / 65535, 1], rtol=1e-6)


@pytest.mark.parametrize(
  "image, message",
  [
    (np.zeros((4, 4, 4), np.uint8), r"shape \(4, 4, 4\) \(RGBA\?\)"),
    (np.zeros((4, 4, 2), np.uint8), r"shape \(4, 4, 2\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"shape \(2, 4, 4, 3\)"),
    (np.full((4, 4), np.nan, np.float32), "NaN"),
    (np.full((4, 4), 2.0, np.float32), r"must lie in \[0, 1\], got \[2, 2\]"),
    (np.zeros((4, 4), np.int32), "unsupported image dtype int32"),
  ],
)
def test_to_fusion_input_rejects_bad_images(image, message):
  with pytest.raises(ValueError, match=message):
    color.to_fusion_input(image)


def test_bad_convention_and_shapes_are_rejected():
  with pytest.raises(ValueError, match="unknown Y convention 'bt709'"):
    color.to_fusion_input(np.zeros((2, 2), np.uint8), "bt709")
  with pytest.raises(ValueError, match="does not match fused_y shape"):
    color.recolor(np.zeros((4, 4, 1)), np.zeros((4, 5, 2)))
  with pytest.raises(ValueError, match="one channel"):
    color.recolor(np.zeros((4, 4, 3)), None)


def _reference_cases(model: str, task: str):
  folder = REFERENCE / model / task
  if not folder.is_dir():
    pytest.skip(f"reference fixtures not found at {folder}")
  return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def _centre_crop(source: str, info: dict) -> np.ndarray:
  sample = io.sample_dir() / source
  top, left, height, width = info["centre_crop_top_left_h_w"]
  return io.read_image(sample)[top : top + height, left : left + width]


@pytest.mark.parametrize(
  "task, shipped", [("ivf", 4), ("pet_mri", 2), ("spect_mri", 2), ("ct_mri", 2)]
)
def test_studio_y_matches_mambadfuse_official_preprocessing(task, shipped):
  """Quantised studio Y equals, bit for bit, the input fed to the official MambaDFuse."""
  checked = 0
  for info in _reference_cases("mambadfuse", task):
    if not (io.sample_dir() / info["B_source"]).is_file():
      continue  # only some fixture pairs are shipped as samples
    height, width = info["centre_crop_top_left_h_w"][2:]
    fed = np.load(REFERENCE / "mambadfuse" / task / f"{info['name']}_B.npy")[0, 0]
    y, _ = color.to_fusion_input(_centre_crop(info["B_source"], info), "studio", quantize=True)
    np.testing.assert_array_equal(y[..., 0], fed[:height, :width])
    fed_a = np.load(REFERENCE / "mambadfuse" / task / f"{info['name']}_A.npy")[0, 0]
    y_a, cbcr_a = color.to_fusion_input(_centre_crop(info["A_source"], info), "full")
    assert cbcr_a is None
    np.testing.assert_array_equal(y_a[..., 0], fed_a[:height, :width])
    checked += 1
  assert checked == shipped


def test_full_y_matches_s4fusion_official_preprocessing():
  checked = 0
  for info in _reference_cases("s4fusion", "ivf"):
    if not (io.sample_dir() / info["vi_source"]).is_file():
      continue
    (top, bottom), (left, right) = info["output_crop_rows_cols"]
    fed = np.load(REFERENCE / "s4fusion" / "ivf" / f"{info['name']}_vi.npy")[0, 0]
    visible = _centre_crop(info["vi_source"], info)
    y, _ = color.to_fusion_input(visible, "full")
    np.testing.assert_allclose(y[..., 0], fed[top:bottom, left:right], atol=1e-6)
    # S4Fusion's own float32 arithmetic, bit for bit (its official protocol).
    np.testing.assert_array_equal(color.float32_luma(visible), fed[top:bottom, left:right])
    checked += 1
  assert checked == 4


def _fusionmamba_fed(task: str, name: str, side: str) -> tuple[dict, np.ndarray]:
  """(the case's json, its official network input ``side`` as 8-bit levels)."""
  folder = REFERENCE / "fusionmamba" / task
  if not folder.is_dir():
    pytest.skip(f"reference fixtures not found at {folder}")
  fed = np.load(folder / f"{name}_{side}.npy")[0, 0] * 255.0
  np.testing.assert_array_equal(fed, np.round(fed))
  return json.loads((folder / f"{name}.json").read_text()), fed.astype(np.uint8)


def test_libpng_grey_is_what_fusionmamba_read_from_colour_pngs():
  """cv2.imread(..., IMREAD_GRAYSCALE) of a colour PNG: a PET scan fed as it is, a RoadScene
  visible image then resized to 256 x 256 (Pillow bicubic), as FusionMamba's test.py does."""
  info, fed = _fusionmamba_fed("pet_mri", "25015", "B")
  pet = io.read_image(io.sample_dir() / info["B_source"])
  np.testing.assert_array_equal(color.libpng_grey(pet), fed)
  # Rounded BT.601 luma is one level off on 8 % of this scan's pixels.
  rounded = color.to_8_bits(color.rgb_to_ycbcr(pet / 255.0, "full")[..., 0])
  assert np.mean(rounded != fed) > 0.05

  info, fed = _fusionmamba_fed("ivf", "FLIR_00211", "A")
  visible = color.libpng_grey(io.read_image(io.sample_dir() / info["A_source"]))
  assert visible.shape == (301, 496)
  resized = Image.fromarray(visible).resize((256, 256), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(np.asarray(resized), fed)


def test_libpng_grey_and_float32_luma_keep_grey_and_take_only_8_bit_rgb():
  levels = np.arange(256, dtype=np.uint8)
  grey_as_rgb = np.repeat(levels[:, None], 3, axis=-1)
  np.testing.assert_array_equal(color.libpng_grey(grey_as_rgb), levels)
  np.testing.assert_allclose(color.float32_luma(grey_as_rgb), levels / 255.0, atol=1e-7)
  for bad in (grey_as_rgb.astype(np.uint16), grey_as_rgb[:, :1]):
    for function in (color.libpng_grey, color.float32_luma):
      with pytest.raises(ValueError, match="expected 8-bit RGB"):
        function(bad)
