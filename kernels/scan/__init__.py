"""The Mamba selective scan: public API and implementations.

`selective_scan` takes mamba's (batch, dim, L) layout; `selective_scan_channels_last` takes
(batch, L, dim), the layout of fusionjax's models.
"""

from fusionjax.kernels.scan.api import (
  IMPLS,
  Impl,
  resolve_impl,
  selective_scan,
  selective_scan_channels_last,
)

__all__ = ["IMPLS", "Impl", "resolve_impl", "selective_scan", "selective_scan_channels_last"]
