r"""Train, evaluate and fuse with a config file, or fuse with converted official weights.

The command line of fusionjax: `fusionjax` once installed (or `python -m fusionjax`), `python
run.py` in a checkout; the config files are in the repository's configs/ folder.

  python run.py --config=configs/fusionmamba_med.py:tiny          # CPU smoke run: all modes
  python run.py --config=configs/fusionmamba_med.py --workdir=runs/fm_ct \
      --config.data.manual_dir=/path/to/data --mode=train         # a real run
  python run.py --config=configs/fusionmamba_med.py --workdir=runs/fm_ct --mode=fuse \
      --input_a=mri/ --input_b=ct/ --output=fused/
  python run.py --mode=fuse --weights=weights/mambadfuse_ivf \
      --input_a=ir/ --input_b=vi/ --output=fused/                 # fusionjax-convert output
  python run.py --mode=eval --pretrained=ivf \
      --input_a=ir/ --input_b=vi/ --output=report/                # a shipped model's report

Modes: train (resumes a workdir that has checkpoints), eval (report of the best checkpoint on
the eval pairs: workdir/eval/), fuse (workdir/fused/, or --input_a/--input_b/--output), all
(train, then eval and fuse). With --weights or --pretrained instead of a run: fuse, or eval
(a report of the model beside the classical baselines on the pairs of two folders).
`--config.<section>.<field>=value` overrides the config; the config files in configs/ document
their fields and runs. `--config.model.name` picks a model variant (e.g. fusionmamba_ct_mri)
with that variant's defaults.

Existing outputs are an error unless --overwrite (replace them) or --skip_existing (fuse only
the pairs whose outputs are missing; eval reuses the complete report of the same checkpoint
step). --mode=all skips existing outputs by default, so rerunning a command finishes what is
missing and changes nothing else. A flag the mode does not use is an error, as is any bad
input: `<program>: error: ...` on stderr and exit status 2.
"""

import logging
import os
import pathlib
import re
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from fusionjax import baselines, config_lib, convert, data, evaluation, fuse, models, training
from fusionjax.training import sharding

