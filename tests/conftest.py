"""Test-session setup: 8 simulated CPU devices (for sharding tests) and strict rank promotion.

With FUSIONJAX_FORBID_SKIPS=1 (as .ci/run sets: CI has the parity fixtures beside the checkout
and runs on CPU) a skipped test fails, so that parity tests cannot pass CI by skipping.
"""

import os

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

FORBID_SKIPS = os.environ.get("FUSIONJAX_FORBID_SKIPS") == "1"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  report = yield
  if FORBID_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"skipped, which FUSIONJAX_FORBID_SKIPS=1 forbids: {reason}"
  return report
