"""Fusers of fusionjax models: a network with its model family's conventions around it.

The conventions come from the family's record (``registry.for_model(model).inference``,
``fusionjax.models.registry.InferenceSpec``), so nothing here names a paper.
"""

import jax
from flax import nnx

from fusionjax import baselines, models
from fusionjax.baselines import Fuser
from fusionjax.models import registry

PROTOCOLS = ("default", "official")

# Mamba scans carry state across the whole image, so no overlap reproduces whole-image
# inference exactly; 64 pixels keeps tiled and whole-image results close (tests/fuse_test.py).
MODEL_OVERLAP = 64


def _swapped_apply(params: models.Params, a: jax.Array, b: jax.Array) -> jax.Array:
  return models.apply(params, b, a)


def model_fuser(
  model: models.Params | nnx.Module,
  *,
  name: str | None = None,
  swap_inputs: bool = False,
  protocol: str = "default",
) -> Fuser:
  """A fuser for a fusionjax model, in evaluation mode, with its family's conventions.

  Args:
    model: ``fusionjax.models.init(...)`` params (or restored ones), or an nnx model.
    name: for folders and tables; default the model family ("mambadfuse", ...).
    swap_inputs: call the model as ``model(b, a)``: for official FusionMamba infrared-visible
      weights, trained as model(visible, infrared). fusionjax-trained models take (a, b).
    protocol: "default": the colour pipeline of ``fusionjax.fuse`` (colour sources fused as Y
      and recoloured, outputs at the sources' size). "official": what the model family's
      official test script does from the image files, to reproduce its saved PNG: its own
      8-bit grey reading, FusionMamba's resize to 256 x 256 (and output at that size), its
      output rounding; saved grey (README "Fusing").
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
  params = model if isinstance(model, models.Params) else models.Params(*nnx.split(model))
  module = params.module()  # a copy: eval() below leaves the caller's model as it is
  family = registry.for_model(module)
  spec = family.inference
  module.eval()
  official = protocol == "official"
  return Fuser(
    name=name or family.name,
    apply=_swapped_apply if swap_inputs else models.apply,
    params=models.Params(*nnx.split(module)),
    y_convention=spec.y_convention,
    quantize_y=spec.quantize_y,
    output=spec.output,
    overlap=MODEL_OVERLAP,
    read_grey=spec.official_grey if official else None,
    resize_to=spec.official_size if official else None,
    **spec.sampling_grid(module.config)._asdict(),
  )


def as_fuser(method: Fuser | str | models.Params | nnx.Module) -> Fuser:
  """A fuser from a fuser, a baseline name (``baselines.names()``), model params or a model."""
  if isinstance(method, Fuser):
    return method
  if isinstance(method, str):
    return baselines.get(method)
  return model_fuser(method)