_LOG = logging.getLogger("run")

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "configs/<model>_<task>.py[:arg]; needed except with --weights", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "run folder (config.json, checkpoints/, metrics.jsonl, samples/, eval/, "
  "fused/); default runs/<config file name>[_<arg>]",
)
_MODE = flags.DEFINE_enum("mode", "all", ["train", "eval", "fuse", "all"], "what to do")
_CHECKPOINT = flags.DEFINE_enum(
  "checkpoint",
  "best",
  ["best", "latest"],
  "checkpoint for eval and fuse: best by validation ckpt.best_metric, or latest",
)
_INPUT_A = flags.DEFINE_string("input_a", None, "fuse: grey-modality file or folder (ir, mri)")
_INPUT_B = flags.DEFINE_string("input_b", None, "fuse: other-modality file or folder (vi, ct)")
_OUTPUT = flags.DEFINE_string(
  "output",
  None,
  "fuse: output PNG (files) or folder (folders); eval with --weights or --pretrained: the "
  "report folder",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace existing eval reports and PNGs")
_SKIP_EXISTING = flags.DEFINE_bool(
  "skip_existing",
  False,
  "keep existing PNGs and fuse only the missing ones; eval reuses "
  "the complete report of the same checkpoint step (the default of --mode=all)",
)
_WEIGHTS = flags.DEFINE_string(
  "weights",
  None,
  "fuse or evaluate with a fusionjax-convert output folder instead of a run (no "
  "--config or --workdir; needs --input_a, --input_b and --output)",
)
_PRETRAINED = flags.DEFINE_string(
  "pretrained",
  None,
  "fuse or evaluate with a model fusionjax ships: its name, or a task (ivf, ct_mri, pet_mri, "
  "spect_mri) "
  "for that task's default (fusionjax.models.list_pretrained() lists them; no --config or "
  "--workdir; needs --input_a, --input_b and --output)",
)
_PROTOCOL = flags.DEFINE_enum(
  "protocol",
  "default",
  list(fuse.PROTOCOLS),
  "fuse: 'official' reproduces the model's official test script from the image files",
)
_SWAP_INPUTS = flags.DEFINE_bool(
  "swap_inputs",
  False,
  "with --weights: call the model as (b, a), e.g. official FusionMamba "
  "infrared-visible weights (trained as model(visible, infrared))",
)
_MEMORY_BUDGET = flags.DEFINE_string(
  "memory_budget",
  None,
  "eval and fuse: most memory one call may use, e.g. 4GB, 512MiB or "
  "bytes; larger images are tiled (default: most of an accelerator's memory, on a CPU half "
  "of the memory available)",
)
_TILE_SIZE = flags.DEFINE_integer(
  "tile_size", None, "eval and fuse: tile every image larger than this side (pixels)", lower_bound=1
)
_COMPILATION_CACHE = flags.DEFINE_string(
  "compilation_cache",
  "~/.cache/fusionjax/jax",
  "persistent XLA compilation cache ('' = off): reruns and resumed runs skip compiling (a job "
  "of several CPU processes does not use it)",
)

# Errors that name their problem completely: shown without a traceback.
_USER_ERRORS = (
  FileNotFoundError,
  FileExistsError,
  NotADirectoryError,
  fuse.InputError,
  fuse.PlanError,
  config_lib.ConfigError,
  training.CheckpointMismatchError,
  training.NonFiniteLossError,
  models.PretrainedError,
)
# Flags each mode uses besides --config, --workdir, --mode and --compilation_cache.
_OUTPUT_FLAGS = ("checkpoint", "overwrite", "skip_existing", "memory_budget", "tile_size")
_INPUT_FLAGS = ("input_a", "input_b", "output", "protocol")
_MODE_FLAGS = {
  "train": (),
  "eval": _OUTPUT_FLAGS,
  "fuse": _OUTPUT_FLAGS + _INPUT_FLAGS,
  "all": _OUTPUT_FLAGS + _INPUT_FLAGS,
}
_PARAMS_FLAGS = ("overwrite", "skip_existing", "memory_budget", "tile_size") + _INPUT_FLAGS
# Flags of fusing with given params (no run): a converted folder, or a shipped model;
# evaluating with them writes one report, at the sources' sizes, as a run's eval does: no
# --skip_existing, no --protocol (FusionMamba's official protocol saves 256x256 images).
_SOURCE_FLAGS = {
  "weights": ("weights", "swap_inputs") + _PARAMS_FLAGS,
  "pretrained": ("pretrained",) + _PARAMS_FLAGS,
}
_SOURCE_MODES = ("fuse", "eval")
_UNITS = {
  "": 1,
  "b": 1,
  "kb": 10**3,
  "mb": 10**6,
  "gb": 10**9,
  "tb": 10**12,
  "kib": 2**10,
  "mib": 2**20,
  "gib": 2**30,
  "tib": 2**40,
}


class UsageError(Exception):
  """A command line that cannot run; the message says why."""


def _program() -> str:
  """How the command was called: run.py, fusionjax or python -m fusionjax."""
  name = pathlib.Path(sys.argv[0]).name
  return "python -m fusionjax" if name == "__main__.py" else name


def _fail(message: str) -> None:
  print(f"{_program()}: error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_bytes(text: str) -> int:
  """ "4GB", "512 MiB", "1.5gb" or "1000000" -> bytes (kB, MB, GB are powers of 1000; KiB, MiB,
  GiB of 1024)."""
  match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
  if not match or match.group(2).lower() not in _UNITS:
    raise UsageError(f"--memory_budget={text}: give bytes or a size such as 4GB or 512MiB")
  size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
  if size < 1:
    raise UsageError(f"--memory_budget={text} must be at least one byte")
  return size


def default_workdir(config_argument: str) -> pathlib.Path:
  """runs/<config file stem>[_<arg>], e.g. runs/fusionmamba_med_tiny for '...med.py:tiny'."""
  path, _, arg = config_argument.partition(":")
  name = pathlib.Path(path).stem + (f"_{arg}" if arg else "")
  return pathlib.Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _override_message(error: LookupError | AttributeError, argv: list[str]) -> str:
  """A misspelt `--config.a.b=...`, from ml_collections' "'b'\\nDid you mean "c"..." error."""
  text = str(error.args[0] if error.args else error)
  key = next(iter(re.findall(r"\w+", text)), "")
  overrides = [arg.partition("=")[0] for arg in argv if arg.startswith("--config.")]
  flag = next(
    (name for name in overrides if re.search(rf"\.{re.escape(key)}(\.|$)", name)),
    ", ".join(overrides),
  )
  suggestion = re.search(r'Did you mean "(\w+)"', text)
  hint = f'; did you mean "{suggestion.group(1)}"?' if suggestion else ""
  return f"{flag}: the config has no field {key!r}{hint}"


def _set(name: str) -> bool:
  return flags.FLAGS[name].present > 0


def _params_source() -> str | None:
  """ "weights" or "pretrained": the flag that fuses with given params instead of a run."""
  given = [name for name in _SOURCE_FLAGS if flags.FLAGS[name].value]
  if len(given) > 1:
    raise UsageError("--weights and --pretrained exclude each other")
  return given[0] if given else None


def _check_flags() -> None:
  """Refuses flags the mode does not use, missing ones, and inputs that do not exist."""
  source = _params_source()
  if source:
    if _set("mode") and _MODE.value not in _SOURCE_MODES:
      raise UsageError(f"--{source} fuses or evaluates: use --mode=fuse or --mode=eval")
    used = _SOURCE_FLAGS[source]
    if _MODE.value == "eval":
      used = tuple(name for name in used if name not in ("skip_existing", "protocol"))
  else:
    if _CONFIG.value is None:
      raise UsageError(
        "--config is required (or --pretrained=NAME or --weights=DIR with --mode=fuse)"
      )
    used = _MODE_FLAGS[_MODE.value]
  always = ("mode", "compilation_cache") + (() if source else ("config", "workdir"))
  ignored = [name for name in _flag_names() if _set(name) and name not in used + always]
  if ignored:
    what = f"--mode={_MODE.value}"
    if source:
      what = f"--{source}" + (f" {what}" if _MODE.value == "eval" else "")
    raise UsageError(f"{what} does not use {', '.join('--' + n for n in ignored)}")
  if _OVERWRITE.value and _SKIP_EXISTING.value:
    raise UsageError("--overwrite and --skip_existing exclude each other")
  _check_inputs()
  if _MEMORY_BUDGET.value is not None:
    parse_bytes(_MEMORY_BUDGET.value)


def _flag_names() -> list[str]:
  """The names of the command's own flags (not absl's or JAX's)."""
  return [
    holder.name
    for holder in (
      _CONFIG,
      _WORKDIR,
      _MODE,
      _CHECKPOINT,
      _INPUT_A,
      _INPUT_B,
      _OUTPUT,
      _OVERWRITE,
      _SKIP_EXISTING,
      _WEIGHTS,
      _PRETRAINED,
      _PROTOCOL,
      _SWAP_INPUTS,
      _MEMORY_BUDGET,
      _TILE_SIZE,
      _COMPILATION_CACHE,
    )
  ]


def _check_inputs() -> None:
  inputs = [value for value in (_INPUT_A.value, _INPUT_B.value) if value is not None]
  if len(inputs) == 1:
    raise UsageError("give both --input_a and --input_b (two files or two folders)")
  source = _params_source()
  if source and not (inputs and _OUTPUT.value):
    raise UsageError(f"--{source} needs --input_a, --input_b and --output")
  if _WEIGHTS.value and not pathlib.Path(_WEIGHTS.value).is_dir():
    raise UsageError(f"--weights={_WEIGHTS.value}: no such folder (a fusionjax-convert output)")
  if _PRETRAINED.value:
    try:
      models.pretrained_entry(_PRETRAINED.value)
    except models.PretrainedError as error:
      raise UsageError(f"--pretrained={_PRETRAINED.value}: {error}") from None
  for path in inputs:
    if not pathlib.Path(path).exists():
      raise UsageError(f"input not found: {path}")
  if source and _MODE.value == "eval" and not all(pathlib.Path(path).is_dir() for path in inputs):
    raise UsageError(f"--mode=eval --{source} takes two folders of pairs; got {', '.join(inputs)}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every problem (a missing or failing config file, a misspelt
  override, a flag the mode does not use) reported as one `<program>: error:` line, exit 2."""
  try:
    config_lib.check_config_flag(argv)
    remaining = flags.FLAGS(argv)
    _check_flags()
    return remaining
  except (AttributeError, KeyError) as error:
    _fail(_override_message(error, argv))
  except (flags.Error, UsageError, FileNotFoundError, ValueError) as error:
    _fail(str(error).strip())


def _options() -> fuse.Options:
  budget = _MEMORY_BUDGET.value
  return fuse.Options(
    memory_budget=parse_bytes(budget) if budget else None, tile_size=_TILE_SIZE.value
  )


def _output_choice() -> dict:
  """overwrite / skip_existing for eval and fuse: --mode=all skips existing outputs unless
  --overwrite, so that a rerun finishes what is missing."""
  rerun_finishes = _MODE.value == "all" and not _params_source() and not _OVERWRITE.value
  skip = _SKIP_EXISTING.value or rerun_finishes
  return dict(overwrite=_OVERWRITE.value, skip_existing=skip, options=_options())


def params_fuser() -> baselines.Fuser:
  """The model of --weights (a converted params folder) or --pretrained (a shipped model)."""
  if _WEIGHTS.value:
    return fuse.model_fuser(
      convert.load_params(_WEIGHTS.value), swap_inputs=_SWAP_INPUTS.value, protocol=_PROTOCOL.value
    )
  entry = models.pretrained_entry(_PRETRAINED.value)
  _LOG.info(
    "pretrained model %s (%s, task %s: input_a %s, input_b %s)",
    entry.name,
    entry.model,
    entry.task,
    *entry.inputs,
  )
  return fuse.model_fuser(models.pretrained(entry.name), name=entry.name, protocol=_PROTOCOL.value)


def evaluate_with_params() -> evaluation.Report:
  """--mode=eval with --weights or --pretrained: the model and the classical baselines on the
  pairs of the folders --input_a and --input_b, reported into --output."""
  return evaluation.evaluate(
    [params_fuser(), *evaluation.baseline_fusers()],
    data.PairedFolderSource.from_folders(_INPUT_A.value, _INPUT_B.value),
    _OUTPUT.value,
    options=_options(),
    overwrite=_OVERWRITE.value,
  )


def run_config() -> None:
  """Train, eval and fuse (as --mode says) with --config in --workdir."""
  config = config_lib.resolve(_CONFIG.value)
  config.lock()
  workdir = pathlib.Path(_WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename))
  _LOG.info("workdir %s", workdir)
  if _MODE.value in ("train", "all"):
    training.train_and_evaluate(config, workdir)
  choice = dict(which=_CHECKPOINT.value, **_output_choice())
  if _MODE.value in ("eval", "all"):
    report = training.evaluate_run(config, workdir, **choice)
    print(f"\n{report.table}\nreport: {report.out_dir}")
  if _MODE.value in ("fuse", "all"):
    paths = training.fuse_run(
      config,
      workdir,
      input_a=_INPUT_A.value,
      input_b=_INPUT_B.value,
      output=_OUTPUT.value,
      protocol=_PROTOCOL.value,
      **choice,
    )
    _report_fused(paths)


def _report_fused(paths: list[pathlib.Path]) -> None:
  """One line: how many pairs, and the output file (one pair) or folder."""
  where = paths[0] if len(paths) == 1 else paths[0].parent if paths else "-"
  print(f"fused {len(paths)} pair(s): {where}")


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  # Orbax reports every stage of every save at INFO level through absl's logger.
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    sharding.initialize_distributed()
  except ValueError as error:
    _fail(str(error))
  if jax.process_count() > 1 and (_params_source() or _MODE.value != "train"):
    _fail(
      f"a job of {jax.process_count()} processes only trains (--mode=train); evaluate and "
      "fuse afterwards in one process"
    )
  if _COMPILATION_CACHE.value:
    if sharding.compilation_cache_usable():
      jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_COMPILATION_CACHE.value))
      # Model initialisation compiles many small programs; cache those too.
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    else:
      _LOG.info("compilation cache off: a job of several CPU processes compiles on every process")
  _LOG.info(
    "JAX %s, process %d of %d, devices: %s",
    jax.__version__,
    jax.process_index(),
    jax.process_count(),
    jax.devices(),
  )
  try:
    if _params_source() and _MODE.value == "eval":
      report = evaluate_with_params()
      print(f"\n{report.table}\nreport: {report.out_dir}")
    elif _params_source():
      _report_fused(
        fuse.fuse_paths(
          params_fuser(), _INPUT_A.value, _INPUT_B.value, _OUTPUT.value, **_output_choice()
        )
      )
    else:
      run_config()
  except _USER_ERRORS as error:
    can_skip = not (_params_source() and _MODE.value == "eval")
    choices = "--overwrite or --skip_existing" if can_skip else "--overwrite"
    _fail(f"{error} ({_program()} {choices})" if isinstance(error, FileExistsError) else str(error))


def run() -> None:
  """The command line's entry point (the `fusionjax` script, `python -m fusionjax`, run.py)."""
  # absl's --help prints the __doc__ of the __main__ module, which a console script lacks.
  sys.modules["__main__"].__doc__ = __doc__
  app.run(main, flags_parser=parse_flags)
