r"""The quality of the models fusionjax ships, scored beside the classical baselines in one run.

Usage:
  python benchmarks/quality.py --data-dir=/path/to/data                 # writes docs/quality/
  python benchmarks/quality.py --data-dir=/path/to/data --update-index  # also each index entry
  python benchmarks/quality.py --data-dir=/path/to/data --models=s4fusion_ivf \
      --sets=roadscene --num-pairs=3 --no-grids --out=/tmp/quality      # a quick look

--data-dir is the folder that holds the test sets, in the layout of docs/data.md
(`<dataset>/test/<modality>/<name>.png`, e.g. `roadscene/test/ir/FLIR_00211.png`). Any layout
that the dataset's builder in `fusionjax.data.builders` accepts works too, e.g. a MMIF-CDDFuse
clone for `roadscene` and the `harvard_cddfuse_*` sets.

What is compared on each test set (`EVAL_SETS`: the test splits of docs/data.md):

* every shipped model of the set's task (`fusionjax.models.list_pretrained`), fused as
  `run.py --pretrained` fuses (`fusionjax.fuse.model_fuser`: a colour source is fused as Y in
  the model's convention and its colour is put back). `gfp_pc` has no task of its own: every
  medical model is scored on it as a transfer (pc in MRI's place, gfp in the colour
  modality's), labelled "transfer";
* every classical baseline (`fusionjax.baselines`), on the same pairs in the same run;
* beside them, numbers labelled "published" where a paper used the same pairs and the same
  metric code (`PUBLISHED`: CDDFuse on RoadScene).

Conventions: `fusionjax.evaluation` scores the fused 8-bit images as written, grey levels read
the way the CDDFuse evaluator reads files. EN, SD, SF, MI, SCD, VIF, Qabf, SSIM and AG follow
the CDDFuse Python evaluator (docs/metrics.md section 6; its SSIM is the sum over the two
sources); FMI (pixel features), MS_SSIM (MEF-MS-SSIM) and Nabf follow Tang's MATLAB toolbox.
Each value is a mean over the pairs. Higher is better except for Nabf. The best value of each
column is bold. FMI takes seconds per image, so a full run takes tens of minutes on a CPU.

Goals, printed and written into the README, for each shipped model on each test set of its
task. On how many of `GOAL_METRICS` (the eight of CDDFuse's tables) does it beat every
baseline? The goal is `GOAL_BEATS_BASELINES`. On roadscene, on how many does it reach
CDDFuse's published value? That means its mean, rounded to the paper's 2 decimals, is at least
the published one; the goal is `GOAL_REACHES_PUBLISHED`. Where a model falls short, the margins
are listed.

Outputs: `--out` (default docs/quality/) gets README.md (the models, the goals, a table per
set, and the command that scored each set) and one `<set>.png` per test set: its first
`--grid-pairs` pairs, with source a, source b, each baseline and each model, reduced below
`GRID_MAX_BYTES`. The fused images, per-pair
`metrics.csv` and full-size grids go to `--work-dir` (default: a temporary folder, removed
afterwards). `--update-index` writes each model's means into its index entry's `test_metrics`
as {set: {metric: mean}} (`fusionjax.models.shipped.write_index`). It needs whole test sets,
so it refuses `--num-pairs`.

The README is updated set by set: the sets this run scores replace their sections and goals,
the others keep theirs from the README already in `--out`, so after retraining one model,
`--sets=<its sets> --update-index` is enough. A set's section shows what one run scored:
score all of a set's models together (no --models), and whole sets (no --num-pairs; published
rows appear only beside whole sets) for the committed README.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import NamedTuple

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from PIL import Image  # noqa: E402

from fusionjax import evaluation, fuse, models  # noqa: E402
from fusionjax.baselines import Fuser  # noqa: E402
from fusionjax.data import builders, io  # noqa: E402
from fusionjax.models import shipped  # noqa: E402

SPLIT = "test"
MEDICAL_TASKS = ("ct_mri", "pet_mri", "spect_mri")
# The eight metrics of CDDFuse's tables (its Python evaluator), then four of Tang's toolbox.
GOAL_METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")
METRICS = (*GOAL_METRICS, "AG", "FMI", "MS_SSIM", "Nabf")
LOWER_IS_BETTER = frozenset({"Nabf"})
GOAL_BEATS_BASELINES = 5
GOAL_REACHES_PUBLISHED = 4
PUBLISHED_DECIMALS = 2
DECIMALS = {"Nabf": 4}  # shown in the tables; 3 for the others
GRID_MAX_BYTES = 400_000

# Z. Zhao et al., "CDDFuse: Correlation-Driven Dual-Branch Feature Decomposition for
# Multi-Modality Image Fusion", CVPR 2023: the RoadScene block of its infrared-visible results
# table. Same 50 test pairs (docs/data.md) and the same evaluator (MMIF-CDDFuse
# utils/Evaluator.py, which `fusionjax.metrics` reproduces), means printed with 2 decimals.
PUBLISHED = {
  "roadscene": {
    "CDDFuse": {
      "EN": 7.44,
      "SD": 54.67,
      "SF": 16.36,
      "MI": 2.30,
      "SCD": 1.81,
      "VIF": 0.69,
      "Qabf": 0.52,
      "SSIM": 0.98,
    }
  }
}


class EvalSet(NamedTuple):
  """One test set.

  Attributes:
    name: its dataset folder in docs/data.md (also its key in `Entry.test_metrics`).
    dataset: its `fusionjax.data.builders` dataset ("harvard/cddfuse_ct_mri").
    task: the task whose models are scored on it; None scores every medical model as a
      transfer.
  """

  name: str
  dataset: str
  task: str | None


EVAL_SETS = (
  EvalSet("roadscene", "roadscene", "ivf"),
  *(
    eval_set
    for task in MEDICAL_TASKS
    for eval_set in (
      EvalSet(f"harvard_{task}", f"harvard/{task}", task),
      EvalSet(f"harvard_cddfuse_{task}", f"harvard/cddfuse_{task}", task),
    )
  ),
  EvalSet("gfp_pc", "gfp_pc", None),
)


def pair_spec(dataset: str) -> builders.PairSpec:
  """The modalities and accepted layouts of a builders dataset ("roadscene", "harvard/ct_mri")."""
  name, _, config = dataset.partition("/")
  builder = tfds.builder_cls(name)
  if not config:
    return builder.SPEC
  return next(item.spec for item in builder.BUILDER_CONFIGS if item.name == config)


def eval_pairs(eval_set: EvalSet, data_dir: pathlib.Path) -> list[io.ImagePair]:
  """The set's test pairs under data_dir, sorted by name, read as its builder reads them."""
  return pair_spec(eval_set.dataset).find_splits(data_dir)[SPLIT].pairs(data_dir)


