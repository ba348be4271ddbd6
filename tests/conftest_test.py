"""FUSIONJAX_FORBID_SKIPS=1 (set by .ci/run) turns every skip into a failure."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

SKIPPING_TESTS = """
import pytest

@pytest.mark.skipif(True, reason="parity fixtures not found")
def test_marked_skip():
  pass

@pytest.fixture
def missing_fixtures():
  pytest.skip("fixtures folder not found")

def test_fixture_skip(missing_fixtures):
  pass

@pytest.mark.xfail(reason="an expected failure is not a skip")
def test_expected_failure():
  assert False

def test_passes():
  pass
"""


def _pytest_outcome(folder: Path, forbid: str) -> str:
  """The summary line of a pytest run over `folder` with FUSIONJAX_FORBID_SKIPS=`forbid`."""
  env = {**os.environ, "FUSIONJAX_FORBID_SKIPS": forbid}
  result = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
    capture_output=True,
    text=True,
    env=env,
    cwd=folder,
  )
  return result.stdout.strip().splitlines()[-1]


def test_skips_fail_when_forbidden(tmp_path):
  shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
  (tmp_path / "skips_test.py").write_text(SKIPPING_TESTS)
  assert "1 passed, 2 skipped, 1 xfailed" in _pytest_outcome(tmp_path, forbid="0")
  assert "1 passed, 1 xfailed, 2 errors" in _pytest_outcome(tmp_path, forbid="1")
