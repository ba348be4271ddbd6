"""Mamba mixers and blocks of MambaDFuse, as Flax NNX modules, on `fusionjax.shapes.Tokens`.

Two mixers, both from the patched `mamba_ssm.modules.mamba_simple.Mamba` that MambaDFuse ships:
- `Mamba`: the plain unidirectional mixer (`bimamba_type=None`), 29,160 parameters at width 60.
- `MultiModalMamba`: the "m3" mixer, three gated scan branches (fusion stream, I2, I1) summed
  before one output projection, 71,160 parameters at width 60.
Both are built from `SelectiveScanBranch`, the "Mamba inner without output projection" (causal
depthwise conv1d -> SiLU -> x_proj -> selective scan gated by z), which calls
`fusionjax.kernels.selective_scan_channels_last`. A mixer runs long sequences `TOKEN_CHUNK`
tokens at a time (`over_token_chunks`), carrying its conv history and scan state from chunk to
chunk; the LayerNorms before it run inside the same loop. The m3 mixer's branches run one at a
time as one batched computation (`vmap_modules`), as do the two encoders of a token-swap stage;
the stacks of blocks run as a loop (`scan_modules`). So beyond the token streams themselves,
memory holds one chunk of one block.

The blocks around them follow MambaDFuse's add -> LayerNorm -> mixer residual convention, where a
block maps (x, residual) to (mixer(LN(x + residual)), x + residual):
- `SingleMambaBlock` (LN + Mamba), `TokenSwapMamba` (two LNs, channel exchange, two Mambas) and
  `M3Block` (three LNs, the m3 mixer, a depthwise 3x3 conv residual).

Parameter layout: every module and attribute is named after its PyTorch counterpart, so a
state_dict entry maps 1:1 onto a parameter (`fusionjax.convert.mapping.mamba_entries`); Linear
kernels are (in, out), conv kernels (*kernel, in/groups, out). The three scan branches of the m3
mixer live in `ssm`, `ssm_b`, `ssm_c` (PyTorch: `conv1d`, `conv1d_b`, `conv1d_c`, ...).

Initialisation reproduces the official code: every Linear/Conv keeps PyTorch's default
U(+-1/sqrt(fan_in)) for weight and bias (MambaDFuse's own `_init_weights` runs before these modules
exist), the main branch's dt_proj gets Mamba's dt initialisation, A_log is S4D-real, D is one.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.kernels import selective_scan_channels_last
from fusionjax.layers.torch_init import (
  TokenLinear,
  dt_rank_for,
  layer_norm,
  mamba_dt_bias_init,
  mamba_dt_kernel_init,
  over_tokens,
  s4d_real_a_log,
  torch_depthwise_conv,
  torch_linear,
)

# ----------------------------------------------------------------------------------------------
# Mixers.


class SelectiveScanBranch(nnx.Module):
  """One gated selective-scan branch: `mamba_inner_fn_no_out_proj` of the Vim fork.

  x -> causal depthwise conv1d (left padding d_conv - 1, bias) -> SiLU -> x_proj -> (dt, B, C);
  delta = dt @ dt_proj.kernel (no bias); y = selective_scan(x, delta, A, B, C, D, z,
  delta_bias=dt_proj.bias, softplus). A is passed in because the m3 mixer shares one A between two
  branches.

  Parameters: conv1d.kernel (d_conv, 1, d_inner), conv1d.bias (d_inner,), x_proj.kernel
  (d_inner, dt_rank + 2 * d_state), dt_proj.kernel (dt_rank, d_inner), dt_proj.bias (d_inner,),
  D (d_inner,).

  A call takes consecutive tokens and a carry, what the tokens before them left: the last
  d_conv - 1 conv inputs and the scan state (`initial_carry`: zeros, the start of a sequence,
  which makes the conv's history its zero padding). A sequence cut into chunks and run chunk by
  chunk, carry passed on, gives what one call on the whole sequence gives.

  `scan_impl` (static, not a parameter) is the kernel's `impl`, "auto" here; models set it on
  every branch with `set_attributes(scan_impl=..., raise_if_not_found=False)`.
  """

  def __init__(
    self,
    d_inner: int,
    *,
    d_state: int,
    dt_rank: int,
    d_conv: int,
    mamba_dt_init: bool,
    rngs: nnx.Rngs,
  ):
    """`mamba_dt_init`: Mamba's dt_proj init (main branches) instead of torch's Linear default."""
    self.d_state = d_state
    self.dt_rank = dt_rank
    self.scan_impl = "auto"
    self.conv1d = torch_depthwise_conv(d_inner, (d_conv,), padding=((0, 0),), rngs=rngs)
    self.x_proj = torch_linear(d_inner, dt_rank + 2 * d_state, use_bias=False, rngs=rngs)
    if mamba_dt_init:
      self.dt_proj = TokenLinear(
        dt_rank,
        d_inner,
        kernel_init=mamba_dt_kernel_init(dt_rank),
        bias_init=mamba_dt_bias_init,
        rngs=rngs,
      )
    else:
      self.dt_proj = torch_linear(dt_rank, d_inner, use_bias=True, rngs=rngs)
    self.D = nnx.Param(jnp.ones((d_inner,), jnp.float32))

  def initial_carry(self, batch: int) -> tuple[jax.Array, jax.Array]:
    """(conv history (batch, d_conv - 1, d_inner), scan state (batch, d_inner, d_state)), zeros."""
    d_conv, _, d_inner = self.conv1d.kernel.shape
    return (
      jnp.zeros((batch, d_conv - 1, d_inner), jnp.float32),
      jnp.zeros((batch, d_inner, self.d_state), jnp.float32),
    )

  def __call__(self, x: jax.Array, z: jax.Array, A: jax.Array, carry):
    """x, z: (batch, T, d_inner), T consecutive tokens; A: (d_inner, d_state) negative; carry:
    see the class. Returns (y (batch, T, d_inner), the carry after these tokens)."""
    history, state = carry
    window = jnp.concatenate([history, x], axis=1)
    x = jax.nn.silu(self.conv1d(window))
    dt, B, C = jnp.split(self.x_proj(x), [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
    delta = over_tokens(lambda tokens: tokens @ self.dt_proj.kernel[...], dt)
    y, state = selective_scan_channels_last(
      x,
      delta,
      A,
      B,
      C,
      D=self.D[...],
      z=z,
      delta_bias=self.dt_proj.bias[...],
      delta_softplus=True,
      return_last_state=True,
      initial_state=state,
      impl=self.scan_impl,
    )
    return y, (window[:, window.shape[1] - history.shape[1] :], state)


# Tokens a mixer takes at a time on long sequences: its temporaries, about ten (batch, T,
# 2 * width) arrays, stay this size however large the image, and stay in the CPU's caches
# (MambaDFuse's forward at 264x264 on one core: 1.8x faster than whole sequences with 512-2048).
TOKEN_CHUNK = 1024


def over_token_chunks(step, carry, inputs, chunk: int):
  """Runs step(carry, *input_chunks) -> (carry, outputs) over consecutive chunks of tokens.

  inputs: (batch, L, C_i) arrays; outputs: a pytree of (batch, T, C) arrays for a chunk of T
  tokens. Returns the outputs for all L tokens. Fewer than 2 * `chunk` tokens run as one call.
  Longer inputs run as a loop over L // chunk chunks of equal size (at most 2 * `chunk`), each
  read from the inputs in place and written into the outputs in place, then one call on the
  remaining (fewer than L // chunk) tokens: a mixer's temporaries are one chunk's, and nothing of
  the inputs' size is copied.
  """
  batch, length = inputs[0].shape[:2]
  count = length // chunk
  if count < 2:
    return step(carry, *inputs)[1]
  size = length // count
  chunk_of = lambda start, n: [jax.lax.dynamic_slice_in_dim(x, start, n, axis=1) for x in inputs]
  write = lambda start: (
    lambda whole, part: jax.lax.dynamic_update_slice_in_dim(whole, part, start, axis=1)
  )
  shapes = jax.eval_shape(lambda *xs: step(carry, *xs)[1], *chunk_of(0, size))
  outputs = jax.tree.map(lambda s: jnp.zeros((batch, length, s.shape[-1]), s.dtype), shapes)

  def body(i, state):
    carry, outputs = state
    carry, out = step(carry, *chunk_of(i * size, size))
    return carry, jax.tree.map(write(i * size), outputs, out)

  carry, outputs = jax.lax.fori_loop(0, count, body, (carry, outputs))
  if rest := length - count * size:
    out = step(carry, *chunk_of(count * size, rest))[1]
    outputs = jax.tree.map(write(count * size), outputs, out)
  return outputs


def project_halves(in_proj: nnx.Linear, h: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(x, z): the two halves of a bias-free in_proj(h), as two matmuls on the kernel's halves.

  One matmul would put x and z in one buffer, which lives until the gate reads z; two let x's
  buffer go as soon as the conv has read it. (Results can differ from `in_proj(h)` in the last
  bit: the matmul kernels block the output columns differently.)
  """
  kernel = in_proj.kernel[...]
  half = kernel.shape[1] // 2
  project = lambda columns: over_tokens(lambda tokens: tokens @ kernel[:, columns], h)
  return project(slice(None, half)), project(slice(half, None))


class Mamba(nnx.Module):
  """The plain unidirectional Mamba mixer (mamba_ssm `Mamba`, bimamba_type=None).

  in_proj (d_model -> 2 * d_inner, no bias) -> (x, z) -> SelectiveScanBranch with
  A = -exp(A_log) -> out_proj (d_inner -> d_model, no bias). PyTorch names: in_proj, conv1d,
  x_proj, dt_proj, A_log, D, out_proj (ours: conv1d, x_proj, dt_proj, D under `ssm`).
  """

  def __init__(
    self,
    d_model: int,
    *,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    dt_rank: int | None = None,
    rngs: nnx.Rngs,
  ):
    d_inner = expand * d_model
    dt_rank = dt_rank or dt_rank_for(d_model)
    self.in_proj = torch_linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.ssm = SelectiveScanBranch(
      d_inner, d_state=d_state, dt_rank=dt_rank, d_conv=d_conv, mamba_dt_init=True, rngs=rngs
    )
    self.A_log = nnx.Param(s4d_real_a_log((d_inner,), d_state))
    self.out_proj = torch_linear(d_inner, d_model, use_bias=False, rngs=rngs)
    self.token_chunk = TOKEN_CHUNK

  def initial_carry(self, batch: int):
    return self.ssm.initial_carry(batch)

  def step(self, carry, h: jax.Array):
    """One chunk of tokens (batch, T, d_model) and the carry of the tokens before it (see
    `SelectiveScanBranch`): returns (the carry after it, the mixer's output (batch, T, d_model))."""
    x, z = project_halves(self.in_proj, h)
    y, carry = self.ssm(x, z, -jnp.exp(self.A_log[...]), carry)
    return carry, self.out_proj(y)

  def __call__(self, h: jax.Array, prepare=lambda h: h) -> jax.Array:
    """h: `Tokens` of width d_model -> same shape: the mixer on prepare(h), run `TOKEN_CHUNK`
    tokens at a time. prepare is token-wise (a LayerNorm): it runs chunk by chunk too."""
    step = lambda carry, h: self.step(carry, prepare(h))
    return over_token_chunks(step, self.initial_carry(h.shape[0]), [h], self.token_chunk)


class MultiModalMamba(nnx.Module):
  """MambaDFuse's multi-modal "m3" mixer (patched mamba_simple `Mamba`, bimamba_type="m3").

  Three branches, each its own input projection (d_model -> 2 * d_inner, no bias) split into
  (x_k, z_k) and its own SelectiveScanBranch:
    main: in_proj(h)            -> ssm   with A = -exp(A_log)
    b:    in_proj_extra1(e1)    -> ssm_b with A = -exp(A_b_log)
    c:    in_proj_extra2(e2)    -> ssm_c with A = -exp(A_b_log)   (the code shares A_b)
  out = out_proj(y_main + y_b + y_c), no division by 3.

  Paper variants (config switches; both off reproduce the official code and checkpoints):
    shared_gate: every branch is gated by the main branch's z (paper Fig. 4) instead of its own
      z_k; the z halves of in_proj_extra1/2 are then unused.
    separate_c_a: branch c gets its own A_c_log (an extra (d_inner, d_state) parameter that the
      official state_dict lacks) instead of sharing A_b_log.
  """

  def __init__(
    self,
    d_model: int,
    *,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    dt_rank: int | None = None,
    shared_gate: bool = False,
    separate_c_a: bool = False,
    rngs: nnx.Rngs,
  ):
    d_inner = expand * d_model
    dt_rank = dt_rank or dt_rank_for(d_model)
    self.shared_gate = shared_gate
    branch = lambda mamba_dt_init: SelectiveScanBranch(
      d_inner,
      d_state=d_state,
      dt_rank=dt_rank,
      d_conv=d_conv,
      mamba_dt_init=mamba_dt_init,
      rngs=rngs,
    )
    self.in_proj = torch_linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.in_proj_extra1 = torch_linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.in_proj_extra2 = torch_linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
    self.ssm = branch(True)
    self.ssm_b = branch(False)  # official: dt_proj_b/c keep torch's default Linear init
    self.ssm_c = branch(False)
    self.A_log = nnx.Param(s4d_real_a_log((d_inner,), d_state))
    self.A_b_log = nnx.Param(s4d_real_a_log((d_inner,), d_state))
    self.A_c_log = nnx.Param(s4d_real_a_log((d_inner,), d_state)) if separate_c_a else None
    self.out_proj = torch_linear(d_inner, d_model, use_bias=False, rngs=rngs)
    self.token_chunk = TOKEN_CHUNK

  def _branches(self):
    return [
      (self.in_proj, self.ssm),
      (self.in_proj_extra1, self.ssm_b),
      (self.in_proj_extra2, self.ssm_c),
    ]

  def initial_carry(self, batch: int):
    """The three branches' carries (`SelectiveScanBranch`), stacked in the order main, b, c."""
    carries = [ssm.initial_carry(batch) for _, ssm in self._branches()]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *carries)

  def step(self, carry, h: jax.Array, extra1: jax.Array, extra2: jax.Array):
    """One chunk of the three streams, each (batch, T, d_model), and the carry of the tokens
    before it: returns (the carry after it, the mixer's output (batch, T, d_model)).

    The branches run as one batched computation (`vmap_modules`); their outputs are summed in
    the order main, b, c.
    """
    shared_z = project_halves(self.in_proj, h)[1] if self.shared_gate else None
    a_b = -jnp.exp(self.A_b_log[...])
    a_c = a_b if self.A_c_log is None else -jnp.exp(self.A_c_log[...])

    def branch(modules, tokens, A, branch_carry):
      in_proj, ssm = modules
      x, z = project_halves(in_proj, tokens)
      return ssm(x, z if shared_z is None else shared_z, A, branch_carry)

    y, carry = vmap_modules(
      branch,
      self._branches(),
      jnp.stack([h, extra1, extra2]),
      jnp.stack([-jnp.exp(self.A_log[...]), a_b, a_c]),
      carry,
    )
    return carry, self.out_proj(y[0] + y[1] + y[2])

  def __call__(self, h, extra1, extra2, prepare=lambda *streams: streams) -> jax.Array:
    """h, extra1, extra2: `Tokens` of width d_model -> same shape: the mixer on
    prepare(h, extra1, extra2), run `TOKEN_CHUNK` tokens at a time (prepare is token-wise)."""
    step = lambda carry, *streams: self.step(carry, *prepare(*streams))
    carry = self.initial_carry(h.shape[0])
    return over_token_chunks(step, carry, [h, extra1, extra2], self.token_chunk)


# ----------------------------------------------------------------------------------------------
# Residual blocks.


class SingleMambaBlock(nnx.Module):
  """(x, residual) -> (Mamba(LN(x + residual)), x + residual). PyTorch names: norm.body, encoder."""

  def __init__(self, dim: int, *, mamba_kwargs: dict, rngs: nnx.Rngs):
    self.encoder = Mamba(dim, **mamba_kwargs, rngs=rngs)
    self.norm = layer_norm(dim, rngs=rngs)

  def __call__(self, x: jax.Array, residual: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x, residual: `Tokens`."""
    residual = x + residual
    return self.encoder(residual, prepare=self.norm), residual


def _stacked_states(modules):
  """(the modules' common nnx.GraphDef, their states stacked along a new leading axis)."""
  graphdefs, states = zip(*(nnx.split(module) for module in modules))
  if any(graphdef != graphdefs[0] for graphdef in graphdefs):
    raise ValueError("modules of one structure (equal nnx.GraphDefs) are needed here")
  return graphdefs[0], jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def scan_modules(f, carry, modules, xs=None, *, remat: bool = False):
  """`jax.lax.scan` over modules of one structure: f(module, carry, x) -> (carry, y) per module.

  The modules' states are stacked along a new leading axis, and each step rebuilds one module from
  its slice; xs and the returned ys are stacked the same way. It computes what a Python loop over
  the modules computes, but a loop body is its own XLA computation: XLA holds one module's
  temporaries at a time, where it schedules the independent work of every module of a Python loop
  (input projections, scan buffers) up front and keeps it all alive together.

  modules: modules, or tuples of modules, with equal `nnx.GraphDef`s (the same type, shapes and
  static attributes); an empty sequence returns carry unchanged and ys None. remat: differentiation
  keeps only each step's carry and recomputes the step's forward pass in the backward pass
  (`jax.checkpoint`), so a gradient holds one module's activations rather than every module's.
  Returns (final carry, stacked ys).
  """
  if not modules:
    return carry, None
  graphdef, stacked = _stacked_states(modules)

  def step(carry, inputs):
    state, x = inputs
    return f(nnx.merge(graphdef, state), carry, x)

  return jax.lax.scan(jax.checkpoint(step) if remat else step, carry, (stacked, xs))


def vmap_modules(f, modules, *xs):
  """`jax.vmap` over modules of one structure: f(module, *x) for each module and its slice of xs.

  As `scan_modules`, the modules' states are stacked along a new leading axis and xs are stacked
  the same way; unlike it, the modules run as one batched computation: independent streams
  through modules of one shape (two encoders, three scan branches) become one scan over all
  their channels, which pays a sequential loop's per-step cost once. Returns the stacked outputs.
  """
  graphdef, stacked = _stacked_states(modules)
  return jax.vmap(lambda state, *x: f(nnx.merge(graphdef, state), *x))(stacked, *xs)


def run_residual_stacks(stacks, xs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`run_residual_stack` of each stack on its input, stacks of one structure side by side.

  xs: (S, *Tokens) for S stacks; returns (last mixer outputs, residual streams), both (S,
  *Tokens). Block k of every stack runs in one batched step (`vmap_modules`), the steps as one
  `scan_modules` loop over the depth: XLA holds one step's temporaries at a time.
  """
  run_blocks = lambda blocks, carry, _: (vmap_modules(lambda b, *c: b(*c), blocks, *carry), None)
  (xs, residuals), _ = scan_modules(
    run_blocks, (xs, jnp.zeros_like(xs)), list(zip(*stacks)), remat=True
  )
  return xs, residuals


def run_residual_stack(blocks, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Chains SingleMambaBlocks from (x, 0), as nn.Sequential does: returns (last mixer output,
  residual stream), the last mixer output NOT added to the residual; all `Tokens`."""
  x, residual = run_residual_stacks([blocks], x[None])
  return x[0], residual[0]


def exchange_even_channels(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Swaps every channel with an even index (0, 2, 4, ...) between a and b; odd ones stay.

  a, b: (..., C). MambaDFuse's ChannelExchange(p=2).
  """
  even = jnp.arange(a.shape[-1]) % 2 == 0
  return jnp.where(even, b, a), jnp.where(even, a, b)


class TokenSwapMamba(nnx.Module):
  """Shallow-fuse stage: add residuals, LN each stream, exchange even channels, one Mamba each.

  (I1, I2, r1, r2) -> (I1encoder(a'), I2encoder(b'), I1 + r1, I2 + r2) with
  a = norm1(I1 + r1), b = norm2(I2 + r2), (a', b') = exchange_even_channels(a, b).
  """

  def __init__(self, dim: int, *, mamba_kwargs: dict, rngs: nnx.Rngs):
    self.I1encoder = Mamba(dim, **mamba_kwargs, rngs=rngs)
    self.I2encoder = Mamba(dim, **mamba_kwargs, rngs=rngs)
    self.norm1 = layer_norm(dim, rngs=rngs)
    self.norm2 = layer_norm(dim, rngs=rngs)

  def __call__(self, i1, i2, i1_residual, i2_residual):
    """All four `Tokens`; returns the same four, updated."""
    i1_residual = i1 + i1_residual
    i2_residual = i2 + i2_residual

    def step(carries, r1, r2):
      a, b = exchange_even_channels(self.norm1(r1), self.norm2(r2))
      carries, out = vmap_modules(
        lambda encoder, carry, tokens: encoder.step(carry, tokens),
        [self.I1encoder, self.I2encoder],
        carries,
        jnp.stack([a, b]),
      )
      return carries, (out[0], out[1])

    encoders = (self.I1encoder, self.I2encoder)
    carries = jax.tree.map(
      lambda *leaves: jnp.stack(leaves), *(e.initial_carry(i1.shape[0]) for e in encoders)
    )
    i1, i2 = over_token_chunks(
      step, carries, [i1_residual, i2_residual], self.I1encoder.token_chunk
    )
    return i1, i2, i1_residual, i2_residual


class M3Block(nnx.Module):
  """Deep-fuse M3 block: residual add, LayerNorms, the m3 mixer, a depthwise 3x3 conv residual.

  (I1, fusion residual, I2, fusion) -> (g + dwconv3x3(g), fusion + residual) with
  g = MultiModalMamba(norm1(res), extra1=norm2(I2), extra2=norm3(I1)) on res = fusion + residual.
  The official code applies each LayerNorm twice (norm(norm(x)), same parameters);
  `norm_twice=False` is the paper's single normalisation.
  """

  def __init__(
    self,
    dim: int,
    *,
    mamba_kwargs: dict,
    norm_twice: bool = True,
    shared_gate: bool = False,
    separate_c_a: bool = False,
    rngs: nnx.Rngs,
  ):
    self.norm_twice = norm_twice
    self.multi_modal_mamba_block = MultiModalMamba(
      dim, **mamba_kwargs, shared_gate=shared_gate, separate_c_a=separate_c_a, rngs=rngs
    )
    self.norm1 = layer_norm(dim, rngs=rngs)
    self.norm2 = layer_norm(dim, rngs=rngs)
    self.norm3 = layer_norm(dim, rngs=rngs)
    self.dwconv = torch_depthwise_conv(dim, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)

  def _normalise(self, norm: nnx.LayerNorm, x: jax.Array) -> jax.Array:
    return norm(norm(x)) if self.norm_twice else norm(x)

  def __call__(self, i1, fusion_residual, i2, fusion, height: int, width: int):
    """i1, i2, fusion, fusion_residual: (batch, height * width, dim) row-major tokens.

    Returns (fusion, fusion_residual), both (batch, height * width, dim).
    """
    fusion_residual = fusion + fusion_residual
    mixed = self.multi_modal_mamba_block(
      fusion_residual,
      i2,
      i1,
      prepare=lambda h, extra1, extra2: (
        self._normalise(self.norm1, h),
        self._normalise(self.norm2, extra1),
        self._normalise(self.norm3, extra2),
      ),
    )
    image = mixed.reshape(mixed.shape[0], height, width, mixed.shape[-1])
    fusion = (self.dwconv(image) + image).reshape(mixed.shape)
    return fusion, fusion_residual