def task_roles(task: str) -> tuple[str, str]:
  """The modalities (a, b) of a task's test sets ("mri", "ct")."""
  first = next(item for item in EVAL_SETS if item.task == task)
  spec = pair_spec(first.dataset)
  return spec.modality_a, spec.modality_b


def swap_inputs(entry: shipped.Entry) -> bool:
  """Whether the model takes the test sets' (a, b) in reverse order (its `inputs`)."""
  roles = task_roles(entry.task)
  if tuple(entry.inputs) not in (roles, roles[::-1]):
    raise ValueError(
      f"{entry.name}: inputs {entry.inputs} are not the {entry.task} modalities {roles}"
    )
  return tuple(entry.inputs) == roles[::-1]


def models_for(eval_set: EvalSet, entries: Sequence[shipped.Entry]):
  """The entries scored on a set: those of its task, or every medical one (transfer)."""
  tasks = MEDICAL_TASKS if eval_set.task is None else (eval_set.task,)
  return [entry for entry in entries if entry.task in tasks]


def is_better(value: float, other: float, metric: str) -> bool:
  """Whether value beats other (False when either is NaN)."""
  return value < other if metric in LOWER_IS_BETTER else value > other


def best_of(values: Sequence[float], metric: str) -> float:
  """The best of values (NaN ignored; NaN when all are)."""
  values = [value for value in values if not math.isnan(value)]
  if not values:
    return math.nan
  return min(values) if metric in LOWER_IS_BETTER else max(values)


