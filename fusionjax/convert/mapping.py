"""Name and layout mapping from official PyTorch state_dicts to the NNX parameters of our blocks.

The one mapping protocol of `fusionjax.convert`: a `ParamMap` is a dict {NNX parameter path:
(PyTorch tensor name, layout transform)}. The helpers below produce the entries of one building
block; each paper module composes them into the map of its whole network (its
`registry.TorchSpec.param_map(config)`), and `mapped_arrays` checks the tensors against it: every
NNX parameter must get exactly one tensor of exactly its shape, and every PyTorch tensor must be
used (or be listed as ignored with a check of its value), so a wrong or partial map fails loudly,
naming every problem at once. `load_mapped` copies them into a model in place.

Layouts: Linear (out, in) -> kernel (in, out); Conv1d/Conv2d (out, in/groups, *k) -> (*k,
in/groups, out); LayerNorm weight -> scale. The merged per-direction SSM tensors of VMamba-style
code: x_proj_weight (K, R + 2N, d_inner) -> (K, d_inner, R + 2N); dt_projs_weight (K, d_inner, R)
-> (K, R, d_inner); A_logs (K d_inner, N) -> (K, d_inner, N) and Ds (K d_inner,) -> (K, d_inner),
both k-major.
"""

import collections
import re
from collections.abc import Callable, Collection, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax.convert.errors import counted

Path = tuple
Transform = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
ParamMap = dict[Path, tuple[str, Transform]]
Checks = Mapping[str, Callable[[np.ndarray], bool]]  # ignored tensor name -> check of its value

# Reading a config off a state_dict (each family's `registry.TorchSpec.config_fields`).


def indices(names: Collection[str], prefix: str) -> set[int]:
  """The numbers i of the names "<prefix><i>.<...>"."""
  pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
  return {int(match.group(1)) for name in names if (match := pattern.match(name))}


def block_count(names: Collection[str], prefix: str) -> int:
  """1 + the largest of `indices(names, prefix)` (0 if none): the number of blocks of a stage,
  e.g. block_count(state_dict, "layers.0.blocks.")."""
  return 1 + max(indices(names, prefix), default=-1)


def first_shape(state_dict: Mapping[str, np.ndarray], pattern: str) -> tuple[int, ...] | None:
  """Shape of the first tensor (in name order) whose whole name matches the regex `pattern`."""
  regex = re.compile(pattern)
  name = min((name for name in state_dict if regex.fullmatch(name)), default=None)
  return None if name is None else tuple(np.shape(state_dict[name]))


def identity(array, shape):
  del shape
  return array


def linear_weight(array, shape):
  del shape
  return array.T


def conv_weight(array, shape):
  """Conv1d/Conv2d (out, in/groups, *kernel) -> (*kernel, in/groups, out)."""
  del shape
  return array.transpose(*range(2, array.ndim), 1, 0)


def per_direction_weight(array, shape):
  """(K, out, in) merged projection -> (K, in, out)."""
  del shape
  return array.transpose(0, 2, 1)


def reshaped(array, shape):
  """Same elements in the same order, new shape: e.g. merged k-major (K * d_inner, N) ->
  (K, d_inner, N), or a (1, 1, 3) Conv1d weight -> (3,)."""
  if array.size != int(np.prod(shape)):
    raise ValueError(f"cannot reshape {array.shape} into {shape}")
  return array.reshape(shape)


def linear_entries(path: Path, name: str, *, bias: bool) -> ParamMap:
  entries = {path + ("kernel",): (f"{name}.weight", linear_weight)}
  if bias:
    entries[path + ("bias",)] = (f"{name}.bias", identity)
  return entries


def layer_norm_entries(path: Path, name: str) -> ParamMap:
  return {
    path + ("scale",): (f"{name}.weight", identity),
    path + ("bias",): (f"{name}.bias", identity),
  }


def conv_entries(path: Path, name: str, *, bias: bool = True) -> ParamMap:
  entries = {path + ("kernel",): (f"{name}.weight", conv_weight)}
  if bias:
    entries[path + ("bias",)] = (f"{name}.bias", identity)
  return entries


def selective_ssm_entries(path: Path, name: str) -> ParamMap:
  """`ssm.SelectiveSSM` <- {name}.dt_projs_weight, dt_projs_bias, A_logs, Ds."""
  return {
    path + ("dt_kernel",): (f"{name}.dt_projs_weight", per_direction_weight),
    path + ("dt_bias",): (f"{name}.dt_projs_bias", identity),
    path + ("A_log",): (f"{name}.A_logs", reshaped),
    path + ("D",): (f"{name}.Ds", reshaped),
  }


