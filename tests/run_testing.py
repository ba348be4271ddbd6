"""Test helpers for training runs: what a run folder holds on disk."""

import pathlib


def finished_steps(workdir: pathlib.Path) -> list[int]:
  """The steps of the run's finished checkpoints, ascending ([] before the first); orbax's
  temporary folders of a save in progress are not steps."""
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit())
