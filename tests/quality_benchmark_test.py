"""benchmarks/quality.py: test sets and roles, goals, tables, grids, index updates."""

import importlib.util
import math
import pathlib
import sys

import pytest

from fusionjax import models
from fusionjax.data import io
from fusionjax.models import shipped

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
_SPEC = importlib.util.spec_from_file_location("quality_benchmark", _PATH)
quality = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = quality  # dataclasses look their module up
_SPEC.loader.exec_module(quality)

EVAL_SETS = {item.name: item for item in quality.EVAL_SETS}


def entry(**fields) -> shipped.Entry:
  defaults = dict(
    name="tiny_ct",
    model="s4fusion_tiny",
    task="ct_mri",
    default=True,
    inputs=("mri", "ct"),
    data="nothing",
    recipe="none",
    config="none",
    steps=0,
    wall_time_hours=0.0,
    hardware="none",
    dtype="float32",
    sha256={},
  )
  return shipped.Entry(**{**defaults, **fields})


def test_sets_read_the_staged_layout_with_their_builders_roles():
  samples = io.sample_dir()
  for name in ("roadscene", "harvard_ct_mri", "harvard_cddfuse_ct_mri", "gfp_pc"):
    pairs = quality.eval_pairs(EVAL_SETS[name], samples)
    assert pairs and all(f"{name}/test/" in str(pair.path_a) for pair in pairs)
  assert quality.task_roles("ivf") == ("ir", "vi")
  for task in quality.MEDICAL_TASKS:
    assert quality.task_roles(task) == ("mri", task.split("_")[0])
  assert {s.task for s in quality.EVAL_SETS} == {*shipped.TASKS, None}


def test_inputs_in_reverse_order_are_swapped_and_others_refused():
  assert not quality.swap_inputs(entry())
  assert quality.swap_inputs(entry(inputs=("ct", "mri")))
  with pytest.raises(ValueError, match="not the ct_mri modalities"):
    quality.swap_inputs(entry(inputs=("ir", "vi")))


def test_transfer_set_scores_every_medical_model():
  entries = [entry(name=f"m_{task}", task=task) for task in shipped.TASKS]
  scored = quality.models_for(EVAL_SETS["gfp_pc"], entries)
  assert [item.task for item in scored] == list(quality.MEDICAL_TASKS)
  assert [item.name for item in quality.models_for(EVAL_SETS["roadscene"], entries)] == ["m_ivf"]


def _result(model_values, pairs=50):
  """A roadscene result: baselines "low" (0.1 everywhere, Nabf 0.5) and "high" (0.2, Nabf 0.1)."""
  means = {
    "low": {metric: 0.1 for metric in quality.METRICS} | {"Nabf": 0.5},
    "high": {metric: 0.2 for metric in quality.METRICS} | {"Nabf": 0.1},
    "model": model_values,
  }
  return quality.SetResult(
    EVAL_SETS["roadscene"], pairs, 50, ["low", "high"], [entry(name="model")], means, None
  )


def test_goals_count_wins_over_every_baseline_and_published_values_reached():
  published = quality.PUBLISHED["roadscene"]["CDDFuse"]
  values = {metric: 2.5 for metric in quality.METRICS} | {"Nabf": 0.05}
  values |= {"EN": 0.15, "SD": math.nan, "SF": 0.2}  # behind, undefined, tied
  values |= {"MI": published["MI"] - 0.004, "VIF": published["VIF"] - 0.006}
  beats, reaches = quality.goals(_result(values))
  assert beats.reference == "every baseline"
  assert beats.achieved == ["MI", "SCD", "VIF", "Qabf", "SSIM"] and beats.met
  assert beats.margins["EN"] == pytest.approx(-0.05)
  assert reaches.reference == "CDDFuse (published)"
  # MI rounds to the published value; VIF does not; SCD, Qabf, SSIM (2.5) are above.
  assert reaches.achieved == ["MI", "SCD", "Qabf", "SSIM"] and reaches.met
  assert reaches.margins["VIF"] == pytest.approx(-0.006)
  short = quality.Goal("model", "roadscene", "every baseline", ["EN"], 5, beats.margins)
  assert "1 of 8 (goal >= 5: short)" in short.describe()
  assert "EN" not in short.describe().split("margins where not:")[1]
  assert "SF +0.000" in short.describe()


def test_table_bolds_the_best_and_shows_published_only_for_whole_sets():
  values = {metric: 3.0 for metric in quality.METRICS} | {"Nabf": 0.3, "EN": 100.0}
  table = quality.markdown_table(_result(values))
  lines = table.splitlines()
  assert lines[0].split("|")[3:-1] == [f" {metric} " for metric in quality.METRICS]
  rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines[2:]}
  assert list(rows) == ["low", "high", "model", "CDDFuse"]
  assert rows["model"][0].strip() == "shipped"
  assert rows["model"][1].strip() == "**100.000**"
  assert rows["high"][-1].strip() == "**0.1000**"  # Nabf: lower is better, 4 decimals
  assert rows["CDDFuse"][2].strip() == "**54.67**" and rows["CDDFuse"][-1].strip() == "–"
  quick = quality.markdown_table(_result(values, pairs=3))
  assert "CDDFuse" not in quick
  assert len(quality.goals(_result(values, pairs=3))) == 1


