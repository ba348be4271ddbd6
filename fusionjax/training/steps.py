"""The training loss of a config and the pure, jitted train step.

train_step = steps.jit_train_step(config, graphs, mesh)
state, metrics = train_step(state, a, b)   # a, b: global `shapes.Planes`
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from fusionjax import compile_options
from fusionjax.losses.terms import Loss
from fusionjax.models import registry
from fusionjax.training import optim, sharding
from fusionjax.training.state import Graphs, TrainState


def make_loss(loss_config: ml_collections.ConfigDict) -> Loss:
  """The loss of the family `loss_config.name` (`registry.Family.loss`), with the section's
  other fields as its arguments."""
  arguments = loss_config.to_dict()
  name = arguments.pop("name")
  if name not in registry.families():
    raise ValueError(f"unknown loss.name {name!r}; known: {registry.families()}")
  return registry.get(name).loss(**arguments)


def train_step(
  graphs: Graphs,
  loss_fn: Loss,
  schedule: optax.Schedule,
  ema_decay: float,
  state: TrainState,
  a: jax.Array,
  b: jax.Array,
) -> tuple[TrainState, dict]:
  """One optimizer update on the batch (a, b) of `shapes.Planes`.

  Returns the new state and scalar metrics: "loss", "loss/<term>" (unweighted terms),
  "grad_norm" (global norm before clipping) and "learning_rate" (of this update).
  """
  model = nnx.merge(graphs.train, state.model)
  optimizer = nnx.merge(graphs.opt, state.opt)

  def objective(model):
    return loss_fn(a, b, model(a, b))

  (loss, terms), grads = nnx.value_and_grad(objective, has_aux=True)(model)
  learning_rate = schedule(optimizer.step[...])
  optimizer.update(model, grads)
  ema = state.ema
  if ema is not None:
    ema = optax.incremental_update(nnx.state(model, nnx.Param), ema, step_size=1 - ema_decay)
  metrics = {
    "loss": loss,
    **{f"loss/{name}": value for name, value in terms.items()},
    # Of the raveled gradients, which the optimizer ravels too: one reduction, not one per array.
    "grad_norm": jnp.linalg.norm(ravel_pytree(grads)[0]),
    "learning_rate": learning_rate,
  }
  return TrainState(model=nnx.state(model), opt=nnx.state(optimizer), ema=ema), metrics


def jit_train_step(
  config: ml_collections.ConfigDict, graphs: Graphs, mesh: jax.sharding.Mesh
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
  """`train_step` for `config`, jitted over `mesh`: the state replicated and donated, the
  batch split over the data axis; XLA inserts the gradient all-reduce. With
  `config.train.fast_compile`, compiled with `compile_options.fast_compile()`."""
  step = functools.partial(
    train_step,
    graphs,
    make_loss(config.loss),
    optim.make_schedule(config.optim, config.train.num_steps),
    config.optim.ema_decay,
  )
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(
    step,
    in_shardings=(replicated, batch, batch),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
    compiler_options=compile_options.fast_compile() if config.train.fast_compile else None,
  )
