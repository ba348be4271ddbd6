"""run.py's command line (installed: `fusionjax`): bad input is one `run.py: error:` line and exit
status 2 (no model is compiled for any of these), and fusing with converted weights needs no
config or run."""

import csv
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fusionjax import baselines, convert, models

REPO = pathlib.Path(__file__).resolve().parents[1]
MED_TINY = f"--config={REPO / 'configs/fusionmamba_med.py'}:tiny"


def _run(
  *args: str,
  cwd: pathlib.Path = REPO,
  command: tuple[str, ...] = (sys.executable, str(REPO / "run.py")),
  **environment: str,
) -> subprocess.CompletedProcess:
  return subprocess.run(
    [*command, *args],
    cwd=cwd,
    env=dict(os.environ, JAX_PLATFORMS="cpu", **environment),
    capture_output=True,
    text=True,
    timeout=300,
  )


def _write_pairs(folder: pathlib.Path, names=("p0", "p1"), shape=(24, 20)) -> tuple:
  rng = np.random.default_rng(0)
  for modality in ("a", "b"):
    (folder / modality).mkdir(parents=True, exist_ok=True)
    for name in names:
      Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        folder / modality / f"{name}.png"
      )
  return folder / "a", folder / "b"


def _tiny_weights(folder: pathlib.Path) -> pathlib.Path:
  """A converted-params folder (fusionjax-convert's output) of a seeded tiny MambaDFuse."""
  config = models.resolve_config("mambadfuse_tiny")[1]
  convert.save_params(models.init(0, "mambadfuse_tiny"), folder, "mambadfuse_tiny", config)
  return folder


@pytest.mark.parametrize(
  "args, message",
  [
    (["--config=configs/nope.py"], "config file not found: configs/nope.py"),
    (
      [MED_TINY, "--config.optim.learnig_rate=1"],
      "--config.optim.learnig_rate: the config has no field 'learnig_rate'; did you mean "
      '"learning_rate"?',
    ),
    ([MED_TINY.replace(":tiny", ":tyni")], "unknown config argument 'tyni'"),
    (
      [MED_TINY, "--config.model.name=fusionmamba_huge", "--mode=eval"],
      "unknown model 'fusionmamba_huge'",
    ),
    ([MED_TINY, "--mode=eval", "--input_a=x"], "--mode=eval does not use --input_a"),
    ([MED_TINY, "--mode=train", "--skip_existing"], "--mode=train does not use --skip_existing"),
    ([MED_TINY, "--overwrite", "--skip_existing"], "exclude each other"),
    (
      [MED_TINY, "--mode=fuse", "--input_a=nowhere_a", "--input_b=nowhere_b"],
      "input not found: nowhere_a",
    ),
    ([MED_TINY, "--mode=fuse", "--memory_budget=lots"], "--memory_budget=lots: give bytes"),
    (["--mode=eval"], "--config is required"),
    (
      ["--weights=.", "--mode=train"],
      "--weights fuses or evaluates: use --mode=fuse or --mode=eval",
    ),
    (
      ["--weights=.", "--input_a=x", "--input_b=y"],
      "--weights needs --input_a, --input_b and --output",
    ),
    (["--pretrained=ct_mri", "--mode=all"], "--pretrained fuses or evaluates"),
    (["--pretrained=ct_mri", "--weights=."], "--weights and --pretrained exclude each other"),
    (["--pretrained=ct_mri", "--swap_inputs"], "--pretrained does not use --swap_inputs"),
    (
      ["--pretrained=ct_mri", "--mode=eval", "--skip_existing"],
      "--pretrained --mode=eval does not use --skip_existing",
    ),
    (
      ["--weights=.", "--mode=eval", "--protocol=official"],
      "--weights --mode=eval does not use --protocol",
    ),
    (
      [
        "--pretrained=ct_mri",
        "--mode=eval",
        "--input_a=README.md",
        "--input_b=run.py",
        "--output=o",
      ],
      "--mode=eval --pretrained takes two folders of pairs",
    ),
    (
      ["--pretrained=nope", "--input_a=.", "--input_b=.", "--output=o"],
      "--pretrained=nope: no pretrained model 'nope'",
    ),
  ],
)
def test_bad_command_lines_are_one_line_errors(args, message):
  result = _run(*args)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("run.py: error: ")]
  assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
  "command, program",
  [
    ((str(pathlib.Path(sys.executable).parent / "fusionjax"),), "fusionjax"),
    ((sys.executable, "-m", "fusionjax"), "python -m fusionjax"),
  ],
)
def test_the_installed_command_is_run_py_under_its_own_name(tmp_path, command, program):
  """An installation without the checkout (here: run outside it) has run.py's command line."""
  result = _run(
    "--pretrained=nope", "--input_a=.", "--input_b=.", "--output=o", cwd=tmp_path, command=command
  )
  assert result.returncode == 2, result.stderr[-2000:]
  assert f"{program}: error: --pretrained=nope: no pretrained model 'nope'" in result.stderr
  usage = _run("--helpshort", cwd=tmp_path, command=command)
  assert "python run.py --mode=eval --pretrained=ivf" in usage.stdout, usage.stderr[-2000:]


