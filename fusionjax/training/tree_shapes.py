"""The names and shapes of a tree of arrays, and where two such trees differ: how a checkpoint
or a starting point is checked against the model a run configures."""

from collections.abc import Mapping

import jax


def key_name(key) -> str:
  """The name of one step of a pytree path (a dict key, attribute name or list index)."""
  for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def leaf_shapes(tree) -> dict[str, tuple[int, ...]]:
  """{"a/b/c": shape} of an nnx.State (or its stored metadata); PRNG keys as their key data."""
  shapes = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    names = [key_name(key) for key in path]
    if names[-1] == "value":
      names.pop()
    dtype = getattr(leaf, "dtype", None)
    is_key = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    shape = jax.eval_shape(jax.random.key_data, leaf).shape if is_key else tuple(leaf.shape)
    shapes["/".join(names)] = shape
  return shapes


def differences(
  first: Mapping[str, tuple], second: Mapping[str, tuple]
) -> list[tuple[str, tuple | None, tuple | None]]:
  """(name, its shape in `first`, in `second`) for every name whose shape differs or that only
  one of them has (None on the side without it), sorted by name."""
  return [
    (name, first.get(name), second.get(name))
    for name in sorted(first.keys() | second.keys())
    if first.get(name) != second.get(name)
  ]
