"""The shipped models: registry, checksums, a regression output each, the leakage-free split.

Each shipped model fuses one embedded test pair of its task; the output must stay within 1 grey
level of tests/fixtures/pretrained/<name>.png and beat the `mean` baseline on Qabf. After
shipping new weights, rewrite the expected outputs with
FUSIONJAX_WRITE_EXPECTED=1 pytest tests/pretrained_test.py -k regression.
"""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from fusionjax import baselines, config_lib, data, fuse, metrics, models
from fusionjax.data import overlap
from fusionjax.models import shipped
from fusionjax.training import input as input_lib

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXPECTED = Path(__file__).parent / "fixtures" / "pretrained"
ENTRIES = models.list_pretrained()
# The embedded test pair each task's model fuses (fusionjax/data/samples/<dataset>/test/).
SAMPLE_PAIRS = {
  "ivf": ("roadscene", "FLIR_00211"),
  "ct_mri": ("harvard_ct_mri", "16009"),
  "pet_mri": ("harvard_pet_mri", "25015"),
  "spect_mri": ("harvard_spect_mri", "10018"),
}
# docs/data.md folders of each pretrained config's data.dataset.
DATASET_FOLDERS = {
  "roadscene": "roadscene",
  "harvard/ct_mri": "harvard_ct_mri",
  "harvard/pet_mri": "harvard_pet_mri",
  "harvard/spect_mri": "harvard_spect_mri",
}
needs_shared = pytest.mark.skipif(
  not SHARED_DATA.is_dir(), reason=f"needs the staged datasets in {SHARED_DATA}"
)


def test_registry_entries_are_complete():
  assert ENTRIES, "no pretrained model is shipped"
  for entry in ENTRIES:
    assert entry.task in shipped.TASKS
    assert entry.model in models.names()
    assert (REPO / entry.config.partition(":")[0]).is_file()
    # One command, or a fine-tuned model's: its base's recipe first (training.export --base).
    assert entry.recipe.split(" && ")[-1].startswith(f"python run.py --config={entry.config} ")
    assert entry.steps > 0 and entry.wall_time_hours > 0
    assert entry.dtype in ("bfloat16", "float32")
  for task in {entry.task for entry in ENTRIES}:
    defaults = [entry.name for entry in ENTRIES if entry.task == task and entry.default]
    assert len(defaults) == 1, (task, defaults)
    assert shipped.pretrained_entry(task).name == defaults[0]
  total = sum(path.stat().st_size for path in shipped.PRETRAINED_DIR.rglob("*"))
  assert total < 60e6


def test_each_recipe_trains_the_steps_its_entry_records():
  for entry in ENTRIES:
    stages = re.findall(r"--config=(\S+)", entry.recipe)
    steps = sum(config_lib.load(str(REPO / stage)).train.num_steps for stage in stages)
    assert steps == entry.steps, entry.name


def test_each_recipe_builds_the_model_its_entry_ships():
  for entry in ENTRIES:
    _, recipe_model = models.resolve_config(config_lib.load(str(REPO / entry.config)).model)
    shipped_model = models.pretrained(entry.name).module().config
    assert recipe_model == shipped_model, entry.name


def test_every_task_and_every_architecture_has_a_shipped_model():
  assert {entry.task for entry in ENTRIES} == set(shipped.TASKS)
  shipped_families = {models.registry.get(entry.model).name for entry in ENTRIES}
  assert shipped_families == set(models.registry.families())


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_every_entry_loads_and_its_checksums_hold(entry):
  shipped.verify(entry)
  weights = nnx.state(models.pretrained(entry.name).module(), nnx.Param)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(weights))


def _copied_entry(tmp_path, monkeypatch):
  entry = ENTRIES[0]
  shutil.copytree(entry.directory, tmp_path / entry.name)
  shutil.copy(shipped.index_file(), tmp_path / shipped.INDEX_NAME)
  monkeypatch.setattr(shipped, "PRETRAINED_DIR", tmp_path)
  return entry, tmp_path / entry.name / "params.safetensors"


def test_a_corrupt_weight_file_is_refused(tmp_path, monkeypatch):
  entry, params_file = _copied_entry(tmp_path, monkeypatch)
  contents = bytearray(params_file.read_bytes())
  contents[-1] ^= 1
  params_file.write_bytes(bytes(contents))
  with pytest.raises(models.PretrainedError, match=f"{entry.name}.*is corrupt"):
    models.pretrained(entry.name)


