"""Training-step benchmark: images/s of the jitted train step, per model and per device count.

Each config's model, loss and optimizer come from the training library (fusionjax.training), as
`run.py` builds them. One batch of the pairs embedded in the package is read once and split over
a mesh of the first `n` devices; the step is compiled, run once, then timed over --steps steps
(the state donated, as in training; the input pipeline is not timed). Prints a markdown table:
time to create the training state (model, optimizer and EMA initialised, as a run's first
seconds), compile time of the step (tracing, lowering and XLA; wall, and the CPU seconds of all
the process's threads: their ratio is how many cores XLA's code generation kept busy), median
step time and images/s (global batch / step time). FusionMamba's tiny configs compile the
step for compile time (`train.fast_compile`, as their runs do); --fast-compile on/off sets it
for every config, to compare.

  python benchmarks/train.py                     # the 3 families' tiny configs (batch 8, crop 32)
  python benchmarks/train.py --steps 3 --crop-size 64 --batch-size 16
  python benchmarks/train.py --full --configs fusionmamba_med.py    # paper model, batch and crop
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/train.py --devices 1,2,4
  python benchmarks/train.py --xla-option xla_backend_optimization_level=1
  python benchmarks/train.py --fast-compile off  # the tiny steps compiled for run time

--devices defaults to 1 and all visible devices. On CPU, XLA_FLAGS as above splits the host into
N simulated devices that share its cores: the rows then show the sharded step's overheads (the
gradient all-reduce, smaller per-device batches) and how well it fills the cores, not multi-chip
scaling. The global batch must be a multiple of every device count. With --full the paper's
data are not needed: the embedded pairs (all at least 256x256) are cropped to the paper's size.

--xla-option NAME=VALUE (repeatable) compiles the step with that XLA debug option (JAX's
`compiler_options`, over those of --fast-compile), to measure what an option does to compile and
step time; values `true` and `false` are booleans, integers are integers. Which options exist
depends on the jaxlib.

Compare rows of one run only: machines are shared and noisy.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from fusionjax import config_lib
from fusionjax.training import input as input_lib
from fusionjax.training import sharding, steps
from fusionjax.training import state as state_lib

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIGS = "mambadfuse_med.py,fusionmamba_med.py,s4fusion_vif.py"


def load_config(spec, full, batch_size, crop_size, fast_compile):
  """The config of "file.py[:arg]" (under configs/ unless a path): its tiny variant, or with
  `full` the paper's, reading the embedded pairs that the tiny variant reads; `fast_compile`
  None keeps the config's `train.fast_compile`."""
  path, _, arg = spec.partition(":")
  path = path if Path(path).is_file() else str(CONFIGS / path)
  tiny = config_lib.load(f"{path}:{','.join(filter(None, (arg, 'tiny')))}")
  config = config_lib.load(f"{path}:{arg}") if full else tiny
  config.data.update(
    dataset=tiny.data.dataset,
    data_dir="",
    manual_dir="",
    train_split=tiny.data.train_split,
    skip_smaller_than_crop=False,
    num_threads=1,
  )
  if batch_size:
    config.data.batch_size = batch_size
  if crop_size:
    config.data.crop_size = crop_size
  if fast_compile is not None:
    config.train.fast_compile = fast_compile
  return config


def parse_xla_option(text):
  """(name, value) of "NAME=VALUE", the value a bool, an int or a string: an argparse type."""
  name, sep, value = text.partition("=")
  if not (name and sep and value):
    raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
  if value.lower() in ("true", "false"):
    return name, value.lower() == "true"
  return name, int(value) if value.lstrip("-").isdigit() else value


