"""S4Fusion's cross-modal spatial awareness (CMSA) block and level (docs/architectures.md 3.4).

`CrossSS2D` is the official `FusionBlock`: one Cross SS2D over the IR and VIS maps of one level.
Shared by both modalities: in_proj, the depthwise conv, the delta up-projection (dt_proj), its
bias, A, D, the output LN and out_proj. Per modality: the selection projection (x_proj for IR,
y_proj for VIS). Steps, as the code computes them:

1. (x, z_x) = in_proj(IR), (y, z_y) = in_proj(VIS); x, y = SiLU(DWConv3x3(.)) (no input LN);
2. each map into the four VMamba directions; its modality's x_proj gives delta, B, C;
3. Patch Mark: mark = Linear(2 d_inner -> d_inner)(concat(x, y)) is added to both scan inputs
   only (delta, B, C were taken before);
4. IR and VIS tokens of one position alternate, IR first, in every direction: one scan of length
   2L per direction with a state shared across modalities;
5. de-interleave, merge each modality's four directions, shared LN, gate with its own SiLU(z),
   shared out_proj.

`CMSALevel` chains blocks with residuals on both streams and sums the streams at the end.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.layers import scan2d
from fusionjax.layers.ssm import SelectionProjection, SelectiveSSM
from fusionjax.layers.torch_init import (
  depthwise_conv3x3,
  dt_rank_for,
  layer_norm,
  linear,
  torch_uniform_init,
)


class CrossSS2D(nnx.Module):
  """(ir, vis), each (batch, H, W, d_model) -> (d_ir, d_vis), each (batch, H, W, d_model)."""

  def __init__(self, d_model: int, *, expand: float, d_state: int, rngs: nnx.Rngs):
    d_inner = int(expand * d_model)
    dt_rank = dt_rank_for(d_model)
    directions = scan2d.NUM_DIRECTIONS
    self.in_proj = linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.conv = depthwise_conv3x3(d_inner, rngs=rngs)
    self.selection_ir = SelectionProjection(directions, d_inner, dt_rank, d_state, rngs=rngs)
    self.selection_vis = SelectionProjection(directions, d_inner, dt_rank, d_state, rngs=rngs)
    self.ssm = SelectiveSSM(directions, d_inner, dt_rank, d_state, rngs=rngs)
    self.mark = nnx.Param(torch_uniform_init(2 * d_inner)(rngs.params(), (2 * d_inner, d_inner)))
    self.out_norm = layer_norm(d_inner, rngs=rngs)
    self.out_proj = linear(d_inner, d_model, use_bias=False, rngs=rngs)

  def _conv_branch(self, x):
    """(batch, H, W, d_model) -> SiLU(DWConv(x part)) and the gate z, (batch, H, W, d_inner)."""
    x, z = jnp.split(self.in_proj(x), 2, axis=-1)
    return jax.nn.silu(self.conv(x)), z

  def __call__(self, ir, vis):
    height, width = ir.shape[1:3]
    x_ir, z_ir = self._conv_branch(ir)
    x_vis, z_vis = self._conv_branch(vis)
    seq_ir, seq_vis = scan2d.cross_scan(x_ir), scan2d.cross_scan(x_vis)  # (batch, L, 4, d_inner)
    selection = [
      scan2d.interleave(a, b)
      for a, b in zip(self.selection_ir(seq_ir), self.selection_vis(seq_vis))
    ]
    # The mark is per token, so marking the map and then scanning equals marking each sequence.
    mark = scan2d.cross_scan(jnp.concatenate([x_ir, x_vis], axis=-1) @ self.mark[...])
    y = self.ssm(scan2d.interleave(seq_ir + mark, seq_vis + mark), *selection)
    outputs = []
    for y_mod, z in zip(scan2d.deinterleave(y), (z_ir, z_vis)):
      merged = scan2d.cross_merge(y_mod, height, width)
      outputs.append(self.out_proj(self.out_norm(merged) * jax.nn.silu(z)))
    return tuple(outputs)


class CMSALevel(nnx.Module):
  """(ir, vis) -> fused (batch, H, W, d_model): per block ir += d_ir, vis += d_vis; ir + vis."""

  def __init__(self, d_model: int, num_blocks: int, *, expand: float, d_state: int, rngs: nnx.Rngs):
    self.blocks = nnx.List(
      [CrossSS2D(d_model, expand=expand, d_state=d_state, rngs=rngs) for _ in range(num_blocks)]
    )

  def __call__(self, ir, vis):
    for block in self.blocks:
      d_ir, d_vis = block(ir, vis)
      ir, vis = ir + d_ir, vis + d_vis
    return ir + vis
