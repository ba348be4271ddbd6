"""Model benchmark: parameter count and forward time of one image pair, per registered model.

For each model of `fusionjax.models.names()` (`models.init(0, name)`, evaluation mode): its
nnx.Param count (from `jax.eval_shape`, no arrays allocated), then
`jax.jit(fusionjax.models.apply)` on one random grey pair, a and b each (1, H, W, 1) in
[0, 1] (the models pad internally to the sizes they need): compile time, median wall time of
--repeats forward passes (no separate warm-up: the
first pass's one-time costs, 0.1-0.2 s on CPU, fall out of the median from 3 repeats on), and the
compiled program's temporary memory from XLA's `memory_analysis()` (n/a where the backend gives
none). Prints a markdown table; progress goes to stderr.

  python benchmarks/models.py                             # paper-size models, 480x640 pairs
  python benchmarks/models.py --tiny --height 64 --width 80
  python benchmarks/models.py --models fusionmamba_ct_mri --repeats 5

On 2 CPU cores a paper-size forward pass at 480x640 takes tens of seconds to minutes per model
(FusionMamba has about 165M parameters; MambaDFuse scans at full resolution), hence the small
default --repeats; use --height/--width for a quicker look.

Compare rows of one run only: machines are shared and noisy.
"""

import argparse
import math
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax import models
from fusionjax.models import registry


def parameter_count(name):
  """The number of scalars in the model's nnx.Param variables, from shapes only."""
  shapes = jax.eval_shape(lambda: models.init(0, name))
  params = nnx.state(shapes.module(), nnx.Param)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def time_forward(name, height, width, repeats):
  """(compile s, median forward s, XLA temp bytes or None) of one (1, height, width, 1) pair."""
  params = models.init(0, name)
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.uniform(size=(1, height, width, 1)), jnp.float32) for _ in range(2))
  start = time.perf_counter()
  forward = jax.jit(models.apply).lower(params, a, b).compile()
  compile_seconds = time.perf_counter() - start
  memory = forward.memory_analysis()
  print(f"{name}: compiled in {compile_seconds:.1f} s", file=sys.stderr, flush=True)
  seconds = []
  for run in range(1, repeats + 1):
    start = time.perf_counter()
    jax.block_until_ready(forward(params, a, b))
    seconds.append(time.perf_counter() - start)
    print(
      f"{name}: forward {run}/{repeats} {seconds[-1] * 1e3:.1f} ms", file=sys.stderr, flush=True
    )
  return (
    compile_seconds,
    statistics.median(seconds),
    (None if memory is None else memory.temp_size_in_bytes),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--models",
    default=",".join(registry.families()),
    help=f"comma list of registered names, of {models.names()}",
  )
  parser.add_argument("--tiny", action="store_true", help="each family's tiny variant")
  parser.add_argument("--height", type=int, default=480)
  parser.add_argument("--width", type=int, default=640)
  parser.add_argument("--repeats", type=int, default=3, help="timed forward passes (median)")
  args = parser.parse_args()
  names = args.models.split(",")
  unknown = sorted(set(names) - set(models.names()))
  if unknown:
    raise SystemExit(f"unknown models {unknown}; registered: {models.names()}")
  if args.tiny:
    names = [registry.get(name).tiny_variant for name in names]

  print(
    f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__},"
    f" one {args.height}x{args.width} grey pair, median of {args.repeats} runs"
  )
  header = "| model | params | compile s | forward ms (median) | XLA temp MB |"
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for name in names:
    print(f"{name}: counting parameters, initialising, compiling", file=sys.stderr, flush=True)
    count = parameter_count(name)
    compile_seconds, forward_seconds, temp_bytes = time_forward(
      name, args.height, args.width, args.repeats
    )
    temp = "n/a" if temp_bytes is None else f"{temp_bytes / 2**20:.1f}"
    print(
      f"| {name} | {count:,} | {compile_seconds:.1f} | {forward_seconds * 1e3:.1f} | {temp} |",
      flush=True,
    )


if __name__ == "__main__":
  main()
