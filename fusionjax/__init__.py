"""fusionjax: Mamba-based multi-modality image fusion in JAX/Flax."""

__version__ = "0.1.0"
