"""fusionjax: Mamba-based multi-modality image fusion in JAX/Flax."""

import importlib.abc as _abc
import importlib.util as _util
import pathlib as _pathlib
import sys as _sys

__version__ = "0.1.0"


class _CheckoutKernelsFinder(_abc.MetaPathFinder):
  """Finds `fusionjax.kernels` in a source checkout's top-level kernels/ folder, and nothing else.

  Installed, `fusionjax.kernels` is the package's kernels/ folder (pyproject.toml maps the
  checkout's top-level kernels/ there). Imported straight from a source checkout instead, as
  `python run.py` does (the script's folder comes first on sys.path, before any installation),
  this package has no kernels/ folder: the checkout's kernels/ beside it is served under that one
  name, so that no other folder of the checkout (run.py, tests/, ...) becomes a submodule.
  """

  def __init__(self, kernels_dir: _pathlib.Path):
    self._kernels_dir = kernels_dir

  def find_spec(self, fullname, path=None, target=None):
    if fullname != f"{__name__}.kernels":
      return None
    return _util.spec_from_file_location(
      fullname,
      self._kernels_dir / "__init__.py",
      submodule_search_locations=[str(self._kernels_dir)],
    )


def _checkout_kernels_dir() -> _pathlib.Path | None:
  """The checkout's kernels/ when this package is imported from a source checkout, else None."""
  package = _pathlib.Path(__file__).resolve().parent
  checkout = package.parent
  if (
    (package / "kernels").is_dir()
    or not (checkout / "kernels" / "__init__.py").is_file()
    or not (checkout / "pyproject.toml").is_file()
  ):
    return None
  return checkout / "kernels"


if (_kernels_dir := _checkout_kernels_dir()) is not None:
  _sys.meta_path.append(_CheckoutKernelsFinder(_kernels_dir))
