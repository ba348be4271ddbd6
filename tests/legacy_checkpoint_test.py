"""Checkpoints and converted weights written by an earlier fusionjax still load, to the same
numbers (tests/fixtures/README.md, section `legacy/`, says how they were written)."""

import functools
import json
import pathlib
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from fusionjax import convert, models
from fusionjax.training import checkpointing, reports, state, tree_shapes
from fusionjax.training import input as train_input

LEGACY = pathlib.Path(__file__).parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def inputs():
  return np.load(LEGACY / "inputs.npy")


@pytest.mark.parametrize("name", ["mambadfuse_tiny", "fusionmamba_tiny", "s4fusion_tiny"])
def test_converted_weights_load_to_the_same_outputs(name, inputs):
  params = convert.load_params(LEGACY / "params" / name)
  fused = np.asarray(models.apply(params, *inputs))
  np.testing.assert_allclose(
    fused, np.load(LEGACY / "params" / name / "fused.npy"), rtol=1e-5, atol=1e-5
  )


@pytest.fixture
def legacy_run(tmp_path) -> tuple[ml_collections.ConfigDict, pathlib.Path]:
  workdir = tmp_path / "run"
  shutil.copytree(LEGACY / "run", workdir)
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  return config, workdir


def test_training_checkpoint_restores_the_ema_model(legacy_run, inputs):
  config, workdir = legacy_run
  model, step = reports.load_model(config, workdir, "latest")
  assert step == 2
  np.testing.assert_allclose(
    np.asarray(model(*inputs)), np.load(LEGACY / "run" / "fused_ema.npy"), rtol=1e-5, atol=1e-5
  )


def test_training_checkpoint_restores_every_item_for_resuming(legacy_run):
  config, workdir = legacy_run
  _, fresh = state.create(config)
  batches = train_input.train_batches(config)
  with checkpointing.RunCheckpoints(
    workdir / "checkpoints", config.ckpt, create=False
  ) as checkpoints:
    restored = checkpoints.restore(2, fresh, batches)
  assert int(state.step(restored)) == 2
  assert restored.ema is not None
  next(batches)  # the iterator resumes from the saved position
  # That code kept Adam's moments per parameter; they come back raveled in the parameters'
  # order (optax.flatten's), each equal to the stored arrays.
  stored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "2" / "opt")
  adam = stored["opt_state"]["0"]
  for moment in ("mu", "nu"):
    expected = [
      np.ravel(
        functools.reduce(lambda tree, key: tree[tree_shapes.key_name(key)], path, adam[moment])
      )
      for path, _ in jax.tree_util.tree_leaves_with_path(nnx.filter_state(fresh.model, nnx.Param))
    ]
    np.testing.assert_array_equal(
      restored.opt["opt_state"][0][moment][...], np.concatenate(expected)
    )