def directional_ssm_entries(path: Path, name: str) -> ParamMap:
  """`ssm.DirectionalSSM` <- {name}.x_proj_weight plus the `selective_ssm_entries`."""
  return {
    path + ("selection", "kernel"): (f"{name}.x_proj_weight", per_direction_weight),
    **selective_ssm_entries(path + ("ssm",), name),
  }


def ss2d_entries(path: Path, name: str) -> ParamMap:
  """`vss.SS2D` <- VMamba/EfficientVMamba `SS2D` (in_proj, conv2d, SSM, out_norm, out_proj)."""
  return {
    **linear_entries(path + ("in_proj",), f"{name}.in_proj", bias=False),
    **conv_entries(path + ("conv",), f"{name}.conv2d"),
    **directional_ssm_entries(path + ("ssm",), name),
    **layer_norm_entries(path + ("out_norm",), f"{name}.out_norm"),
    **linear_entries(path + ("out_proj",), f"{name}.out_proj", bias=False),
  }


def selective_scan_branch_entries(path: Path, name: str, suffix: str = "") -> ParamMap:
  """`mamba.SelectiveScanBranch` <- a mamba_ssm Mamba's conv1d, x_proj, dt_proj and D, each name
  followed by `suffix` (MambaDFuse's m3 mixer: "_b", "_c" for its second and third branch)."""
  return {
    **conv_entries(path + ("conv1d",), f"{name}.conv1d{suffix}"),
    **linear_entries(path + ("x_proj",), f"{name}.x_proj{suffix}", bias=False),
    **linear_entries(path + ("dt_proj",), f"{name}.dt_proj{suffix}", bias=True),
    path + ("D",): (f"{name}.D{suffix}", identity),
  }


def mamba_entries(path: Path, name: str) -> ParamMap:
  """`mamba.Mamba` <- mamba_ssm `Mamba` (in_proj, the scan branch, A_log, out_proj)."""
  return {
    **linear_entries(path + ("in_proj",), f"{name}.in_proj", bias=False),
    **selective_scan_branch_entries(path + ("ssm",), name),
    path + ("A_log",): (f"{name}.A_log", identity),
    **linear_entries(path + ("out_proj",), f"{name}.out_proj", bias=False),
  }


def multi_modal_mamba_entries(path: Path, name: str) -> ParamMap:
  """`mamba.MultiModalMamba` <- MambaDFuse's m3 `Mamba`: in_proj, in_proj_extra1/2, the branches
  `ssm`, `ssm_b`, `ssm_c` (conv1d, conv1d_b, conv1d_c, ...), A_log, A_b_log, out_proj. The paper
  variant's A_c_log has no official tensor."""
  entries = {path + (proj,): (f"{name}.{proj}", identity) for proj in ("A_log", "A_b_log")}
  for proj in ("in_proj", "in_proj_extra1", "in_proj_extra2", "out_proj"):
    entries |= linear_entries(path + (proj,), f"{name}.{proj}", bias=False)
  for branch, suffix in (("ssm", ""), ("ssm_b", "_b"), ("ssm_c", "_c")):
    entries |= selective_scan_branch_entries(path + (branch,), name, suffix)
  return entries


def ldc_entries(path: Path, name: str) -> ParamMap:
  """`ldc.LDC` <- FusionMamba's LDC: conv.weight, learnable_mask (out, in), learnable_theta.

  Its frozen all-ones `base_mask` has no NNX parameter (pass it to `load_mapped` as ignored).
  """
  return {
    path + ("kernel",): (f"{name}.conv.weight", conv_weight),
    path + ("centre_gain",): (f"{name}.learnable_mask", linear_weight),
    path + ("theta",): (f"{name}.learnable_theta", identity),
  }


def patch_embed_entries(path: Path, name: str) -> ParamMap:
  return {
    **conv_entries(path + ("proj",), f"{name}.proj"),
    **layer_norm_entries(path + ("norm",), f"{name}.norm"),
  }


def patch_merging_entries(path: Path, name: str) -> ParamMap:
  return {
    **layer_norm_entries(path + ("norm",), f"{name}.norm"),
    **linear_entries(path + ("reduction",), f"{name}.reduction", bias=False),
  }


def patch_expand_entries(path: Path, name: str) -> ParamMap:
  return {
    **linear_entries(path + ("expand",), f"{name}.expand", bias=False),
    **layer_norm_entries(path + ("norm",), f"{name}.norm"),
  }


