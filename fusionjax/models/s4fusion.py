"""S4Fusion (Ma et al., IEEE TIP 2025; code zipper112/S4Fusion), as the official code computes it.

docs/architectures.md section 3. Inputs are IR and visible Y, (batch, H, W, 1) in [0, 1]:

0. zero-pad both to S = 12k + 1 (left/top gets half of the padding, rounded down);
1. overlapping patch embedding per modality (conv 4x4 stride 3 -> LN): ((S-1)/3)^2 tokens;
2. separate IR and VIS encoders of VSS blocks with PatchMerging; stage inputs kept as skips;
3. one CMSA level per scale on (IR skip, VIS skip); level 0 is never used by the decoder, so it
   is not computed (its parameters stay, for checkpoints);
4. decoder: sum of the encoder outputs, VSS blocks, then PatchExpand(x + fused_k) and blocks;
5. Fold head (overlap-add, 1x1 conv); crop the padding. No activation, no clamp.

`S4Fusion.network` is the raw network on padded inputs (the official `model(ir, vi)`);
`S4Fusion.__call__` pads, runs it and crops, as the official test script does.
"""

import dataclasses
import math
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax import color
from fusionjax.convert import mapping as torch_mapping
from fusionjax.kernels import IMPLS
from fusionjax.kernels.scan import Impl as ScanImpl
from fusionjax.layers.cmsa import CMSALevel
from fusionjax.layers.fold import FoldHead
from fusionjax.layers.patches import PatchEmbed, PatchExpand, PatchMerging
from fusionjax.layers.vss import DecoderStage, EncoderStage, VSSBlock
from fusionjax.losses import s4fusion as s4fusion_loss
from fusionjax.models import registry
from fusionjax.shapes import Planes

PATCH_KERNEL, PATCH_STRIDE = 4, 3


@dataclasses.dataclass(frozen=True)
class Config:
  """S4Fusion hyper-parameters; the defaults are the official `MambaNet()` (the paper's model).

  Attributes:
    embed_dim: width of level 0; level i has embed_dim * 2**i channels (48, 96, 192).
    depths: VSS blocks per encoder stage (each modality).
    decoder_depths: VSS blocks per decoder stage, deepest first.
    d_state: SSM state size N of the VSS blocks.
    fusion_d_state: SSM state size N of the CMSA blocks.
    expand: d_inner / d_model of every SS2D and CMSA block.
    fusion_blocks: CMSA blocks per level.
    scan_impl: selective-scan implementation (`fusionjax.kernels.IMPLS`); outputs do not
      depend on it. Switch a built model with
      `model.set_attributes(scan_impl="chunked", raise_if_not_found=False)`.
  """

  embed_dim: int = 48
  depths: tuple[int, ...] = (1, 2, 1)
  decoder_depths: tuple[int, ...] = (1, 2, 1)
  d_state: int = 12
  fusion_d_state: int = 18
  expand: float = 1.5
  fusion_blocks: int = 3
  scan_impl: ScanImpl = "auto"

  def __post_init__(self):
    if len(self.depths) != len(self.decoder_depths):
      raise ValueError(
        f"depths {self.depths} and decoder_depths {self.decoder_depths} differ in length"
      )
    if self.embed_dim % 4:
      raise ValueError(f"embed_dim must be divisible by 4 (the Fold head), got {self.embed_dim}")
    if self.scan_impl not in IMPLS:
      raise ValueError(f"scan_impl must be one of {IMPLS}, got {self.scan_impl!r}")

  @property
  def dims(self) -> tuple[int, ...]:
    return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


@dataclasses.dataclass(frozen=True)
class TinyConfig(Config):
  """A small S4Fusion for tests and CPU smoke runs (same graph, fewer and narrower layers)."""

  embed_dim: int = 16
  depths: tuple[int, ...] = (1, 1, 1)
  decoder_depths: tuple[int, ...] = (1, 1, 1)
  d_state: int = 4
  fusion_d_state: int = 6
  fusion_blocks: int = 2


def padded_size(size: int, num_levels: int = 3) -> int:
  """Smallest S >= size whose (S - 1) / 3 tokens halve evenly num_levels - 1 times.

  The official `get_rest` (for 3 levels: S = 12k + 1, e.g. 128 -> 133, 256 -> 265). At least one
  token survives at the deepest level.
  """
  multiple = PATCH_STRIDE * 2 ** (num_levels - 1)
  return 1 + max(1, math.ceil((size - 1) / multiple)) * multiple


