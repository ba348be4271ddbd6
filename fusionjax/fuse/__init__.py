"""Fusing image pairs: arrays, one pair of files, two folders, or a dataset split, into PNGs.

    from fusionjax import fuse, models
    fuser = fuse.model_fuser(params)                     # models.Params or an nnx model
    fuser = fuse.as_fuser("laplacian_pyramid")           # or a classical baseline
    fused = fuse.fuse_arrays(fuser, ir, vi)              # arrays in, uint8 array out
    fuse.fuse_pair(fuser, "ir/7.png", "vi/7.png", "out/7.png")
    fuse.fuse_folders(fuser, "test/ir", "test/vi", "out/")
    fuse.fuse_source(fuser, fuse.dataset_source("roadscene", "test", data_dir), "out/")

``a`` is the grey modality (ir, mri, pc) and ``b`` the one that may carry colour (vi, ct, pet,
spect, gfp), the order of ``fusionjax.data``. What happens to each pair:

1. **Reading**: ``fusionjax.data.io`` decodes 8-bit or 16-bit grey, RGB or float images; a file
   that is missing or unreadable, an alpha channel, a partner missing from the other folder or
   two sizes that differ raise an error that names the file. Every pair is decoded once
   (``inventory``) before any is fused, so a bad file fails a long run at once.
2. **Colour** (``fusionjax.color``), as training prepares inputs (``fusionjax.data.pipeline``):
   a colour ``b`` is converted to YCbCr (BT.601) in the Y convention its fuser was trained with
   (MambaDFuse studio range, quantised to 8 bits as its Y files were; the others full range);
   a colour ``a`` gives its full-range Y (the models read that side with OpenCV's grey
   conversion). The Y planes are fused and the colour source's Cb/Cr put back afterwards;
   grey sources (also grey stored as RGB) stay grey. If both sources are colour, their chroma
   is mixed with weights |C - neutral| (the rule of hanna-xu/utils ``fusedY2RGB``).
   ``model_fuser(..., protocol="official")`` replaces this step by the official test script's
   own 8-bit grey reading (``Fuser.read_grey``, and FusionMamba's resize to 256 x 256) and
   saves the fused image grey.
3. **Shapes**: each plane is mirror-padded at the bottom and right to its *bucket* shape: at
   least the fuser's ``min_size``, a multiple of its ``size_multiple`` and of
   ``Options.bucket_multiple``; it is cropped back after fusion. Tiles keep to the method's
   sampling grid (``Fuser.tile_grid``, ``tile_offset``: pyramid levels, patch embeddings). Pairs of one bucket are fused
   in batches by one compiled call: each (batch, bucket) shape is compiled once per process
   (``compiled_call``). Models pad to their own architecture's sizes inside ``apply``.
4. **Memory**: ``Options.memory_budget`` (default: most of an accelerator's memory; on a CPU
   half of the host memory available at the time) bounds the
   device memory of every call, as XLA's memory analysis of the compiled call reports it;
   images whose whole-image call does not fit are fused in overlapping tiles that do
   (``fusionjax.fuse.tiling``), so a 4000x3000 pair fuses on any device. For scale, the paper-size
   MambaDFuse needs about 2.8 GB for a 256x256 call and 12.5 GB for 480x640 (XLA, CPU). Host memory grows with the image: a 4000x3000 grey + RGB pair peaks at about
   2 GB (~150 bytes per pixel), mostly the float64 colour conversions of ``fusionjax.color``.
5. **Output**: the fuser's rule ("clip": clip to [0, 1], x 255, round; "stretch": also per-image
   min-max, truncate), then recolouring; 8-bit PNG, grey (H, W) or RGB (H, W, 3).
6. **Files**: written atomically (a temporary file in the same folder, renamed), named
   ``<pair name>.png``; an existing output is an error unless ``overwrite=True``, checked for
   all pairs before fusing any.
"""

import collections
import contextlib
import dataclasses
import functools
import math
import os
import pathlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image
from tqdm import tqdm

