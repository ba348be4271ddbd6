"""``fuse.model_fuser(..., protocol="official")``: each official test script, from the files.

End to end against the official code's saved PNGs (the parity fixtures, made with their seeded
weights; docs/parity.md sections 0 and 5): the source PNGs of one reference case are fused through
``fuse.fuse_pair`` and the written PNG is compared with the official ``<name>_fused.png``. The
network inputs are checked exactly, without a model, by probe fusers whose ``apply`` returns one
input plane. MambaDFuse and S4Fusion were run by the fixtures' maker on 128x128 centre crops of
the sources (cropped before any conversion), FusionMamba on the whole files.
"""

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from fusionjax import baselines, convert, fuse, models

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
needs_shared = pytest.mark.skipif(
  not (REFERENCE.is_dir() and (SHARED / "weights").is_dir() and (SHARED / "data").is_dir()),
  reason=f"reference fixtures, weights and data not found under {SHARED}",
)

# The models' raw-output parity tolerance (tests/models_*_test.py): a pixel whose official value
# lies within this many grey levels of a rounding (or truncation) step may land on either side.
BOUNDARY_LEVELS = 1e-4 * 255
# Measured: 2 pixels differ (by 1 level) for MambaDFuse and S4Fusion, 1 for FusionMamba.
MAX_DIFFERING_PIXELS = 4


@dataclasses.dataclass(frozen=True)
class Case:
  """One reference case: the sources in fusionjax's (a, b) order, how the official output was
  made from its raw output, and what the official network received as (a, b)."""

  model: str
  task: str
  name: str
  source_a: str  # relative to the fixtures' data folder
  source_b: str
  crop: tuple[int, int, int, int] | None  # top, left, height, width; None: whole files
  official_a: str  # the .npy suffixes of the fixture planes a and b correspond to
  official_b: str
  raw_window: tuple[slice, slice]  # the saved part of the official raw output
  rule: str  # "round" (clip, x 255, round) or "stretch" (clip, min-max, x 255, truncate)
  swap_inputs: bool = False  # the official call is model(b, a)

  def fixture(self, suffix: str) -> np.ndarray:
    return np.load(REFERENCE / self.model / self.task / f"{self.name}_{suffix}")[0, 0]


def _case(
  model: str, task: str, name: str, keys: tuple[str, str], official: tuple[str, str], **fields
) -> Case:
  """A case whose source paths (and crop) come from its fixture json's ``keys``."""
  info = json.loads((REFERENCE / model / task / f"{name}.json").read_text())
  crop = info.get("centre_crop_top_left_h_w")
  return Case(
    model, task, name, info[keys[0]], info[keys[1]], crop and tuple(crop), *official, **fields
  )


def _cases() -> dict[str, Case]:
  window_128 = (slice(0, 128), slice(0, 128))
  return (
    {
      # test_MambaDFuse.py: model(A = ir, B = Y(vi)), mirror-padded to 136; crop, round.
      "mambadfuse": _case(
        "mambadfuse",
        "ivf",
        "FLIR_00211",
        ("A_source", "B_source"),
        ("A.npy", "B.npy"),
        raw_window=window_128,
        rule="round",
      ),
      # S4Fusion test.py: model(ir, Y(vi)), zero-padded 2 before, 3 after; crop, round.
      "s4fusion": _case(
        "s4fusion",
        "ivf",
        "FLIR_00211",
        ("ir_source", "vi_source"),
        ("ir.npy", "vi.npy"),
        raw_window=(slice(2, 130), slice(2, 130)),
        rule="round",
      ),
      # FusionMamba test.py: model(A = vi grey, B = ir), both resized to 256; stretch.
      "fusionmamba": _case(
        "fusionmamba",
        "ivf",
        "FLIR_00211",
        ("B_source", "A_source"),
        ("B.npy", "A.npy"),
        raw_window=(slice(None), slice(None)),
        rule="stretch",
        swap_inputs=True,
      ),
    }
    if REFERENCE.is_dir()
    else {}
  )


