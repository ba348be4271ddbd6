"""Whole-process memory of a real fuse: peak RSS, per model and image size.

`benchmarks/memory.py` reports what XLA plans for one forward; this runs the fuse that a user
runs (`fusionjax.fuse`, its memory plan and colour-free grey path) on one random grey pair per
size, each in a fresh process, and prints the plan (whole image or tiles), the seconds it took
(compile included) and the process's peak resident memory: parameters, inputs, the runtime and
the temporaries together.

  python benchmarks/fuse_rss.py                                    # paper MambaDFuse, 1080x1920
  python benchmarks/fuse_rss.py --models mambadfuse,s4fusion --sizes 264x264,1080x1920
  python benchmarks/fuse_rss.py --tiny --sizes 64x80 --budget-gib 1

--budget-gib is `fuse.Options.memory_budget`: a whole image whose compiled call needs more is
fused in tiles. Compare rows of one run only: machines are shared and noisy.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from memory import parse_sizes  # benchmarks/memory.py, beside this script

from fusionjax import fuse, models
from fusionjax.fuse import batching, planes
from fusionjax.models import registry


def measure(name, height, width, budget_bytes):
  """Fuses one random grey pair with `name` (seed-0 weights); the row's numbers as a dict."""
  rng = np.random.default_rng(0)
  image_a, image_b = (rng.integers(0, 256, (height, width, 1), np.uint8) for _ in range(2))
  fuser = fuse.model_fuser(models.init(0, name))
  options = fuse.Options(memory_budget=budget_bytes)
  start = time.perf_counter()
  pair = planes.pair_planes(fuser, "random", image_a, image_b, "a", "b")
  shape = batching.bucket_shape(fuser, height, width, options)
  runner = batching.BucketRunner(fuser, shape, 1, options, progress=False)
  (fused,) = runner([pair])
  seconds = time.perf_counter() - start
  if not np.isfinite(fused).all():
    raise SystemExit(f"{name} at {height}x{width}: the fused plane is not finite")
  return {
    "plan": "whole" if runner.plan.tile is None else f"tiles of {runner.plan.tile}",
    "seconds": seconds,
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="mambadfuse", help="comma list of model names")
  parser.add_argument("--tiny", action="store_true", help="each family's tiny variant")
  parser.add_argument("--sizes", default="1080x1920", help="comma list of HxW")
  parser.add_argument("--budget-gib", type=float, default=8.0, help="fuse memory budget (GiB)")
  parser.add_argument("--one", help=argparse.SUPPRESS)  # "name HxW": one row, in this process
  args = parser.parse_args()
  budget = int(args.budget_gib * 2**30)
  if args.one:
    name, size = args.one.split()
    print(json.dumps(measure(name, *parse_sizes(size)[0], budget)))
    return

  sizes = parse_sizes(args.sizes)
  names = args.models.split(",")
  if args.tiny:
    names = [registry.get(name).tiny_variant for name in names]
  print(f"memory budget {args.budget_gib:g} GiB; each row a fresh process")
  header = "| model | size | plan | seconds | peak RSS GiB | RSS bytes/pixel |"
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for name in names:
    for height, width in sizes:
      command = [sys.executable, __file__, f"--budget-gib={args.budget_gib}"]
      done = subprocess.run(
        command + ["--one", f"{name} {height}x{width}"], capture_output=True, text=True
      )
      if done.returncode:
        print(f"| {name} | {height}x{width} | failed: {done.stderr.strip().splitlines()[-1]} |")
        continue
      row = json.loads(done.stdout.strip().splitlines()[-1])
      print(
        f"| {name} | {height}x{width} | {row['plan']} | {row['seconds']:.1f} | "
        f"{row['peak_rss'] / 2**30:.2f} | {row['peak_rss'] / (height * width):,.0f} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
