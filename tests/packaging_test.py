"""The package layout: kernels/ ships as fusionjax.kernels, never as a top-level `kernels`."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _packages_on_disk() -> set[str]:
  found = set()
  for root, prefix in ((REPO / "fusionjax", "fusionjax"), (REPO / "kernels", "fusionjax.kernels")):
    for init in root.rglob("__init__.py"):
      parts = init.parent.relative_to(root).parts
      found.add(".".join((prefix, *parts)))
  return found


def test_pyproject_lists_every_package():
  config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
  assert config["package-dir"]["fusionjax.kernels"] == "kernels"
  assert set(config["packages"]) == _packages_on_disk()


def test_wheel_installs_kernels_under_fusionjax(tmp_path):
  subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
       "-w", str(tmp_path), str(REPO)], check=True, cwd=tmp_path)
  (wheel,) = tmp_path.glob("fusionjax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert "fusionjax/kernels/__init__.py" in names
  assert "fusionjax/kernels/scan/pallas_gpu.py" in names
  top_level = {n.split("/")[0] for n in names}
  assert {t for t in top_level if not t.endswith(".dist-info")} == {"fusionjax"}


def test_checkout_serves_kernels_without_an_installation():
  """`python run.py` puts the checkout first on sys.path: fusionjax then comes from the checkout,
  whatever is installed, and fusionjax.kernels must come from the checkout's kernels/ too.
  (-S: no site-packages, hence no editable-install finder that would map it anyway.)"""
  origin = subprocess.run(
      [sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
       "import importlib.util as u; print(u.find_spec('fusionjax.kernels').origin)", str(REPO)],
      check=True, capture_output=True, text=True, cwd="/").stdout.strip()
  assert origin == str(REPO / "kernels" / "__init__.py")
