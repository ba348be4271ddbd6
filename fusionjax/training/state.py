"""What a training run holds: the model, its optimizer and an optional EMA of its parameters.

Flax NNX objects are split into static graph definitions (`Graphs`) and pytrees of arrays
(`TrainState`), so that train steps are pure functions of arrays.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from fusionjax import config_lib, models
from fusionjax.training import optim, tree_shapes


@flax.struct.dataclass
class TrainState:
  """The arrays a train step reads and replaces (a pytree).

  Attributes:
    model: every variable of the model: parameters, RNG streams (stochastic depth), ...
    opt: the nnx.Optimizer's variables: its step count and the optax state.
    ema: exponential moving average of the parameters (optim.ema_decay > 0), else None.
  """

  model: nnx.State
  opt: nnx.State
  ema: nnx.State | None


@dataclasses.dataclass(frozen=True)
class Graphs:
  """The static halves of the split objects (hashable, closed over by jitted functions).

  Attributes:
    train: the model in training mode (stochastic depth on).
    eval: the same model in evaluation mode.
    opt: the nnx.Optimizer (its optax transformation and schedule).
  """

  train: nnx.GraphDef
  eval: nnx.GraphDef
  opt: nnx.GraphDef


def _strong_types(tree):
  """Drops weak types (parameters made from Python scalars): a train step's outputs are
  strongly typed, and weak-typed inputs would make the first steps compile twice."""
  return jax.tree.map(lambda x: x.astype(x.dtype) if getattr(x, "weak_type", False) else x, tree)


def start_from(graphs: Graphs, state: TrainState, params: models.Params, source: str) -> TrainState:
  """`state` with the parameters of `params` (in the model's dtypes) in the model and its EMA:
  where a fine-tuning run starts. A ConfigError naming `source` (train.init_from) when they are
  another model's (names or shapes differ)."""
  model = nnx.merge(graphs.train, state.model)
  own = nnx.state(model, nnx.Param)
  given = nnx.state(params.module(), nnx.Param)
  differing = tree_shapes.differences(tree_shapes.leaf_shapes(given), tree_shapes.leaf_shapes(own))
  if differing:
    name, *sides = differing[0]
    in_given, in_own = ("absent" if shape is None else shape for shape in sides)
    raise config_lib.ConfigError(
      f"train.init_from={source}: its parameters are not config.model's ({len(differing)} "
      f"differ in name or shape, e.g. {name}: {in_given} in it, {in_own} in config.model); "
      "set config.model to the model it holds"
    )
  nnx.update(model, jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), given, own))
  ema = None if state.ema is None else jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  return _strong_types(state.replace(model=nnx.state(model), ema=ema))


def create(config: ml_collections.ConfigDict) -> tuple[Graphs, TrainState]:
  """A freshly initialised model (seed `config.seed`), optimizer and EMA."""
  model = models.build_compiled(config.model, rngs=nnx.Rngs(config.seed))
  schedule = optim.make_schedule(config.optim, config.train.num_steps)
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config.optim, schedule), wrt=nnx.Param)
  model.eval()
  eval_graph = nnx.graphdef(model)
  model.train()
  train_graph, model_state = nnx.split(model)
  opt_graph, opt_state = nnx.split(optimizer)
  ema = None
  if config.optim.ema_decay > 0:
    ema = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))  # its own buffers (donation)
  state = TrainState(model=model_state, opt=opt_state, ema=ema)
  return Graphs(train=train_graph, eval=eval_graph, opt=opt_graph), _strong_types(state)


def step(state: TrainState) -> int:
  """The number of optimizer updates applied (the step the state is at), on the host."""
  return int(jax.device_get(state.opt["step"][...]))


def evaluation_model(graph: nnx.GraphDef, model: nnx.State, ema: nnx.State | None) -> nnx.Module:
  """The model of `graph` and its variables `model`, with the EMA parameters `ema` in place of
  the trained ones when kept (not None), in evaluation mode."""
  module = nnx.merge(graph, model)
  if ema is not None:
    nnx.update(module, ema)
  module.eval()
  return module


def eval_model(graphs: Graphs, state: TrainState) -> nnx.Module:
  """`evaluation_model` of a training state, on one local device (what `fusionjax.fuse`
  compiles for)."""
  local = lambda tree: jax.tree.map(lambda x: x.addressable_shards[0].data, tree)  # pylint: disable=unnecessary-lambda-assignment
  return evaluation_model(graphs.eval, local(state.model), local(state.ema))
