"""The array shapes of fusionjax, written once: a letter legend and the recurring array kinds.

Letters, in shapes throughout the library (channels-last, as JAX and Flax lay arrays out):

  batch  images, pairs or sequences processed together (the leading axis)
  H, W   height and width in pixels, of the input or of a feature map at its own level
  C      channels: 1 for a grey plane, 3 for RGB, the width d of a feature map
  L      sequence length: H*W for a scan over every pixel or token (MambaDFuse, SS2D),
         ceil(H/2)*ceil(W/2) for ES2D's stride-2 sub-grids, 2*H*W for S4Fusion's interleaved
         modalities
  K      scan directions side by side (4 for SS2D and ES2D)
  D      width of a scanned sequence, d_inner = expand * d_model of a Mamba-style layer
  N      SSM state size (d_state)
  R      rank of the delta projection (dt_rank)

`fusionjax.kernels` keeps the letters of `selective_scan_fn` (dim, G groups), documented there.

Words:

  plane  one grey channel as the models see it: float32 in [0, 1], (batch, H, W, 1). The two
         sources `a`, `b` and the fused result of every model, loss and baseline are planes; a
         colour source contributes its Y (BT.601, in the Y range its model was trained with).
  image  a picture as a file holds it, decoded to numpy: (H, W, C) with C = 1 or 3, uint8,
         uint16 or float32 (`fusionjax.data.io.decode_image`; floats must lie in [0, 1] to be
         fused). A fused image is
         written back as uint8, grey (H, W) or RGB (H, W, 3).
  grey image  what the metrics score: grey levels on the 0..255 scale, (H, W), or stacked
         as (batch, H, W) float64.

The aliases are `typing.Annotated` types: to Python and type checkers they are plain arrays
(`jax.Array`, `np.ndarray`); the annotation states shape, dtype and range, and
`typing.get_args(Planes)[1]` reads it back. Nothing is checked at run time.
"""

from typing import Annotated

import jax
import numpy as np

Planes = Annotated[jax.Array, "(batch, H, W, 1) float32 in [0, 1]"]
"""Grey planes: the sources a model, loss or baseline takes, and the fused result it returns."""

Features = Annotated[jax.Array, "(batch, H, W, C)"]
"""Feature maps between the layers of a model, or any C-channel images (loss terms)."""

Tokens = Annotated[jax.Array, "(batch, L, C)"]
"""A feature map as one row-major token sequence (L = H*W), as Mamba layers take it."""

Sequences = Annotated[jax.Array, "(batch, L, K, D)"]
"""K scan sequences side by side (`fusionjax.layers.scan2d`), the input of a K-direction SSM."""

Image = Annotated[np.ndarray, "(H, W, C), C = 1 or 3; uint8, uint16 or float32"]
"""An image as decoded from a file (`fusionjax.data.io.decode_image`)."""

FusedImage = Annotated[np.ndarray, "(H, W) grey or (H, W, 3) RGB, uint8"]
"""A fused result as written to a file."""

GreyImage = Annotated[np.ndarray, "(H, W) grey levels on 0..255"]
"""One image as the metrics score it."""

GreyStack = Annotated[np.ndarray, "(batch, H, W) float64 grey levels on 0..255"]
"""Same-size grey images stacked, as the metrics' batch functions take them."""
