"""The names and shapes of a state, and where two differ (checkpoint and init_from checks)."""

from flax import nnx

from fusionjax.training import tree_shapes


class _Block(nnx.Module):
  def __init__(self, features: int, *, rngs: nnx.Rngs):
    self.dense = nnx.Linear(3, features, rngs=rngs)
    self.layers = nnx.List([nnx.LayerNorm(features, rngs=rngs)])


def test_leaf_shapes_names_each_parameter_by_its_path():
  shapes = tree_shapes.leaf_shapes(nnx.state(_Block(5, rngs=nnx.Rngs(0)), nnx.Param))
  assert shapes == {
    "dense/kernel": (3, 5),
    "dense/bias": (5,),
    "layers/0/scale": (5,),
    "layers/0/bias": (5,),
  }
  key = {"rng": nnx.Rngs(0).default.key[...]}
  assert tree_shapes.leaf_shapes(key) == {"rng": (2,)}  # threefry key data: two uint32


def test_differences_list_each_name_once_with_both_sides():
  first = {"a": (2,), "b": (3,), "only_first": (1,)}
  second = {"a": (2,), "b": (4,), "only_second": (5, 5)}
  assert tree_shapes.differences(first, second) == [
    ("b", (3,), (4,)),
    ("only_first", (1,), None),
    ("only_second", None, (5, 5)),
  ]
  assert tree_shapes.differences(first, dict(first)) == []
