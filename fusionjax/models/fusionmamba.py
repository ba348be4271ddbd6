"""FusionMamba (Xie et al., Visual Intelligence 2024; code millieXie/FusionMamba), as its code does.

docs/architectures.md section 2. Not PSRben/FusionMamba (pansharpening). Inputs (batch, H, W, 1) in
[0, 1]: `a` = visible gray / MRI, `b` = infrared / CT / PET / SPECT (the official model(vis, ir)).

1. separate patch embeddings (conv 4x4 stride 4 -> LN);
2. ONE encoder (Siamese, shared weights) of DVSS stages with PatchMerging; stage inputs are skips;
3. a CMFM per level on the two skips; level 0's output is never used (not computed here; its
   parameters stay, for checkpoints);
4. decoder from the sum of the encoder outputs: DVSS blocks, then PatchExpand(x + fused_k) and
   blocks, deepest first;
5. head: Linear + 4x4 depth-to-space + LN, 1x1 conv, plus `input_residual_scale` * (a + b).

The network needs H and W divisible by 32 (= 4 * 2^3). `network` is that raw forward (no clamp);
`__call__` fits any H x W to it: "resize" (the official test: bicubic to 256 x 256, and back to
H x W bilinearly as the repo's colour script does) or "pad" (mirror-pad bottom/right to the next
multiple of 32 and crop: native resolution, our option).
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax import color
from fusionjax.convert import mapping as torch_mapping
from fusionjax.kernels import IMPLS
from fusionjax.kernels.scan import Impl as ScanImpl
from fusionjax.layers.cmfm import CMFM
from fusionjax.layers.patches import PatchEmbed, PatchExpand, PatchMerging
from fusionjax.layers.torch_init import conv
from fusionjax.layers.vss import DecoderStage, DVSSBlock, EncoderStage
from fusionjax.losses import fusionmamba as fusionmamba_loss
from fusionjax.models import registry
from fusionjax.shapes import Planes

PATCH_SIZE = 4
HEAD_SCALE = 4


@dataclasses.dataclass(frozen=True)
class Config:
  """FusionMamba hyper-parameters; defaults are the official `VSSM_Fusion()` ([2, 2, 9, 2]).

  Attributes:
    embed_dim: width of level 0; level i has embed_dim * 2**i channels (96 ... 768).
    depths: DVSS blocks per encoder stage.
    decoder_depths: DVSS blocks per decoder stage, deepest first.
    d_state: SSM state size N of every ES2D scan.
    mlp_ratio: hidden width / width of the DVSS MLPs.
    drop_path_rate: stochastic depth, linear 0 -> rate over the encoder blocks and reversed over
      the decoder blocks (active in `model.train()` mode only).
    input_residual_scale: out = head + scale * (a + b); 2 at the official HEAD (released
      weights), 1 before 2024-10-15 (docs/architectures.md 2.10 #9).
    second_gate_from_first: reproduce the official Cross SS2D's second gate SiLU(SiLU(z1))
      (True, for its checkpoints) instead of SiLU(z2).
    input_fit: how `__call__` fits any H x W to the network: "resize" (official test) or "pad".
    resize_to: the square size of "resize" mode (official 256).
    scan_impl: selective-scan implementation (`fusionjax.kernels.IMPLS`); outputs do not
      depend on it. Switch a built model with
      `model.set_attributes(scan_impl="chunked", raise_if_not_found=False)`.
  """

  embed_dim: int = 96
  depths: tuple[int, ...] = (2, 2, 9, 2)
  decoder_depths: tuple[int, ...] = (2, 9, 2, 2)
  d_state: int = 16
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.1
  input_residual_scale: float = 2.0
  second_gate_from_first: bool = True
  input_fit: Literal["resize", "pad"] = "resize"
  resize_to: int = 256
  scan_impl: ScanImpl = "auto"

  def __post_init__(self):
    if len(self.depths) != len(self.decoder_depths):
      raise ValueError(
        f"depths {self.depths} and decoder_depths {self.decoder_depths} differ in length"
      )
    if self.embed_dim % HEAD_SCALE or self.embed_dim < 8:
      raise ValueError(f"embed_dim must be a multiple of 4 and >= 8, got {self.embed_dim}")
    if self.input_fit not in ("resize", "pad"):
      raise ValueError(f"input_fit must be 'resize' or 'pad', got {self.input_fit!r}")
    if self.resize_to % self.size_multiple:
      raise ValueError(f"resize_to must be a multiple of {self.size_multiple}")
    if self.scan_impl not in IMPLS:
      raise ValueError(f"scan_impl must be one of {IMPLS}, got {self.scan_impl!r}")

  @property
  def dims(self) -> tuple[int, ...]:
    return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

  @property
  def size_multiple(self) -> int:
    """H and W of the network input must be multiples of this (32 at 4 levels)."""
    return PATCH_SIZE * 2 ** (len(self.depths) - 1)


@dataclasses.dataclass(frozen=True)
class CtMriConfig(Config):
  """The released CT-MRI model's depths (README): [2, 2, 1, 2] / decoder [2, 1, 2, 2]."""

  depths: tuple[int, ...] = (2, 2, 1, 2)
  decoder_depths: tuple[int, ...] = (2, 1, 2, 2)


@dataclasses.dataclass(frozen=True)
class SmallConfig(Config):
  """A reduced FusionMamba that trains on 2 CPU cores (the shipped medical models): the same
  four levels and graph, 24 channels at level 0 (not 96), two blocks per stage (not up to nine),
  d_state 8, MLP ratio 2, and native resolution ("pad"): 6.3M parameters against 164.5M."""

  embed_dim: int = 24
  depths: tuple[int, ...] = (2, 2, 2, 2)
  decoder_depths: tuple[int, ...] = (2, 2, 2, 2)
  d_state: int = 8
  mlp_ratio: float = 2.0
  input_fit: Literal["resize", "pad"] = "pad"


@dataclasses.dataclass(frozen=True)
class TinyConfig(Config):
  """A small FusionMamba for tests and CPU smoke runs (same graph, fewer and narrower layers)."""

  embed_dim: int = 8
  depths: tuple[int, ...] = (1, 1, 1, 1)
  decoder_depths: tuple[int, ...] = (1, 1, 1, 1)
  d_state: int = 4
  mlp_ratio: float = 2.0
  resize_to: int = 64


def _drop_path_rates(rate: float, depths, *, reverse: bool) -> list[list[float]]:
  """Per stage, per block: linspace(0, rate, total blocks) (reversed for the decoder)."""
  rates = np.linspace(0.0, rate, sum(depths)).tolist()
  rates = rates[::-1] if reverse else rates
  bounds = np.cumsum((0,) + tuple(depths))
  return [rates[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


class FusionMamba(nnx.Module):
  """FusionMamba: `__call__(a, b)` fuses two `Planes` of any H, W into `Planes`."""

  def __init__(self, config: Config, *, rngs: nnx.Rngs):
    self.config = config
    dims = config.dims
    dvss = lambda dim, rate: DVSSBlock(
      dim,
      d_state=config.d_state,
      expand=2,
      mlp_ratio=config.mlp_ratio,
      drop_path_rate=rate,
      rngs=rngs,
    )
    embed = lambda: PatchEmbed(1, dims[0], kernel_size=PATCH_SIZE, stride=PATCH_SIZE, rngs=rngs)
    self.embed_a, self.embed_b = embed(), embed()
    encoder_rates = _drop_path_rates(config.drop_path_rate, config.depths, reverse=False)
    self.encoder = nnx.List(
      [
        EncoderStage(
          [dvss(dim, rate) for rate in rates],
          PatchMerging(dim, rngs=rngs) if level < len(dims) - 1 else None,
        )
        for level, (dim, rates) in enumerate(zip(dims, encoder_rates))
      ]
    )
    self.fusion = nnx.List(
      [
        CMFM(
          dim,
          d_state=config.d_state,
          second_gate_from_first=config.second_gate_from_first,
          rngs=rngs,
        )
        for dim in dims
      ]
    )
    decoder_rates = _drop_path_rates(config.drop_path_rate, config.decoder_depths, reverse=True)
    self.decoder = nnx.List(
      [
        DecoderStage(
          PatchExpand(2 * dim, dim, scale=2, rngs=rngs) if stage else None,
          [dvss(dim, rate) for rate in rates],
        )
        for stage, (dim, rates) in enumerate(zip(dims[::-1], decoder_rates))
      ]
    )
    self.head_expand = PatchExpand(dims[0], dims[0] // HEAD_SCALE, scale=HEAD_SCALE, rngs=rngs)
    self.head_conv = conv(dims[0] // HEAD_SCALE, 1, 1, rngs=rngs)
    self.set_attributes(scan_impl=config.scan_impl, raise_if_not_found=False)

  def encode(self, x):
    """Embedded (batch, h, w, C) -> encoder output and the per-level input skips."""
    skips = []
    for stage in self.encoder:
      skips.append(x)
      x = stage(x)
    return x, skips

  def decode(self, x, fused):
    """Bottleneck (batch, h, w, C) and fused skips of levels 1.. -> (batch, H/4, W/4, dims[0])."""
    x = self.decoder[0](x)
    for stage, skip in zip(self.decoder[1:], fused[::-1]):
      x = stage(x + skip)
    return x

  def network(self, a: Planes, b: Planes) -> Planes:
    """The official forward: (batch, H, W, 1) twice, H and W multiples of 32 -> raw output."""
    multiple = self.config.size_multiple
    if a.shape[1] % multiple or a.shape[2] % multiple:
      raise ValueError(f"network input H and W must be multiples of {multiple}, got {a.shape}")
    batch = a.shape[0]
    # The encoder is shared: both modalities go through it as one batch.
    encoded, skips = self.encode(jnp.concatenate([self.embed_a(a), self.embed_b(b)]))
    fused = [level(skip[:batch], skip[batch:]) for level, skip in zip(self.fusion[1:], skips[1:])]
    x = self.decode(encoded[:batch] + encoded[batch:], fused)
    head = self.head_conv(self.head_expand(x))
    return head + self.config.input_residual_scale * (a + b)

  def __call__(self, a: Planes, b: Planes) -> Planes:
    """The raw fused planes, not clamped, of any H x W (fitted by `config.input_fit`)."""
    shape = a.shape
    if self.config.input_fit == "pad":
      multiple = self.config.size_multiple
      pads = [(0, 0), (0, -shape[1] % multiple), (0, -shape[2] % multiple), (0, 0)]
      pad = lambda x: jnp.pad(x, pads, mode="symmetric")
      return self.network(pad(a), pad(b))[:, : shape[1], : shape[2]]
    square = (shape[0], self.config.resize_to, self.config.resize_to, shape[3])
    if shape == square:
      return self.network(a, b)
    to_square = lambda x: jax.image.resize(x, square, "cubic")
    return jax.image.resize(
      self.network(to_square(a), to_square(b)), shape, "linear", antialias=False
    )


def _dvss_block_entries(path, name):
  tm = torch_mapping
  return {
    **tm.layer_norm_entries(path + ("norm",), f"{name}.norm"),
    **tm.ss2d_entries(path + ("mixer",), f"{name}.op"),
    path + ("eca", "kernel"): (f"{name}.self_attention_cross_channel.conv.weight", tm.reshaped),
    **tm.ldc_entries(path + ("ldc",), f"{name}.conv_branch"),
    **tm.layer_norm_entries(path + ("channel_gate", "norm"), f"{name}.se.norm"),
    **tm.linear_entries(
      path + ("channel_gate", "global_reduce"), f"{name}.se.global_reduce", bias=True
    ),
    **tm.linear_entries(
      path + ("channel_gate", "channel_select"), f"{name}.se.channel_select", bias=True
    ),
    **tm.layer_norm_entries(path + ("mlp_norm",), f"{name}.norm2"),
    **tm.linear_entries(path + ("mlp", "fc1"), f"{name}.mlp.fc1", bias=True),
    **tm.linear_entries(path + ("mlp", "fc2"), f"{name}.mlp.fc2", bias=True),
  }


def _cmfm_entries(path, name):
  tm = torch_mapping
  mixer, theirs = path + ("mixer",), f"{name}.self_attention_cross"
  return {
    **tm.ldc_entries(path + ("dfem", "texture_p"), f"{name}.Cross_layer.texture_enhance1"),
    **tm.ldc_entries(path + ("dfem", "texture_q"), f"{name}.Cross_layer.texture_enhance2"),
    **tm.conv_entries(path + ("dfem", "unused_conv"), f"{name}.Cross_layer.Diff_enhance.lastconv"),
    **tm.layer_norm_entries(path + ("norm_p",), f"{name}.ln_1"),
    **tm.layer_norm_entries(path + ("norm_q",), f"{name}.ln_2"),
    **tm.linear_entries(mixer + ("in_proj1",), f"{theirs}.in_proj1", bias=False),
    **tm.linear_entries(mixer + ("in_proj2",), f"{theirs}.in_proj2", bias=False),
    **tm.conv_entries(mixer + ("conv",), f"{theirs}.conv2d"),
    **tm.directional_ssm_entries(mixer + ("ssm",), theirs),
    **tm.layer_norm_entries(mixer + ("out_norm",), f"{theirs}.out_norm"),
    **tm.linear_entries(mixer + ("out_proj",), f"{theirs}.out_proj", bias=False),
    path + ("eca", "kernel"): (f"{name}.self_attention_cross_spatial.conv.weight", tm.reshaped),
  }


def torch_param_map(config: Config) -> torch_mapping.ParamMap:
  """NNX path -> (official `VSSM_Fusion` state_dict name, layout transform), for `config`."""
  tm = torch_mapping
  entries = {
    **tm.patch_embed_entries(("embed_a",), "patch_embed1"),
    **tm.patch_embed_entries(("embed_b",), "patch_embed2"),
  }
  levels = len(config.dims)
  for level, depth in enumerate(config.depths):
    for block in range(depth):
      entries |= _dvss_block_entries(
        ("encoder", level, "blocks", block), f"layers.{level}.blocks.{block}"
      )
    if level < levels - 1:
      entries |= tm.patch_merging_entries(
        ("encoder", level, "downsample"), f"layers.{level}.downsample"
      )
  for level in range(levels):
    entries |= _cmfm_entries(("fusion", level), f"Cross_block.{level}")
  for stage, depth in enumerate(config.decoder_depths):
    if stage:
      entries |= tm.patch_expand_entries(
        ("decoder", stage, "upsample"), f"layers_up.{stage}.upsample"
      )
    for block in range(depth):
      entries |= _dvss_block_entries(
        ("decoder", stage, "blocks", block), f"layers_up.{stage}.blocks.{block}"
      )
  entries |= tm.patch_expand_entries(("head_expand",), "final_up")
  entries |= tm.conv_entries(("head_conv",), "final_conv")
  return entries


def _all_ones(array: np.ndarray) -> bool:
  return bool(np.all(array == 1))


def frozen_masks(config: Config) -> dict[str, Callable[[np.ndarray], bool]]:
  """The official LDC `base_mask` tensors (one per LDC), each with its check: frozen all-ones
  constants in the official code too, not stored here."""
  return {
    name.replace(".learnable_mask", ".base_mask"): _all_ones
    for name, _ in torch_param_map(config).values()
    if name.endswith(".learnable_mask")
  }


def torch_config(state_dict: Mapping[str, np.ndarray]) -> dict:
  """The Config fields an official state_dict determines: embed_dim (patch embedding), depths
  and decoder_depths (block indices per stage), d_state (CMFM A_logs) and mlp_ratio (fc1)."""
  tm = torch_mapping
  fields = tm.unet_config(
    state_dict,
    embed_conv="patch_embed1.proj.weight",
    levels="Cross_block.",
    encoder_blocks="layers.{}.blocks.",
    decoder_blocks="layers_up.{}.blocks.",
  )
  if a_log := tm.first_shape(state_dict, r"Cross_block\.\d+\.self_attention_cross\.A_logs"):
    fields["d_state"] = a_log[1]
  if fc1 := tm.first_shape(state_dict, r"layers(_up)?\.\d+\.blocks\.\d+\.mlp\.fc1\.weight"):
    fields["mlp_ratio"] = fc1[0] / fc1[1]
  return fields


def official_grey(image_a, image_b):
  """FusionMamba's test.py reading: ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` of both."""
  return color.opencv_grey(image_a), color.opencv_grey(image_b)


def sampling_grid(config: Config) -> registry.SamplingGrid:
  """In "pad" mode the network mirror-pads bottom/right to its patch grid itself, so padding
  first changes nothing; "resize" resizes any input to 256 x 256 (no grid to keep)."""
  if config.input_fit != "pad":
    return registry.SamplingGrid()
  return registry.SamplingGrid(size_multiple=config.size_multiple, tile_grid=config.size_multiple)


FAMILY = registry.Family(
  name="fusionmamba",
  model=FusionMamba,
  variants={
    "fusionmamba": Config,
    "fusionmamba_ct_mri": CtMriConfig,
    "fusionmamba_small": SmallConfig,
    "fusionmamba_tiny": TinyConfig,
  },
  loss=fusionmamba_loss.make_loss,
  # It greys the visible image with OpenCV (BGR->GRAY) and recolours with OpenCV's full-range
  # YCrCb; the test resizes to 256 x 256, clamps, min-max stretches per image and truncates.
  inference=registry.InferenceSpec(
    y_convention="full",
    quantize_y=True,
    output="stretch",
    official_grey=official_grey,
    official_size=256,
    sampling_grid=sampling_grid,
  ),
  torch=registry.TorchSpec(
    param_map=torch_param_map, config_fields=torch_config, ignored=frozen_masks
  ),
)
