r"""Train, evaluate and fuse with a config file.

  python run.py --config=configs/fusionmamba_med.py:tiny          # CPU smoke run: all modes
  python run.py --config=configs/fusionmamba_med.py --workdir=runs/fm_ct \
      --config.data.manual_dir=/path/to/data --mode=train         # a real run
  python run.py --config=configs/fusionmamba_med.py --workdir=runs/fm_ct --mode=fuse \
      --input_a=mri/ --input_b=ct/ --output=fused/

Modes: train (resumes a workdir that has checkpoints), eval (report of the best checkpoint on
the eval pairs: workdir/eval/), fuse (workdir/fused/, or --input_a/--input_b/--output), all
(train, then eval and fuse). `--config.<section>.<field>=value` overrides the config; the
config files in configs/ document their fields and runs.
"""

import logging
import os
import pathlib
import re
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from fusionjax import training
from fusionjax.training import sharding

_LOG = logging.getLogger("run")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/<model>_<task>.py[:arg]", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "run folder (config.json, checkpoints/, metrics.jsonl, samples/, eval/, "
    "fused/); default runs/<config file name>[_<arg>]")
_MODE = flags.DEFINE_enum("mode", "all", ["train", "eval", "fuse", "all"], "what to do")
_CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "best", ["best", "latest"],
    "checkpoint for eval and fuse: best by validation ckpt.best_metric, or latest")
_INPUT_A = flags.DEFINE_string("input_a", None, "fuse: grey-modality file or folder (ir, mri)")
_INPUT_B = flags.DEFINE_string("input_b", None, "fuse: other-modality file or folder (vi, ct)")
_OUTPUT = flags.DEFINE_string("output", None, "fuse: output PNG (files) or folder (folders)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace existing eval reports and PNGs")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "~/.cache/fusionjax/jax",
    "persistent XLA compilation cache ('' = off): reruns and resumed runs skip compiling")

# Errors that name their problem completely: shown without a traceback.
_USER_ERRORS = (FileNotFoundError, FileExistsError, training.CheckpointMismatchError,
                training.NonFiniteLossError)


def default_workdir(config_argument: str) -> pathlib.Path:
  """runs/<config file stem>[_<arg>], e.g. runs/fusionmamba_med_tiny for '...med.py:tiny'."""
  path, _, arg = config_argument.partition(":")
  name = pathlib.Path(path).stem + (f"_{arg}" if arg else "")
  return pathlib.Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Orbax reports every stage of every save at INFO level through absl's logger.
  logging.getLogger("absl").setLevel(logging.WARNING)
  sharding.initialize_distributed()
  if _COMPILATION_CACHE.value:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_COMPILATION_CACHE.value))
    # Model initialisation compiles many small programs; cache those too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  _LOG.info("JAX %s, process %d of %d, devices: %s", jax.__version__, jax.process_index(),
               jax.process_count(), jax.devices())
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename))
  _LOG.info("workdir %s", workdir)
  choice = dict(which=_CHECKPOINT.value, overwrite=_OVERWRITE.value)
  try:
    if _MODE.value in ("train", "all"):
      training.train_and_evaluate(config, workdir)
    if _MODE.value in ("eval", "all"):
      report = training.evaluate_run(config, workdir, **choice)
      print(f"\n{report.table}\nreport: {report.out_dir}")
    if _MODE.value in ("fuse", "all"):
      paths = training.fuse_run(config, workdir, input_a=_INPUT_A.value,
                                input_b=_INPUT_B.value, output=_OUTPUT.value, **choice)
      print(f"fused {len(paths)} pair(s) into {paths[0].parent if paths else '-'}")
  except _USER_ERRORS as error:
    hint = " (run.py --overwrite)" if isinstance(error, FileExistsError) else ""
    print(f"run.py: error: {error}{hint}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