def test_readme_rescoring_one_set_keeps_the_others_sections_and_goals():
  values = {metric: 2.5 for metric in quality.METRICS}
  ct_means = {"low": _result(values).means["low"], "high": _result(values).means["high"]}
  ct = quality.SetResult(
    EVAL_SETS["harvard_ct_mri"],
    24,
    24,
    ["low", "high"],
    [entry()],
    ct_means | {"tiny_ct": values},
    None,
  )
  first = quality.readme([_result(values), ct], "python first")
  assert "* model on roadscene: beats every baseline on 8 of 8" in first
  index = [entry(name="model"), entry()]
  second = quality.readme([_result(values | {"EN": 0.15})], "python second", first, index)
  before, after = quality.shown_sets(first), quality.shown_sets(second)
  assert after["harvard_ct_mri"] == before["harvard_ct_mri"]
  assert "Scored by `python second`" in after["roadscene"].section
  assert "python first" not in after["roadscene"].section
  assert (
    after["roadscene"].goal_lines[0].startswith("* model on roadscene: beats every baseline on 7")
  )
  assert "| model | s4fusion_tiny |" in second and "| tiny_ct | s4fusion_tiny |" in second
  assert quality.readme([], "python third", second, index) == second


def test_recorded_command_hides_the_machines_folders():
  argv = ["--data-dir", "/secret/data", "--sets=roadscene", "--work-dir", "/secret/work"]
  argv += ["--out=/secret/out", "--compilation-cache=", "--update-index"]
  assert quality.recorded_command(argv) == (
    "python benchmarks/quality.py --data-dir /path/to/data --sets=roadscene --update-index"
  )
  assert quality.recorded_command(["--data-dir=/secret", "--out", "/o"]) == (
    "python benchmarks/quality.py --data-dir=/path/to/data"
  )


def test_abbreviated_flags_are_refused_so_no_folder_escapes_the_record(tmp_path, capsys):
  with pytest.raises(SystemExit):
    quality.parse_args(["--data-dir", str(tmp_path), "--work", "/secret/work"])
  assert "unrecognized arguments: --work" in capsys.readouterr().err


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--num-pairs", "0"], "--num-pairs must be at least 1"),
    (["--grid-pairs", "0"], "--grid-pairs must be at least 1 (--no-grids draws none)"),
  ],
)
def test_counts_under_one_are_refused(tmp_path, capsys, flags, message):
  with pytest.raises(SystemExit):
    quality.parse_args(["--data-dir", str(tmp_path), *flags])
  assert message in capsys.readouterr().err


def test_index_update_keeps_other_sets_and_round_trips(tmp_path):
  old = {"harvard_ct_mri": {"EN": 1.0}, "roadscene": {"EN": 0.0}}
  entries = [entry(name="model", task="ivf", inputs=("ir", "vi"), test_metrics=old), entry()]
  values = {metric: 1 / 3 for metric in quality.METRICS}
  updated = quality.updated_entries(entries, [_result(values)])
  assert updated[0].test_metrics["harvard_ct_mri"] == {"EN": 1.0}
  assert updated[0].test_metrics["roadscene"]["SSIM"] == 0.3333
  assert updated[1].test_metrics == {}
  path = tmp_path / "index.json"
  shipped.write_index(updated, path)
  assert shipped.read_index(path) == updated  # ivf first (TASKS order)


def test_a_model_and_the_baselines_are_scored_and_gridded(tmp_path):
  model = entry(inputs=("ct", "mri"))
  result = quality.score_set(
    EVAL_SETS["harvard_ct_mri"],
    [model],
    io.sample_dir(),
    tmp_path / "work",
    tmp_path / "out",
    load_params=lambda name: models.init(0, "s4fusion_tiny"),
    num_pairs=1,
    grid_pairs=1,
  )
  assert (result.pairs, result.total_pairs) == (1, 2)
  assert list(result.means) == [*quality.evaluation.baselines.names(), "tiny_ct"]
  assert all(list(values) == list(quality.METRICS) for values in result.means.values())
  assert result.grid == tmp_path / "out" / "harvard_ct_mri.png"
  assert result.grid.stat().st_size <= quality.GRID_MAX_BYTES
  text = quality.readme([result], quality.recorded_command(["--data-dir", "/secret/data"]))
  assert "/secret" not in text and "--data-dir /path/to/data" in text
  assert "first 1 only" in text and "![harvard_ct_mri](harvard_ct_mri.png)" in text
  assert "| tiny_ct | s4fusion_tiny | ct_mri | ct, mri |" in text
  assert "* tiny_ct on harvard_ct_mri: beats every baseline on" in text
