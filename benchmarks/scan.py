"""Selective-scan benchmark: implementation x shape x (forward, forward+backward).

Prints a markdown table: median wall time, XLA memory (temporaries + outputs of the compiled
program, from `memory_analysis()`, deterministic), both as ratios to "reference" when it is
among the implementations (its time over this row's, this row's memory over its), and on a GPU
the achieved bandwidth against the memory floor (each input read once, each output written
once). Forward+backward is `jax.grad` of the sum of the output with respect to every input:
autodiff for "reference", the hand-written backward for "chunked" and "pallas". Inputs are
channels-last and go through `selective_scan_channels_last`, as in the models; `--layout mamba`
times `selective_scan` on (batch, dim, L) arrays instead, transposes included.

  python benchmarks/scan.py                       # CPU-sized grid, impls chunked vs reference
  python benchmarks/scan.py --grid train --passes fwd+bwd   # training shapes of the models
  python benchmarks/scan.py --grid fusion --impls pallas,associative,chunked   # on a GPU

The implementations of one shape and pass run interleaved, repeat by repeat, so that the ratios
see the same machine load; compare rows of one run only: machines are shared and noisy.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.kernels import selective_scan, selective_scan_channels_last

# (batch, dim, N, L, G), G = 0 for ungrouped (batch, N, L) B and C — fusion shapes: L from 32x32
# to 160x120, G = 4 (the SS2D directions). "train": a training step's scans on 64x64 crops and on
# 128x128 ones: MambaDFuse's (batch 4, d_inner 120, N 16, ungrouped) and S4Fusion's first level
# (d_inner 72 x 4 directions, N 12, G = 4). "infer": MambaDFuse on one 264x264 image.
GRIDS = {
  "cpu": [(2, 64, 16, 32 * 32, 4), (2, 192, 16, 64 * 64, 4), (2, 192, 16, 128 * 128, 4)],
  "fusion": [
    (b, d, 16, length, 4)
    for b, d in ((2, 64), (2, 192), (8, 384))
    for length in (32 * 32, 64 * 64, 128 * 128, 160 * 120)
  ],
  "train": [
    (4, dim, state_dim, length, groups)
    for dim, state_dim, groups in ((120, 16, 0), (288, 12, 4))
    for length in (64 * 64, 128 * 128)
  ],
  "infer": [(1, 120, 16, 264 * 264, 0)],
}


def make_args(batch, dim, state_dim, length, groups, layout, seed=0):
  """Random inputs in `layout` ("mamba": (batch, dim, L), or "channels_last"), B/C in G = groups
  groups (ungrouped for 0), with D, z and delta_bias."""
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  bc_shape = (batch, state_dim, length) if groups == 0 else (batch, groups, state_dim, length)
  args = dict(
    u=f(batch, dim, length),
    delta=f(batch, dim, length) * 0.5,
    A=-jnp.exp(f(dim, state_dim)),
    B=f(*bc_shape),
    C=f(*bc_shape),
    D=f(dim),
    z=f(batch, dim, length),
    delta_bias=f(dim) * 0.1,
  )
  if layout == "channels_last":
    args.update({k: jnp.swapaxes(args[k], 1, 2) for k in ("u", "delta", "z")})
    args.update({k: jnp.moveaxis(args[k], -1, 1) for k in ("B", "C")})
  return args


def floor_bytes(args, with_backward):
  """Bytes a fused kernel must move: inputs read and outputs written once (x2 for gradients)."""
  inputs = sum(x.size * x.dtype.itemsize for x in args.values())
  output = args["u"].size * 4
  if not with_backward:
    return inputs + output
  return 2 * inputs + output + inputs  # forward reads, backward rereads + dy, writes grads


def build(impl, with_backward, names, layout):
  scan = selective_scan if layout == "mamba" else selective_scan_channels_last

  def forward(*arrays):
    return scan(**dict(zip(names, arrays)), delta_softplus=True, impl=impl)

  if not with_backward:
    return jax.jit(forward)
  loss = lambda *arrays: jnp.sum(forward(*arrays))
  return jax.jit(jax.grad(loss, argnums=tuple(range(len(names)))))


def measure(fns, arrays, repeats):
  """{name: jitted fn} -> {name: (median seconds, XLA bytes or None)}, repeats interleaved."""
  compiled = {name: fn.lower(*arrays).compile() for name, fn in fns.items()}
  times = {name: [] for name in fns}
  for program in compiled.values():
    jax.block_until_ready(program(*arrays))  # warm-up
  for _ in range(repeats):
    for name, program in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(program(*arrays))
      times[name].append(time.perf_counter() - start)
  results = {}
  for name, program in compiled.items():
    memory = program.memory_analysis()
    mem_bytes = None if memory is None else memory.temp_size_in_bytes + memory.output_size_in_bytes
    results[name] = (statistics.median(times[name]), mem_bytes)
  return results


def ratio(numerator, denominator):
  return "" if numerator is None or denominator is None else f"{numerator / denominator:.2f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
  parser.add_argument("--impls", default="reference,chunked,auto")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
    "--layout",
    choices=("channels_last", "mamba"),
    default="channels_last",
    help="selective_scan_channels_last (what the models call) or selective_scan",
  )
  parser.add_argument("--passes", default="fwd,fwd+bwd")
  args = parser.parse_args()
  on_gpu = jax.default_backend() == "gpu"
  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}")
  header = (
    "| impl | batch | dim | N | L | G | pass | median ms | XLA temp+out MB "
    "| reference time / this | this memory / reference |"
  )
  header += " GB/s | x floor |" if on_gpu else ""
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  impls = args.impls.split(",")
  for batch, dim, state_dim, length, groups in GRIDS[args.grid]:
    inputs = make_args(batch, dim, state_dim, length, groups, args.layout)
    names = list(inputs)
    arrays = [inputs[k] for k in names]
    for with_backward in [p == "fwd+bwd" for p in args.passes.split(",")]:
      fns = {impl: build(impl, with_backward, names, args.layout) for impl in impls}
      results = measure(fns, arrays, args.repeats)
      ref_seconds, ref_bytes = results.get("reference", (None, None))
      for impl, (seconds, mem_bytes) in results.items():
        mem = "n/a" if mem_bytes is None else f"{mem_bytes / 2**20:.1f}"
        row = (
          f"| {impl} | {batch} | {dim} | {state_dim} | {length} | {groups or '-'} | "
          f"{'fwd+bwd' if with_backward else 'fwd'} | {seconds * 1e3:.2f} | {mem} | "
          f"{ratio(ref_seconds, seconds)} | {ratio(mem_bytes, ref_bytes)} |"
        )
        if on_gpu:
          floor = floor_bytes(inputs, with_backward)
          floor_seconds = floor / 3.35e12  # H100 SXM HBM3 peak
          row += f" {floor / seconds / 1e9:.0f} | {seconds / floor_seconds:.1f} |"
        print(row, flush=True)


if __name__ == "__main__":
  main()
