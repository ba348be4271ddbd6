"""Where a run's numbers and pictures go: metrics.jsonl, TensorBoard events, samples/*.png.

Only the first process writes; the others get a writer that does nothing, so callers need no
process checks.
"""

import json
import pathlib
import time
from collections.abc import Mapping

from matplotlib.figure import Figure
from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` (one JSON object per line: "step", "time" and
  the values) and to TensorBoard events in `workdir`; figures go to TensorBoard and to
  `workdir/samples/<tag>_<step>.png`."""

  def __init__(self, workdir: str | pathlib.Path, *, enabled: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.enabled = enabled
    if enabled:
      (self.workdir / "samples").mkdir(parents=True, exist_ok=True)
      self._jsonl = (self.workdir / "metrics.jsonl").open("a")
      self._events = SummaryWriter(str(self.workdir))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {name: float(value) for name, value in scalars.items()}
    self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._events.add_scalar(name, value, step)
    self._events.flush()

  def write_figure(self, step: int, tag: str, figure: Figure) -> pathlib.Path | None:
    """Saves the figure as samples/<tag>_<step:07d>.png and as a TensorBoard image."""
    if not self.enabled:
      return None
    path = self.workdir / "samples" / f"{tag}_{step:07d}.png"
    figure.savefig(path, format="png", dpi=100)
    self._events.add_figure(tag, figure, step, close=False)
    self._events.flush()
    return path

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._events.close()
