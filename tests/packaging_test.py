"""The package layout: kernels/ ships as fusionjax.kernels, never as a top-level `kernels`.

fusionjax.kernels, and no other folder of the checkout, is served in all three ways of using the
package: a regular install (the wheel unpacked into a site directory, as pip does), an editable
install (setuptools' editable wheel: a .pth file and its import finder) and a source checkout.
"""

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

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


# Prints, as JSON, what `import fusionjax` serves: fusionjax's __path__, where fusionjax.kernels and
# its submodules come from, and which other checkout folders became submodules (none may).
# Run with -S (no site-packages: nothing installed is seen), argv[1] as the only site directory.
IMPORTS = """
import importlib.util, json, site, sys
site.addsitedir(sys.argv[1])
import fusionjax
spec = lambda name: importlib.util.find_spec(f"fusionjax.{name}")
strays = ("run", "tests", "fusionjax", "configs", "benchmarks", "notebooks")
kernels = spec("kernels")
print(json.dumps({"path": list(fusionjax.__path__), "kernels": kernels.origin,
                  "submodules": kernels.submodule_search_locations,
                  "strays": [name for name in strays if spec(name) is not None]}))
"""


def _imports(site_dir: Path) -> dict:
  """What `fusionjax` serves with `site_dir` as the only site directory (its .pth files run)."""
  result = subprocess.run(
    [sys.executable, "-S", "-c", IMPORTS, str(site_dir)],
    check=True,
    capture_output=True,
    text=True,
    cwd="/",
  )
  return json.loads(result.stdout)


def _assert_serves_kernels_only(imports: dict, package: Path, kernels: Path):
  assert imports == {
    "path": [str(package)],
    "kernels": str(kernels / "__init__.py"),
    "submodules": [str(kernels)],
    "strays": [],
  }


def _build(hook: str, out_dir: Path) -> Path:
  """Builds this repo with setuptools' PEP 517/660 `hook` into out_dir (as pip would)."""
  subprocess.run(
    [
      sys.executable,
      "-c",
      f"from setuptools import build_meta; import sys; build_meta.{hook}(sys.argv[1])",
      str(out_dir),
    ],
    check=True,
    cwd=REPO,
    capture_output=True,
  )
  (wheel,) = out_dir.glob("fusionjax-*.whl")
  return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
  return _build("build_wheel", tmp_path_factory.mktemp("wheel"))


def test_wheel_installs_kernels_under_fusionjax(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  assert "fusionjax/kernels/__init__.py" in names
  assert "fusionjax/kernels/scan/pallas_gpu.py" in names
  top_level = {n.split("/")[0] for n in names}
  assert {t for t in top_level if not t.endswith(".dist-info")} == {"fusionjax"}


def test_regular_install_serves_kernels_from_the_package(wheel, tmp_path):
  zipfile.ZipFile(wheel).extractall(tmp_path)  # what pip install puts in site-packages
  _assert_serves_kernels_only(
    _imports(tmp_path), tmp_path / "fusionjax", tmp_path / "fusionjax" / "kernels"
  )


def test_editable_install_serves_kernels_from_the_checkout(tmp_path):
  zipfile.ZipFile(_build("build_editable", tmp_path)).extractall(tmp_path / "site")
  _assert_serves_kernels_only(_imports(tmp_path / "site"), REPO / "fusionjax", REPO / "kernels")


def test_checkout_serves_kernels_without_an_installation(tmp_path):
  """`python run.py` puts the checkout first on sys.path: fusionjax then comes from the checkout,
  whatever is installed, and fusionjax.kernels must come from the checkout's kernels/ too."""
  (tmp_path / "checkout.pth").write_text(str(REPO))
  _assert_serves_kernels_only(_imports(tmp_path), REPO / "fusionjax", REPO / "kernels")
