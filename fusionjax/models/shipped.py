"""The models fusionjax trained and ships: a registry, and their weights checked at load.

  >>> from fusionjax import models
  >>> [entry.name for entry in models.list_pretrained(task="ivf")]
  >>> params = models.pretrained("s4fusion_ivf")        # or a task: models.pretrained("ivf")
  >>> fused = models.apply(params, ir_planes, visible_y_planes)

Each entry's weights live in the package, `fusionjax/pretrained/<name>/` (config.json and
params.safetensors, the `fusionjax.convert.save_params` format, stored as `Entry.dtype` and
computed in float32); `fusionjax/pretrained/index.json` lists the entries, with the sha256 of
both files, checked before anything is read. `fusionjax.training.export` writes them from a
run; `benchmarks/quality.py` measures `Entry.test_metrics`. docs/pretrained.md is the model
cards.
"""

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

from fusionjax.models.functional import Params

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parents[1] / "pretrained"
INDEX_NAME = "index.json"
TASKS = ("ivf", "ct_mri", "pet_mri", "spect_mri")


class PretrainedError(ValueError):
  """A shipped model that is unknown, missing or whose files fail their checksum."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One shipped model.

  Attributes:
    name: what `pretrained` takes ("s4fusion_ivf").
    model: the registered model variant it is ("s4fusion", "fusionmamba_small").
    task: "ivf", "ct_mri", "pet_mri" or "spect_mri" (`TASKS`).
    default: whether `pretrained(task)` gives this entry.
    inputs: the roles of (a, b), the model's first and second input ("ir", "vi").
    data: what it was trained on, and what was held out.
    recipe: the command that retrains it.
    config: the run's config file, relative to the repository.
    steps: optimizer updates it was trained for.
    wall_time_hours: training time, validation included.
    hardware: what it was trained on.
    dtype: how its weights are stored ("bfloat16", "float32").
    sha256: {file name: sha256 hex digest} of its folder's files.
    test_metrics: {test set: {metric: mean value}} (benchmarks/quality.py).
  """

  name: str
  model: str
  task: str
  default: bool
  inputs: tuple[str, str]
  data: str
  recipe: str
  config: str
  steps: int
  wall_time_hours: float
  hardware: str
  dtype: str
  sha256: dict[str, str]
  test_metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

  @property
  def directory(self) -> pathlib.Path:
    return PRETRAINED_DIR / self.name

  def to_json(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "inputs": list(self.inputs)}

  @classmethod
  def from_json(cls, fields: dict[str, Any]) -> "Entry":
    return cls(**{**fields, "inputs": tuple(fields["inputs"])})


def index_file() -> pathlib.Path:
  """The index of the shipped models (in `PRETRAINED_DIR`, read at each call)."""
  return PRETRAINED_DIR / INDEX_NAME


def read_index(path: pathlib.Path | None = None) -> list[Entry]:
  """The entries of an index file (default `index_file()`; none when it does not exist)."""
  path = path or index_file()
  if not path.is_file():
    return []
  return [Entry.from_json(fields) for fields in json.loads(path.read_text())]


def write_index(entries: list[Entry], path: pathlib.Path | None = None) -> None:
  """Writes `entries` (sorted by task, then name) as the index file (default `index_file()`),
  atomically."""
  from fusionjax.fuse import atomic_output  # the models import no inference code at load

  path = path or index_file()
  ordered = sorted(entries, key=lambda entry: (TASKS.index(entry.task), entry.name))
  with atomic_output(path, overwrite=True) as temporary:
    temporary.write_text(json.dumps([entry.to_json() for entry in ordered], indent=1) + "\n")


def list_pretrained(task: str | None = None) -> list[Entry]:
  """The shipped models, or those of one task."""
  if task is not None and task not in TASKS:
    raise PretrainedError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
  return [entry for entry in read_index() if task is None or entry.task == task]


def pretrained_entry(name_or_task: str) -> Entry:
  """The entry of a shipped model's name, or a task's default model."""
  entries = read_index()
  for candidate in entries:
    if candidate.name == name_or_task or (candidate.task == name_or_task and candidate.default):
      return candidate
  names = ", ".join(candidate.name for candidate in entries) or "none"
  raise PretrainedError(
    f"no pretrained model {name_or_task!r}; shipped: {names} (or a task: {', '.join(TASKS)})"
  )


def file_sha256(path: pathlib.Path) -> str:
  with open(path, "rb") as file:
    return hashlib.file_digest(file, "sha256").hexdigest()


def verify(item: Entry) -> None:
  """Raises PretrainedError unless every file of the entry exists with its sha256."""
  for file_name, expected in item.sha256.items():
    path = item.directory / file_name
    if not path.is_file():
      raise PretrainedError(
        f"pretrained model {item.name!r}: {path} is missing (reinstall fusionjax)"
      )
    if file_sha256(path) != expected:
      raise PretrainedError(
        f"pretrained model {item.name!r}: {path} is corrupt (sha256 differs from the "
        "index's; reinstall fusionjax)"
      )


def pretrained(name_or_task: str, **overrides) -> Params:
  """Params of a shipped model (a name, or a task for its default), checked against their
  sha256, ready for `fusionjax.models.apply` and `fusionjax.fuse`; `overrides` replace config
  fields that do not change the weights (e.g. scan_impl)."""
  from fusionjax import convert  # convert imports the registry: not at module import

  item = pretrained_entry(name_or_task)
  verify(item)
  return convert.load_params(item.directory, **overrides)
