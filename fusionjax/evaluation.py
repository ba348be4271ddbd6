"""Evaluating fusion methods on a split: per-image metrics, a table of means, an image grid.

    methods = [fuse.model_fuser(params), *evaluation.baseline_fusers()]
    report = evaluation.evaluate(methods, source, "runs/eval/roadscene_test")
    print(report.table)

``evaluate`` writes into ``out_dir``:

* ``fused/<method>/<name>.png``: every fused image (``fusionjax.fuse``);
* ``metrics.csv``: one row per method and pair: method, name, height, width, then the metrics;
* ``summary.md``: a markdown table, one row per method, of each metric's mean over the pairs;
* ``grid.png``: for the first ``grid_pairs`` pairs (by name), source a, source b and each
  method's result.

Every table thus carries the classical baselines next to the model (``baseline_fusers``).

Metric inputs follow the reference pipeline (docs/metrics.md section 2): each image as a
reader of the files sees it, 8-bit (16-bit sources scaled by 255/65535 and rounded), converted
to grey levels on 0..255 with OpenCV's rounded BT.601 rule (``fusionjax.metrics.rgb_to_grey``);
for a colour result that is the grey of the recoloured RGB file. Means are arithmetic means over
the pairs, as the references take them; a NaN (SCD when F equals a source) propagates.

The pieces are pure functions on arrays (``grey_levels``, ``score``, ``mean_table``,
``markdown_table``, ``grid_figure``) for notebooks.
"""

import csv
import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from fusionjax import baselines, fuse, metrics
from fusionjax.baselines import Fuser
from fusionjax.data import io
from fusionjax.metrics.inputs import Convention as MetricConvention
from fusionjax.shapes import GreyImage

_ID_COLUMNS = ("method", "name", "height", "width")
_SCORE_CHUNK = 16  # fused pairs scored together (metrics.evaluate_batch stacks same sizes)


def baseline_fusers() -> list[Fuser]:
  """The classical baselines, in ``baselines.names()`` order."""
  return [baselines.get(name) for name in baselines.names()]


