"""Inference: tiling and blending, memory budget, sizes, colour, 16-bit, batching, files, errors."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from fusionjax import baselines, color, fuse, models
from fusionjax.data import builders, io
from fusionjax.fuse import tiling
from fusionjax.models import s4fusion

SAMPLES = io.sample_dir()
# Tiled vs whole-image inference of a random-init tiny model on a 96x160 crop, tile 64, overlap
# 24 (measured: max 1 grey level, mean 2e-4).
MODEL_TILE_MAX_LEVELS = 1
MODEL_TILE_MEAN_LEVELS = 0.01


@pytest.fixture(scope="module")
def roadscene():
  """A real infrared (grey) / visible (RGB) pair, 301x496."""
  return (
    io.read_image(SAMPLES / "roadscene/test/ir/FLIR_00211.png"),
    io.read_image(SAMPLES / "roadscene/test/vi/FLIR_00211.png"),
  )


@pytest.fixture(scope="module")
def tiny_model():
  return fuse.model_fuser(models.init(0, "mambadfuse_tiny"))


def _save(array: np.ndarray, path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _read_png(path) -> np.ndarray:
  return np.asarray(Image.open(path))


# --- tiling geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  "size, tile, overlap, align",
  [(100, 40, 10, 1), (97, 30, 7, 1), (304, 128, 32, 8), (496, 288, 128, 8), (64, 64, 16, 1)],
)
def test_tiles_cover_the_axis_on_the_grid(size, tile, overlap, align):
  starts = tiling.tile_starts(size, tile, overlap, align)
  assert starts[0] == 0 and starts[-1] + tile == size
  assert all(start % align == 0 for start in starts)
  gaps = np.diff(starts)
  assert np.all(gaps > 0) and np.all(gaps <= tile - overlap)


def test_windows_cross_fade_to_one_and_ignore_tile_borders():
  tile, overlap = 64, 32
  size = tile + 3 * (tile - overlap)  # neighbours overlap by exactly `overlap`
  starts = tiling.tile_starts(size, tile, overlap)
  windows = tiling.tile_windows(size, tile, overlap)
  coverage = np.zeros(size)
  for start, window in zip(starts, windows):
    coverage[start : start + tile] += window
  np.testing.assert_allclose(coverage, 1.0, atol=1e-12)
  inner = windows[1]
  assert np.all(inner[: overlap // 4] == 0) and np.all(inner[-(overlap // 4) :] == 0)
  assert windows[0][0] == 1 and windows[-1][-1] == 1  # image borders are not faded


# --- tiled == whole-image inference ------------------------------------------------------------


@pytest.mark.parametrize("name", ["mean", "max_absolute"])
def test_pixelwise_baselines_tile_exactly(roadscene, name):
  fuser = baselines.get(name)
  whole = fuse.fuse_arrays(fuser, *roadscene)
  tiled = fuse.fuse_arrays(fuser, *roadscene, fuse.Options(tile_size=96, overlap=32))
  np.testing.assert_array_equal(tiled, whole)


def test_laplacian_pyramid_tiles_exactly_with_its_overlap(roadscene):
  fuser = baselines.get("laplacian_pyramid")
  whole = fuse.fuse_arrays(fuser, *roadscene)
  tiled = fuse.fuse_arrays(fuser, *roadscene, fuse.Options(tile_size=288))  # overlap 128
  np.testing.assert_array_equal(tiled, whole)
  # The check is sensitive: an overlap whose discarded quarter (8 pixels) is smaller than the
  # pyramid's 28-pixel reach does change the result.
  short = fuse.fuse_arrays(fuser, *roadscene, fuse.Options(tile_size=128, overlap=32))
  assert np.any(short != whole)


def test_model_tiles_within_tolerance(roadscene, tiny_model):
  a, b = (image[:96, :160] for image in roadscene)
  whole = fuse.fuse_arrays(tiny_model, a, b).astype(int)
  tiled = fuse.fuse_arrays(tiny_model, a, b, fuse.Options(tile_size=64, overlap=24)).astype(int)
  difference = np.abs(tiled - whole)
  assert difference.max() <= MODEL_TILE_MAX_LEVELS
  assert difference.mean() <= MODEL_TILE_MEAN_LEVELS


def _grid_means(params, a, b):
  """A stand-in for S4Fusion's sampling: zero-pads as S4Fusion does (centred, to 12 k + 1),
  averages (a + b) / 2 over the 12 x 12 cells of that padded grid, crops back."""
  del params
  mean = (a + b) / 2
  height, width = mean.shape[1:3]
  pads = [
    ((padded - size) // 2, padded - size - (padded - size) // 2)
    for size, padded in ((size, s4fusion.padded_size(size)) for size in (height, width))
  ]
  grid = jnp.pad(mean, [(0, 0), *pads, (0, 0)])
  rows, cols = grid.shape[1] // 12, grid.shape[2] // 12
  cells = grid[:, : rows * 12, : cols * 12].reshape(-1, rows, 12, cols, 12, 1).mean((2, 4))
  spread = jnp.repeat(jnp.repeat(cells, 12, 1), 12, 2)
  spread = jnp.pad(
    spread, [(0, 0), (0, grid.shape[1] - rows * 12), (0, grid.shape[2] - cols * 12), (0, 0)]
  )
  return spread[:, pads[0][0] : pads[0][0] + height, pads[1][0] : pads[1][0] + width]


def test_tiles_keep_to_a_centred_sampling_grid():
  abstract = nnx.eval_shape(lambda: models.build("s4fusion_tiny", rngs=nnx.Rngs(0)))
  grid = fuse.model_fuser(abstract)
  assert grid.tile_grid == 12 and grid.tile_offset(96) == 0 and grid.tile_offset(160) == 4
  fuser = baselines.Fuser(
    "grid_means", _grid_means, tile_grid=grid.tile_grid, tile_offset=grid.tile_offset, overlap=24
  )
  rng = np.random.default_rng(5)
  a, b = (rng.integers(0, 256, (100, 170), dtype=np.uint8) for _ in range(2))
  whole = fuse.fuse_arrays(fuser, a, b)
  options = fuse.Options(tile_size=60)
  np.testing.assert_array_equal(fuse.fuse_arrays(fuser, a, b, options), whole)
  off_grid = dataclasses.replace(fuser, tile_offset=None)
  assert np.any(fuse.fuse_arrays(off_grid, a, b, options) != whole)


def test_memory_budget_switches_to_tiles_that_fit(roadscene):
  fuser = baselines.get("max_absolute")
  height, width = roadscene[0].shape[:2]
  whole_bytes = fuse.compiled_call(fuser, 1, height, width).device_bytes
  budget = whole_bytes // 3
  plan = tiling.plan(
    lambda *shape: fuse.compiled_call(fuser, *shape),
    height,
    width,
    1,
    batch_size=4,
    memory_budget=budget,
    tile_size=None,
    overlap=32,
  )
  assert plan.tile is not None and max(plan.tile) < max(height, width)
  assert plan.call.device_bytes <= budget
  np.testing.assert_array_equal(
    fuse.fuse_arrays(fuser, *roadscene, fuse.Options(memory_budget=budget)),
    fuse.fuse_arrays(fuser, *roadscene),
  )
  with pytest.raises(fuse.PlanError, match="memory budget of 1024 bytes"):
    fuse.fuse_arrays(fuser, *roadscene, fuse.Options(memory_budget=1024))
  with pytest.raises(fuse.PlanError, match=r"tile_size \(64\) must exceed twice the overlap"):
    fuse.fuse_arrays(fuser, *roadscene, fuse.Options(tile_size=64, overlap=32))


# --- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (17, 31), (30, 19)])
def test_small_and_odd_sizes_baselines(shape):
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, shape, dtype=np.uint8)
  b = ((a.astype(int) + 2 * rng.integers(0, 128, shape)) % 256).astype(np.uint8)  # a + b even
  np.testing.assert_array_equal(
    fuse.fuse_arrays(baselines.get("mean"), a, b), (a.astype(int) + b) // 2
  )
  # Padded up to the pyramid's minimum and multiple, then cropped: fusing an image with
  # itself reconstructs it.
  np.testing.assert_array_equal(fuse.fuse_arrays(baselines.get("laplacian_pyramid"), a, a), a)


@pytest.mark.parametrize("shape", [(1, 1), (17, 31)])
def test_small_and_odd_sizes_model(tiny_model, shape):
  rng = np.random.default_rng(1)
  a, b = (rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2))
  fused = fuse.fuse_arrays(tiny_model, a, b)
  as_planes = lambda image: (image / 255.0).astype(np.float32)[None, ..., None]
  direct = np.asarray(jax.jit(models.apply)(tiny_model.params, as_planes(a), as_planes(b)))
  direct = direct[0, ..., 0]
  expected = np.round(np.clip(direct, 0, 1) * 255)
  assert fused.shape == shape and fused.dtype == np.uint8
  assert np.abs(fused - expected).max() <= 1


# --- colour and bit depth ----------------------------------------------------------------------


def test_grey_stored_as_rgb_stays_grey():
  mri = io.read_image(SAMPLES / "harvard_cddfuse_ct_mri/test/mri/11.png")
  ct = io.read_image(SAMPLES / "harvard_cddfuse_ct_mri/test/ct/11.png")
  assert mri.shape[-1] == 3
  fused = fuse.fuse_arrays(baselines.get("mean"), mri, ct)
  assert fused.ndim == 2
  np.testing.assert_array_equal(
    fused, fuse.fuse_arrays(baselines.get("mean"), mri[..., :1], ct[..., :1])
  )


@pytest.mark.parametrize("convention", ["full", "studio"])
def test_colour_source_keeps_its_chroma(convention):
  rng = np.random.default_rng(2)
  grey = rng.uniform(0.3, 0.7, (40, 50)).astype(np.float32)
  rgb = rng.uniform(0.3, 0.7, (40, 50, 3)).astype(np.float32)
  fuser = dataclasses.replace(baselines.get("mean"), y_convention=convention)
  fused = fuse.fuse_arrays(fuser, grey, rgb)
  assert fused.shape == (40, 50, 3)
  fused_ycbcr = color.rgb_to_ycbcr(fused / 255.0, convention)
  source_ycbcr = color.rgb_to_ycbcr(rgb, convention)
  # 8-bit RGB moves Cb, Cr by at most 0.5 / 255 (their weights' magnitudes sum to <= 1).
  np.testing.assert_allclose(fused_ycbcr[..., 1:], source_ycbcr[..., 1:], atol=0.5 / 255 + 1e-6)
  # A grey source enters as it is, whatever the convention (the models read grey files raw).
  expected_y = (grey + source_ycbcr[..., 0]) / 2
  np.testing.assert_allclose(fused_ycbcr[..., 0], expected_y, atol=0.5 / 255 + 1e-6)


def test_two_colour_sources_mix_chroma_by_saturation():
  neutral = np.full((2, 2, 2), 0.5, np.float32)
  tinted = np.stack([np.full((2, 2), 0.2), np.full((2, 2), 0.9)], -1).astype(np.float32)
  np.testing.assert_allclose(fuse.fuse_chroma(neutral, tinted, "full"), tinted)
  np.testing.assert_allclose(fuse.fuse_chroma(tinted, neutral, "full"), tinted)
  np.testing.assert_allclose(fuse.fuse_chroma(neutral, neutral, "full"), neutral)


def test_sixteen_bit_input_keeps_its_precision(tmp_path):
  rng = np.random.default_rng(3)
  a16 = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
  b8 = rng.integers(0, 256, (24, 32), dtype=np.uint8)
  Image.fromarray(a16).save(tmp_path / "a.png")  # mode I;16
  _save(b8, tmp_path / "b.png")
  assert Image.open(tmp_path / "a.png").mode.startswith("I;16")
  fuser = baselines.get("mean")
  out = fuse.fuse_pair(fuser, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "out.png")
  fused = _read_png(out)
  np.testing.assert_array_equal(fused, fuse.fuse_arrays(fuser, a16 / 65535.0, b8))
  a8 = np.round(a16 / 257.0).astype(np.uint8)
  assert np.abs(fused.astype(int) - fuse.fuse_arrays(fuser, a8, b8)).max() <= 1


# --- folders, batching, datasets ---------------------------------------------------------------


def _write_pairs(root, shapes, *, colour=False):
  rng = np.random.default_rng(4)
  for index, shape in enumerate(shapes):
    _save(rng.integers(0, 256, shape, dtype=np.uint8), root / "a" / f"p{index}.png")
    b_shape = (*shape, 3) if colour else shape
    _save(rng.integers(0, 256, b_shape, dtype=np.uint8), root / "b" / f"p{index}.png")
  return root / "a", root / "b"


def test_same_bucket_pairs_share_one_compilation(tmp_path):
  shapes = [(40, 50), (45, 60), (60, 64)]
  dir_a, dir_b = _write_pairs(tmp_path, shapes, colour=True)
  fuser = baselines.get("laplacian_pyramid")
  options = fuse.Options(batch_size=2, bucket_multiple=64)
  fuse.batching._compile.cache_clear()  # pylint: disable=protected-access
  paths = fuse.fuse_folders(fuser, dir_a, dir_b, tmp_path / "out", options=options, progress=False)
  assert fuse.batching._compile.cache_info().misses == 1  # one (2, 64, 64) call for the bucket
  for path, shape in zip(paths, shapes):
    single = fuse.fuse_arrays(
      fuser, io.read_image(dir_a / path.name), io.read_image(dir_b / path.name), options
    )
    fused = _read_png(path)
    assert fused.shape == (*shape, 3)
    np.testing.assert_array_equal(fused, single)


def test_each_image_is_decoded_once(tmp_path, monkeypatch):
  dir_a, dir_b = _write_pairs(tmp_path, [(20, 20), (24, 20)], colour=True)
  decoded = []
  decode_image = io.decode_image
  monkeypatch.setattr(
    io, "decode_image", lambda data, source: decoded.append(source) or decode_image(data, source)
  )
  fuse.fuse_folders(baselines.get("mean"), dir_a, dir_b, tmp_path / "out", progress=False)
  assert sorted(decoded) == sorted(
    str(folder / f"p{index}.png") for folder in (dir_a, dir_b) for index in range(2)
  )


def test_swapped_roles_are_warned_of_once_for_models_only(tmp_path, tiny_model, caplog):
  grey_dir, colour_dir = _write_pairs(tmp_path, [(20, 20), (20, 20)], colour=True)
  for fuser, dir_a, dir_b, out in [
    (tiny_model, grey_dir, colour_dir, "right"),
    (baselines.get("mean"), colour_dir, grey_dir, "baseline"),  # symmetric: no roles
    (tiny_model, colour_dir, grey_dir, "swapped"),
  ]:
    with caplog.at_level("WARNING", logger="fusionjax.fuse.files"):
      paths = fuse.fuse_folders(fuser, dir_a, dir_b, tmp_path / out, progress=False)
    assert len(paths) == 2
  [record] = caplog.records
  assert "input a) is colour" in record.getMessage()
  assert str(colour_dir) in record.getMessage() and "swapped" in record.getMessage()


def test_dataset_split(tmp_path):
  builders.prepare("gfp_pc", manual_dir=SAMPLES, data_dir=tmp_path / "tfds")
  fuser = baselines.get("max_absolute")
  from_split = fuse.fuse_source(
    fuser,
    fuse.dataset_source("gfp_pc", "test", tmp_path / "tfds"),
    tmp_path / "split",
    progress=False,
  )
  from_folders = fuse.fuse_folders(
    fuser,
    SAMPLES / "gfp_pc/test/pc",
    SAMPLES / "gfp_pc/test/gfp",
    tmp_path / "folders",
    progress=False,
  )
  assert [path.name for path in from_split] == [path.name for path in from_folders] == ["001.png"]
  np.testing.assert_array_equal(_read_png(from_split[0]), _read_png(from_folders[0]))


# --- bad input and existing files --------------------------------------------------------------


def test_missing_partner_is_named(tmp_path):
  dir_a, dir_b = _write_pairs(tmp_path, [(20, 20), (20, 20)])
  (dir_b / "p1.png").unlink()
  with pytest.raises(fuse.InputError, match=r"no partner.*p1"):
    fuse.fuse_folders(baselines.get("mean"), dir_a, dir_b, tmp_path / "out")


def test_missing_file_is_named(tmp_path):
  dir_a, _ = _write_pairs(tmp_path, [(20, 20)])
  with pytest.raises(FileNotFoundError, match="nowhere.png"):
    fuse.fuse_pair(
      baselines.get("mean"), dir_a / "p0.png", tmp_path / "nowhere.png", tmp_path / "out.png"
    )


@pytest.mark.parametrize(
  "breakage, message",
  [
    ("unreadable", "not a readable image"),
    ("size", "size mismatch"),
    ("alpha", "alpha channel"),
  ],
)
def test_bad_pair_is_named_and_nothing_is_written(tmp_path, breakage, message):
  dir_a, dir_b = _write_pairs(tmp_path, [(20, 20), (20, 20)])
  bad = dir_b / "p1.png"
  if breakage == "unreadable":
    bad.write_bytes(b"not a png at all")
  elif breakage == "size":
    _save(np.zeros((21, 20), np.uint8), bad)
  else:
    _save(np.zeros((20, 20, 4), np.uint8), bad)
  with pytest.raises(fuse.InputError, match=message) as error:
    fuse.fuse_folders(baselines.get("mean"), dir_a, dir_b, tmp_path / "out", progress=False)
  assert str(bad) in str(error.value)
  assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_damaged_pixels_are_an_input_error_naming_the_file(tmp_path):
  dir_a, dir_b = _write_pairs(tmp_path, [(20, 20), (20, 20)])
  bad = dir_b / "p1.png"
  whole = bad.read_bytes()
  bad.write_bytes(whole[: len(whole) // 2])  # its header is sound: found when decoded
  with pytest.raises(fuse.InputError, match="not a readable image") as error:
    fuse.fuse_folders(baselines.get("mean"), dir_a, dir_b, tmp_path / "out", progress=False)
  assert str(bad) in str(error.value)
  assert not (tmp_path / "out" / "p1.png").exists()


def test_arrays_of_different_sizes_are_refused():
  with pytest.raises(ValueError, match="size mismatch"):
    fuse.fuse_arrays(baselines.get("mean"), np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8))


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
  dir_a, dir_b = _write_pairs(tmp_path, [(20, 20), (20, 20)])
  out = tmp_path / "out"
  out.mkdir()
  (out / "p1.png").write_bytes(b"precious")
  with pytest.raises(FileExistsError, match="p1.png"):
    fuse.fuse_folders(baselines.get("mean"), dir_a, dir_b, out, progress=False)
  assert (out / "p1.png").read_bytes() == b"precious"
  assert not (out / "p0.png").exists()  # checked before anything was fused
  paths = fuse.fuse_folders(
    baselines.get("mean"), dir_a, dir_b, out, overwrite=True, progress=False
  )
  assert _read_png(paths[1]).shape == (20, 20)
  assert sorted(path.name for path in out.iterdir()) == ["p0.png", "p1.png"]  # no temp files


def test_skip_existing_completes_a_folder_and_keeps_what_is_there(tmp_path):
  dir_a, dir_b = _write_pairs(tmp_path, [(20, 20), (20, 20), (20, 20)])
  out = tmp_path / "out"
  out.mkdir()
  (out / "p1.png").write_bytes(b"precious")
  paths = fuse.fuse_folders(
    baselines.get("mean"), dir_a, dir_b, out, skip_existing=True, progress=False
  )
  assert [path.name for path in paths] == ["p0.png", "p1.png", "p2.png"]
  assert (out / "p1.png").read_bytes() == b"precious"
  assert _read_png(out / "p2.png").shape == (20, 20)
  assert (
    fuse.fuse_pair(
      baselines.get("mean"), dir_a / "p1.png", dir_b / "p1.png", out / "p1.png", skip_existing=True
    )
    == out / "p1.png"
  )
  assert (out / "p1.png").read_bytes() == b"precious"
  with pytest.raises(ValueError, match="exclude each other"):
    fuse.fuse_folders(baselines.get("mean"), dir_a, dir_b, out, skip_existing=True, overwrite=True)


def test_fuse_paths_takes_two_files_or_two_folders(tmp_path):
  dir_a, dir_b = _write_pairs(tmp_path, [(20, 20), (20, 20)])
  mean = baselines.get("mean")
  assert len(fuse.fuse_paths(mean, dir_a, dir_b, tmp_path / "folders", progress=False)) == 2
  (tmp_path / "files").mkdir()
  (written,) = fuse.fuse_paths(mean, dir_a / "p0.png", dir_b / "p0.png", tmp_path / "files")
  assert written == tmp_path / "files" / "p0.png" and written.is_file()
  with pytest.raises(fuse.InputError, match="two image files or two folders"):
    fuse.fuse_paths(mean, dir_a, dir_b / "p0.png", tmp_path / "mixed")
  for not_png in ("fused.jpg", "fused"):  # PNG bytes under another name, or a folder meant
    with pytest.raises(fuse.InputError, match=f"{not_png}: .* written as PNG.* end in .png"):
      fuse.fuse_paths(mean, dir_a / "p0.png", dir_b / "p0.png", tmp_path / not_png)
  assert not (tmp_path / "fused.jpg").exists() and not (tmp_path / "fused").exists()
  with pytest.raises(FileNotFoundError, match="input not found: .*nowhere"):
    fuse.fuse_paths(mean, dir_a, tmp_path / "nowhere", tmp_path / "missing")


def test_cpu_memory_budget_follows_the_available_memory(tmp_path, monkeypatch):
  if jax.devices()[0].memory_stats():
    pytest.skip("an accelerator's budget comes from its allocator")
  meminfo = tmp_path / "meminfo"
  meminfo.write_text("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n")
  monkeypatch.setattr(fuse.batching, "_MEMINFO", meminfo)
  assert fuse.default_memory_budget() == 2_000_000 * 1024  # half of what is available
  monkeypatch.setattr(fuse.batching, "_MEMINFO", tmp_path / "absent")
  assert (
    0 < fuse.available_host_memory() <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  )


def test_failed_write_leaves_nothing(tmp_path):
  with pytest.raises(TypeError):
    fuse.write_png(np.zeros((4, 4), np.complex64), tmp_path / "x.png")
  assert not any(tmp_path.iterdir())