def margin(value: float, other: float, metric: str) -> float:
  """How far value is ahead of other: positive when it is better."""
  return other - value if metric in LOWER_IS_BETTER else value - other


@dataclasses.dataclass(frozen=True)
class SetResult:
  """A test set's scores.

  Attributes:
    eval_set: the set.
    pairs: pairs scored (the first ones by name).
    total_pairs: pairs in the set.
    baselines: the baselines' names, in table order.
    models: the entries scored.
    means: {method: {metric: mean}}, methods by name (models by entry name).
    grid: the reduced image grid written, if any.
  """

  eval_set: EvalSet
  pairs: int
  total_pairs: int
  baselines: list[str]
  models: list[shipped.Entry]
  means: dict[str, dict[str, float]]
  grid: pathlib.Path | None

  @property
  def published(self) -> dict[str, dict[str, float]]:
    return PUBLISHED.get(self.eval_set.name, {}) if self.pairs == self.total_pairs else {}

  @property
  def transfer(self) -> bool:
    return self.eval_set.task is None


class Goal(NamedTuple):
  """One of a model's goals on one test set."""

  model: str
  eval_set: str
  reference: str  # "every baseline" or "<paper> (published)"
  achieved: list[str]  # the GOAL_METRICS it meets
  target: int
  margins: dict[str, float]  # per GOAL_METRICS: ahead of the reference (> 0) or behind

  @property
  def met(self) -> bool:
    return len(self.achieved) >= self.target

  def describe(self) -> str:
    verb = "beats" if self.reference == "every baseline" else "reaches"
    line = (
      f"{self.model} on {self.eval_set}: {verb} {self.reference} on {len(self.achieved)} of "
      f"{len(GOAL_METRICS)} (goal >= {self.target}: {'met' if self.met else 'short'})"
    )
    if not self.met:
      short = ", ".join(
        f"{metric} {self.margins[metric]:+.3f}"
        for metric in GOAL_METRICS
        if metric not in self.achieved
      )
      line += f"; margins where not: {short}"
    return line


def goals(result: SetResult) -> list[Goal]:
  """Each scored model's goals on a set (none for a transfer set)."""
  if result.transfer:
    return []
  found = []
  for entry in result.models:
    values = result.means[entry.name]
    best = {
      metric: best_of([result.means[name][metric] for name in result.baselines], metric)
      for metric in GOAL_METRICS
    }
    found.append(
      Goal(
        entry.name,
        result.eval_set.name,
        "every baseline",
        [m for m in GOAL_METRICS if is_better(values[m], best[m], m)],
        GOAL_BEATS_BASELINES,
        {m: margin(values[m], best[m], m) for m in GOAL_METRICS},
      )
    )
    for paper, published in result.published.items():
      found.append(
        Goal(
          entry.name,
          result.eval_set.name,
          f"{paper} (published)",
          [
            m
            for m in GOAL_METRICS
            if not is_better(published[m], round(values[m], PUBLISHED_DECIMALS), m)
            and not math.isnan(values[m])
          ],
          GOAL_REACHES_PUBLISHED,
          {m: margin(values[m], published[m], m) for m in GOAL_METRICS},
        )
      )
  return found


