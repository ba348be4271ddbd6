"""Selective-scan benchmark: implementation x shape x (forward, forward+backward).

Prints a markdown table: median wall time, XLA memory (temporaries + outputs of the compiled
program, from `memory_analysis()`, deterministic), and on a GPU the achieved bandwidth against
the memory floor (each input read once, each output written once).

  python benchmarks/scan.py                       # CPU-sized grid, impls chunked vs reference
  python benchmarks/scan.py --grid fusion --impls pallas,associative,chunked   # on a GPU

Compare rows of one run only: machines are shared and noisy.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.kernels import selective_scan

# (batch, dim, N, L) — fusion shapes: L from 32x32 to 160x120.
GRIDS = {
  "cpu": [(2, 64, 16, 32 * 32), (2, 192, 16, 64 * 64), (2, 192, 16, 128 * 128)],
  "fusion": [
    (b, d, 16, length)
    for b, d in ((2, 64), (2, 192), (8, 384))
    for length in (32 * 32, 64 * 64, 128 * 128, 160 * 120)
  ],
}


def make_args(batch, dim, state_dim, length, groups, seed=0):
  """Random inputs in mamba's layout, grouped B/C (G = groups), with D, z and delta_bias."""
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return dict(
    u=f(batch, dim, length),
    delta=f(batch, dim, length) * 0.5,
    A=-jnp.exp(f(dim, state_dim)),
    B=f(batch, groups, state_dim, length),
    C=f(batch, groups, state_dim, length),
    D=f(dim),
    z=f(batch, dim, length),
    delta_bias=f(dim) * 0.1,
  )


def floor_bytes(args, with_backward):
  """Bytes a fused kernel must move: inputs read and outputs written once (x2 for gradients)."""
  inputs = sum(x.size * x.dtype.itemsize for x in args.values())
  output = args["u"].size * 4
  if not with_backward:
    return inputs + output
  return 2 * inputs + output + inputs  # forward reads, backward rereads + dy, writes grads


def build(impl, with_backward, names):
  def forward(*arrays):
    return selective_scan(**dict(zip(names, arrays)), delta_softplus=True, impl=impl)

  if not with_backward:
    return jax.jit(forward)
  loss = lambda *arrays: jnp.sum(forward(*arrays))
  return jax.jit(jax.grad(loss, argnums=tuple(range(len(names)))))


def measure(fn, arrays, repeats):
  compiled = fn.lower(*arrays).compile()
  memory = compiled.memory_analysis()
  mem_bytes = None if memory is None else memory.temp_size_in_bytes + memory.output_size_in_bytes
  jax.block_until_ready(compiled(*arrays))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*arrays))
    times.append(time.perf_counter() - start)
  return statistics.median(times), mem_bytes


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
  parser.add_argument("--impls", default="reference,chunked,auto")
  parser.add_argument("--groups", type=int, default=4, help="B/C groups (4 = SS2D directions)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--passes", default="fwd,fwd+bwd")
  args = parser.parse_args()
  on_gpu = jax.default_backend() == "gpu"
  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}")
  header = "| impl | batch | dim | N | L | pass | median ms | XLA temp+out MB |"
  header += " GB/s | x floor |" if on_gpu else ""
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for batch, dim, state_dim, length in GRIDS[args.grid]:
    inputs = make_args(batch, dim, state_dim, length, args.groups)
    names = list(inputs)
    arrays = [inputs[k] for k in names]
    for with_backward in [p == "fwd+bwd" for p in args.passes.split(",")]:
      for impl in args.impls.split(","):
        seconds, mem_bytes = measure(build(impl, with_backward, names), arrays, args.repeats)
        mem = "n/a" if mem_bytes is None else f"{mem_bytes / 2**20:.1f}"
        row = (
          f"| {impl} | {batch} | {dim} | {state_dim} | {length} | "
          f"{'fwd+bwd' if with_backward else 'fwd'} | {seconds * 1e3:.2f} | {mem} |"
        )
        if on_gpu:
          floor = floor_bytes(inputs, with_backward)
          floor_seconds = floor / 3.35e12  # H100 SXM HBM3 peak
          row += f" {floor / seconds / 1e9:.0f} | {seconds / floor_seconds:.1f} |"
        print(row, flush=True)


if __name__ == "__main__":
  main()
