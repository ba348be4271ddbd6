"""FusionMamba's cross-modal fusion (CMFM = DFEM + Cross SS2D + ECA), as the official code does it.

docs/architectures.md 2.4. The official names: `VSSBlock_Cross_new` (CMFM), `Cross_layer` (DFEM),
`SS2D_cross_new` (the Cross SS2D over the ES2D scan). All maps are `fusionjax.shapes.Features`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.layers import scan2d
from fusionjax.layers.channel_attention import ECA
from fusionjax.layers.ldc import LDC
from fusionjax.layers.ssm import DirectionalSSM
from fusionjax.layers.torch_init import conv, depthwise_conv3x3, dt_rank_for, layer_norm, linear
from fusionjax.layers.vss import scan_map


class DFEM(nnx.Module):
  """Dynamic feature enhancement: (P, Q) -> (D1, D2), each (batch, H, W, d).

  F = P + Q; D1 = LDC_1(P) + P + sigmoid(GAP(P - Q)) F; D2 = LDC_2(Q) + Q + sigmoid(GAP(Q - P)) F,
  GAP = per-sample, per-channel spatial mean. (The paper's Eq. 7 takes the difference of the LDC
  outputs with the opposite sign; the code, followed here, takes it on the raw inputs.)
  """

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.texture_p = LDC(dim, dim, rngs=rngs)
    self.texture_q = LDC(dim, dim, rngs=rngs)
    # The official module owns a 1x1 conv (dim -> dim/2, bias) that it never applies; kept so
    # that checkpoints load one to one and the parameter count matches.
    self.unused_conv = conv(dim, dim // 2, 1, rngs=rngs)

  def __call__(self, p, q):
    fused = p + q
    weight = lambda diff: jax.nn.sigmoid(jnp.mean(diff, axis=(1, 2), keepdims=True))
    d1 = self.texture_p(p) + (weight(p - q) * fused + p)
    d2 = self.texture_q(q) + (weight(q - p) * fused + q)
    return d1, d2


class CrossES2D(nnx.Module):
  """(P, Q), each (batch, H, W, d) -> (batch, H, W, d); d_inner = 2d.

  (x1, z1) = in_proj1(P), (x2, z2) = in_proj2(Q); x_i = SiLU(DWConv3x3(x_i)) with ONE conv;
  h = x1 x2 + x1 + x2; y = LN(ES2D-SSM(h)); out_proj(y g1 + y g2) with g1 = SiLU(z1) and
  g2 = SiLU(SiLU(z1)) when `second_gate_from_first` (the official code's slip, needed for its
  checkpoints) or SiLU(z2) (the evident intent).
  """

  EXPAND = 2

  def __init__(self, d_model: int, *, d_state: int, second_gate_from_first: bool, rngs: nnx.Rngs):
    d_inner = self.EXPAND * d_model
    self.second_gate_from_first = second_gate_from_first
    self.in_proj1 = linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.in_proj2 = linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.conv = depthwise_conv3x3(d_inner, rngs=rngs)
    self.ssm = DirectionalSSM(
      scan2d.NUM_DIRECTIONS, d_inner, dt_rank_for(d_model), d_state, rngs=rngs
    )
    self.out_norm = layer_norm(d_inner, rngs=rngs)
    self.out_proj = linear(d_inner, d_model, use_bias=False, rngs=rngs)

  def __call__(self, p, q):
    x1, z1 = jnp.split(self.in_proj1(p), 2, axis=-1)
    x2, z2 = jnp.split(self.in_proj2(q), 2, axis=-1)
    gate1 = jax.nn.silu(z1)
    gate2 = jax.nn.silu(gate1 if self.second_gate_from_first else z2)
    x1, x2 = jax.nn.silu(self.conv(x1)), jax.nn.silu(self.conv(x2))
    y = self.out_norm(scan_map(self.ssm, x1 * x2 + x1 + x2, "skip"))
    return self.out_proj(y * gate1 + y * gate2)


class CMFM(nnx.Module):
  """(P, Q), each (batch, H, W, d) -> P + Q + S + ECA(S), S = CrossES2D(LN1(D1), LN2(D2))."""

  def __init__(self, dim: int, *, d_state: int, second_gate_from_first: bool, rngs: nnx.Rngs):
    self.dfem = DFEM(dim, rngs=rngs)
    self.norm_p = layer_norm(dim, rngs=rngs)
    self.norm_q = layer_norm(dim, rngs=rngs)
    self.mixer = CrossES2D(
      dim, d_state=d_state, second_gate_from_first=second_gate_from_first, rngs=rngs
    )
    self.eca = ECA(rngs=rngs)

  def __call__(self, p, q):
    d1, d2 = self.dfem(p, q)
    s = self.mixer(self.norm_p(d1), self.norm_q(d2))
    return q + p + s + self.eca(s)