def time_steps(config, graphs, initial_state, batch, num_devices, num_steps, xla_options):
  """(compile s, compile CPU s, median step s) of the train step on the first `num_devices`
  devices, compiled with the XLA options `xla_options` ({name: value}).

  batch: {"img_a", "img_b": (global batch, crop, crop, 1) float32 numpy arrays}.
  """
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  a, b = (sharding.global_batch(batch[key], mesh) for key in ("img_a", "img_b"))
  # A copy: the step donates its state.
  state = jax.device_put(jax.tree.map(jnp.copy, initial_state), sharding.replicated(mesh))
  start, start_cpu = time.perf_counter(), time.process_time()
  lowered = steps.jit_train_step(config, graphs, mesh).lower(state, a, b)
  try:
    train_step = lowered.compile(compiler_options=xla_options or None)
  except jax.errors.JaxRuntimeError as error:  # e.g. "No such compile option"
    raise SystemExit(f"--xla-option {xla_options}: {error}") from None
  compile_seconds = time.perf_counter() - start
  compile_cpu_seconds = time.process_time() - start_cpu
  state = jax.block_until_ready(train_step(state, a, b))[0]  # warm-up
  step_seconds = []
  for _ in range(num_steps):
    start = time.perf_counter()
    state = jax.block_until_ready(train_step(state, a, b))[0]
    step_seconds.append(time.perf_counter() - start)
  return compile_seconds, compile_cpu_seconds, statistics.median(step_seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--configs",
    default=DEFAULT_CONFIGS,
    help="comma list of config files (under configs/), each file.py[:arg]",
  )
  parser.add_argument(
    "--full", action="store_true", help="the paper-size configs instead of their :tiny variants"
  )
  parser.add_argument("--devices", help="comma list of device counts (default: 1 and all)")
  parser.add_argument("--batch-size", type=int, help="global batch (default: the config's)")
  parser.add_argument("--crop-size", type=int, help="square crop (default: the config's)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
  parser.add_argument(
    "--xla-option",
    type=parse_xla_option,
    action="append",
    default=[],
    metavar="NAME=VALUE",
    help="an XLA compiler option for the step's compile (repeatable)",
  )
  parser.add_argument(
    "--fast-compile",
    choices=("config", "on", "off"),
    default="config",
    help="compile the step for compile time (train.fast_compile): as each config says, or on "
    "or off for all",
  )
  args = parser.parse_args()
  fast_compile = {"config": None, "on": True, "off": False}[args.fast_compile]
  visible = len(jax.devices())
  device_counts = (
    [int(n) for n in args.devices.split(",")] if args.devices else sorted({1, visible})
  )
  if max(device_counts) > visible:
    raise SystemExit(
      f"--devices {args.devices}: only {visible} visible devices (on CPU, set "
      "XLA_FLAGS=--xla_force_host_platform_device_count=N)"
    )

  configs = {
    spec: load_config(spec, args.full, args.batch_size, args.crop_size, fast_compile)
    for spec in args.configs.split(",")
  }
  for spec, config in configs.items():
    uneven = [n for n in device_counts if config.data.batch_size % n]
    if uneven:
      raise SystemExit(
        f"{spec}: global batch {config.data.batch_size} does not split over "
        f"{uneven} devices; set --batch-size to a multiple of each count"
      )

  print(
    f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}, {visible} devices), "
    f"jax {jax.__version__}, {args.steps} timed steps"
    + (f", XLA options {dict(args.xla_option)}" if args.xla_option else "")
  )
  header = (
    "| model | devices | batch | crop | fast compile | state s | compile s | compile CPU s "
    "| step ms (median) | images/s |"
  )
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for spec, config in configs.items():
    print(f"{spec}: building {config.model.name}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    graphs, initial_state = state_lib.create(config)
    jax.block_until_ready(initial_state)
    state_seconds = time.perf_counter() - start
    batch = next(input_lib.train_batches(config))
    for num_devices in device_counts:
      print(f"{spec}: compiling and timing on {num_devices} device(s)", file=sys.stderr, flush=True)
      compile_seconds, compile_cpu_seconds, step_seconds = time_steps(
        config, graphs, initial_state, batch, num_devices, args.steps, dict(args.xla_option)
      )
      global_batch = config.data.batch_size
      print(
        f"| {config.model.name} | {num_devices} | {global_batch} | {config.data.crop_size} | "
        f"{'yes' if config.train.fast_compile else 'no'} | {state_seconds:.1f} | "
        f"{compile_seconds:.1f} | {compile_cpu_seconds:.1f} | "
        f"{step_seconds * 1e3:.1f} | "
        f"{global_batch / step_seconds:.2f} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
