"""The Optax optimizer and learning-rate schedule of the `optim` config section."""

import ml_collections
import optax

from fusionjax.config_lib import ConfigError


def make_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """The learning rate per step count (config_lib.base_config documents the fields).

  "constant"; "multistep" (PyTorch MultiStepLR: x decay_rate from each of `boundaries` on);
  "exponential" (staircase: x decay_rate every decay_every_steps, FusionMamba's per-epoch
  decay); "warmup_cosine" (linear init_learning_rate -> learning_rate over warmup_steps, then
  cosine to end_learning_rate at num_steps, S4Fusion's WarmupCosine).
  """
  rate = optim.learning_rate
  if optim.schedule == "constant":
    return optax.constant_schedule(rate)
  if optim.schedule == "multistep":
    return optax.piecewise_constant_schedule(
      rate, {int(boundary): optim.decay_rate for boundary in optim.boundaries}
    )
  if optim.schedule == "exponential":
    if optim.decay_every_steps <= 0:
      raise ConfigError("optim.schedule='exponential' needs optim.decay_every_steps > 0")
    return optax.exponential_decay(
      rate, transition_steps=optim.decay_every_steps, decay_rate=optim.decay_rate, staircase=True
    )
  if optim.schedule == "warmup_cosine":
    if not 0 <= optim.warmup_steps < num_steps:
      raise ConfigError(
        f"optim.warmup_steps must be in [0, train.num_steps = {num_steps}), "
        f"got {optim.warmup_steps}"
      )
    return optax.warmup_cosine_decay_schedule(
      init_value=optim.init_learning_rate,
      peak_value=rate,
      warmup_steps=optim.warmup_steps,
      decay_steps=num_steps,
      end_value=optim.end_learning_rate,
    )
  raise ConfigError(
    f"unknown optim.schedule {optim.schedule!r}; expected 'constant', "
    "'multistep', 'exponential' or 'warmup_cosine'"
  )


def make_optimizer(
  optim: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """Adam or AdamW (PyTorch's defaults unless configured) on `schedule`, after clipping the
  gradients' global norm to optim.grad_clip_norm when that is > 0.

  The update runs on all parameters raveled into one vector (`optax.flatten`): the same
  arithmetic, but XLA compiles a few kernels instead of several per parameter array.
  """
  if optim.optimizer == "adam":
    if optim.weight_decay:
      raise ConfigError("optim.weight_decay needs optim.optimizer='adamw' (decoupled decay)")
    transform = optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps)
  elif optim.optimizer == "adamw":
    transform = optax.adamw(
      schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay
    )
  else:
    raise ConfigError(f"unknown optim.optimizer {optim.optimizer!r}; expected 'adam' or 'adamw'")
  if optim.grad_clip_norm > 0:
    transform = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), transform)
  return optax.flatten(transform)