CASES = _cases()
WEIGHTS = {
  model: SHARED / "weights" / model / "random_init_seed0.safetensors"
  for model in ("mambadfuse", "s4fusion", "fusionmamba")
}


@pytest.fixture(scope="module")
def source_files(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
  """Each case's two source PNGs, cropped as the official run did (modes kept: L, RGB)."""
  folder = tmp_path_factory.mktemp("sources")
  files = {}
  for model, case in CASES.items():
    paths = []
    for side, source in (("a", case.source_a), ("b", case.source_b)):
      image = Image.open(SHARED / "data" / source)
      if case.crop is not None:
        top, left, height, width = case.crop
        image = image.crop((left, top, left + width, top + height))
      paths.append(folder / f"{model}_{side}.png")
      image.save(paths[-1])
    files[model] = tuple(paths)
  return files


def _load_params(model: str):
  """The seeded official-architecture weights through the public converter, with the scan
  implementation that is fastest on a CPU."""
  return convert.convert(convert.load_state_dict(WEIGHTS[model]), model, scan_impl="reference")


def _official_levels(case: Case) -> np.ndarray:
  """The official fused image before its final rounding (truncation), in grey levels."""
  raw = np.clip(case.fixture("out_raw.npy")[case.raw_window], 0.0, 1.0)
  if case.rule == "stretch":
    raw = (raw - raw.min()) / (raw.max() - raw.min())
  return raw * np.float32(255)


def _assert_reproduces_official_png(case: Case, written: Path) -> None:
  """Equal to the official PNG but for a few pixels, each one level off and each at a rounding
  step of the official output, where parity-level float differences may fall either side."""
  saved = np.asarray(Image.open(REFERENCE / case.model / case.task / f"{case.name}_fused.png"))
  if saved.ndim == 3:  # S4Fusion's save_image writes R = G = B
    assert (saved == saved[..., :1]).all()
    saved = saved[..., 0]
  ours = np.asarray(Image.open(written))
  assert ours.shape == saved.shape and ours.dtype == np.uint8
  differs = ours != saved
  assert np.abs(ours.astype(int) - saved).max() <= 1
  assert differs.sum() <= MAX_DIFFERING_PIXELS
  step = 0.5 if case.rule == "round" else 0.0
  distance = np.abs((_official_levels(case) - step + 0.5) % 1.0 - 0.5)
  assert (distance[differs] < BOUNDARY_LEVELS).all(), distance[differs]


# --- end to end ---------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("model", ["mambadfuse", "s4fusion", "fusionmamba"])
def test_official_protocol_reproduces_the_official_saved_png(model, source_files, tmp_path):
  case = CASES[model]
  fuser = fuse.model_fuser(_load_params(model), protocol="official", swap_inputs=case.swap_inputs)
  written = fuse.fuse_pair(fuser, *source_files[model], tmp_path / "fused.png", progress=False)
  _assert_reproduces_official_png(case, written)


# --- what the network receives: probes instead of a model ---------------------------------------


@functools.cache
def _abstract_tiny(model: str) -> nnx.Module:
  return nnx.eval_shape(lambda: models.build(f"{model}_tiny", rngs=nnx.Rngs(0)))


def _probe(model: str, side: str, protocol: str = "official") -> baselines.Fuser:
  """``model``'s fuser (on an abstract tiny model: only its reading is used) whose ``apply``
  returns input plane ``side``, saved by clip, x 255, round: 8-bit planes come back as they
  were."""
  fuser = fuse.model_fuser(_abstract_tiny(model), protocol=protocol)
  take = (lambda params, a, b: a) if side == "a" else (lambda params, a, b: b)
  return dataclasses.replace(fuser, apply=take, params=None, output="clip")


def _grey_levels(plane: np.ndarray) -> np.ndarray:
  levels = plane * 255.0
  np.testing.assert_array_equal(levels, np.round(levels))  # the planes hold 8-bit values
  return levels.astype(np.uint8)


@needs_shared
@pytest.mark.parametrize("model", ["mambadfuse", "fusionmamba"])
def test_official_protocol_feeds_the_official_network_inputs(model, source_files, tmp_path):
  case = CASES[model]
  for side, suffix in (("a", case.official_a), ("b", case.official_b)):
    fed = case.fixture(suffix)
    fed = fed[: case.crop[2], : case.crop[3]] if case.crop else fed  # without MambaDFuse's pad
    written = fuse.fuse_pair(
      _probe(model, side), *source_files[model], tmp_path / f"{side}.png", progress=False
    )
    np.testing.assert_array_equal(np.asarray(Image.open(written)), _grey_levels(fed))


@needs_shared
def test_s4fusion_official_protocol_feeds_the_official_infrared_plane(source_files, tmp_path):
  # The visible plane is float Y, exact in tests/color_test.py (color.float32_luma).
  case = CASES["s4fusion"]
  written = fuse.fuse_pair(
    _probe("s4fusion", "a"), *source_files["s4fusion"], tmp_path / "a.png", progress=False
  )
  fed = case.fixture(case.official_a)[case.raw_window]
  np.testing.assert_array_equal(np.asarray(Image.open(written)), _grey_levels(fed))


def test_mambadfuse_reads_an_rgb_file_as_its_y_file_even_when_grey():
  """MATLAB rgb2ycbcr, which made the official *_Y folders, gives a grey image stored as RGB
  studio-range Y (black 16, white 235); a one-channel image is read as it is (as the official
  CT folder is). The default protocol keeps every grey image as it is."""
  levels = np.array([[0, 128, 255]], np.uint8)
  grey_as_rgb = np.repeat(levels[..., None], 3, axis=-1)
  official = _probe("mambadfuse", "b")
  np.testing.assert_array_equal(fuse.fuse_arrays(official, levels, grey_as_rgb), [[16, 126, 235]])
  np.testing.assert_array_equal(fuse.fuse_arrays(official, levels, levels), levels)
  default = _probe("mambadfuse", "b", protocol="default")
  np.testing.assert_array_equal(fuse.fuse_arrays(default, levels, grey_as_rgb), levels)


def test_fusionmamba_official_protocol_fuses_and_saves_at_256_for_any_size():
  rng = np.random.default_rng(3)
  small = rng.integers(0, 256, (40, 60), dtype=np.uint8)
  fused = fuse.fuse_arrays(_probe("fusionmamba", "a"), small, small)
  expected = Image.fromarray(small).resize((256, 256), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(fused, np.asarray(expected))


def test_unknown_protocol_and_non_8_bit_images_are_refused():
  with pytest.raises(
    ValueError, match="unknown protocol 'offical'; choose one of default, official"
  ):
    fuse.model_fuser(_abstract_tiny("s4fusion"), protocol="offical")
  sixteen_bit = np.zeros((8, 8), np.uint16)
  with pytest.raises(
    ValueError,
    match=r"protocol 'official' reads 8-bit images.*got uint16.*"
    r"\(files image_a, image_b\)",
  ):
    fuse.fuse_arrays(_probe("s4fusion", "a"), sixteen_bit, sixteen_bit)


def test_a_16_bit_file_is_refused_before_any_pair_is_fused(tmp_path):
  rng = np.random.default_rng(4)
  for modality in ("a", "b"):
    (tmp_path / modality).mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
      tmp_path / modality / "p0.png"
    )
    Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16)).save(
      tmp_path / modality / "p1.png"
    )
  with pytest.raises(fuse.InputError, match=r"reads 8-bit images.*got uint16.*p1\.png"):
    fuse.fuse_folders(
      _probe("s4fusion", "a"), tmp_path / "a", tmp_path / "b", tmp_path / "out", progress=False
    )
  assert not (tmp_path / "out").exists()