class S4Fusion(nnx.Module):
  """S4Fusion: `__call__(ir, vis)` fuses two `Planes` of any H, W into `Planes`."""

  def __init__(self, config: Config, *, rngs: nnx.Rngs):
    self.config = config
    dims = config.dims
    vss = lambda dim: VSSBlock(dim, expand=config.expand, d_state=config.d_state, rngs=rngs)

    def encoder():
      return nnx.List(
        [
          EncoderStage(
            [vss(dim) for _ in range(depth)],
            PatchMerging(dim, rngs=rngs) if level < len(dims) - 1 else None,
          )
          for level, (dim, depth) in enumerate(zip(dims, config.depths))
        ]
      )

    embed = lambda: PatchEmbed(1, dims[0], kernel_size=PATCH_KERNEL, stride=PATCH_STRIDE, rngs=rngs)
    self.embed_ir, self.embed_vis = embed(), embed()
    self.encoder_ir, self.encoder_vis = encoder(), encoder()
    self.fusion = nnx.List(
      [
        CMSALevel(
          dim, config.fusion_blocks, expand=config.expand, d_state=config.fusion_d_state, rngs=rngs
        )
        for dim in dims
      ]
    )
    decoder_dims = dims[::-1]
    self.decoder = nnx.List(
      [
        DecoderStage(
          PatchExpand(2 * dim, dim, scale=2, rngs=rngs) if stage else None,
          [vss(dim) for _ in range(depth)],
        )
        for stage, (dim, depth) in enumerate(zip(decoder_dims, config.decoder_depths))
      ]
    )
    self.head = FoldHead(dims[0], rngs=rngs)
    self.set_attributes(scan_impl=config.scan_impl, raise_if_not_found=False)

  def encode(self, ir, vis):
    """Embedded (batch, h, w, C) maps -> encoder outputs (ir, vis) and per-level input skips."""
    skips = []
    for stage_ir, stage_vis in zip(self.encoder_ir, self.encoder_vis):
      skips.append((ir, vis))
      ir, vis = stage_ir(ir), stage_vis(vis)
    return ir, vis, skips

  def decode(self, x, fused):
    """Bottleneck (batch, h, w, C) and fused skips of levels 1.. -> (batch, h0, w0, dims[0])."""
    x = self.decoder[0](x)
    for stage, skip in zip(self.decoder[1:], fused[::-1]):
      x = stage(x + skip)
    return x

  def network(self, ir: Planes, vis: Planes) -> Planes:
    """The official forward on padded inputs: (batch, S, S', 1) twice -> raw (batch, S, S', 1).

    S and S' must be `padded_size` values (12k + 1 at paper depth).
    """
    for size in ir.shape[1:3]:
      if size != padded_size(size, len(self.config.dims)):
        raise ValueError(f"network input sizes must be padded_size() values, got {ir.shape}")
    e_ir, e_vis, skips = self.encode(self.embed_ir(ir), self.embed_vis(vis))
    fused = [level(*skip) for level, skip in zip(self.fusion[1:], skips[1:])]
    return self.head(self.decode(e_ir + e_vis, fused))

  def __call__(self, ir: Planes, vis: Planes) -> Planes:
    """IR and visible Y of any H x W -> raw fused planes (padded, fused, cropped back)."""
    height, width = ir.shape[1:3]
    pads = [_centre_pad(size, len(self.config.dims)) for size in (height, width)]
    pad = lambda x: jnp.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    out = self.network(pad(ir), pad(vis))
    return out[:, pads[0][0] : pads[0][0] + height, pads[1][0] : pads[1][0] + width]


def _centre_pad(size: int, num_levels: int) -> tuple[int, int]:
  """(before, after) zero padding of the official test: before = extra // 2."""
  extra = padded_size(size, num_levels) - size
  return extra // 2, extra - extra // 2


def _vss_block_entries(path, name):
  return {
    **torch_mapping.layer_norm_entries(path + ("norm",), f"{name}.ln_1"),
    **torch_mapping.ss2d_entries(path + ("mixer",), f"{name}.self_attention"),
  }


def _cmsa_block_entries(path, name):
  tm = torch_mapping
  return {
    **tm.linear_entries(path + ("in_proj",), f"{name}.in_proj", bias=False),
    **tm.conv_entries(path + ("conv",), f"{name}.conv2d"),
    path + ("selection_ir", "kernel"): (f"{name}.x_proj_weight", tm.per_direction_weight),
    path + ("selection_vis", "kernel"): (f"{name}.y_proj_weight", tm.per_direction_weight),
    **tm.selective_ssm_entries(path + ("ssm",), name),
    path + ("mark",): (f"{name}.mark_proj", tm.linear_weight),
    **tm.layer_norm_entries(path + ("out_norm",), f"{name}.out_norm"),
    **tm.linear_entries(path + ("out_proj",), f"{name}.out_proj", bias=False),
  }