def test_a_tile_size_that_leaves_no_tile_is_a_one_line_error(tmp_path):
  pair = REPO / "fusionjax/data/samples/roadscene/test"
  result = _run(
    "--pretrained=ivf",
    f"--input_a={pair / 'ir'}",
    f"--input_b={pair / 'vi'}",
    f"--output={tmp_path / 'fused'}",
    "--tile_size=100",
  )
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "run.py: error: Options.tile_size (100) must exceed twice the overlap" in result.stderr
  assert not any(tmp_path.iterdir())


def test_incomplete_multi_process_variables_are_a_one_line_error():
  result = _run(MED_TINY, "--mode=train", JAX_COORDINATOR_ADDRESS="localhost:1")
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "run.py: error: " in result.stderr and "JAX_NUM_PROCESSES" in result.stderr


def test_bad_pairs_with_weights_are_one_line_errors(tmp_path):
  """Missing partners and sizes that differ are named before the model is compiled."""
  weights = _tiny_weights(tmp_path / "weights")
  dir_a, dir_b = _write_pairs(tmp_path)
  Image.fromarray(np.zeros((25, 20), np.uint8)).save(dir_b / "p1.png")
  (dir_b / "p0.png").rename(dir_b / "q0.png")
  result = _run(
    f"--weights={weights}",
    f"--input_a={dir_a}",
    f"--input_b={dir_b}",
    f"--output={tmp_path / 'out'}",
  )
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "run.py: error: " in result.stderr and "p0" in result.stderr
  assert not (tmp_path / "out").exists()


def test_fuse_folders_with_converted_weights_and_complete_them(tmp_path):
  weights = _tiny_weights(tmp_path / "weights")
  dir_a, dir_b = _write_pairs(tmp_path, names=("p0", "p1", "p2"))
  out = tmp_path / "out"
  out.mkdir()
  (out / "p1.png").write_bytes(b"kept")
  args = [
    f"--weights={weights}",
    f"--input_a={dir_a}",
    f"--input_b={dir_b}",
    f"--output={out}",
    "--memory_budget=2GB",
    "--compilation_cache=",
  ]
  refused = _run(*args)
  assert refused.returncode == 2 and "--skip_existing" in refused.stderr
  completed = _run(*args, "--skip_existing", cwd=tmp_path)  # no config, no run folder
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert (out / "p1.png").read_bytes() == b"kept"
  assert np.asarray(Image.open(out / "p2.png")).shape == (24, 20)
  assert not (tmp_path / "runs").exists()


def test_evaluate_converted_weights_beside_the_baselines(tmp_path):
  weights = _tiny_weights(tmp_path / "weights")
  dir_a, dir_b = _write_pairs(tmp_path, shape=(48, 44))  # VIF needs 41 pixels a side
  report = tmp_path / "report"
  args = [f"--weights={weights}", f"--input_a={dir_a}", f"--input_b={dir_b}", f"--output={report}"]
  result = _run("--mode=eval", *args, "--compilation_cache=", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  with (report / "metrics.csv").open() as handle:
    rows = list(csv.DictReader(handle))
  methods = ["mambadfuse", *baselines.names()]  # a converted model is named by its family
  assert [(row["method"], row["name"]) for row in rows] == [
    (method, name) for method in methods for name in ("p0", "p1")
  ]
  for method in methods:
    assert f"| {method} |" in result.stdout
    assert (report / "fused" / method / "p1.png").is_file()
  assert (report / "grid.png").is_file() and not (tmp_path / "runs").exists()
  refused = _run("--mode=eval", *args)
  assert refused.returncode == 2 and "(run.py --overwrite)" in refused.stderr
  assert list(csv.DictReader((report / "metrics.csv").open())) == rows


def test_memory_sizes_parse():
  from fusionjax import cli as run  # defines the command's flags: imported by this test only

  assert run.parse_bytes("4GB") == 4 * 10**9
  assert run.parse_bytes("512MiB") == 512 * 2**20
  assert run.parse_bytes("1.5 gb") == 1_500_000_000
  assert run.parse_bytes("1000000") == 10**6
  with pytest.raises(run.UsageError, match="give bytes"):
    run.parse_bytes("4 apples")
