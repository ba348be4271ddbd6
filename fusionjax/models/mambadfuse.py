"""MambaDFuse (Li et al., arXiv 2404.08406; code Lizhe1228/MambaDFuse) in Flax NNX, channels-last.

Faithful to the official code (docs/architectures.md section 1, docs/parity.md section 4):

  A, B (batch, H, W, 1) in [0, 1]
  1. low-level CNN, SHARED by A and B: conv3x3(1 -> C/2) -> LReLU(0.2) -> conv3x3(C/2 -> C) -> LReLU
  2. tokens (row-major) + the shared LayerNorm `patch_embed`; one stack of SingleMambaBlocks per
     modality (`high_level_feature_extraction1/2`), returning (last mixer output, residual)
  3. shallow fuse: TokenSwapMamba stages (`channel_exchange`); their residuals are then dropped;
     back to images; I1 <- conv3x3([I1, I2]) + I1; I2 <- conv3x3([I2, I1_new]) + I2;
     fusion = (I1 + I2) / 2
  4. deep fuse: I1, I2, fusion through `patch_embed` again; M3 blocks (`M3_block`) with a residual
     stream from zero, all fed the same I1 and I2; the final residual is dropped
  5. reconstruction: `patch_embed`, a SingleMambaBlock stack (`feature_re`), last mixer output only;
     conv3x3(C -> C/2) -> LReLU -> conv3x3(C/2 -> C/4) -> LReLU -> conv3x3(C/4 -> 1); no activation
  MambaDFuse.network(a, b) is that forward (what the official `model(A, B)` computes);
  MambaDFuse(a, b) adds the official test-time mirror padding and crops back.

Paper size (Config()): C = 60, 8 + 8 extraction blocks, 2 token-swap stages, 5 M3 blocks,
8 reconstruction blocks: 1,347,271 parameters. TinyConfig ("mambadfuse_tiny") is for tests.
Each stack of blocks runs as one loop (`fusionjax.layers.mamba.scan_modules`, rematerialised
under differentiation) and each mixer a chunk of tokens at a time (`mamba.over_token_chunks`):
beyond the token streams, XLA's temporaries are one chunk of one block, neither the depth nor
the image size (benchmarks/memory.py prints them per model and image size).
Official state_dicts convert with `fusionjax.convert` through `torch_param_map`.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import color
from fusionjax.convert import mapping as torch_mapping
from fusionjax.kernels.scan import Impl as ScanImpl
from fusionjax.layers.mamba import (
  M3Block,
  SingleMambaBlock,
  TokenSwapMamba,
  run_residual_stack,
  run_residual_stacks,
  scan_modules,
)
from fusionjax.layers.torch_init import dt_rank_for, layer_norm, torch_conv
from fusionjax.losses import mambadfuse as mambadfuse_loss
from fusionjax.models import registry
from fusionjax.shapes import Planes

LRELU_SLOPE = 0.2


@dataclasses.dataclass(frozen=True)
class Config:
  """MambaDFuse hyper-parameters; the defaults are the paper's (and the released checkpoints').

  Attributes:
    embed_dim: token width C (official 60); the CNNs use C/2 and C/4.
    d_state, d_conv, expand: Mamba state size N, causal conv width, d_inner / C.
    dt_rank: rank of the delta projection; None is Mamba's "auto", ceil(C / 16).
    num_extraction_blocks: SingleMambaBlocks per modality before fusion (official 8).
    num_token_swap_stages: channel-exchange stages of the shallow fuse (official 2).
    num_m3_blocks: M3 blocks of the deep fuse (official 5).
    num_reconstruction_blocks: SingleMambaBlocks of the reconstruction (official 8).
    pad_multiple: test-time padding window (official window_size 8).
    scan_impl: selective-scan implementation, see `fusionjax.kernels.selective_scan`; the output
      does not depend on it. Switch a built model with
      `model.set_attributes(scan_impl="chunked", raise_if_not_found=False)`.
    m3_norm_twice: the code applies each M3 LayerNorm twice; False is the paper's single LN.
    m3_shared_gate: paper Fig. 4: all three M3 branches gated by the fusion branch's z (the code
      gates each branch by its own z).
    m3_separate_c_a: paper: the third M3 branch gets its own A (the code shares A_b); adds
      A_c_log, which official checkpoints lack.
  """

  embed_dim: int = 60
  d_state: int = 16
  d_conv: int = 4
  expand: int = 2
  dt_rank: int | None = None
  num_extraction_blocks: int = 8
  num_token_swap_stages: int = 2
  num_m3_blocks: int = 5
  num_reconstruction_blocks: int = 8
  pad_multiple: int = 8
  scan_impl: ScanImpl = "auto"
  m3_norm_twice: bool = True
  m3_shared_gate: bool = False
  m3_separate_c_a: bool = False


@dataclasses.dataclass(frozen=True)
class SmallConfig(Config):
  """A reduced MambaDFuse that trains on 2 CPU cores (the shipped `mambadfuse_small_*` models):
  C = 24, N = 8, two blocks of each kind and one token-swap stage, the official graph
  otherwise."""

  embed_dim: int = 24
  d_state: int = 8
  num_extraction_blocks: int = 2
  num_token_swap_stages: int = 1
  num_m3_blocks: int = 2
  num_reconstruction_blocks: int = 2


@dataclasses.dataclass(frozen=True)
class TinyConfig(Config):
  """A small MambaDFuse for tests and CPU smoke runs: C = 8, N = 4, one block of each kind."""

  embed_dim: int = 8
  d_state: int = 4
  num_extraction_blocks: int = 1
  num_token_swap_stages: int = 1
  num_m3_blocks: int = 1
  num_reconstruction_blocks: int = 1


def mirror_pad(x: jax.Array, multiple: int) -> jax.Array:
  """The padding of test_MambaDFuse.py on (batch, H, W, C), bottom and right.

  Each size s grows to (s // multiple + 1) * multiple (always 1..multiple extra) by appending the
  image flipped along that axis (symmetric, edge pixel repeated), height first. Like the official
  code, an image shorter than its padding only gets its own flipped copy (size 2 s).
  """
  height, width = x.shape[1:3]
  x = jnp.concatenate([x, x[:, ::-1]], axis=1)[:, : (height // multiple + 1) * multiple]
  return jnp.concatenate([x, x[:, :, ::-1]], axis=2)[:, :, : (width // multiple + 1) * multiple]


def to_tokens(image: jax.Array) -> jax.Array:
  """(batch, H, W, C) -> (batch, H * W, C), row-major (raster) order."""
  batch, height, width, channels = image.shape
  return image.reshape(batch, height * width, channels)


def to_image(tokens: jax.Array, height: int, width: int) -> jax.Array:
  """(batch, H * W, C) row-major tokens -> (batch, H, W, C)."""
  return tokens.reshape(tokens.shape[0], height, width, tokens.shape[-1])


class PatchEmbed(nnx.Module):
  """Tokens of an image (patch size 1) through one LayerNorm: (batch, H, W, C) -> (batch, HW, C).

  One instance is shared by all six embedding calls of MambaDFuse. PyTorch name: patch_embed.norm.
  """

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.norm = layer_norm(dim, rngs=rngs)

  def __call__(self, image: jax.Array) -> jax.Array:
    return self.norm(to_tokens(image))


def conv3x3(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Conv:
  """Zero-padded 3x3 conv with bias, PyTorch-initialised."""
  return torch_conv(in_features, out_features, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)


def lrelu(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, LRELU_SLOPE)


class MambaDFuse(nnx.Module):
  """MambaDFuse; attributes are named after the official module's, for weight import."""

  def __init__(self, config: Config, *, rngs: nnx.Rngs):
    self.config = config
    dim, half = config.embed_dim, config.embed_dim // 2
    self.pad_multiple = config.pad_multiple
    mamba_kwargs = dict(
      d_state=config.d_state, d_conv=config.d_conv, expand=config.expand, dt_rank=config.dt_rank
    )
    mamba_stack = lambda depth: nnx.List(
      [SingleMambaBlock(dim, mamba_kwargs=mamba_kwargs, rngs=rngs) for _ in range(depth)]
    )

    self.patch_embed = PatchEmbed(dim, rngs=rngs)
    self.low_level_feature_extraction1 = conv3x3(1, half, rngs=rngs)
    self.low_level_feature_extraction2 = conv3x3(half, dim, rngs=rngs)
    self.high_level_feature_extraction1 = mamba_stack(config.num_extraction_blocks)
    self.high_level_feature_extraction2 = mamba_stack(config.num_extraction_blocks)
    self.channel_exchange = nnx.List(  # PyTorch: channel_exchange1, channel_exchange2
      [
        TokenSwapMamba(dim, mamba_kwargs=mamba_kwargs, rngs=rngs)
        for _ in range(config.num_token_swap_stages)
      ]
    )
    self.shallow_fusion1 = conv3x3(2 * dim, dim, rngs=rngs)
    self.shallow_fusion2 = conv3x3(2 * dim, dim, rngs=rngs)
    self.M3_block = nnx.List(  # PyTorch: M3_block1 ... M3_block5
      [
        M3Block(
          dim,
          mamba_kwargs=mamba_kwargs,
          norm_twice=config.m3_norm_twice,
          shared_gate=config.m3_shared_gate,
          separate_c_a=config.m3_separate_c_a,
          rngs=rngs,
        )
        for _ in range(config.num_m3_blocks)
      ]
    )
    self.feature_re = mamba_stack(config.num_reconstruction_blocks)
    self.conv_last1 = conv3x3(dim, half, rngs=rngs)
    self.conv_last2 = conv3x3(half, half // 2, rngs=rngs)
    self.conv_last3 = conv3x3(half // 2, 1, rngs=rngs)
    self.set_attributes(scan_impl=config.scan_impl, raise_if_not_found=False)

  def __call__(self, a: Planes, b: Planes) -> Planes:
    """Fuses A (IR / MRI) and B (visible Y / CT / PET-Y / SPECT-Y) as the official test does.

    Any H and W: mirror-pads to the next multiple of 8 strictly above each size, runs
    `network`, crops back. The output is unclamped (the official script clamps to [0, 1] only
    when saving).
    """
    height, width = a.shape[1:3]
    fused = self.network(mirror_pad(a, self.pad_multiple), mirror_pad(b, self.pad_multiple))
    return fused[:, :height, :width]

  def network(self, a: Planes, b: Planes) -> Planes:
    """The raw network (official `MambaDFuse.forward`)."""
    height, width = a.shape[1:3]
    features = self.dual_level_feature_extraction(a, b)
    fusion = self.dual_phase_feature_fusion(*features, height, width)
    return self.fused_img_recon(fusion)

  def low_level_features(self, x: jax.Array) -> jax.Array:
    """Shared CNN: (batch, H, W, 1) -> (batch, H, W, C)."""
    return lrelu(self.low_level_feature_extraction2(lrelu(self.low_level_feature_extraction1(x))))

  def dual_level_feature_extraction(self, a: jax.Array, b: jax.Array):
    """(batch, H, W, 1) x 2 -> (I1, I1 residual, I2, I2 residual), each (batch, HW, C)."""
    (i1, i2), (i1_residual, i2_residual) = run_residual_stacks(
      [self.high_level_feature_extraction1, self.high_level_feature_extraction2],
      jnp.stack([self.patch_embed(self.low_level_features(x)) for x in (a, b)]),
    )
    return i1, i1_residual, i2, i2_residual

  def shallow_fuse(self, i1, i1_residual, i2, i2_residual, height: int, width: int):
    """Token-swap stages, then the two cross convs: returns images I1, I2, (batch, H, W, C)."""
    (i1, i2, _, _), _ = scan_modules(
      lambda stage, streams, _: (stage(*streams), None),
      (i1, i2, i1_residual, i2_residual),
      self.channel_exchange,
      remat=True,
    )
    i1, i2 = to_image(i1, height, width), to_image(i2, height, width)
    i1 = self.shallow_fusion1(jnp.concatenate([i1, i2], axis=-1)) + i1
    i2 = self.shallow_fusion2(jnp.concatenate([i2, i1], axis=-1)) + i2
    return i1, i2

  def deep_fuse(self, i1: jax.Array, i2: jax.Array) -> jax.Array:
    """M3 blocks on images I1, I2 (batch, H, W, C): returns fusion tokens (batch, HW, C)."""
    height, width = i1.shape[1:3]
    tokens1, tokens2 = self.patch_embed(i1), self.patch_embed(i2)
    fusion = self.patch_embed((i1 + i2) / 2)

    def m3_block(block, streams, _):
      fusion, residual = streams
      return block(tokens1, residual, tokens2, fusion, height, width), None

    (fusion, _), _ = scan_modules(
      m3_block, (fusion, jnp.zeros_like(fusion)), self.M3_block, remat=True
    )
    return fusion

  def dual_phase_feature_fusion(
    self, i1, i1_residual, i2, i2_residual, height: int, width: int
  ) -> jax.Array:
    """Shallow then deep fuse of the extracted tokens: returns the fused image (batch, H, W, C)."""
    i1, i2 = self.shallow_fuse(i1, i1_residual, i2, i2_residual, height, width)
    return to_image(self.deep_fuse(i1, i2), height, width)

  def fused_img_recon(self, fusion: jax.Array) -> jax.Array:
    """Reconstruction: fused features (batch, H, W, C) -> image (batch, H, W, 1)."""
    height, width = fusion.shape[1:3]
    x, _ = run_residual_stack(self.feature_re, self.patch_embed(fusion))
    x = lrelu(self.conv_last1(to_image(x, height, width)))
    return self.conv_last3(lrelu(self.conv_last2(x)))


def _norm_entries(path, name):
  """A block LayerNorm <- the official WithBias_LayerNorm `{name}.body`."""
  return torch_mapping.layer_norm_entries(path, f"{name}.body")


def _single_mamba_block_entries(path, name):
  return {
    **torch_mapping.mamba_entries(path + ("encoder",), f"{name}.encoder"),
    **_norm_entries(path + ("norm",), f"{name}.norm"),
  }


def _token_swap_entries(path, name):
  return {
    **torch_mapping.mamba_entries(path + ("I1encoder",), f"{name}.I1encoder"),
    **torch_mapping.mamba_entries(path + ("I2encoder",), f"{name}.I2encoder"),
    **_norm_entries(path + ("norm1",), f"{name}.norm1"),
    **_norm_entries(path + ("norm2",), f"{name}.norm2"),
  }


def _m3_block_entries(path, name):
  tm = torch_mapping
  return {
    **tm.multi_modal_mamba_entries(
      path + ("multi_modal_mamba_block",), f"{name}.multi_modal_mamba_block"
    ),
    **_norm_entries(path + ("norm1",), f"{name}.norm1"),
    **_norm_entries(path + ("norm2",), f"{name}.norm2"),
    **_norm_entries(path + ("norm3",), f"{name}.norm3"),
    **tm.conv_entries(path + ("dwconv",), f"{name}.dwconv"),
  }


def torch_param_map(config: Config) -> torch_mapping.ParamMap:
  """NNX path -> (official `MambaDFuse` state_dict name, layout transform), for `config`.

  Our tree mirrors the official one except: the numbered stages are lists
  (channel_exchange.0 <- channel_exchange1, M3_block.4 <- M3_block5); a Mamba's scan branch
  `ssm`, `ssm_b`, `ssm_c` holds conv1d / x_proj / dt_proj / D (<- conv1d_b, x_proj_b, D_b, ...);
  block LayerNorms drop the `body` level of WithBias_LayerNorm. A_c_log (paper variant) has no
  counterpart.
  """
  tm = torch_mapping
  entries = tm.layer_norm_entries(("patch_embed", "norm"), "patch_embed.norm")
  for conv in (
    "low_level_feature_extraction1",
    "low_level_feature_extraction2",
    "shallow_fusion1",
    "shallow_fusion2",
    "conv_last1",
    "conv_last2",
    "conv_last3",
  ):
    entries |= tm.conv_entries((conv,), conv)
  stacks = {
    "high_level_feature_extraction1": config.num_extraction_blocks,
    "high_level_feature_extraction2": config.num_extraction_blocks,
    "feature_re": config.num_reconstruction_blocks,
  }
  for stack, depth in stacks.items():
    for block in range(depth):
      entries |= _single_mamba_block_entries((stack, block), f"{stack}.{block}")
  for stage in range(config.num_token_swap_stages):
    entries |= _token_swap_entries(("channel_exchange", stage), f"channel_exchange{stage + 1}")
  for block in range(config.num_m3_blocks):
    entries |= _m3_block_entries(("M3_block", block), f"M3_block{block + 1}")
  return entries


_STACKS = {
  "num_extraction_blocks": "high_level_feature_extraction1.",
  "num_reconstruction_blocks": "feature_re.",
}
_NUMBERED = {"num_token_swap_stages": "channel_exchange", "num_m3_blocks": "M3_block"}


def torch_config(state_dict) -> dict:
  """The Config fields an official state_dict determines: embed_dim (patch_embed), the block
  counts (indices), and from a Mamba's tensors d_state (A_log), expand (in_proj), d_conv
  (conv1d) and dt_rank (dt_proj; None where it is Mamba's "auto")."""
  tm = torch_mapping
  fields = {field: tm.block_count(state_dict, prefix) for field, prefix in _STACKS.items()}
  fields |= {
    field: max(tm.indices(state_dict, prefix), default=0)  # numbered from 1
    for field, prefix in _NUMBERED.items()
  }
  if norm := tm.first_shape(state_dict, r"patch_embed\.norm\.weight"):
    fields["embed_dim"] = norm[0]
  mamba = r"(high_level_feature_extraction\d|feature_re)\.\d+\.encoder\."
  if (a_log := tm.first_shape(state_dict, mamba + "A_log")) and norm:
    fields |= {"d_state": a_log[1], "expand": a_log[0] // norm[0]}
  if conv1d := tm.first_shape(state_dict, mamba + r"conv1d\.weight"):
    fields["d_conv"] = conv1d[-1]
  if (dt_proj := tm.first_shape(state_dict, mamba + r"dt_proj\.weight")) and norm:
    fields["dt_rank"] = None if dt_proj[1] == dt_rank_for(norm[0]) else dt_proj[1]
  return fields


def official_grey(image_a, image_b):
  """test_MambaDFuse.py's reading: ``cv2.imread(path, 0)`` of the grey modality, and of the
  colour one's offline ``*_Y`` file (MATLAB ``rgb2ycbcr``, 8 bits)."""
  return color.opencv_grey(image_a), color.matlab_y_file(image_b)


FAMILY = registry.Family(
  name="mambadfuse",
  model=MambaDFuse,
  variants={
    "mambadfuse": Config,
    "mambadfuse_small": SmallConfig,
    "mambadfuse_tiny": TinyConfig,
  },
  loss=mambadfuse_loss.make_loss,
  # It reads precomputed VI_Y/PET_Y/SPECT_Y files, 8-bit MATLAB rgb2ycbcr (studio range:
  # black at exactly 16), and recolours with MATLAB ycbcr2rgb; tensor2uint clamps and rounds.
  inference=registry.InferenceSpec(
    y_convention="studio", quantize_y=True, output="clip", official_grey=official_grey
  ),
  torch=registry.TorchSpec(param_map=torch_param_map, config_fields=torch_config),
)