from fusionjax import baselines, color, models
from fusionjax.fuse import tiling
from fusionjax.models import fusionmamba, s4fusion
from fusionjax.baselines import Fuser
from fusionjax.data import io, pipeline

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class Options:
    """How pairs are batched, padded and tiled.

    Attributes:
      batch_size: most same-shape pairs (or tiles) per compiled call.
      memory_budget: most device bytes one call may use (arguments incl. parameters, outputs,
        temporaries); whole images that exceed it are tiled. None: ``default_memory_budget()``
        (on a CPU half of the memory available when the call is planned).
      tile_size: if set, tile every image larger than this along an axis with tiles of this
        side (rounded down to the fuser's ``tile_grid``), whatever the budget allows
        (reproducible tiling; more than twice the overlap); None tiles only what does not fit.
      overlap: tile overlap in pixels; None takes the fuser's ``overlap``.
      bucket_multiple: pad planes up to a multiple of this, so that pairs of nearby sizes share
        one compiled call. 1 (default) keeps each size exact: outputs then equal the method's
        whole-image result; larger values trade that for fewer compilations.
    """

    batch_size: int = 8
    memory_budget: int | None = None
    tile_size: int | None = None
    overlap: int | None = None
    bucket_multiple: int = 1

    def __post_init__(self):
        for field in ("batch_size", "memory_budget", "bucket_multiple"):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                raise ValueError(f"Options.{field} must be >= 1, got {getattr(self, field)}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"Options.overlap must be >= 0, got {self.overlap}")


# Where Linux reports the memory available to new allocations (MemAvailable).
_MEMINFO = pathlib.Path("/proc/meminfo")
# On a CPU, the share of the available host memory a call may plan for: the rest is headroom
# for the host's own arrays (decoded images, colour conversions) and for other processes.
CPU_BUDGET_FRACTION = 0.5


def available_host_memory() -> int:
    """Bytes of host memory available now: MemAvailable of /proc/meminfo (Linux), else the free
    physical pages, else (neither known) half of the physical memory."""
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        return page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        return page * os.sysconf("SC_PHYS_PAGES") // 2


def default_memory_budget() -> int:
    """Bytes a call may use by default: 90 % of the default accelerator's allocator limit, or
    on a CPU ``CPU_BUDGET_FRACTION`` of the host memory available now (``available_host_memory``),
    so that what other programs use is left alone."""
    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        return int(0.9 * stats["bytes_limit"])
    return int(CPU_BUDGET_FRACTION * available_host_memory())


class FusedPair(NamedTuple):
    """One fused pair: the decoded sources ((H, W, C) as ``io.decode_image`` gives them) and the
    fused uint8 image, (H, W) grey or (H, W, 3) RGB."""

    name: str
    image_a: np.ndarray
    image_b: np.ndarray
    fused: np.ndarray


# --- fusers ------------------------------------------------------------------------------------

PROTOCOLS = ("default", "official")


def _eight_bit(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"protocol 'official' reads 8-bit images, as the official test scripts "
                         f"do; got {image.dtype}: convert to 8 bits or use protocol 'default'")
    return image


def _pillow_image(image: np.ndarray) -> Image.Image:
    """An 8-bit (H, W, 1) or (H, W, 3) array as a Pillow "L" or "RGB" image."""
    image = _eight_bit(image)
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _opencv_grey(image: np.ndarray) -> np.ndarray:
    """``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` of a PNG: a colour one through libpng's grey
    conversion (``color.libpng_grey``), a grey one as it is. (OpenCV greys other formats with
    their own codecs' weights, which can differ by one level.)"""
    image = _eight_bit(image)
    return image[..., 0] if image.shape[-1] == 1 else color.libpng_grey(image)


def _matlab_y_file(image: np.ndarray) -> np.ndarray:
    """What MambaDFuse reads from its offline ``*_Y`` folders: MATLAB ``rgb2ycbcr``'s
    studio-range Y of an RGB file rounded to 8 bits, also when R = G = B (black 16, white 235);
    a one-channel file as it is, as the official CT folder is read."""
    image = _eight_bit(image)
    if image.shape[-1] == 1:
        return image[..., 0]
    return color.to_8_bits(color.rgb_to_ycbcr(image / 255.0, "studio")[..., 0])


def _mambadfuse_official(image_a: np.ndarray, image_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """test_MambaDFuse.py: ``cv2.imread(path, 0)`` of the grey modality and of the colour
    one's ``*_Y`` file."""
    return _opencv_grey(image_a), _matlab_y_file(image_b)


def _s4fusion_official(image_a: np.ndarray, image_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """S4Fusion's test.py: the infrared image through Pillow's ``convert("L")``, the visible
    one's float Y of ``convert("RGB")`` (``color.float32_luma``)."""
    infrared = np.asarray(_pillow_image(image_a).convert("L"))
    return infrared, color.float32_luma(np.asarray(_pillow_image(image_b).convert("RGB")))


def _fusionmamba_official(image_a: np.ndarray, image_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """FusionMamba's test.py: ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` of both (then resized
    to ``resize_to``)."""
    return _opencv_grey(image_a), _opencv_grey(image_b)


@dataclasses.dataclass(frozen=True)
class _ModelConventions:
    quantize_y: bool
    output: baselines.Output
    official_grey: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
    official_size: int | None = None


# What each model's official data pipeline does around the network (architectures.md 1.7, 2.8,
# 3.7; parity.md sections 2 and 8); the Y range is fusionjax.color.MODEL_Y_CONVENTION. The
# official_* fields are its test script's own reading and size (model_fuser's "official").
_MODEL_CONVENTIONS = {
    # Reads 8-bit *_Y PNG files; tensor2uint clamps and rounds.
    "mambadfuse": _ModelConventions(quantize_y=True, output="clip",
                                    official_grey=_mambadfuse_official),
    # Reads OpenCV grey uint8, resized to 256 x 256; the test clamps, min-max stretches per
    # image and truncates, and saves at 256 x 256.
    "fusionmamba": _ModelConventions(quantize_y=True, output="stretch",
                                     official_grey=_fusionmamba_official, official_size=256),
    # Computes Y in float from RGB; save_image clamps and rounds.
    "s4fusion": _ModelConventions(quantize_y=False, output="clip",
                                  official_grey=_s4fusion_official),
}

# Mamba scans carry state across the whole image, so no overlap reproduces whole-image
# inference exactly; 64 pixels keeps tiled and whole-image results close (tests/fuse_test.py).
MODEL_OVERLAP = 64


def _sampling_grid(module: nnx.Module) -> dict:
    """Fuser fields that keep tiles on the model's patch grid (``baselines.Fuser``)."""
    if isinstance(module, fusionmamba.FusionMamba) and module.config.input_fit == "pad":
        # Mirror-pads bottom/right to its patch grid itself: padding first changes nothing.
        multiple = module.config.size_multiple
        return {"size_multiple": multiple, "tile_grid": multiple}
    if isinstance(module, s4fusion.S4Fusion):
        # Centres a stride-3 patch grid, halved per level, with zero padding; a tile whose side
        # is a multiple of the grid gets no padding before it, so it keeps the canvas's grid.
        levels = len(module.config.dims)
        return {"tile_grid": s4fusion.PATCH_STRIDE * 2 ** (levels - 1),
                "tile_offset": lambda size: (s4fusion.padded_size(size, levels) - size) // 2}
    # MambaDFuse has no patches; FusionMamba's "resize" mode resizes any input to 256 x 256.
    return {}


def _swapped_apply(params: models.Params, a: jax.Array, b: jax.Array) -> jax.Array:
    return models.apply(params, b, a)


def model_fuser(
    model: models.Params | nnx.Module, *, name: str | None = None, swap_inputs: bool = False,
    protocol: str = "default",
) -> Fuser:
    """A fuser for a fusionjax model, in evaluation mode, with its family's conventions.

    Args:
      model: ``fusionjax.models.init(...)`` params (or restored ones), or an nnx model.
      name: for folders and tables; default the model family ("mambadfuse", ...).
      swap_inputs: call the model as ``model(b, a)``: for official FusionMamba infrared-visible
        weights, trained as model(visible, infrared). fusionjax-trained models take (a, b).
      protocol: "default": the colour pipeline of the module docstring (colour sources fused
        as Y and recoloured, outputs at the sources' size). "official": what the model
        family's official test script does from the image files, to reproduce its saved PNG:
        its own 8-bit grey reading, FusionMamba's resize to 256 x 256 (and output at that
        size), its output rounding; saved grey (README "Fusing").
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    params = model if isinstance(model, models.Params) else models.Params(*nnx.split(model))
    module = params.module()  # a copy: eval() below leaves the caller's model as it is
    family = type(module).__module__.rsplit(".", 1)[-1]
    if family not in _MODEL_CONVENTIONS:
        raise ValueError(f"no inference conventions for model {type(module).__qualname__} "
                         f"(family {family!r}); known: {sorted(_MODEL_CONVENTIONS)}")
    module.eval()
    conventions = _MODEL_CONVENTIONS[family]
    official = protocol == "official"
    return Fuser(
        name=name or family,
        apply=_swapped_apply if swap_inputs else models.apply,
        params=models.Params(*nnx.split(module)),
        y_convention=color.MODEL_Y_CONVENTION[family],
        quantize_y=conventions.quantize_y,
        output=conventions.output,
        overlap=MODEL_OVERLAP,
        read_grey=conventions.official_grey if official else None,
        resize_to=conventions.official_size if official else None,
        **_sampling_grid(module),
    )


def as_fuser(method: Fuser | str | models.Params | nnx.Module) -> Fuser:
    """A fuser from a fuser, a baseline name (``baselines.names()``), model params or a model."""
    if isinstance(method, Fuser):
        return method
    if isinstance(method, str):
        return baselines.get(method)
    return model_fuser(method)


# --- compiled calls ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _compile(apply, params_treedef, params_specs: tuple, shape: tuple[int, int, int]):
    """(executable, device bytes) of ``apply`` on (batch, H, W, 1) planes; cached per shape."""
    plane = jax.ShapeDtypeStruct((*shape, 1), jnp.float32)
    params = jax.tree.unflatten(params_treedef, params_specs)
    executable = jax.jit(apply).lower(params, plane, plane).compile()
    memory = executable.memory_analysis()
    device_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                    + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    return executable, device_bytes


def compiled_call(fuser: Fuser, batch: int, height: int, width: int) -> tiling.CompiledCall:
    """The fuser's call on (batch, height, width, 1) float32 planes, compiled once per shape
    (and process), with the device bytes it needs."""
    leaves, treedef = jax.tree.flatten(fuser.params)
    specs = tuple(jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype) for leaf in leaves)
    executable, device_bytes = _compile(fuser.apply, treedef, specs, (batch, height, width))
    return tiling.CompiledCall(
        lambda a, b: np.asarray(executable(fuser.params, a, b)), device_bytes)


# --- one pair: colour in, planes through the model, colour out ---------------------------------


class _Planes(NamedTuple):
    """A pair ready to fuse: Y planes (H, W) float32 in [0, 1] and the chroma to put back."""

    y_a: np.ndarray
    y_b: np.ndarray
    chroma: np.ndarray | None  # (H, W, 2) Cb, Cr


def fuse_chroma(chroma_a: np.ndarray, chroma_b: np.ndarray,
                convention: color.Convention) -> np.ndarray:
    """Mixes two sources' Cb/Cr, (H, W, 2) each, weighting each by its distance from neutral."""
    neutral = color.rgb_to_ycbcr(np.full(3, 0.5), convention)[1:]
    weight_a, weight_b = np.abs(chroma_a - neutral), np.abs(chroma_b - neutral)
    total = weight_a + weight_b
    mixed = (chroma_a * weight_a + chroma_b * weight_b) / np.where(total > 0, total, 1)
    return np.where(total > 0, mixed, neutral).astype(np.float32)


def _planes(fuser: Fuser, name: str, image_a: np.ndarray, image_b: np.ndarray,
            source_a: str, source_b: str) -> _Planes:
    """The planes to fuse: ``_colour_planes``, or ``_grey_planes`` for a fuser that reads as an
    official test script does (``Fuser.read_grey``).

    Args:
      image_a, image_b: (H, W, C) as ``io.decode_image`` returns them.
      source_a, source_b: where they came from, for error messages.
    """
    if image_a.shape[:2] != image_b.shape[:2]:
        (height_a, width_a), (height_b, width_b) = image_a.shape[:2], image_b.shape[:2]
        raise ValueError(f"size mismatch: {source_a} is {width_a}x{height_a} (WxH) but "
                         f"{source_b} is {width_b}x{height_b}")
    try:
        if fuser.read_grey is not None:
            return _grey_planes(fuser, image_a, image_b)
        return _colour_planes(fuser, name, image_a, image_b)
    except ValueError as error:
        raise ValueError(f"{error} (files {source_a}, {source_b})") from None


def _grey_planes(fuser: Fuser, image_a: np.ndarray, image_b: np.ndarray) -> _Planes:
    """``fuser.read_grey``'s greys, resized to ``fuser.resize_to`` if set, in [0, 1]; no chroma."""
    greys = fuser.read_grey(image_a, image_b)
    if fuser.resize_to is not None:
        size = (fuser.resize_to, fuser.resize_to)
        greys = [np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BICUBIC))
                 for grey in greys]
    y_a, y_b = (grey.astype(np.float32) / np.float32(255) if grey.dtype == np.uint8
                else grey.astype(np.float32) for grey in greys)
    return _Planes(y_a, y_b, None)


def _colour_planes(fuser: Fuser, name: str, image_a: np.ndarray, image_b: np.ndarray) -> _Planes:
    """Y planes as training prepares them (``pipeline.to_model_input``: a colour ``a`` gives
    its full-range Y, as the models read that side with OpenCV's grey conversion; ``b`` its Y in
    the fuser's convention) and the chroma of the colour source(s) in the fuser's convention."""
    converted = pipeline.to_model_input(
        {"img_a": image_a, "img_b": image_b, "name": name}, fuser.y_convention,
        quantize=fuser.quantize_y)
    _, chroma_a = color.to_fusion_input(image_a, fuser.y_convention)
    chroma_b = (np.concatenate([converted["cb"], converted["cr"]], -1)
                if "cb" in converted else None)
    if chroma_a is None or chroma_b is None:
        chroma = chroma_b if chroma_a is None else chroma_a
    else:
        chroma = fuse_chroma(chroma_a, chroma_b, fuser.y_convention)
    return _Planes(converted["img_a"][..., 0], converted["img_b"][..., 0], chroma)


def _to_uint8(fuser: Fuser, fused_y: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Fused Y (H, W) float -> 8-bit image, (H, W) or (H, W, 3), by the fuser's output rule."""
    y = np.clip(fused_y, 0.0, 1.0)
    if fuser.output == "stretch":
        low, high = y.min(), y.max()
        y = (y - low) / (high - low) if high > low else y
    image = color.recolor(y[..., None], chroma, fuser.y_convention) * 255.0
    image = np.floor(image) if fuser.output == "stretch" else np.round(image)
    image = image.astype(np.uint8)
    return image[..., 0] if chroma is None else image


def _bucket_shape(fuser: Fuser, height: int, width: int, options: Options) -> tuple[int, int]:
    if fuser.resize_to is not None:  # the planes of every pair are resized to this square
        height = width = fuser.resize_to
    multiple = math.lcm(options.bucket_multiple, fuser.size_multiple)
    return tuple(-(-max(side, fuser.min_size) // multiple) * multiple for side in (height, width))


class _BucketRunner:
    """Fuses the planes of one bucket shape by the memory plan for ``count`` of them."""

    def __init__(self, fuser: Fuser, shape: tuple[int, int], count: int, options: Options,
                 progress: bool):
        self.fuser, self.shape, self.progress = fuser, shape, progress
        self.overlap = fuser.overlap if options.overlap is None else options.overlap
        if options.tile_size is not None and options.tile_size <= 2 * self.overlap:
            raise ValueError(f"Options.tile_size ({options.tile_size}) must exceed twice the "
                             f"overlap ({self.overlap}) of {fuser.name}")
        # Tiles are cut from the plane zero-padded onto the fuser's sampling grid.
        self.canvas_pads = [(offset, -(offset + side) % fuser.tile_grid) for offset, side in
                            ((fuser.tile_offset(side) if fuser.tile_offset else 0, side)
                             for side in shape)]
        self.plan = tiling.plan(
            functools.partial(compiled_call, fuser), *shape, count,
            batch_size=options.batch_size,
            memory_budget=options.memory_budget or default_memory_budget(),
            tile_size=options.tile_size, overlap=self.overlap, align=fuser.tile_grid,
            canvas=tuple(sum(pads) + side for pads, side in zip(self.canvas_pads, shape)))
        self.chunk = self.plan.batch if self.plan.tile is None else 1

    def __call__(self, group: Sequence[_Planes]) -> list[np.ndarray]:
        """Up to ``self.chunk`` pairs -> fused Y planes (H, W) float32, each cropped to its size."""
        pad = lambda plane: np.pad(
            plane, [(0, target - side) for target, side in zip(self.shape, plane.shape)],
            mode="symmetric")
        stacked_a = np.stack([pad(planes.y_a) for planes in group])
        stacked_b = np.stack([pad(planes.y_b) for planes in group])
        if self.plan.tile is None:
            fill = self.plan.batch - len(group)
            fill_up = lambda stack: np.concatenate([stack, stack[-1:].repeat(fill, 0)])[..., None]
            fused = self.plan.call.call(fill_up(stacked_a), fill_up(stacked_b))[..., 0]
        else:
            (top, _), (left, _) = self.canvas_pads
            fused = [tiling.fuse_tiled(self.plan.call.call, np.pad(a, self.canvas_pads),
                                       np.pad(b, self.canvas_pads), self.plan.tile, self.overlap,
                                       self.plan.batch, align=self.fuser.tile_grid,
                                       progress=self.progress)[top:, left:]
                     for a, b in zip(stacked_a, stacked_b)]
        return [plane[:planes.y_a.shape[0], :planes.y_a.shape[1]]
                for plane, planes in zip(fused, group)]


def fuse_arrays(fuser: Fuser, image_a: np.ndarray, image_b: np.ndarray,
                options: Options = Options()) -> np.ndarray:
    """Fuses one pair of arrays; no files.

    Args:
      fuser: from ``model_fuser`` or ``baselines.get`` (``as_fuser`` accepts both).
      image_a, image_b: (H, W), (H, W, 1) or (H, W, 3); uint8, uint16 or float in [0, 1].
      options: batching, tiling and memory (``Options``).

    Returns:
      uint8 (H, W) if both sources are grey, else (H, W, 3) RGB.
    """
    image_a, image_b = (np.asarray(image) for image in (image_a, image_b))
    image_a, image_b = (image[..., None] if image.ndim == 2 else image
                        for image in (image_a, image_b))
    planes = _planes(fuser, "arrays", image_a, image_b, "image_a", "image_b")
    shape = _bucket_shape(fuser, *planes.y_a.shape, options)
    fused_y, = _BucketRunner(fuser, shape, 1, options, progress=False)([planes])
    return _to_uint8(fuser, fused_y, planes.chroma)


# --- many pairs --------------------------------------------------------------------------------


class PairInfo(NamedTuple):
    """A checked pair of a source: its index, name and size."""

    index: int
    name: str
    height: int
    width: int


def inventory(source: Sequence[dict], fuser: Fuser | None = None) -> list[PairInfo]:
    """Decodes every pair of a record source once and lists them; raises on the first bad pair
    (unreadable file, unsupported mode, sizes that differ, with a ``fuser``: an image it cannot
    read, such as a 16-bit one for an official protocol; the error names the file) or on a
    repeated pair name (outputs are named after the pairs)."""
    pairs = []
    for index in range(len(source)):
        record = source[index]
        name, image_a, image_b = io.decode_pair(record)
        if fuser is not None and fuser.read_grey is not None:
            try:
                _eight_bit(image_a), _eight_bit(image_b)
            except ValueError as error:
                raise ValueError(f"{error} (files {os.fsdecode(record['path_a'])}, "
                                 f"{os.fsdecode(record['path_b'])})") from None
        pairs.append(PairInfo(index, name, *image_a.shape[:2]))
    repeated = sorted(name for name, count in collections.Counter(
        pair.name for pair in pairs).items() if count > 1)
    if repeated:
        raise ValueError(f"pair names repeat in {source!r}: {repeated}")
    return pairs


class FusionJob:
    """The pairs of a record source grouped by bucket shape; iterate to fuse them.

    Iteration decodes the pairs one batch at a time and yields ``FusedPair``s bucket by bucket
    (not in source order), with a progress bar.

    Args:
      fuser: the method.
      source: random-access records (``fusionjax.data.io``): ``io.PairedFolderSource``, a TFDS
        data source of ``fusionjax.data.builders`` (``dataset_source``), or any sequence of such
        dicts.
      options: batching, tiling and memory.
      pairs: ``inventory(source, fuser)``, if already taken (it decodes every pair once).
      progress: show progress bars (pairs; tiles of tiled images).
    """

    def __init__(self, fuser: Fuser, source: Sequence[dict], options: Options = Options(), *,
                 pairs: Sequence[PairInfo] | None = None, progress: bool = True):
        self.fuser, self.source, self.options, self.progress = fuser, source, options, progress
        self.pairs = list(inventory(source, fuser) if pairs is None else pairs)
        self._buckets: dict[tuple[int, int], list[int]] = {}
        for pair in self.pairs:
            shape = _bucket_shape(fuser, pair.height, pair.width, options)
            self._buckets.setdefault(shape, []).append(pair.index)

    @property
    def names(self) -> list[str]:
        return [pair.name for pair in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def _decode(self, index: int) -> tuple[str, np.ndarray, np.ndarray, _Planes]:
        record = self.source[index]
        name, image_a, image_b = io.decode_pair(record)
        # TFDS gives the paths as bytes, folder sources as str.
        planes = _planes(self.fuser, name, image_a, image_b, os.fsdecode(record["path_a"]),
                         os.fsdecode(record["path_b"]))
        return name, image_a, image_b, planes

    def __iter__(self) -> Iterator[FusedPair]:
        with tqdm(total=len(self), desc=self.fuser.name, unit="pair",
                  disable=not self.progress) as bar:
            for shape, indices in self._buckets.items():
                runner = _BucketRunner(self.fuser, shape, len(indices), self.options,
                                       self.progress)
                for start in range(0, len(indices), runner.chunk):
                    decoded = [self._decode(index)
                               for index in indices[start:start + runner.chunk]]
                    fused = runner([planes for *_, planes in decoded])
                    for (name, image_a, image_b, planes), fused_y in zip(decoded, fused):
                        yield FusedPair(name, image_a, image_b,
                                        _to_uint8(self.fuser, fused_y, planes.chroma))
                        bar.update()


# --- files -------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yields a temporary path beside ``path`` to write the file to, and renames it over
    ``path`` when the block succeeds (removes it when it fails), so no reader ever sees a
    half-written file.

    Raises:
      FileExistsError: ``path`` exists and not ``overwrite``.
    """
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_png(image: np.ndarray, path: PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """Writes a uint8 (H, W) or (H, W, 3) image as PNG, atomically (``atomic_output``)."""
    with atomic_output(path, overwrite=overwrite) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
    return pathlib.Path(path)


def check_outputs(paths: Sequence[pathlib.Path], *, overwrite: bool) -> None:
    """Raises FileExistsError naming the outputs that exist already, unless ``overwrite``."""
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise FileExistsError(f"{len(existing)} output(s) exist already: "
                              f"{', '.join(existing[:5])}{more}; pass overwrite=True to replace")


class InputError(ValueError):
    """The pairs to fuse cannot be read: an unreadable or unsupported image, a missing partner,
    sizes that differ, repeated pair names, a file given with a folder. The message names the
    file."""


@contextlib.contextmanager
def _reading_inputs() -> Iterator[None]:
    """Re-raises the ValueErrors of reading and pairing the inputs as ``InputError``."""
    try:
        yield
    except InputError:
        raise
    except ValueError as error:
        raise InputError(str(error)) from error


def _check_existing_rule(overwrite: bool, skip_existing: bool) -> None:
    if overwrite and skip_existing:
        raise ValueError("overwrite and skip_existing exclude each other: either replace the "
                         "existing outputs or keep them")


def fuse_source(fuser: Fuser, source: Sequence[dict], out_dir: PathLike, *,
                options: Options = Options(), overwrite: bool = False,
                skip_existing: bool = False, progress: bool = True) -> list[pathlib.Path]:
    """Fuses every pair of a record source (``FusionJob``) into ``out_dir/<name>.png``.

    Every pair is read before any is fused. Outputs that exist already are an error, raised
    before anything is fused, unless ``overwrite`` (replace them) or ``skip_existing`` (keep
    them and fuse only the pairs whose outputs are missing: completes an interrupted folder).

    Returns the paths of every pair's output (written or kept), sorted by pair name.

    Raises:
      InputError: a pair cannot be read (the message names the file).
      FileExistsError: outputs exist and neither ``overwrite`` nor ``skip_existing``.
    """
    _check_existing_rule(overwrite, skip_existing)
    with _reading_inputs():
        pairs = inventory(source, fuser)
    out_dir = pathlib.Path(out_dir)
    paths = {pair.name: out_dir / f"{pair.name}.png" for pair in pairs}
    if skip_existing:
        pairs = [pair for pair in pairs if not paths[pair.name].exists()]
    else:
        check_outputs(list(paths.values()), overwrite=overwrite)
    for pair in FusionJob(fuser, source, options, pairs=pairs, progress=progress):
        write_png(pair.fused, paths[pair.name], overwrite=overwrite)
    return [paths[name] for name in sorted(paths)]


def fuse_folders(fuser: Fuser, dir_a: PathLike, dir_b: PathLike, out_dir: PathLike, *,
                 prefix_a: str = "", prefix_b: str = "", options: Options = Options(),
                 overwrite: bool = False, skip_existing: bool = False,
                 progress: bool = True) -> list[pathlib.Path]:
    """Fuses the pairs of two folders, matched by file name (``io.pair_folders``; prefixes are
    stripped from the stems), into ``out_dir``, as ``fuse_source``."""
    with _reading_inputs():
        source = io.PairedFolderSource.from_folders(dir_a, dir_b, prefix_a=prefix_a,
                                                    prefix_b=prefix_b)
    return fuse_source(fuser, source, out_dir, options=options, overwrite=overwrite,
                       skip_existing=skip_existing, progress=progress)


def fuse_pair(fuser: Fuser, path_a: PathLike, path_b: PathLike, out_path: PathLike, *,
              options: Options = Options(), overwrite: bool = False,
              skip_existing: bool = False, progress: bool = True) -> pathlib.Path:
    """Fuses one pair of image files into the PNG ``out_path`` (a progress bar over the tiles
    of a tiled image); an existing ``out_path`` as in ``fuse_source``."""
    _check_existing_rule(overwrite, skip_existing)
    out_path = pathlib.Path(out_path)
    if skip_existing and out_path.exists():
        return out_path
    check_outputs([out_path], overwrite=overwrite)
    paths = [pathlib.Path(path) for path in (path_a, path_b)]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
    source = io.PairedFolderSource([io.ImagePair(out_path.stem, *paths)])
    with _reading_inputs():
        pairs = inventory(source, fuser)
    pair, = FusionJob(fuser, source, options, pairs=pairs, progress=progress)
    return write_png(pair.fused, out_path, overwrite=overwrite)


def fuse_paths(fuser: Fuser, input_a: PathLike, input_b: PathLike, output: PathLike,
               **keywords) -> list[pathlib.Path]:
    """Fuses two image files into the PNG ``output`` (into ``output/<name of a>.png`` when
    ``output`` is a folder), or two folders into the folder ``output``: ``fuse_pair`` or
    ``fuse_folders``, whose keyword arguments it takes. Returns the outputs."""
    path_a, path_b = pathlib.Path(input_a), pathlib.Path(input_b)
    for path in (path_a, path_b):
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
    if path_a.is_dir() and path_b.is_dir():
        return fuse_folders(fuser, path_a, path_b, output, **keywords)
    if path_a.is_dir() or path_b.is_dir():
        kind = lambda path: "folder" if path.is_dir() else "file"
        raise InputError(f"give two image files or two folders; {path_a} is a {kind(path_a)} "
                         f"and {path_b} a {kind(path_b)}")
    output = pathlib.Path(output)
    if output.is_dir():
        output = output / f"{path_a.stem}.png"
    return [fuse_pair(fuser, path_a, path_b, output, **keywords)]


def dataset_source(name: str, split: str, data_dir: PathLike) -> Sequence[dict]:
    """The records of a prepared fusionjax TFDS dataset split ("roadscene", "harvard/pet_mri",
    ...; see ``fusionjax.data.builders.prepare``)."""
    # Imported here: TFDS takes a second to import and only dataset splits need it.
    import tensorflow_datasets as tfds

    from fusionjax.data import builders  # noqa: F401  (registers the builders)

    return tfds.data_source(name, split=split, data_dir=os.fspath(data_dir))
