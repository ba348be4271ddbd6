"""Tests for fusionjax.data: file reading, sample pairs, TFDS builders, grain pipelines."""

import json
import pathlib
import shutil
import struct
import sys
import zlib

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from fusionjax import color
from fusionjax.data import builders, io, pipeline

SAMPLES = io.sample_dir()
ROADSCENE_TEST = SAMPLES / "roadscene" / "test"


def _roadscene_source() -> io.PairedFolderSource:
  return io.PairedFolderSource.from_folders(ROADSCENE_TEST / "ir", ROADSCENE_TEST / "vi")


def _save(path: pathlib.Path, array: np.ndarray, **kwargs) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array, **kwargs).save(path)
  return path


def _png_rgb16(path: pathlib.Path, height: int = 3, width: int = 4) -> pathlib.Path:
  """Writes a 16-bit-per-channel RGB PNG (Pillow cannot write one)."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    checksum = struct.pack(">I", zlib.crc32(kind + data))
    return struct.pack(">I", len(data)) + kind + data + checksum

  pixels = np.arange(height * width * 3, dtype=">u2").reshape(height, width, 3) * 1000
  rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
  header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
  path.write_bytes(
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", header)
    + chunk(b"IDAT", zlib.compress(rows))
    + chunk(b"IEND", b"")
  )
  return path


# --- samples -------------------------------------------------------------------------------


def test_samples_are_complete_pairs_listed_in_the_readme():
  files = sorted(SAMPLES.glob("*/*/*/*.png"))
  readme = (SAMPLES / "README.md").read_text()
  assert len(files) == 36
  assert sum(path.stat().st_size for path in files) < 3_000_000
  for path in files:
    assert f"`{path.relative_to(SAMPLES)}`" in readme
  for split_dir in {path.parent.parent for path in files}:
    modality_dirs = sorted(split_dir.iterdir())
    assert len(modality_dirs) == 2
    assert len(io.pair_folders(*modality_dirs)) == len(list(modality_dirs[0].iterdir()))


# --- io ------------------------------------------------------------------------------------


def test_read_image_shapes_and_dtypes():
  ir = io.read_image(ROADSCENE_TEST / "ir" / "FLIR_00211.png")
  vi = io.read_image(ROADSCENE_TEST / "vi" / "FLIR_00211.png")
  assert ir.shape == (301, 496, 1) and ir.dtype == np.uint8
  assert vi.shape == (301, 496, 3) and vi.dtype == np.uint8


def test_read_image_accepts_16_bit_grey_palette_and_float(tmp_path):
  grey16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
  read16 = io.read_image(_save(tmp_path / "g16.png", grey16))
  assert read16.dtype == np.uint16
  np.testing.assert_array_equal(read16[..., 0], grey16)
  y, cbcr = color.to_fusion_input(read16)
  assert cbcr is None and y.max() == pytest.approx(63000 / 65535)

  palette = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).convert("P")
  palette.save(tmp_path / "p.png")
  assert io.read_image(tmp_path / "p.png").shape == (4, 4, 3)

  floats = np.random.default_rng(0).random((5, 5)).astype(np.float32)
  np.testing.assert_array_equal(io.read_image(_save(tmp_path / "f.tif", floats))[..., 0], floats)


def test_read_image_errors_name_the_file_and_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="image file not found: .*missing.png"):
    io.read_image(tmp_path / "missing.png")

  (tmp_path / "junk.png").write_bytes(b"not an image at all")
  with pytest.raises(
    ValueError, match=r"junk.png: not a readable image \(no format Pillow reads\)$"
  ):
    io.read_image(tmp_path / "junk.png")

  whole = (ROADSCENE_TEST / "vi" / "FLIR_00211.png").read_bytes()
  (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
  with pytest.raises(ValueError, match="truncated.png: not a readable image"):
    io.read_image(tmp_path / "truncated.png")

  _save(tmp_path / "rgba.png", np.zeros((4, 4, 4), np.uint8))
  with pytest.raises(ValueError, match=r"rgba.png: image has an alpha channel \(mode RGBA, 4"):
    io.read_image(tmp_path / "rgba.png")

  with pytest.raises(ValueError, match="rgb16.png: 16-bit colour images are not supported"):
    io.read_image(_png_rgb16(tmp_path / "rgb16.png"))

  Image.new("CMYK", (4, 4)).save(tmp_path / "cmyk.tif")
  with pytest.raises(ValueError, match="cmyk.tif: unsupported image mode 'CMYK'"):
    io.read_image(tmp_path / "cmyk.tif")

  nan = np.zeros((4, 4), np.float32)
  nan[1, 2] = np.nan
  with pytest.raises(ValueError, match="nan.tif: float image contains NaN"):
    io.read_image(_save(tmp_path / "nan.tif", nan))


def test_image_header_is_what_decode_image_returns_without_the_pixels(tmp_path):
  palette = tmp_path / "p.png"
  Image.fromarray(np.zeros((5, 7), np.uint8)).convert("P").save(palette)
  for path in (
    _save(tmp_path / "grey.png", np.zeros((5, 7), np.uint8)),
    _save(tmp_path / "rgb.jpg", np.zeros((5, 7, 3), np.uint8)),
    _save(tmp_path / "g16.png", np.zeros((5, 7), np.uint16)),
    _save(tmp_path / "f.tif", np.zeros((5, 7), np.float32)),
    _save(tmp_path / "bilevel.bmp", np.zeros((5, 7), bool)),
    palette,
  ):
    header = io.image_header(path.read_bytes(), str(path))
    image = io.read_image(path)
    assert (header.height, header.width, header.channels) == image.shape, path.name
    assert header.dtype == image.dtype, path.name

  (tmp_path / "junk.png").write_bytes(b"not an image at all")
  Image.new("CMYK", (4, 4)).save(tmp_path / "cmyk.tif")
  for path, message in (
    (tmp_path / "junk.png", "not a readable image"),
    (_save(tmp_path / "rgba.png", np.zeros((4, 4, 4), np.uint8)), "image has an alpha channel"),
    (_png_rgb16(tmp_path / "rgb16.png"), "16-bit colour images"),
    (tmp_path / "cmyk.tif", "unsupported image mode 'CMYK'"),
  ):
    with pytest.raises(ValueError, match=f"{path.name}: {message}"):
      io.image_header(path.read_bytes(), str(path))

  whole = (ROADSCENE_TEST / "vi" / "FLIR_00211.png").read_bytes()
  truncated = whole[: len(whole) // 2]  # a sound header: found only when decoded
  assert io.image_header(truncated, "truncated.png")[:3] == (301, 496, 3)


def test_pair_folders_pairs_by_stem_and_strips_prefixes(tmp_path):
  for name in ("002", "001"):
    _save(tmp_path / "pci" / f"PCI_{name}.bmp", np.zeros((2, 2), np.uint8))
    _save(tmp_path / "gfp" / f"GFP_{name}.png", np.zeros((2, 2, 3), np.uint8))
  (tmp_path / "pci" / "notes.txt").write_text("ignored")
  (tmp_path / "gfp" / ".hidden.png").write_bytes(b"ignored")
  pairs = io.pair_folders(tmp_path / "pci", tmp_path / "gfp", prefix_a="PCI_", prefix_b="GFP_")
  assert [pair.name for pair in pairs] == ["001", "002"]
  assert pairs[0].path_a.name == "PCI_001.bmp" and pairs[0].path_b.name == "GFP_001.png"


def test_pair_folders_errors(tmp_path):
  for name in ("a", "b", "c"):
    _save(tmp_path / "ir" / f"{name}.png", np.zeros((2, 2), np.uint8))
  for name in ("a", "d"):
    _save(tmp_path / "vi" / f"{name}.png", np.zeros((2, 2), np.uint8))
  with pytest.raises(
    ValueError,
    match=r"2 image\(s\) in .*ir have no partner in .*vi: b, c; "
    r"1 image\(s\) in .*vi have no partner in .*ir: d",
  ):
    io.pair_folders(tmp_path / "ir", tmp_path / "vi")
  with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere"):
    io.pair_folders(tmp_path / "ir", tmp_path / "nowhere")
  _save(tmp_path / "ir" / "a.jpg", np.zeros((2, 2), np.uint8))
  with pytest.raises(ValueError, match="two images for the name 'a': a.jpg, a.png"):
    io.pair_folders(tmp_path / "ir", tmp_path / "vi")


@pytest.mark.parametrize("read", [io.decode_pair, io.pair_headers])
def test_decode_pair_rejects_size_mismatch(tmp_path, read):
  path_a = _save(tmp_path / "ir" / "x.png", np.zeros((4, 6), np.uint8))
  path_b = _save(tmp_path / "vi" / "x.png", np.zeros((4, 5, 3), np.uint8))
  record = io.PairedFolderSource([io.ImagePair("x", path_a, path_b)])[0]
  with pytest.raises(
    ValueError,
    match=r"pair 'x': size mismatch, .*ir/x.png is 6x4 \(WxH\) "
    r"but .*vi/x.png is 5x4",
  ):
    read(record)


def test_pipeline_errors_name_the_pair(tmp_path):
  path_a = _save(tmp_path / "ir" / "hot.tif", np.full((4, 4), 2.0, np.float32))
  path_b = _save(tmp_path / "vi" / "hot.png", np.zeros((4, 4, 3), np.uint8))
  source = io.PairedFolderSource([io.ImagePair("hot", path_a, path_b)])
  with pytest.raises(ValueError, match=r"pair 'hot': float image values must lie in \[0, 1\]"):
    pipeline.to_model_input(pipeline.read_example(source[0]), "full")


# --- TFDS builders -------------------------------------------------------------------------


def _copy_samples(destination: pathlib.Path, *datasets: str) -> pathlib.Path:
  for dataset in datasets:
    shutil.copytree(SAMPLES / dataset, destination / dataset)
  return destination


def test_builder_writes_array_record_and_reads_back_without_tensorflow(tmp_path):
  manual_dir = _copy_samples(tmp_path / "manual", "roadscene")
  data_dir = tmp_path / "tfds"
  builder = builders.prepare("roadscene", manual_dir=manual_dir, data_dir=data_dir)

  assert set(builder.info.splits) == {"test"}
  assert builder.info.metadata == {"modality_a": "ir", "modality_b": "vi"}
  assert list(pathlib.Path(builder.data_dir).glob("roadscene-test.array_record-*"))
  for source in (
    builder.as_data_source("test"),
    tfds.data_source("roadscene", split="test", data_dir=str(data_dir)),
    tfds.builder_from_directory(builder.data_dir).as_data_source("test"),
  ):
    assert len(source) == 4
    records = {io.decode_pair(source[i])[0]: source[i] for i in range(len(source))}
    assert sorted(records) == ["FLIR_00211", "FLIR_00977", "FLIR_01130", "FLIR_04269"]
    record = records["FLIR_00977"]
    assert record["path_b"] == b"roadscene/test/vi/FLIR_00977.png"
    assert record["file_b"] == (ROADSCENE_TEST / "vi" / "FLIR_00977.png").read_bytes()
  assert "tensorflow" not in sys.modules


def test_harvard_configs_and_split_slicing(tmp_path):
  manual_dir = _copy_samples(tmp_path / "manual", "harvard_pet_mri", "harvard_cddfuse_ct_mri")
  pet = builders.prepare("harvard/pet_mri", manual_dir=manual_dir, data_dir=tmp_path / "tfds")
  assert pet.info.metadata == {"modality_a": "mri", "modality_b": "pet"}
  assert len(pet.as_data_source("test[:50%]")) == 1
  ct = builders.prepare("harvard/cddfuse_ct_mri", manual_dir=manual_dir, data_dir=tmp_path / "tfds")
  example = pipeline.to_model_input(pipeline.read_example(ct.as_data_source("test")[0]), "full")
  assert "cb" not in example  # CDDFuse stores grey CT as RGB with R = G = B
  assert "tensorflow" not in sys.modules


def test_builder_reads_the_distributed_layouts(tmp_path):
  manual_dir = tmp_path / "RoadScene"
  names = sorted(builders.ROADSCENE_TEST_NAMES) + ["FLIR_99999"]
  for index, name in enumerate(names):
    _save(manual_dir / "cropinfrared" / f"{name}.jpg", np.full((3, 4), index, np.uint8))
    _save(manual_dir / "crop_LR_visible" / f"{name}.jpg", np.full((3, 4, 3), index, np.uint8))
  roadscene = builders.prepare("roadscene", manual_dir=manual_dir, data_dir=tmp_path / "tfds")
  assert roadscene.info.splits["test"].num_examples == 50
  train = roadscene.as_data_source("train")
  assert [io.decode_pair(train[0])[0]] == ["FLIR_99999"]
  assert train[0]["path_a"] == b"cropinfrared/FLIR_99999.jpg"

  for folder in ("cropinfrared", "crop_LR_visible"):
    (manual_dir / folder / "FLIR_99999.jpg").unlink()
  only_test = builders.prepare("roadscene", manual_dir=manual_dir, data_dir=tmp_path / "only")
  assert set(only_test.info.splits) == {"test"}  # the empty train split is left out

  dpcn = tmp_path / "DPCN-Fusion"
  for folder, prefix, modality in (("Test_pci", "PCI_", "pc"), ("Test_gfp", "GFP_", "gfp")):
    (dpcn / folder).mkdir(parents=True)
    shutil.copy(SAMPLES / f"gfp_pc/test/{modality}/001.png", dpcn / folder / f"{prefix}001.png")
  gfp = builders.prepare("gfp_pc", manual_dir=dpcn, data_dir=tmp_path / "tfds")
  assert io.decode_pair(gfp.as_data_source("test")[0])[0] == "001"


def test_builder_errors_name_the_problem(tmp_path):
  unrelated = tmp_path / "unrelated"
  _save(unrelated / "photos" / "cat.png", np.zeros((3, 4), np.uint8))
  with pytest.raises(
    FileNotFoundError,
    match=r"no known ir/vi layout in manual_dir .*unrelated"
    r"(.|\n)*cropinfrared \+ crop_LR_visible",
  ):
    builders.prepare("roadscene", manual_dir=unrelated, data_dir=tmp_path / "a")

  partial = tmp_path / "partial"
  _save(partial / "cropinfrared" / "FLIR_00211.jpg", np.zeros((3, 4), np.uint8))
  _save(partial / "crop_LR_visible" / "FLIR_00211.jpg", np.zeros((3, 4, 3), np.uint8))
  with pytest.raises(ValueError, match="expected pairs not found: .*FLIR_00977"):
    builders.prepare("roadscene", manual_dir=partial, data_dir=tmp_path / "b")

  mismatched = _copy_samples(tmp_path / "mismatched", "gfp_pc")
  _save(mismatched / "gfp_pc/test/gfp/001.png", np.zeros((10, 10, 3), np.uint8))
  with pytest.raises(ValueError, match="pair '001': size mismatch"):
    builders.prepare("gfp_pc", manual_dir=mismatched, data_dir=tmp_path / "c")


# --- grain pipelines -----------------------------------------------------------------------


def _model_inputs(source, convention="full", **kwargs) -> list[dict]:
  return [
    pipeline.to_model_input(pipeline.read_example(source[index]), convention, **kwargs)
    for index in range(len(source))
  ]


def test_model_input_full_size_with_colour():
  batch = pipeline.stack_examples(_model_inputs(_roadscene_source(), "studio", quantize=True)[:1])
  assert batch["name"].tolist() == ["FLIR_00211"]
  for key in ("img_a", "img_b", "cb", "cr"):
    assert batch[key].shape == (1, 301, 496, 1) and batch[key].dtype == np.float32
  ir = io.read_image(ROADSCENE_TEST / "ir" / "FLIR_00211.png")
  vi = io.read_image(ROADSCENE_TEST / "vi" / "FLIR_00211.png")
  np.testing.assert_array_equal(batch["img_a"][0], ir / np.float32(255))
  y, cbcr = color.to_fusion_input(vi, "studio", quantize=True)
  np.testing.assert_array_equal(batch["img_b"][0], y)
  cbcr_batch = np.concatenate([batch["cb"], batch["cr"]], axis=-1)
  np.testing.assert_array_equal(cbcr_batch[0], cbcr)
  recoloured = color.recolor(batch["img_b"], cbcr_batch, "studio")[0]
  assert np.abs(recoloured * 255 - vi).max() < 1.0  # quantised Y: within one grey level


def test_stacking_same_size_pairs_and_clear_errors():
  harvard = SAMPLES / "harvard_pet_mri" / "test"
  pet = io.PairedFolderSource.from_folders(harvard / "mri", harvard / "pet")
  batch = pipeline.stack_examples(_model_inputs(pet))
  assert batch["img_a"].shape == (2, 256, 256, 1) and batch["cb"].shape == (2, 256, 256, 1)

  with pytest.raises(ValueError, match="image sizes differ"):
    pipeline.stack_examples(_model_inputs(_roadscene_source())[:2])
  ct = SAMPLES / "harvard_ct_mri" / "test"
  mixed = io.PairedFolderSource(
    io.pair_folders(harvard / "mri", harvard / "pet")[:1]
    + io.pair_folders(ct / "mri", ct / "ct")[:1]
  )
  with pytest.raises(ValueError, match="only some have colour"):
    pipeline.stack_examples(_model_inputs(mixed))


def _train(seed: int = 0, **overrides) -> grain.IterDataset:
  arguments = dict(
    convention="full",
    crop_size=64,
    batch_size=2,
    seed=seed,
    process_index=0,
    process_count=1,
    read_options=grain.ReadOptions(num_threads=2, prefetch_buffer_size=4),
  )
  return pipeline.train_dataset(_roadscene_source(), **(arguments | overrides))


def _take(ds, count: int) -> list[dict]:
  iterator = iter(ds)
  return [next(iterator) for _ in range(count)]


def test_train_batches_are_cropped_deterministic_and_seeded():
  first, again, other = _take(_train(0), 4), _take(_train(0), 4), _take(_train(1), 4)
  for batch in first:
    assert set(batch) == {"img_a", "img_b", "name"}
    assert batch["img_a"].shape == batch["img_b"].shape == (2, 64, 64, 1)
  for batch, repeat in zip(first, again, strict=True):
    assert batch["name"].tolist() == repeat["name"].tolist()
    np.testing.assert_array_equal(batch["img_a"], repeat["img_a"])
    np.testing.assert_array_equal(batch["img_b"], repeat["img_b"])
  assert any(not np.array_equal(a["img_a"], b["img_a"]) for a, b in zip(first, other, strict=True))
  # 4 pairs, batches of 2, repeated: every epoch of 2 batches holds each pair exactly once.
  epochs = [
    sorted(first[0]["name"].tolist() + first[1]["name"].tolist()),
    sorted(first[2]["name"].tolist() + first[3]["name"].tolist()),
  ]
  assert epochs[0] == epochs[1] == sorted(_roadscene_source()[i]["name"] for i in range(4))


def test_train_crop_is_a_window_of_the_source():
  batch = _take(_train(3, augment="none", batch_size=1), 1)[0]
  name = str(batch["name"][0])
  full = io.read_image(ROADSCENE_TEST / "ir" / f"{name}.png")[..., 0] / np.float32(255)
  crop = batch["img_a"][0, ..., 0]
  windows = np.lib.stride_tricks.sliding_window_view(full, crop.shape)
  assert np.any(np.all(windows == crop, axis=(-2, -1)))


def test_process_shards_are_disjoint_and_cover_the_data():
  names = []
  for process_index in range(2):
    ds = _train(
      augment="none", batch_size=1, num_epochs=1, process_index=process_index, process_count=2
    )
    names.append({str(batch["name"][0]) for batch in ds})
  assert len(names[0]) == len(names[1]) == 2
  assert not names[0] & names[1]
  assert names[0] | names[1] == {_roadscene_source()[i]["name"] for i in range(4)}


def test_finite_epochs_drop_the_incomplete_batch():
  assert len(list(_train(batch_size=3, num_epochs=1))) == 1
  # Without explicit process arguments the slice is this JAX process's (1 of 1 here).
  assert len(list(_train(batch_size=1, num_epochs=1, process_index=None, process_count=None))) == 4


def test_small_images_raise_or_are_skipped():
  with pytest.raises(ValueError, match=r"is \d+x\d+ \(WxH\), smaller than the 400x400 crop"):
    _take(_train(crop_size=400), 1)
  # Heights are 301, 351, 341 and 265: only FLIR_00977 and FLIR_01130 fit a 320 crop.
  ds = _train(crop_size=320, batch_size=1, num_epochs=1, skip_smaller_than_crop=True)
  assert sorted(str(batch["name"][0]) for batch in ds) == ["FLIR_00977", "FLIR_01130"]


def _dihedral_images(image: np.ndarray) -> list[np.ndarray]:
  rotations = [np.rot90(image, k) for k in range(4)]
  return rotations + [rotation[:, ::-1] for rotation in rotations]


@pytest.mark.parametrize(
  "augment, count", [(pipeline.random_dihedral, 8), (pipeline.random_flips, 4)]
)
def test_augmentations_transform_both_images_jointly(augment, count):
  image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
  example = {"img_a": image, "img_b": image + 100, "name": "x"}
  seen = set()
  for seed in range(64):
    out = augment(example, np.random.default_rng(seed))
    matches = [
      i
      for i, option in enumerate(_dihedral_images(image))
      if option.shape == out["img_a"].shape and np.array_equal(option, out["img_a"])
    ]
    assert len(matches) == 1
    np.testing.assert_array_equal(out["img_b"], out["img_a"] + 100)
    seen.add(matches[0])
  assert len(seen) == count


def test_iterator_state_resumes_on_exactly_the_next_batch():
  iterator = iter(_train(5))
  for _ in range(3):
    next(iterator)
  state = json.loads(json.dumps(iterator.get_state()))  # plain, JSON-serialisable
  expected = next(iterator)

  resumed = iter(_train(5))
  resumed.set_state(state)
  batch = next(resumed)
  assert batch["name"].tolist() == expected["name"].tolist()
  np.testing.assert_array_equal(batch["img_a"], expected["img_a"])
  np.testing.assert_array_equal(batch["img_b"], expected["img_b"])
