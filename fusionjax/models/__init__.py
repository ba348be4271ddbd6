"""Fusion models: one module per model, each registered by name.

    model = build("mambadfuse", rngs=nnx.Rngs(0))    # NNX module
    params = init(0, "mambadfuse_tiny")              # functional face
    fused = apply(params, a, b)
"""

# Importing a model module registers its variants ("<name>", "<name>_tiny", ...).
from fusionjax.models import fusionmamba, mambadfuse, s4fusion  # noqa: F401
from fusionjax.models.functional import Params, apply, build, init, resolve_config
from fusionjax.models.registry import names

__all__ = ["Params", "apply", "build", "init", "names", "resolve_config"]
