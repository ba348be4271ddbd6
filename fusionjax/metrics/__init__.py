"""Standard no-reference image-fusion quality metrics.

Default definitions reproduce the Python evaluator of Zhaozixiang1228/MMIF-CDDFuse
(``utils/Evaluator.py``), which CDDFuse, EMMA, DDFM and their followers ran;
``convention="matlab"`` switches the metrics that Tang's MATLAB toolbox
(Linfeng-Tang/Evaluation-for-Image-Fusion) defines differently.  FMI, MS_SSIM
(MEF-MS-SSIM) and Nabf follow the toolbox.  ``docs/metrics.md`` states
every definition, constant and quirk.

Images are grey images on the 0..255 scale (``fusionjax.shapes.GreyImage``); the sources come
first, the fused image last: ``evaluate(a, b, f)``.  Everything is computed in
float64 with NumPy/SciPy, with separable filters and batching over same-size
images (``evaluate_batch``).
"""

from fusionjax.metrics.api import (
  ALL_METRICS,
  DEFAULT_METRICS,
  EXTRA_METRICS,
  average_gradient,
  correlation_coefficient,
  entropy,
  evaluate,
  evaluate_batch,
  fmi,
  mean_squared_error,
  ms_ssim_mef,
  mutual_information,
  nabf,
  psnr,
  qabf,
  scd,
  smallest_side,
  spatial_frequency,
  ssim,
  standard_deviation,
  vif,
)
from fusionjax.metrics.inputs import rgb_to_grey

__all__ = [
  "ALL_METRICS",
  "DEFAULT_METRICS",
  "EXTRA_METRICS",
  "average_gradient",
  "correlation_coefficient",
  "entropy",
  "evaluate",
  "evaluate_batch",
  "fmi",
  "mean_squared_error",
  "ms_ssim_mef",
  "mutual_information",
  "nabf",
  "psnr",
  "qabf",
  "rgb_to_grey",
  "scd",
  "smallest_side",
  "spatial_frequency",
  "ssim",
  "standard_deviation",
  "vif",
]