def test_a_missing_weight_file_is_refused(tmp_path, monkeypatch):
  entry, params_file = _copied_entry(tmp_path, monkeypatch)
  params_file.unlink()
  with pytest.raises(models.PretrainedError, match=f"{entry.name}.*is missing"):
    models.pretrained(entry.name)


def test_an_unknown_name_lists_the_shipped_models():
  with pytest.raises(
    models.PretrainedError, match=f"no pretrained model 'nope'.*{ENTRIES[0].name}"
  ):
    models.pretrained("nope")
  with pytest.raises(models.PretrainedError, match="unknown task"):
    models.list_pretrained(task="ir_vis")


def _grey(image):
  """(H, W) grey levels of a `data.read_image` image ((H, W, 1) or (H, W, 3))."""
  image = np.asarray(image, np.float32)
  return image[..., 0] if image.shape[-1] == 1 else metrics.rgb_to_grey(image)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_regression_each_model_fuses_its_sample_pair_as_shipped(entry, tmp_path):
  dataset, name = SAMPLE_PAIRS[entry.task]
  folder = data.sample_dir() / dataset / "test"
  path_a, path_b = (folder / role / f"{name}.png" for role in entry.inputs)
  fuser = fuse.model_fuser(models.pretrained(entry.name), name=entry.name)
  (out,) = fuse.fuse_paths(fuser, path_a, path_b, tmp_path / "fused.png", progress=False)
  fused = np.asarray(data.read_image(out), np.float32)
  expected_path = EXPECTED / f"{entry.name}.png"
  if os.environ.get("FUSIONJAX_WRITE_EXPECTED") == "1":
    expected_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out, expected_path)
  expected = np.asarray(data.read_image(expected_path), np.float32)
  assert fused.shape == expected.shape
  assert np.abs(fused - expected).max() <= 1.0

  a, b = (_grey(data.read_image(path)) for path in (path_a, path_b))
  mean_fused = np.asarray(baselines.mean(a[None, :, :, None] / 255, b[None, :, :, None] / 255))
  qabf_model = metrics.qabf(a, b, _grey(fused))
  qabf_mean = metrics.qabf(a, b, np.round(mean_fused[0, :, :, 0] * 255))
  assert qabf_model > qabf_mean


def _pair_names(split_folder: Path, modality: str) -> set[str]:
  return {path.stem for path in (split_folder / modality).glob("*.png")}


def _overlap_train_names(dataset_folder: str) -> set[str]:
  """Names of `dataset_folder`'s train pairs that HARVARD_OVERLAP.tsv pairs with a test pair."""
  names = set()
  with open(SHARED_DATA / "HARVARD_OVERLAP.tsv", newline="") as file:
    for row in csv.DictReader(file, delimiter="\t"):
      paths = (row["path_a"], row["path_b"])
      if row["kind"] == "near_duplicate_pair" and any("/test/" in path for path in paths):
        names |= {Path(path).stem for path in paths if path.startswith(f"{dataset_folder}/train/")}
  return names


@needs_shared
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_shipped_models_never_trained_on_a_test_pair_or_a_near_copy(entry):
  config = config_lib.load(str(REPO / entry.config))
  config.data.update(manual_dir=str(SHARED_DATA), data_dir="")
  folder = SHARED_DATA / DATASET_FOLDERS[config.data.dataset]
  base_split = lambda split: split.split("[")[0]
  assert base_split(config.data.train_split) == "train"
  assert base_split(config.data.eval_split) == "train"
  config.data.train_split = config.data.eval_split = "train"  # folders: whole splits
  read = {data.record_name(record) for record in input_lib.pair_source(config.data, "train")}
  test = _pair_names(folder / "test", entry.inputs[0])
  assert read and not read & test
  assert not read & _overlap_train_names(folder.name)
  assert set(config.data.exclude_names) == set(overlap.near_duplicates_of_test(config.data.dataset))


def test_run_py_fuses_a_pair_with_a_task_default_model_and_no_config(tmp_path):
  entry = ENTRIES[0]
  dataset, name = SAMPLE_PAIRS[entry.task]
  folder = data.sample_dir() / dataset / "test"
  path_a, path_b = (folder / role / f"{name}.png" for role in entry.inputs)
  result = subprocess.run(
    [sys.executable, str(REPO / "run.py"), "--mode=fuse", f"--pretrained={entry.task}"]
    + [f"--input_a={path_a}", f"--input_b={path_b}", f"--output={tmp_path / 'fused.png'}"],
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert data.read_image(tmp_path / "fused.png").shape[:2] == data.read_image(path_a).shape[:2]
