"""Validation during training: the eval pairs fused and scored as the final report does it."""

from collections.abc import Sequence

from flax import nnx
from matplotlib.figure import Figure

from fusionjax import evaluation, fuse


def validate(
  model: nnx.Module,
  source: Sequence[dict],
  *,
  metric_names: Sequence[str] | None,
  swap_inputs: bool,
  num_samples: int,
) -> tuple[dict[str, float], Figure | None]:
  """Fuses every pair of `source` with `model` (fusionjax.fuse: the model family's colour and
  output conventions) and scores it (fusionjax.evaluation.score).

  Returns the mean of each metric over the pairs and a grid (sources, fused) of the first
  `num_samples` pairs by name (None when 0).
  """
  fuser = fuse.model_fuser(model, name="fused", swap_inputs=swap_inputs)
  pairs = sorted(fuse.FusionJob(fuser, source, progress=False), key=lambda pair: pair.name)
  rows = evaluation.score(pairs, fuser.name, metric_names=metric_names)
  examples = [
    evaluation.Example(pair.name, pair.image_a, pair.image_b, {fuser.name: pair.fused})
    for pair in pairs[:num_samples]
  ]
  grid = evaluation.grid_figure(examples) if examples else None
  return evaluation.mean_table(rows)[fuser.name], grid
