"""Moving between pixels and tokens: patch embedding, merging (2x down) and expanding (up).

All NHWC. Shared by FusionMamba and S4Fusion, whose official modules are identical apart from the
embedding stride (FusionMamba 4, S4Fusion 3 with a 4x4 kernel: overlapping patches).
"""

from einops import rearrange
from flax import nnx

from fusionjax.layers.torch_init import conv, layer_norm, linear


class PatchEmbed(nnx.Module):
  """(batch, H, W, in_channels) -> (batch, H', W', dim): conv k x k, stride s, no padding, LN.

  H' = (H - kernel) // stride + 1.
  """

  def __init__(self, in_channels: int, dim: int, *, kernel_size: int, stride: int, rngs: nnx.Rngs):
    self.proj = conv(in_channels, dim, kernel_size, stride=stride, rngs=rngs)
    self.norm = layer_norm(dim, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.proj(x))


class PatchMerging(nnx.Module):
  """(batch, H, W, C) -> (batch, H//2, W//2, 2C).

  Each 2x2 neighbourhood becomes one token: channels concatenated in the order (even row, even
  col), (odd row, even col), (even row, odd col), (odd row, odd col); then LN(4C) and
  Linear(4C -> 2C, no bias). An odd last row or column is dropped, as in the official code.
  """

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.norm = layer_norm(4 * dim, rngs=rngs)
    self.reduction = linear(4 * dim, 2 * dim, use_bias=False, rngs=rngs)

  def __call__(self, x):
    height, width = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = rearrange(x[:, :height, :width], "b (h r) (w s) c -> b h w (s r c)", r=2, s=2)
    return self.reduction(self.norm(x))


class PatchExpand(nnx.Module):
  """(batch, H, W, in_dim) -> (batch, s*H, s*W, out_dim), s = `scale`.

  Linear(in_dim -> s*s*out_dim, no bias), depth-to-space with channel layout (p1, p2, c), LN.
  """

  def __init__(self, in_dim: int, out_dim: int, *, scale: int, rngs: nnx.Rngs):
    self.scale = scale
    self.expand = linear(in_dim, scale * scale * out_dim, use_bias=False, rngs=rngs)
    self.norm = layer_norm(out_dim, rngs=rngs)

  def __call__(self, x):
    x = rearrange(
      self.expand(x), "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=self.scale, p2=self.scale
    )
    return self.norm(x)
