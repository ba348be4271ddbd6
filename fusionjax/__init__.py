"""fusionjax: Mamba-based multi-modality image fusion in JAX/Flax."""

import pathlib as _pathlib

__version__ = "0.1.0"

# Installed, `fusionjax.kernels` is the package's kernels/ folder (pyproject.toml maps the
# checkout's top-level kernels/ there). Imported straight from a source checkout instead, as
# `python run.py` does (the script's folder comes first on sys.path, before any installation),
# it is the checkout's kernels/ beside this folder.
_CHECKOUT = _pathlib.Path(__file__).resolve().parent.parent
if (not (_pathlib.Path(__file__).parent / "kernels").is_dir()
    and (_CHECKOUT / "kernels" / "__init__.py").is_file()
    and (_CHECKOUT / "pyproject.toml").is_file()):
  __path__.append(str(_CHECKOUT))
