"""2-D selective-scan mixers and the blocks and stages built from them.

- `SS2D`: the gated 2-D SSM mixer. `scan="cross"` is VMamba's four full-length directions
  (S4Fusion's VSS block, docs/architectures.md 3.3); `scan="skip"` is EfficientVMamba's ES2D, four
  stride-2 sub-grids (FusionMamba, 2.5). Everything else is the same code in both repositories.
- `VSSBlock` (S4Fusion): x + SS2D(LN(x)).
- `DVSSBlock` (FusionMamba's "VSSBlock_new", 2.3): ES2D + ECA + LDC + BiAttn + MLP.
- `EncoderStage` / `DecoderStage`: blocks then PatchMerging; PatchExpand then blocks.

All tensors are `Features` (`fusionjax/shapes.py` has the letter legend).
"""

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.layers import scan2d
from fusionjax.layers.channel_attention import ECA, BiAttn
from fusionjax.layers.ldc import LDC
from fusionjax.layers.patches import PatchExpand, PatchMerging
from fusionjax.layers.ssm import DirectionalSSM
from fusionjax.layers.torch_init import depthwise_conv3x3, dt_rank_for, layer_norm, linear

ScanPattern = Literal["cross", "skip"]

# (sequence builder, inverse) per pattern; sequences are (batch, L, 4, C).
SCAN_PATTERNS = {
  "cross": (scan2d.cross_scan, scan2d.cross_merge),
  "skip": (scan2d.skip_scan, scan2d.skip_merge),
}


def scan_map(ssm: DirectionalSSM, x, pattern: ScanPattern):
  """(batch, H, W, d_inner) -> (batch, H, W, d_inner): sequences out, SSM, merged back."""
  to_sequences, merge = SCAN_PATTERNS[pattern]
  return merge(ssm(to_sequences(x)), x.shape[1], x.shape[2])


def drop_path(rate: float, *, rngs: nnx.Rngs) -> nnx.Dropout:
  """Stochastic depth on (batch, H, W, C): drops whole samples, rescales by 1 / (1 - rate)."""
  return nnx.Dropout(rate, broadcast_dims=(1, 2, 3), rngs=rngs)


class SS2D(nnx.Module):
  """(batch, H, W, d_model) -> same shape.

  x, z = in_proj(x) (d_model -> 2 d_inner, no bias); x = SiLU(DWConv3x3(x));
  y = LN(merge(SSM(scan(x)))) * SiLU(z); out_proj (d_inner -> d_model, no bias).
  d_inner = int(expand * d_model); dt_rank = ceil(d_model / 16).
  """

  def __init__(
    self, d_model: int, *, expand: float, d_state: int, scan: ScanPattern, rngs: nnx.Rngs
  ):
    d_inner = int(expand * d_model)
    self.scan = scan
    self.in_proj = linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.conv = depthwise_conv3x3(d_inner, rngs=rngs)
    self.ssm = DirectionalSSM(
      scan2d.NUM_DIRECTIONS, d_inner, dt_rank_for(d_model), d_state, rngs=rngs
    )
    self.out_norm = layer_norm(d_inner, rngs=rngs)
    self.out_proj = linear(d_inner, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    x, z = jnp.split(self.in_proj(x), 2, axis=-1)
    y = scan_map(self.ssm, jax.nn.silu(self.conv(x)), self.scan)
    return self.out_proj(self.out_norm(y) * jax.nn.silu(z))


class VSSBlock(nnx.Module):
  """S4Fusion's VSS block: x + SS2D(LN(x)), VMamba cross scan, no MLP."""

  def __init__(self, dim: int, *, expand: float, d_state: int, rngs: nnx.Rngs):
    self.norm = layer_norm(dim, rngs=rngs)
    self.mixer = SS2D(dim, expand=expand, d_state=d_state, scan="cross", rngs=rngs)

  def __call__(self, x):
    return x + self.mixer(self.norm(x))


class MLP(nnx.Module):
  """Linear(C -> hidden, bias) -> exact GELU -> Linear(hidden -> C, bias)."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.fc1 = linear(dim, hidden, use_bias=True, rngs=rngs)
    self.fc2 = linear(hidden, dim, use_bias=True, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class DVSSBlock(nnx.Module):
  """FusionMamba's DVSS block, as the official code computes it (docs/architectures.md 2.3).

  s = ES2D-SSM(LN(x)); c = LDC(s + ECA(s)); y = x + DropPath(BiAttn(s) + BiAttn(c)) with one
  BiAttn for both; out = y + DropPath(MLP(LN2(y))).
  """

  def __init__(
    self,
    dim: int,
    *,
    d_state: int,
    expand: float,
    mlp_ratio: float,
    drop_path_rate: float,
    rngs: nnx.Rngs,
  ):
    self.norm = layer_norm(dim, rngs=rngs)
    self.mixer = SS2D(dim, expand=expand, d_state=d_state, scan="skip", rngs=rngs)
    self.eca = ECA(rngs=rngs)
    self.ldc = LDC(dim, dim, rngs=rngs)
    self.channel_gate = BiAttn(dim, rngs=rngs)
    self.drop_path = drop_path(drop_path_rate, rngs=rngs)
    self.mlp_norm = layer_norm(dim, rngs=rngs)
    self.mlp = MLP(dim, int(dim * mlp_ratio), rngs=rngs)

  def __call__(self, x):
    s = self.mixer(self.norm(x))
    c = self.ldc(s + self.eca(s))
    x = x + self.drop_path(self.channel_gate(s) + self.channel_gate(c))
    return x + self.drop_path(self.mlp(self.mlp_norm(x)))


class EncoderStage(nnx.Module):
  """(batch, H, W, C) -> blocks -> PatchMerging -> (batch, H/2, W/2, 2C), or blocks only."""

  def __init__(self, blocks: Sequence[nnx.Module], downsample: PatchMerging | None):
    self.blocks = nnx.List(blocks)
    self.downsample = downsample

  def __call__(self, x):
    for block in self.blocks:
      x = block(x)
    return x if self.downsample is None else self.downsample(x)


class DecoderStage(nnx.Module):
  """(batch, H, W, 2C) -> PatchExpand -> (batch, 2H, 2W, C) -> blocks, or blocks only."""

  def __init__(self, upsample: PatchExpand | None, blocks: Sequence[nnx.Module]):
    self.upsample = upsample
    self.blocks = nnx.List(blocks)

  def __call__(self, x):
    if self.upsample is not None:
      x = self.upsample(x)
    for block in self.blocks:
      x = block(x)
    return x
