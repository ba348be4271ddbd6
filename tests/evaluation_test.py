"""Evaluation reports: files, per-image metrics of what was written, means, overwrite rules."""

import csv

import numpy as np
import pytest
from PIL import Image

from fusionjax import evaluation, fuse, metrics
from fusionjax.data import io
from fusionjax.training import reports

METHODS = ["mean", "max_absolute"]


@pytest.fixture
def split(tmp_path):
  """Three pairs in two sizes (VIF needs 41 pixels a side); one colour source."""
  rng = np.random.default_rng(0)
  shapes = {"p0": (48, 64), "p1": (48, 64), "p2": (50, 45)}
  for name, shape in shapes.items():
    b_shape = (*shape, 3) if name == "p1" else shape
    for modality, image_shape in (("ir", shape), ("vi", b_shape)):
      folder = tmp_path / "data" / modality
      folder.mkdir(parents=True, exist_ok=True)
      image = rng.integers(0, 256, image_shape, dtype=np.uint8)
      Image.fromarray(image).save(folder / f"{name}.png")
  return io.PairedFolderSource.from_folders(tmp_path / "data/ir", tmp_path / "data/vi")


def _read_csv(path):
  with open(path, newline="") as handle:
    return list(csv.DictReader(handle))


def test_report_scores_what_was_written(split, tmp_path):
  report = evaluation.evaluate(METHODS, split, tmp_path / "report", grid_pairs=2, progress=False)
  rows = _read_csv(report.csv_path)
  assert [(row["method"], row["name"]) for row in rows] == [
    (method, name) for method in METHODS for name in ("p0", "p1", "p2")
  ]
  assert list(rows[0])[4:] == list(metrics.DEFAULT_METRICS)
  for row in rows:
    fused_path = tmp_path / "report/fused" / row["method"] / f"{row['name']}.png"
    fused = np.asarray(Image.open(fused_path))
    record = split[int(row["name"][1])]
    _, image_a, image_b = io.decode_pair(record)
    expected = metrics.evaluate(
      *(evaluation.grey_levels(image) for image in (image_a, image_b, fused))
    )
    assert (int(row["height"]), int(row["width"])) == fused.shape[:2]
    for key, value in expected.items():
      np.testing.assert_allclose(float(row[key]), value, rtol=1e-12, equal_nan=True)


def test_summary_holds_the_means_of_the_csv(split, tmp_path):
  report = evaluation.evaluate(METHODS, split, tmp_path / "report", progress=False)
  rows = _read_csv(report.csv_path)
  lines = report.table_path.read_text().splitlines()
  assert lines[0] == "Means over 3 pairs."
  header = [cell.strip() for cell in lines[2].strip("|").split("|")]
  assert header == ["method", *metrics.DEFAULT_METRICS]
  for line in lines[4:]:
    method, *values = [cell.strip() for cell in line.strip("|").split("|")]
    for key, value in zip(header[1:], values):
      mean = np.mean([float(row[key]) for row in rows if row["method"] == method])
      assert value == f"{mean:.4f}"
      np.testing.assert_allclose(report.means[method][key], mean, rtol=1e-12)
  grid = Image.open(report.grid_path)
  assert grid.format == "PNG" and grid.width > grid.height  # 3 rows x 4 columns of cells


def test_existing_report_is_kept_unless_overwrite(split, tmp_path):
  evaluation.evaluate(["mean"], split, tmp_path / "report", progress=False)
  summary = tmp_path / "report/summary.md"
  summary.write_text("keep me")
  with pytest.raises(FileExistsError, match="exist already"):
    evaluation.evaluate(["mean"], split, tmp_path / "report", progress=False)
  assert summary.read_text() == "keep me"
  evaluation.evaluate(["mean"], split, tmp_path / "report", overwrite=True, progress=False)
  assert summary.read_text().startswith("Means over 3 pairs.")


def test_method_names_must_differ(split, tmp_path):
  with pytest.raises(ValueError, match="must differ"):
    evaluation.evaluate(["mean", fuse.as_fuser("mean")], split, tmp_path, progress=False)


def test_pairs_too_small_for_a_metric_are_named_before_anything_is_fused(tmp_path):
  assert metrics.smallest_side() == (41, "VIF")
  assert metrics.smallest_side(["EN", "MS_SSIM"]) == (44, "MS_SSIM")
  for modality in ("ir", "vi"):
    (tmp_path / modality).mkdir()
    for name, shape in (("big", (48, 48)), ("tall", (60, 40)), ("wide", (12, 90))):
      Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / modality / f"{name}.png")
  small = io.PairedFolderSource.from_folders(tmp_path / "ir", tmp_path / "vi")
  with pytest.raises(fuse.InputError, match=r"VIF needs .* 41x41 pixels; 2 pair\(s\) are smaller"):
    evaluation.evaluate(["mean"], small, tmp_path / "report")
  with pytest.raises(
    fuse.InputError, match=r"MS_SSIM .* 44x44 .*: tall \(60x40\), wide \(12x90\)$"
  ):
    evaluation.evaluate(["mean"], small, tmp_path / "report", metric_names=["EN", "MS_SSIM"])
  assert not (tmp_path / "report").exists()


def test_grey_levels_of_any_depth():
  levels = np.array([[0, 65535], [257, 32896]], np.uint16)
  np.testing.assert_array_equal(evaluation.grey_levels(levels), [[0, 255], [1, 128]])
  np.testing.assert_array_equal(evaluation.grey_levels(levels / 65535.0), [[0, 255], [1, 128]])
  rgb = np.zeros((1, 1, 3), np.uint8) + np.array([255, 0, 0], np.uint8)
  np.testing.assert_array_equal(evaluation.grey_levels(rgb), [[76]])  # round(0.299 * 255)


def test_a_complete_report_reads_back_as_written(split, tmp_path):
  """What a rerun reuses (training.evaluate_run(skip_existing=True)): the same rows and table;
  an incomplete report is not reused."""
  report = evaluation.evaluate(METHODS, split, tmp_path / "report", grid_pairs=1, progress=False)
  again = reports.read_report(tmp_path / "report")
  assert again == report
  report.grid_path.unlink()
  assert reports.read_report(tmp_path / "report") is None
