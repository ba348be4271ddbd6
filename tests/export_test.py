"""`fusionjax.training.export`: a run's checkpoint becomes a shipped model, its index entry and
curves, on the checkpoint written by an earlier fusionjax (tests/fixtures/legacy/run)."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import safetensors

from fusionjax import config_lib, models
from fusionjax.models import shipped
from fusionjax.training import export

LEGACY = pathlib.Path(__file__).parent / "fixtures" / "legacy"
REPO = pathlib.Path(__file__).resolve().parents[1]
START_TIME = 1_800_000_000.0
RECORDS = [
  {"step": 1, "time": START_TIME, "loss": 3.0},
  {"step": 2, "time": START_TIME + 1800.0, "loss": 2.0, "val/Qabf": 0.4, "val/VIF": 0.5},
]


@pytest.fixture
def run(tmp_path, monkeypatch):
  """(config, workdir) of a copied two-step run with a metrics.jsonl half an hour long; the
  shipped models are redirected to an empty folder."""
  workdir = tmp_path / "run"
  shutil.copytree(LEGACY / "run", workdir)
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  monkeypatch.setattr(shipped, "PRETRAINED_DIR", tmp_path / "pretrained")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  return config, workdir


def _export(config, workdir, name, **options):
  settings = dict(task="ivf", inputs=("ir", "vi"), data="two pairs", default=True, dtype="float32")
  return export.export(
    config, "configs/example.py", workdir, name=name, hardware="test", **(settings | options)
  )


def test_export_writes_weights_that_fuse_as_the_run_ema(run):
  config, workdir = run
  item = _export(config, workdir, "tiny_ivf")
  assert (item.steps, item.wall_time_hours, item.model) == (2, 0.5, "mambadfuse_tiny")
  assert item.recipe.startswith("python run.py --config=configs/example.py --workdir=runs/")
  assert shipped.list_pretrained() == [item]
  shipped.verify(item)
  inputs = np.load(LEGACY / "inputs.npy")
  fused = np.asarray(models.apply(models.pretrained("ivf"), *inputs))
  np.testing.assert_allclose(fused, np.load(workdir / "fused_ema.npy"), rtol=1e-5, atol=1e-5)


def test_a_new_default_demotes_the_task_default_and_weights_are_stored_as_asked(run):
  config, workdir = run
  first = _export(config, workdir, "first")
  second = _export(config, workdir, "second", dtype="bfloat16")
  assert [(e.name, e.default) for e in shipped.list_pretrained()] == [
    ("first", False),
    ("second", True),
  ]
  assert shipped.pretrained_entry("ivf").name == "second"
  for entry, dtype in ((first, jnp.float32), (second, jnp.bfloat16)):
    with safetensors.safe_open(entry.directory / "params.safetensors", framework="flax") as file:
      assert {file.get_tensor(key).dtype for key in file.keys()} == {jnp.dtype(dtype)}


def test_a_fine_tuned_run_counts_its_base_stage(run):
  config, workdir = run
  base = _export(config, workdir, "tiny_ivf")  # two steps, half an hour
  config.train.init_from = "runs/tiny_ivf"
  with pytest.raises(config_lib.ConfigError, match="fine-tuned .* give --base=NAME"):
    _export(config, workdir, "tuned")
  item = _export(config, workdir, "tuned", base=base)
  assert (item.steps, item.wall_time_hours) == (4, 1.0)
  first, second = item.recipe.split(" && ")
  assert first == base.recipe and "--workdir=runs/tuned_finetune " in second
  config.train.init_from = "runs/elsewhere"
  with pytest.raises(config_lib.ConfigError, match="is not runs/tiny_ivf, the folder that"):
    _export(config, workdir, "tuned", base=base)


def test_wall_time_leaves_out_the_pauses_of_a_resumed_run(tmp_path):
  # 100 s a record; stopped after step 300, resumed from step 200 an hour later, then a
  # validation record at the same step, and a day's pause before the last record.
  steps_and_times = [(100, 0), (200, 100), (300, 200), (200, 3800), (300, 3900), (300, 3950)]
  steps_and_times.append((400, 3950 + 86400))
  records = [{"step": step, "time": START_TIME + time} for step, time in steps_and_times]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert export.wall_time_hours(tmp_path) == pytest.approx(350 / 3600)


def test_curves_are_drawn_from_the_metrics(run, tmp_path):
  _, workdir = run
  path = tmp_path / "curves" / "tiny_curves.png"
  export.plot_curves(workdir, "tiny", path)
  assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
  "args, message",
  [
    (["--config=configs/s4fusion_vif.py:tiny"], "--workdir is required"),
    (["--config=configs/nope.py"], "config file not found: configs/nope.py"),
    (
      ["--config=configs/s4fusion_vif.py:tyni"],
      "unknown config argument 'tyni' in 'tyni'; known: ['tiny']",
    ),
    (["--dtyp=float32"], "Unknown command line flag 'dtyp'. Did you mean: dtype ?"),
  ],
)
def test_command_line_errors_are_one_line(args, message):
  result = subprocess.run(
    [sys.executable, "-m", "fusionjax.training.export", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 2 and result.stderr == f"export: error: {message}\n", result.stderr
