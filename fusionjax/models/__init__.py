"""Fusion models: one module per paper, each described by one `registry.Family` record.

    model = build("mambadfuse", rngs=nnx.Rngs(0))    # NNX module
    params = init(0, "mambadfuse_tiny")              # functional face
    fused = apply(params, a, b)
    params = pretrained("s4fusion_ivf")              # a shipped, trained model (list_pretrained())

The papers' families are registered here, the one place that names them; everything else asks
the registry (`registry.get(name)`, `registry.for_model(model)`).
"""

from fusionjax.models import fusionmamba, mambadfuse, registry, s4fusion
from fusionjax.models.functional import (
  Params,
  apply,
  build,
  build_compiled,
  family_of,
  init,
  resolve_config,
)
from fusionjax.models.registry import names
from fusionjax.models.shipped import (
  PretrainedError,
  list_pretrained,
  pretrained,
  pretrained_entry,
)

for _family in (mambadfuse.FAMILY, fusionmamba.FAMILY, s4fusion.FAMILY):
  registry.register(_family)

__all__ = [
  "Params",
  "PretrainedError",
  "apply",
  "build",
  "build_compiled",
  "family_of",
  "init",
  "list_pretrained",
  "names",
  "pretrained",
  "pretrained_entry",
  "resolve_config",
]