def unet_config(
  state_dict: Mapping[str, np.ndarray],
  *,
  embed_conv: str,
  levels: str,
  encoder_blocks: str,
  decoder_blocks: str,
) -> dict:
  """embed_dim, depths and decoder_depths of a VMamba-style U-Net's state_dict: the output width
  of the patch-embedding conv weight `embed_conv`, one level per index of `levels`
  ("Cross_block."), and per level the blocks of `encoder_blocks` / `decoder_blocks`, formatted
  with the level ("layers.{}.blocks.")."""
  fields = {}
  if embed := first_shape(state_dict, re.escape(embed_conv)):
    fields["embed_dim"] = embed[0]
  if num_levels := block_count(state_dict, levels):
    for field, blocks in (("depths", encoder_blocks), ("decoder_depths", decoder_blocks)):
      fields[field] = tuple(
        block_count(state_dict, blocks.format(level)) for level in range(num_levels)
      )
  return fields


def _dotted(paths) -> list[str]:
  return sorted(".".join(map(str, path)) for path in paths)


def mapped_arrays(
  shapes: Mapping[Path, tuple[int, ...]],
  state_dict: Mapping[str, np.ndarray],
  mapping: ParamMap,
  *,
  ignored: Checks | None = None,
) -> dict[Path, np.ndarray]:
  """The value of every NNX parameter from `state_dict`, following `mapping`.

  Args:
    shapes: NNX parameter path -> its shape, for every parameter to fill.
    state_dict: PyTorch tensor name -> array (numpy or anything `np.asarray` takes).
    mapping: NNX parameter path -> (PyTorch name, transform), covering every parameter.
    ignored: PyTorch names that have no NNX parameter, each with a predicate its value must
      satisfy (e.g. FusionMamba's frozen all-ones LDC masks).

  Returns:
    NNX parameter path -> float32 array of its shape.

  Raises:
    ValueError counting (and naming the first few of) every parameter without a tensor, tensor
    without a parameter, shape mismatch and ignored tensor failing its check, all at once.
  """
  ignored = dict(ignored or {})
  used = collections.Counter(name for name, _ in mapping.values())
  arrays, misfits = {}, []
  for path, (name, transform) in mapping.items():
    if path not in shapes or name not in state_dict:
      continue
    tensor = np.asarray(state_dict[name], dtype=np.float32)
    try:
      value = transform(tensor, shapes[path])
    except ValueError:  # e.g. a transpose for another number of dimensions
      value = None
    if value is None or value.shape != tuple(shapes[path]):
      misfits.append(
        f"{name} {tensor.shape} does not fit {_dotted([path])[0]} {tuple(shapes[path])}"
      )
    else:
      arrays[path] = value
  problems = [
    counted(title, names)
    for title, names in (
      ("NNX parameters without a PyTorch tensor", _dotted(set(shapes) - set(mapping))),
      (
        "mapping entries naming NNX parameters that do not exist",
        _dotted(set(mapping) - set(shapes)),
      ),
      ("PyTorch tensors mapped twice", sorted(name for name, n in used.items() if n > 1)),
      ("PyTorch tensors missing from the state_dict", sorted(set(used) - set(state_dict))),
      ("PyTorch tensors with no NNX parameter", sorted(set(state_dict) - set(used) - set(ignored))),
      ("misshapen tensors", sorted(misfits)),
      (
        "ignored tensors failing their check",
        sorted(
          name
          for name, check in ignored.items()
          if name in state_dict and not check(np.asarray(state_dict[name]))
        ),
      ),
    )
    if names
  ]
  if problems:
    raise ValueError("; ".join(problems))
  return arrays


def load_mapped(
  model: nnx.Module,
  state_dict: Mapping[str, np.ndarray],
  mapping: ParamMap,
  *,
  ignored: Checks | None = None,
  variables: tuple[type[nnx.Variable], ...] = (nnx.Param,),
) -> None:
  """Copies `state_dict` into `model`'s variables following `mapping`, in place.

  Args:
    model: the NNX model to fill.
    state_dict, mapping, ignored: as for `mapped_arrays`.
    variables: the variable types to fill (e.g. also nnx.BatchStat for running statistics).

  Raises:
    ValueError: as `mapped_arrays`.
  """
  params = dict(nnx.to_flat_state(nnx.state(model, variables)))  # a tuple filter: any of them
  arrays = mapped_arrays(
    {path: var.shape for path, var in params.items()}, state_dict, mapping, ignored=ignored
  )
  nnx.update(
    model,
    nnx.from_flat_state(
      {path: type(params[path])(jnp.asarray(value)) for path, value in arrays.items()}
    ),
  )
