"""Depthwise-convolution benchmark: `nnx.Conv(feature_group_count=C)` vs `DepthwiseConv`.

For the depthwise convolutions of the models at their widths (MambaDFuse's causal conv1d,
kernel 4, on the tokens of an 80x96 and a 264x264 image; its M3 block's 3x3 conv; the 3x3 conv
before the scans of S4Fusion's and FusionMamba's first level, on 64x64 and 128x128 maps): the
median wall time of the jitted forward pass, and of forward + backward (gradients of a random
projection of the output with respect to input, kernel and bias), of the grouped nnx.Conv the
models used to have and of `fusionjax.layers.depthwise.DepthwiseConv`, both with the same
parameters, timed interleaved in one run; the ratio nnx.Conv / DepthwiseConv; and the largest
difference between their outputs. Prints a markdown table; progress goes to stderr.

  python benchmarks/depthwise.py
  python benchmarks/depthwise.py --repeats 20

Compare rows of one run only: machines are shared and noisy.
"""

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax.layers.depthwise import DepthwiseConv
from fusionjax.layers.torch_init import torch_uniform_init

# (what, input shape channels last, kernel size, padding).
CASES = [
  ("MambaDFuse conv1d, 80x96 tokens", (1, 80 * 96, 120), (4,), ((3, 0),)),
  ("MambaDFuse conv1d, 264x264 tokens", (1, 264 * 264, 120), (4,), ((3, 0),)),
  ("MambaDFuse M3 dwconv, 80x96", (1, 80, 96, 60), (3, 3), ((1, 1), (1, 1))),
  ("S4Fusion level 1, 64x64", (1, 64, 64, 72), (3, 3), ((1, 1), (1, 1))),
  ("S4Fusion level 1, 128x128", (1, 128, 128, 72), (3, 3), ((1, 1), (1, 1))),
  ("FusionMamba level 1, 64x64", (1, 64, 64, 192), (3, 3), ((1, 1), (1, 1))),
  ("FusionMamba level 1, 128x128", (1, 128, 128, 192), (3, 3), ((1, 1), (1, 1))),
]


def build(shape, kernel_size, padding):
  """{method: (forward, forward + backward)} jitted on (state, x[, cotangent]), and the states."""
  channels = shape[-1]
  init = torch_uniform_init(int(np.prod(kernel_size)))
  kwargs = dict(padding=padding, kernel_init=init, bias_init=init)
  modules = {  # the same parameters: the same draws from Rngs(0)
    "nnx.Conv": nnx.Conv(
      channels, channels, kernel_size, feature_group_count=channels, rngs=nnx.Rngs(0), **kwargs
    ),
    "DepthwiseConv": DepthwiseConv(channels, kernel_size, rngs=nnx.Rngs(0), **kwargs),
  }
  functions, states = {}, {}
  for method, module in modules.items():
    graphdef, states[method] = nnx.split(module)

    def forward(state, x, graphdef=graphdef):
      return nnx.merge(graphdef, state)(x)

    def loss(state, x, cotangent, forward=forward):
      return jnp.sum(forward(state, x) * cotangent)

    functions[method] = (jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1))))
  return functions, states


def seconds(function, *args):
  start = time.perf_counter()
  jax.block_until_ready(function(*args))
  return time.perf_counter() - start


def run_case(shape, kernel_size, padding, repeats):
  """{method: (forward s, forward+backward s)} medians, and max |difference| of the outputs."""
  functions, states = build(shape, kernel_size, padding)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
  outputs = {}
  for method, (forward, gradient) in functions.items():  # compile and warm up
    outputs[method] = jax.block_until_ready(forward(states[method], x))
    jax.block_until_ready(gradient(states[method], x, cotangent))
  times = {method: ([], []) for method in functions}
  for _ in range(repeats):
    for method, (forward, gradient) in functions.items():
      times[method][0].append(seconds(forward, states[method], x))
      times[method][1].append(seconds(gradient, states[method], x, cotangent))
  difference = float(jnp.max(jnp.abs(outputs["nnx.Conv"] - outputs["DepthwiseConv"])))
  medians = {m: tuple(statistics.median(t) for t in pair) for m, pair in times.items()}
  return medians, difference


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per method (median)")
  args = parser.parse_args()
  print(
    f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__},"
    f" float32, median of {args.repeats} interleaved calls; ratio = nnx.Conv / DepthwiseConv"
  )
  header = (
    "| conv | input | nnx.Conv fwd ms | DepthwiseConv fwd ms | fwd ratio | nnx.Conv fwd+bwd ms"
    " | DepthwiseConv fwd+bwd ms | fwd+bwd ratio | max abs diff |"
  )
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for what, shape, kernel_size, padding in CASES:
    print(f"{what}: compiling and timing", file=sys.stderr, flush=True)
    medians, difference = run_case(shape, kernel_size, padding, args.repeats)
    (conv_fwd, conv_both), (ours_fwd, ours_both) = medians["nnx.Conv"], medians["DepthwiseConv"]
    print(
      f"| {what} | {shape} | {conv_fwd * 1e3:.2f} | {ours_fwd * 1e3:.2f} |"
      f" {conv_fwd / ours_fwd:.1f}x | {conv_both * 1e3:.2f} | {ours_both * 1e3:.2f} |"
      f" {conv_both / ours_both:.1f}x | {difference:.1e} |",
      flush=True,
    )


if __name__ == "__main__":
  main()
