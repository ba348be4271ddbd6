"""Fusing image pairs: arrays, one pair of files, two folders, or a dataset split, into PNGs.

    from fusionjax import fuse, models
    fuser = fuse.model_fuser(params)                     # models.Params or an nnx model
    fuser = fuse.as_fuser("laplacian_pyramid")           # or a classical baseline
    fused = fuse.fuse_arrays(fuser, ir, vi)              # arrays in, uint8 array out
    fuse.fuse_pair(fuser, "ir/7.png", "vi/7.png", "out/7.png")
    fuse.fuse_folders(fuser, "test/ir", "test/vi", "out/")
    fuse.fuse_source(fuser, fuse.dataset_source("roadscene", "test", data_dir), "out/")

``a`` is the grey modality (ir, mri, pc) and ``b`` the one that may carry colour (vi, ct, pet,
spect, gfp), the order of ``fusionjax.data``; fusing files with a model, a colour ``a`` beside
a grey ``b`` is logged once as a warning (swapped inputs fuse poorly). What happens to each pair:

1. **Reading** (``files``): ``fusionjax.data.io`` decodes 8-bit or 16-bit grey, RGB or float
   images; a file that is missing or unreadable, an alpha channel, a partner missing from the
   other folder or two sizes that differ raise an ``InputError`` that names the file. Every
   pair is checked from its files' headers (``inventory``: size, mode, bit depth; no pixels
   are decoded) before any is fused, so such a file fails a long run at once; each image is
   then decoded once, when its batch is fused (damaged pixel data, such as a truncated file,
   is found only then).
2. **Colour** (``planes``, ``fusionjax.color``), as training prepares inputs
   (``fusionjax.data.pipeline``): a colour ``b`` is converted to YCbCr (BT.601) in the Y
   convention its fuser was trained with (MambaDFuse studio range, quantised to 8 bits as its
   Y files were; the others full range); a colour ``a`` gives its full-range Y (the models
   read that side with OpenCV's grey conversion). The Y planes are fused and the colour
   source's Cb/Cr put back afterwards; grey sources (also grey stored as RGB) stay grey. If
   both sources are colour, their chroma is mixed with weights |C - neutral| (the rule of
   hanna-xu/utils ``fusedY2RGB``). ``model_fuser(..., protocol="official")`` replaces this
   step by the official test script's own 8-bit grey reading (``Fuser.read_grey``, from the
   family's ``fusionjax.models.registry.InferenceSpec``, and FusionMamba's resize to
   256 x 256) and saves the fused image grey; ``inventory`` refuses a file that is not 8-bit.
3. **Shapes** (``batching``): each plane is mirror-padded at the bottom and right to its
   *bucket* shape: at least the fuser's ``min_size``, a multiple of its ``size_multiple`` and
   of ``Options.bucket_multiple``; it is cropped back after fusion. Tiles keep to the
   method's sampling grid (``Fuser.tile_grid``, ``tile_offset``: pyramid levels, patch
   embeddings). Pairs of one bucket are fused in batches by one compiled call: each (batch,
   bucket) shape is compiled once per process (``compiled_call``). Models pad to their own
   architecture's sizes inside ``apply``.
4. **Memory** (``batching``, ``tiling``): ``Options.memory_budget`` (default: most of an
   accelerator's memory; on a CPU half of the host memory available at the time) bounds the
   device memory of every call, as XLA's memory analysis of the compiled call reports it;
   images whose whole-image call does not fit are fused in overlapping tiles that do
   (``fusionjax.fuse.tiling``), so a 4000x3000 pair fuses on any device. For scale, the
   paper-size MambaDFuse's XLA temporaries are about 0.18 GB for a 256x256 call, 0.8 GB for
   480x640 and 30 GB for 3000x4000 (CPU, ``benchmarks/memory.py``); a budget or ``tile_size``
   that leaves no tile raises a ``PlanError``. Host memory grows with the image: a 4000x3000
   grey + RGB pair peaks at about 2 GB (~150 bytes per pixel), mostly the float64 colour
   conversions of ``fusionjax.color``.
5. **Output** (``planes``): the fuser's rule ("clip": clip to [0, 1], x 255, round;
   "stretch": also per-image min-max, truncate), then recolouring; 8-bit PNG, grey (H, W) or
   RGB (H, W, 3).
6. **Files** (``files``): written atomically (a temporary file in the same folder, renamed),
   named ``<pair name>.png``; an existing output is an error unless ``overwrite=True``,
   checked for all pairs before fusing any.

The modules, by job: ``fusers`` (a model with its family's conventions), ``planes``,
``batching``, ``tiling`` and ``files``; this package exports their public names.
"""

from fusionjax.fuse import batching, files, fusers, planes, tiling
from fusionjax.fuse.batching import (
  CPU_BUDGET_FRACTION,
  Options,
  available_host_memory,
  compiled_call,
  default_memory_budget,
  fuse_arrays,
)
from fusionjax.fuse.files import (
  FusedPair,
  FusionJob,
  InputError,
  PairInfo,
  PathLike,
  atomic_output,
  check_outputs,
  dataset_source,
  fuse_folders,
  fuse_pair,
  fuse_paths,
  fuse_source,
  inventory,
  write_png,
)
from fusionjax.fuse.fusers import MODEL_OVERLAP, PROTOCOLS, as_fuser, model_fuser
from fusionjax.fuse.planes import fuse_chroma
from fusionjax.fuse.tiling import PlanError

__all__ = [
  "CPU_BUDGET_FRACTION",
  "FusedPair",
  "FusionJob",
  "InputError",
  "MODEL_OVERLAP",
  "Options",
  "PROTOCOLS",
  "PairInfo",
  "PathLike",
  "PlanError",
  "as_fuser",
  "atomic_output",
  "available_host_memory",
  "batching",
  "check_outputs",
  "compiled_call",
  "dataset_source",
  "default_memory_budget",
  "files",
  "fuse_arrays",
  "fuse_chroma",
  "fuse_folders",
  "fuse_pair",
  "fuse_paths",
  "fuse_source",
  "fusers",
  "inventory",
  "model_fuser",
  "planes",
  "tiling",
  "write_png",
]