def markdown_table(result: SetResult) -> str:
  """Rows: baselines, models, published numbers (with their own decimals); columns: METRICS;
  the best of each bold."""
  rows = [(name, "baseline", result.means[name], None) for name in result.baselines]
  kind = "transfer" if result.transfer else "shipped"
  rows += [(entry.name, kind, result.means[entry.name], None) for entry in result.models]
  rows += [
    (paper, "published", values, PUBLISHED_DECIMALS) for paper, values in result.published.items()
  ]
  best = {
    metric: best_of([row[2][metric] for row in rows if metric in row[2]], metric)
    for metric in METRICS
  }
  lines = [
    "| method | kind | " + " | ".join(METRICS) + " |",
    "|---|---|" + "---:|" * len(METRICS),
  ]
  for name, row_kind, values, decimals in rows:
    cells = []
    for metric in METRICS:
      if metric not in values:
        cells.append("–")
        continue
      text = f"{values[metric]:.{decimals or DECIMALS.get(metric, 3)}f}"
      cells.append(f"**{text}**" if values[metric] == best[metric] else text)
    lines.append(f"| {name} | {row_kind} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def compact_png(source: pathlib.Path, target: pathlib.Path, max_bytes: int = GRID_MAX_BYTES):
  """Writes source as a 256-colour PNG at target, scaled down by steps until under max_bytes."""
  image = Image.open(source).convert("RGB")
  while True:
    buffer = BytesIO()
    image.quantize(colors=256).save(buffer, format="PNG", optimize=True)
    if buffer.tell() <= max_bytes:
      break
    width, height = image.size
    image = image.resize((round(width * 0.85), round(height * 0.85)), Image.Resampling.LANCZOS)
  with fuse.atomic_output(target, overwrite=True) as temporary:
    temporary.write_bytes(buffer.getvalue())
  return target


def score_set(
  eval_set: EvalSet,
  entries: Sequence[shipped.Entry],
  data_dir: pathlib.Path,
  work_dir: pathlib.Path,
  out_dir: pathlib.Path | None,
  *,
  load_params: Callable[[str], models.Params],
  num_pairs: int | None = None,
  grid_pairs: int = 3,
) -> SetResult:
  """Fuses and scores a set with every baseline and `entries`; writes `<set>.png` to out_dir
  (None: no grid)."""
  pairs = eval_pairs(eval_set, data_dir)
  chosen = pairs[:num_pairs] if num_pairs else pairs
  baselines = evaluation.baseline_fusers()
  fusers: list[Fuser] = [
    fuse.model_fuser(load_params(entry.name), name=entry.name, swap_inputs=swap_inputs(entry))
    for entry in entries
  ]
  report = evaluation.evaluate(
    [*baselines, *fusers],
    io.PairedFolderSource(chosen),
    work_dir / eval_set.name,
    metric_names=METRICS,
    grid_pairs=grid_pairs if out_dir else 1,
    overwrite=True,
    progress=False,
  )
  grid = compact_png(report.grid_path, out_dir / f"{eval_set.name}.png") if out_dir else None
  return SetResult(
    eval_set,
    len(chosen),
    len(pairs),
    [fuser.name for fuser in baselines],
    list(entries),
    report.means,
    grid,
  )


def updated_entries(
  entries: Sequence[shipped.Entry], results: Sequence[SetResult]
) -> list[shipped.Entry]:
  """The entries with each scored set's means in their test_metrics (other sets kept)."""
  updated = []
  for entry in entries:
    test_metrics = dict(entry.test_metrics)
    for result in results:
      if any(scored.name == entry.name for scored in result.models):
        test_metrics[result.eval_set.name] = {
          metric: round(value, 4) for metric, value in result.means[entry.name].items()
        }
    updated.append(dataclasses.replace(entry, test_metrics=test_metrics))
  return updated


def set_section(result: SetResult, command: str) -> str:
  """A set's section of the README: what was scored, by which command, its table and grid."""
  part = "" if result.pairs == result.total_pairs else f"; first {result.pairs} only"
  what = "transfer of the medical models" if result.transfer else f"task {result.eval_set.task}"
  lines = [
    f"## {result.eval_set.name}",
    "",
    f"{result.total_pairs} test pairs{part} ({what}). Scored by `{command}`",
    f"(JAX {jax.__version__}, {jax.devices()[0].platform}).",
    "",
    markdown_table(result),
  ]
  if result.grid:
    lines += [f"![{result.eval_set.name}]({result.grid.name})"]
  return "\n".join(lines).rstrip() + "\n"


class ShownSet(NamedTuple):
  """A set as the README shows it: its section and its goal lines."""

  section: str
  goal_lines: list[str]


def shown_sets(text: str) -> dict[str, ShownSet]:
  """The sets that a README written by `readme` shows, by name."""
  parts = re.split(r"(?m)^(?=## )", text)
  goal_lines = next((part for part in parts if part.startswith("## Goals")), "").splitlines()
  known = {eval_set.name for eval_set in EVAL_SETS}
  shown = {}
  for part in parts:
    name = part.split("\n", 1)[0].removeprefix("## ").strip()
    if name in known:
      shown[name] = ShownSet(
        part.rstrip() + "\n", [line for line in goal_lines if f" on {name}: " in line]
      )
  return shown


def section_models(section: str) -> list[str]:
  """Names of the models in a set section's table (rows of kind shipped or transfer)."""
  return re.findall(r"(?m)^\| ([^|]+?) \| (?:shipped|transfer) \|", section)


def readme(
  results: Sequence[SetResult],
  command: str,
  previous: str | None = None,
  index: Sequence[shipped.Entry] = (),
) -> str:
  """docs/quality/README.md: the models, the goals, a table and grid per set. Sets that
  `results` do not cover keep their section and goals from `previous` (the README as it was),
  so a run with --sets rescores those sets only; their models' rows come from `index`."""
  shown = shown_sets(previous) if previous else {}
  for result in results:
    shown[result.eval_set.name] = ShownSet(
      set_section(result, command), [f"* {goal.describe()}" for goal in goals(result)]
    )
  ordered = [shown[eval_set.name] for eval_set in EVAL_SETS if eval_set.name in shown]
  entries = {entry.name: entry for entry in index}
  entries |= {entry.name: entry for result in results for entry in result.models}
  names = dict.fromkeys(name for item in ordered for name in section_models(item.section))
  lines = [
    "# Quality of the shipped models",
    "",
    "Written by `benchmarks/quality.py`: each set's section names the run that scored it (a run",
    "with --sets rewrites those sets and keeps the others); do not edit by hand. The script's",
    "docstring says what is compared and how; docs/metrics.md defines",
    "the metrics, docs/data.md the test sets and their overlaps with training sets.",
    "",
    "Each table lists the means over its pairs. EN to SSIM and AG follow the CDDFuse Python",
    "evaluator (SSIM summed over the two sources); FMI (pixel), MS_SSIM (MEF-MS-SSIM) and Nabf",
    "follow Tang's MATLAB toolbox. Higher is better, except Nabf. The best value of each column",
    "is in bold. A published row comes from the paper, on the same pairs and with the same",
    "metric code.",
    "",
    "## Models",
    "",
    "| name | model | task | inputs (a, b) | trained on | steps | hours | hardware | dtype |",
    "|---|---|---|---|---|---:|---:|---|---|",
  ]
  lines += [
    f"| {e.name} | {e.model} | {e.task} | {', '.join(e.inputs)} | {e.data} | {e.steps} | "
    f"{e.wall_time_hours} | {e.hardware} | {e.dtype} |"
    for e in (entries[name] for name in names if name in entries)
  ]
  lines += ["", "## Goals", ""]
  lines += [line for item in ordered for line in item.goal_lines] or ["none"]
  for item in ordered:
    lines += ["", item.section.rstrip()]
  return "\n".join(lines).rstrip() + "\n"


# Options that name places on the scoring machine: the data folder is shown as a placeholder,
# the output and cache folders (which change no score) are left out of the recorded command.
_DATA_DIR = "--data-dir"
_LOCAL_OUTPUTS = ("--out", "--work-dir", "--compilation-cache")


def recorded_command(argv: Sequence[str]) -> str:
  """The command line, without the machine's own folders: the data folder replaced by a
  placeholder, the output and cache folders left out."""
  words, pending = [], None
  for word in argv:
    if pending is not None:
      if pending == _DATA_DIR:
        words.append("/path/to/data")
      pending = None
      continue
    flag, has_value, _ = word.partition("=")
    if flag == _DATA_DIR:
      words.append(f"{_DATA_DIR}=/path/to/data" if has_value else word)
      pending = None if has_value else flag
    elif flag in _LOCAL_OUTPUTS:
      pending = None if has_value else flag
    else:
      words.append(word)
  return shlex.join(["python", "benchmarks/quality.py", *words])


def _names(text: str | None) -> list[str] | None:
  return [name for name in text.split(",") if name] if text else None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  # No abbreviated flags: `recorded_command` recognises the folders' flags by their full names.
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument(
    "--data-dir",
    required=True,
    type=pathlib.Path,
    help="folder of the test sets, layout of docs/data.md (<dataset>/test/<modality>/<name>.png)",
  )
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    default=REPO / "docs" / "quality",
    help="folder of the tables (README.md) and one image grid per set (default: docs/quality)",
  )
  parser.add_argument("--models", help="comma-separated shipped model names (default: all)")
  parser.add_argument(
    "--sets",
    help=f"comma-separated test sets (default: all): {', '.join(s.name for s in EVAL_SETS)}",
  )
  parser.add_argument("--num-pairs", type=int, help="score only the first N pairs of each set")
  parser.add_argument("--no-grids", action="store_true", help="write no image grids")
  parser.add_argument("--grid-pairs", type=int, default=3, help="pairs shown per grid")
  parser.add_argument(
    "--update-index", action="store_true", help="write the means into the index's test_metrics"
  )
  parser.add_argument(
    "--work-dir", type=pathlib.Path, help="keep fused images and metrics.csv here (default: none)"
  )
  parser.add_argument(
    "--compilation-cache",
    default="~/.cache/fusionjax/jax",
    help="persistent XLA compilation cache ('' = off), as run.py's",
  )
  args = parser.parse_args(argv)
  if args.update_index and args.num_pairs:
    parser.error("--update-index writes whole test sets' means: drop --num-pairs")
  if args.num_pairs is not None and args.num_pairs < 1:
    parser.error("--num-pairs must be at least 1")
  if args.grid_pairs < 1:
    parser.error("--grid-pairs must be at least 1 (--no-grids draws none)")
  known = {item.name for item in EVAL_SETS}
  unknown = sorted(set(_names(args.sets) or ()) - known)
  if unknown:
    parser.error(f"unknown test sets {unknown}; known: {sorted(known)}")
  available = {entry.name for entry in models.list_pretrained()}
  unknown = sorted(set(_names(args.models) or ()) - available)
  if unknown:
    parser.error(f"unknown models {unknown}; shipped: {sorted(available) or 'none'}")
  if not args.data_dir.is_dir():
    parser.error(f"--data-dir={args.data_dir}: no such folder")
  return args


