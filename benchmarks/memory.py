"""Memory benchmark: XLA temporaries of one forward pass, per model and image size.

For each model (`models.init`, evaluation mode) and each H x W, compiles
`jax.jit(fusionjax.models.apply)` for one grey pair of that size and prints what XLA's
`memory_analysis()` of the compiled program reports: the temporaries (every intermediate array
XLA allocates beyond the parameters, the inputs and the output; the part that grows with the
image), and that figure per input pixel. Nothing is run: parameters and images are abstract
(`jax.eval_shape`, `jax.ShapeDtypeStruct`), so a size too large for this machine's memory
still compiles, in seconds to a minute. Models with an `input_fit` field run with
input_fit="pad" (FusionMamba resizes to its grid by default, so its memory would not grow with
the image). The numbers are deterministic for one jax version and backend.

  python benchmarks/memory.py                                  # paper-size models, four sizes
  python benchmarks/memory.py --models mambadfuse --sizes 264x264,480x640,1080x1920
  python benchmarks/memory.py --tiny --sizes 64x80

Bytes per pixel that stay flat across sizes mean memory linear in pixels; a forward pass needs
about temporaries + parameters + inputs + output, plus the runtime's own overhead.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from fusionjax import models
from fusionjax.models import registry

DEFAULT_SIZES = "80x96,264x264,480x640,1080x1920"


def abstract_params(name):
  """`models.init(0, config)` as shapes only, input_fit="pad" where the Config has that field."""
  config_cls, _ = registry.lookup(name)
  overrides = {"input_fit": "pad"} if "input_fit" in registry.field_types(config_cls) else {}
  config = registry.make_config(name, **overrides)
  return jax.eval_shape(lambda: models.init(0, config))


def temp_bytes(params, height, width):
  """(XLA temporary bytes, compile seconds) of `models.apply` on one (1, H, W, 1) pair."""
  image = jax.ShapeDtypeStruct((1, height, width, 1), jnp.float32)
  start = time.perf_counter()
  compiled = jax.jit(models.apply).lower(params, image, image).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  return (None if memory is None else memory.temp_size_in_bytes), seconds


def parse_sizes(text):
  sizes = []
  for size in text.split(","):
    height, _, width = size.partition("x")
    if not (height.isdigit() and width.isdigit()):
      raise SystemExit(f"--sizes takes HxW,HxW,...; got {size!r}")
    sizes.append((int(height), int(width)))
  return sizes


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--models",
    default=",".join(registry.families()),
    help=f"comma list of registered names, of {models.names()}",
  )
  parser.add_argument("--tiny", action="store_true", help="each family's tiny variant")
  parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma list of HxW")
  args = parser.parse_args()
  names = args.models.split(",")
  unknown = sorted(set(names) - set(models.names()))
  if unknown:
    raise SystemExit(f"unknown models {unknown}; registered: {models.names()}")
  if args.tiny:
    names = [registry.get(name).tiny_variant for name in names]
  sizes = parse_sizes(args.sizes)

  print(
    f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__},"
    " one grey pair, forward pass"
  )
  header = "| model | H x W | XLA temp MB | temp bytes / pixel | compile s |"
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for name in names:
    params = abstract_params(name)
    for height, width in sizes:
      print(f"{name}: compiling for {height}x{width}", file=sys.stderr, flush=True)
      temp, seconds = temp_bytes(params, height, width)
      megabytes = "n/a" if temp is None else f"{temp / 2**20:,.1f}"
      per_pixel = "n/a" if temp is None else f"{temp / (height * width):,.0f}"
      print(
        f"| {name} | {height}x{width} | {megabytes} | {per_pixel} | {seconds:.1f} |", flush=True
      )


if __name__ == "__main__":
  main()