def to_8bit(image: np.ndarray) -> np.ndarray:
  """An image as 8 bits: uint8 as is, uint16 scaled by 255/65535, floats in [0, 1] by 255;
  rounded. Same shape."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  scale = 255.0 / 65535.0 if image.dtype == np.uint16 else 255.0
  return np.clip(np.round(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def grey_levels(image: np.ndarray) -> GreyImage:
  """What the metrics see of an image, (H, W), (H, W, 1) or (H, W, 3): float32 grey levels
  (``to_8bit``, then ``metrics.rgb_to_grey``)."""
  image = to_8bit(image)
  return metrics.rgb_to_grey(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)


def score(
  pairs: Sequence[fuse.FusedPair],
  method: str,
  *,
  metric_names: Sequence[str] | None = None,
  convention: MetricConvention = "python",
) -> list[dict]:
  """Metric rows of fused pairs: {"method", "name", "height", "width", <metric>: float, ...}.

  Args:
    pairs: fused pairs (``fuse.FusionJob`` yields them).
    method: the ``method`` column.
    metric_names: keys of ``fusionjax.metrics.ALL_METRICS``; default ``DEFAULT_METRICS``.
    convention: "python" (CDDFuse evaluator) or "matlab" (``fusionjax.metrics.evaluate``).
  """
  if not pairs:
    return []
  triples = [
    [grey_levels(image) for image in (pair.image_a, pair.image_b, pair.fused)] for pair in pairs
  ]
  values = metrics.evaluate_batch(*zip(*triples), metrics=metric_names, convention=convention)
  return [
    {
      "method": method,
      "name": pair.name,
      "height": pair.fused.shape[0],
      "width": pair.fused.shape[1],
      **{key: float(column[index]) for key, column in values.items()},
    }
    for index, pair in enumerate(pairs)
  ]


def _metric_columns(rows: Sequence[dict]) -> list[str]:
  return [key for key in rows[0] if key not in _ID_COLUMNS]


def mean_table(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
  """{method: {metric: mean over that method's rows}}, methods in first-appearance order."""
  columns = _metric_columns(rows)
  methods = list(dict.fromkeys(row["method"] for row in rows))
  return {
    method: {
      column: float(np.mean([row[column] for row in rows if row["method"] == method]))
      for column in columns
    }
    for method in methods
  }


def markdown_table(rows: Sequence[dict], *, decimals: int = 4) -> str:
  """A markdown table of ``mean_table(rows)``: one row per method, one column per metric,
  preceded by the number of pairs."""
  means = mean_table(rows)
  columns = _metric_columns(rows)
  pairs = len({row["name"] for row in rows})
  lines = [
    f"Means over {pairs} pairs.",
    "",
    "| method | " + " | ".join(columns) + " |",
    "|---|" + "---:|" * len(columns),
  ]
  lines += [
    f"| {method} | " + " | ".join(f"{value:.{decimals}f}" for value in values.values()) + " |"
    for method, values in means.items()
  ]
  return "\n".join(lines) + "\n"


def write_csv(
  rows: Sequence[dict], path: str | os.PathLike, *, overwrite: bool = False
) -> pathlib.Path:
  """Writes metric rows as CSV (full float precision), columns in the rows' key order,
  atomically (``fuse.atomic_output``)."""
  with fuse.atomic_output(path, overwrite=overwrite) as temporary:
    with temporary.open("w", newline="") as handle:
      writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
  return pathlib.Path(path)


class Example(NamedTuple):
  """One row of the grid: a pair's sources and each method's fused image (any of the shapes
  and dtypes ``to_8bit`` takes)."""

  name: str
  image_a: np.ndarray
  image_b: np.ndarray
  fused: dict[str, np.ndarray]


def grid_figure(examples: Sequence[Example], *, cell_inches: float = 2.2) -> Figure:
  """A grid of images: one row per example; columns source a, source b, then each method."""
  methods = list(examples[0].fused)
  titles = ["source a", "source b", *methods]
  figure = Figure(
    figsize=(cell_inches * len(titles), cell_inches * len(examples)), layout="constrained"
  )
  axes = figure.subplots(len(examples), len(titles), squeeze=False)
  for row, example in zip(axes, examples):
    images = [example.image_a, example.image_b, *(example.fused[m] for m in methods)]
    for column, (axis, image) in enumerate(zip(row, images)):
      image = to_8bit(image)
      image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
      axis.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
      axis.set_xticks([])
      axis.set_yticks([])
      if example is examples[0]:
        axis.set_title(titles[column], fontsize=9)
      if column == 0:
        axis.set_ylabel(example.name, fontsize=9)
  return figure


@dataclasses.dataclass(frozen=True)
class Report:
  """What ``evaluate`` wrote, and the rows and table it computed."""

  out_dir: pathlib.Path
  csv_path: pathlib.Path
  table_path: pathlib.Path
  grid_path: pathlib.Path
  rows: list[dict]
  table: str

  @property
  def means(self) -> dict[str, dict[str, float]]:
    return mean_table(self.rows)


def evaluate(
  methods: Sequence[Fuser | str],
  source: Sequence[dict],
  out_dir: str | os.PathLike,
  *,
  options: fuse.Options = fuse.Options(),
  metric_names: Sequence[str] | None = None,
  convention: MetricConvention = "python",
  grid_pairs: int = 4,
  overwrite: bool = False,
  progress: bool = True,
) -> Report:
  """Fuses a split with every method and writes the report (module docstring).

  Args:
    methods: fusers (``fuse.model_fuser``, ``baseline_fusers()``) or baseline names; their
      names must differ.
    source: the split's records (``io.PairedFolderSource``, ``fuse.dataset_source``).
    out_dir: the report folder.
    options: batching, tiling and memory (``fuse.Options``).
    metric_names, convention: as ``score``.
    grid_pairs: pairs shown in ``grid.png``.
    overwrite: replace existing outputs; otherwise any existing one is an error, raised
      before anything is fused.
    progress: progress bars.
  """
  methods = [fuse.as_fuser(method) for method in methods]
  names = [method.name for method in methods]
  if len(set(names)) != len(names):
    raise ValueError(f"method names must differ, got {names}")
  out_dir = pathlib.Path(out_dir)
  pairs = fuse.inventory(source)
  if not pairs:
    raise ValueError(f"no pairs to evaluate in {source!r}")
  side, metric = metrics.smallest_side(metric_names, convention=convention)
  small = [f"{p.name} ({p.height}x{p.width})" for p in pairs if min(p.height, p.width) < side]
  if small:
    raise fuse.InputError(
      f"{metric} needs images of at least {side}x{side} pixels; {len(small)} pair(s) are "
      f"smaller: {io.listing(small, limit=5)}"
    )
  pair_names = sorted(pair.name for pair in pairs)
  fused_paths = {
    (method.name, name): out_dir / "fused" / method.name / f"{name}.png"
    for method in methods
    for name in pair_names
  }
  csv_path, table_path, grid_path = (
    out_dir / file for file in ("metrics.csv", "summary.md", "grid.png")
  )
  fuse.check_outputs([*fused_paths.values(), csv_path, table_path, grid_path], overwrite=overwrite)

  shown = pair_names[:grid_pairs]
  sources: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  shown_fused: dict[str, dict[str, np.ndarray]] = {name: {} for name in shown}
  rows = []
  for method in methods:
    pending = []
    for pair in fuse.FusionJob(method, source, options, pairs=pairs, progress=progress):
      fuse.write_png(pair.fused, fused_paths[method.name, pair.name], overwrite=overwrite)
      if pair.name in shown_fused:
        sources[pair.name] = (pair.image_a, pair.image_b)
        shown_fused[pair.name][method.name] = pair.fused
      pending.append(pair)
      if len(pending) == _SCORE_CHUNK:
        rows += score(pending, method.name, metric_names=metric_names, convention=convention)
        pending = []
    rows += score(pending, method.name, metric_names=metric_names, convention=convention)
  position = {name: index for index, name in enumerate(pair_names)}
  rows.sort(key=lambda row: (names.index(row["method"]), position[row["name"]]))

  write_csv(rows, csv_path, overwrite=overwrite)
  table = markdown_table(rows)
  with fuse.atomic_output(table_path, overwrite=overwrite) as temporary:
    temporary.write_text(table)
  examples = [Example(name, *sources[name], shown_fused[name]) for name in shown]
  with fuse.atomic_output(grid_path, overwrite=overwrite) as temporary:
    grid_figure(examples).savefig(temporary, format="png", dpi=100)
  return Report(out_dir, csv_path, table_path, grid_path, rows, table)
