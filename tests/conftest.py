"""Test-session setup: 8 simulated CPU devices (for sharding tests) and strict rank promotion."""

from pathlib import Path

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
  """The shared/ folder beside the checkout (data, weights, reference outputs)."""
  if not SHARED_DIR.is_dir():
    pytest.skip(f"shared fixtures folder not found at {SHARED_DIR}")
  return SHARED_DIR
