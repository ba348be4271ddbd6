"""Training, evaluation and fusing of fusionjax models from ml_collections configs.

    from fusionjax import training
    training.train_and_evaluate(config, "runs/fusionmamba_med")   # resumes if interrupted
    report = training.evaluate_run(config, "runs/fusionmamba_med")
    paths = training.fuse_run(config, "runs/fusionmamba_med")

`fusionjax.cli` (`run.py`, the `fusionjax` command) is the command-line face of these three
(configs/*.py document the configs).
"""

from fusionjax.training.checkpointing import CheckpointMismatchError
from fusionjax.training.loop import NonFiniteLossError, train_and_evaluate
from fusionjax.training.reports import evaluate_run, fuse_run, load_model

__all__ = [
  "CheckpointMismatchError",
  "NonFiniteLossError",
  "evaluate_run",
  "fuse_run",
  "load_model",
  "train_and_evaluate",
]