def main(argv: Sequence[str]) -> list[SetResult]:
  args = parse_args(argv)
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(args.compilation_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  chosen_models = _names(args.models)
  entries = [
    entry
    for entry in models.list_pretrained()
    if chosen_models is None or entry.name in chosen_models
  ]
  chosen_sets = _names(args.sets)
  params_cache: dict[str, models.Params] = {}

  def load_params(name: str) -> models.Params:
    if name not in params_cache:
      params_cache[name] = models.pretrained(name)
    return params_cache[name]

  out_dir = None if args.no_grids else args.out
  results = []
  with tempfile.TemporaryDirectory(prefix="fusionjax_quality_") as temporary:
    work_dir = args.work_dir or pathlib.Path(temporary)
    for eval_set in EVAL_SETS:
      if chosen_sets is not None and eval_set.name not in chosen_sets:
        continue
      scored = models_for(eval_set, entries)
      if not scored:
        print(f"{eval_set.name}: skipped, no shipped model to score on it", flush=True)
        continue
      start = time.perf_counter()
      result = score_set(
        eval_set,
        scored,
        args.data_dir,
        work_dir,
        out_dir,
        load_params=load_params,
        num_pairs=args.num_pairs,
        grid_pairs=args.grid_pairs,
      )
      print(
        f"\n## {eval_set.name}: {result.pairs} of {result.total_pairs} pairs, "
        f"{time.perf_counter() - start:.0f} s\n\n{markdown_table(result)}",
        flush=True,
      )
      for goal in goals(result):
        print(goal.describe())
      results.append(result)
      # One program is compiled per model and image size; XLA's CPU JIT runs out of mapped
      # memory after a few thousand in one process ("LLVM ERROR: Unable to allocate section
      # memory", seen on gfp_pc after RoadScene's many sizes), so each set's are freed.
      jax.clear_caches()
  if not results:
    return results
  readme_path = args.out / "README.md"
  previous = readme_path.read_text() if readme_path.is_file() else None
  text = readme(results, recorded_command(argv), previous, models.list_pretrained())
  with fuse.atomic_output(readme_path, overwrite=True) as temporary_file:
    temporary_file.write_text(text)
  print(f"\nwrote {args.out / 'README.md'}")
  if args.update_index:
    shipped.write_index(updated_entries(shipped.read_index(), results))
    print(f"updated test_metrics in {shipped.index_file()}")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
