"""XLA compiler options for programs that run once or a few dozen times (model construction, the
train steps of tests and smoke runs), where XLA's optimisations cost more compile time than
they save at run time."""

import functools

import jax
import numpy as np

# The backend's optimisation passes (LLVM -O2 and the like): at level 0 FusionMamba tiny's train
# step compiles in two thirds of the time (half with the loop emitters below) and runs 2-2.6x
# slower; MambaDFuse's and S4Fusion's tiny steps run 3-4.5x slower.
NO_OPTIMISATION = {"xla_backend_optimization_level": 0}
# The CPU backend's older loop emitters compile model construction 1.3-1.5x and the tiny train
# steps 1.1-1.4x faster than its MLIR fusion emitters (model construction to the same bits; other
# backends ignore xla_cpu_ options). Newer XLA releases (jaxlib 0.12) have only the fusion
# emitters and refuse the option.
LOOP_EMITTERS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def fast_compile() -> dict:
  """The options that compile fastest that this XLA knows (probed once, by compiling a scalar
  identity): `NO_OPTIMISATION`, and `LOOP_EMITTERS` where this XLA has them."""
  options = NO_OPTIMISATION | LOOP_EMITTERS
  try:
    jax.jit(lambda x: x, compiler_options=options).lower(np.float32(0)).compile()
  except jax.errors.JaxRuntimeError as error:
    if "No such compile option" not in str(error):
      raise
    return NO_OPTIMISATION
  return options