def torch_param_map(config: Config) -> torch_mapping.ParamMap:
  """NNX path -> (official `MambaNet` state_dict name, layout transform), for `config`."""
  tm = torch_mapping
  entries = {
    **tm.patch_embed_entries(("embed_ir",), "vmunet.patch_embed_x"),
    **tm.patch_embed_entries(("embed_vis",), "vmunet.patch_embed_y"),
  }
  levels = len(config.dims)
  for ours, theirs in (("encoder_ir", "layers_x"), ("encoder_vis", "layers_y")):
    for level, depth in enumerate(config.depths):
      stage, name = (ours, level), f"vmunet.{theirs}.{level}"
      for block in range(depth):
        entries |= _vss_block_entries(stage + ("blocks", block), f"{name}.blocks.{block}")
      if level < levels - 1:
        entries |= tm.patch_merging_entries(stage + ("downsample",), f"{name}.downsample")
  for level in range(levels):
    for block in range(config.fusion_blocks):
      entries |= _cmsa_block_entries(
        ("fusion", level, "blocks", block), f"vmunet.fusion_layers.{level}.layers.{block}"
      )
  for stage, depth in enumerate(config.decoder_depths):
    name = f"vmunet.layers_up.{stage}"
    if stage:
      entries |= tm.patch_expand_entries(("decoder", stage, "upsample"), f"{name}.upsample")
    for block in range(depth):
      entries |= _vss_block_entries(("decoder", stage, "blocks", block), f"{name}.blocks.{block}")
  entries |= tm.linear_entries(("head", "expand"), "vmunet.final_up.expand", bias=False)
  entries |= tm.layer_norm_entries(("head", "unused_norm"), "vmunet.final_up.norm")
  entries |= tm.conv_entries(("head", "out_conv"), "vmunet.final_conv")
  return entries


def torch_config(state_dict: Mapping[str, np.ndarray]) -> dict:
  """The Config fields an official state_dict determines: embed_dim, depths, decoder_depths,
  fusion_blocks (indices), d_state and fusion_d_state (A_logs), expand (CMSA in_proj)."""
  tm = torch_mapping
  fields = tm.unet_config(
    state_dict,
    embed_conv="vmunet.patch_embed_x.proj.weight",
    levels="vmunet.fusion_layers.",
    encoder_blocks="vmunet.layers_x.{}.blocks.",
    decoder_blocks="vmunet.layers_up.{}.blocks.",
  )
  if blocks := tm.block_count(state_dict, "vmunet.fusion_layers.0.layers."):
    fields["fusion_blocks"] = blocks
  vss = r"vmunet\.layers_\w+\.\d+\.blocks\.\d+\."
  cmsa = r"vmunet\.fusion_layers\.\d+\.layers\.\d+\."
  if a_log := tm.first_shape(state_dict, vss + r"self_attention\.A_logs"):
    fields["d_state"] = a_log[1]
  if a_log := tm.first_shape(state_dict, cmsa + r"A_logs"):
    fields["fusion_d_state"] = a_log[1]
  if in_proj := tm.first_shape(state_dict, cmsa + r"in_proj\.weight"):
    fields["expand"] = in_proj[0] / 2 / in_proj[1]
  return fields


def official_grey(image_a, image_b):
  """S4Fusion's test.py reading: the infrared image through Pillow's ``convert("L")``, the
  visible one's float Y of ``convert("RGB")`` (``color.float32_luma``)."""
  infrared = np.asarray(color.pillow_image(image_a).convert("L"))
  return infrared, color.float32_luma(np.asarray(color.pillow_image(image_b).convert("RGB")))


def sampling_grid(config: Config) -> registry.SamplingGrid:
  """A stride-3 patch grid, halved per level, centred by zero padding: a tile whose side is a
  multiple of the grid gets no padding before it, so it keeps the canvas's grid."""
  levels = len(config.dims)
  return registry.SamplingGrid(
    tile_grid=PATCH_STRIDE * 2 ** (levels - 1),
    tile_offset=lambda size: (padded_size(size, levels) - size) // 2,
  )


FAMILY = registry.Family(
  name="s4fusion",
  model=S4Fusion,
  variants={"s4fusion": Config, "s4fusion_tiny": TinyConfig},
  loss=s4fusion_loss.make_loss,
  # It computes Y = 0.299 R + 0.587 G + 0.114 B on [0, 1] RGB (full range), with the matching
  # full-range inverse; save_image clamps and rounds.
  inference=registry.InferenceSpec(
    y_convention="full",
    quantize_y=False,
    output="clip",
    official_grey=official_grey,
    sampling_grid=sampling_grid,
  ),
  torch=registry.TorchSpec(param_map=torch_param_map, config_fields=torch_config),
)
