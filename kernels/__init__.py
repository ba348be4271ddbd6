"""Numeric kernels of fusionjax, installed as ``fusionjax.kernels``.

Public ops:
  selective_scan: the Mamba selective state-space scan (``selective_scan_fn`` signature).
"""

from fusionjax.kernels.scan import IMPLS, selective_scan, selective_scan_channels_last

__all__ = ["IMPLS", "selective_scan", "selective_scan_channels_last"]
