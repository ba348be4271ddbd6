"""S4Fusion's loss terms: known values, kornia's DSSIM conventions, weights, the ResNet switch."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax.layers import resnet
from fusionjax.losses import s4fusion as loss_lib

from model_testing import fast_jit, fill_random


def _images(seed, shape=(2, 24, 20, 1)):
  return jax.random.uniform(jax.random.key(seed), shape)


def test_sobel_of_a_ramp_is_eight_inside_and_zero_padded_at_the_border():
  ramp = jnp.broadcast_to(jnp.arange(6.0)[None, None, :, None], (1, 5, 6, 1))
  edges = np.asarray(loss_lib.sobel(ramp))[0, :, :, 0]
  np.testing.assert_allclose(edges[1:-1, 1:-1], 8.0)
  # top-left corner with zero padding: Gx = 2*1 + 1*1 = 3, Gy = -(2*0 + 1*1) = -1
  assert edges[0, 0] == pytest.approx(4.0)


def test_dssim_is_zero_for_identical_images_and_symmetric():
  a, b = _images(0), _images(1)
  assert float(jnp.max(loss_lib.dssim_map(a, a))) < 1e-6
  np.testing.assert_allclose(loss_lib.dssim_map(a, b), loss_lib.dssim_map(b, a), atol=1e-6)
  # Independent uniform noise is nearly uncorrelated: SSIM ~ 0, DSSIM ~ 1/2 (kornia: 0.504).
  assert 0.45 < float(jnp.mean(loss_lib.dssim_map(a, b))) < 0.55


def test_entropy_of_uniform_and_confident_predictions():
  assert float(loss_lib.entropy_loss(jnp.zeros((3, 1000)))) == pytest.approx(np.log(1000), rel=1e-4)
  confident = jnp.zeros((2, 1000)).at[:, 7].set(100.0)
  assert float(loss_lib.entropy_loss(confident)) < 1e-3


def test_information_weights_prefer_the_source_with_stronger_gradients():
  flat = [jnp.ones((2, 8, 8, 4))] * 4
  textured = [jnp.tile(jnp.array([0.0, 3.0]), (2, 8, 4, 4)).reshape(2, 8, 8, 4)] * 4
  w_ir, w_vis = loss_lib.information_weights(textured, flat, temperature=100.0)
  np.testing.assert_allclose(w_ir + w_vis, 1.0, rtol=1e-6)
  assert w_ir.shape == (2,) and bool(jnp.all(w_ir > w_vis))
  grad = jax.grad(lambda f: loss_lib.information_weights(f, flat, 100.0)[0].sum())(textured)
  assert all(float(jnp.abs(g).max()) == 0 for g in grad)


def test_weighted_terms_follow_their_definitions():
  ir, vis, fused = _images(2), _images(3), _images(4)
  w_ir, w_vis = jnp.array([0.2, 0.9]), jnp.array([0.8, 0.1])
  l1 = loss_lib.weighted_l1_loss(ir, vis, fused, w_ir, w_vis)
  want = (
    np.mean(0.2 * np.abs(ir - fused)[0]) / 2
    + np.mean(0.9 * np.abs(ir - fused)[1]) / 2
    + np.mean(0.8 * np.abs(vis - fused)[0]) / 2
    + np.mean(0.1 * np.abs(vis - fused)[1]) / 2
  )
  assert float(l1) == pytest.approx(float(want), rel=1e-5)
  grad = loss_lib.gradient_loss(ir, vis, fused)
  strongest = jnp.maximum(loss_lib.sobel(vis), loss_lib.sobel(ir))
  assert float(grad) == pytest.approx(float(jnp.mean(jnp.abs(strongest - loss_lib.sobel(fused)))))
  assert float(loss_lib.gradient_loss(ir, vis, jnp.maximum(ir, vis) * 0)) > 0


def test_without_resnet_the_entropy_term_is_off_with_a_warning(caplog):
  with caplog.at_level(logging.WARNING):
    loss = loss_lib.S4FusionLoss()
  assert "entropy" in caplog.text and "ResNet-50" in caplog.text
  ir, vis, fused = _images(5), _images(6), _images(7)
  total, terms = loss(ir, vis, fused)
  assert set(terms) == {"ssim", "l1", "gradient"}
  half = jnp.full((2,), 0.5)
  assert float(terms["l1"]) == pytest.approx(
    float(loss_lib.weighted_l1_loss(ir, vis, fused, half, half))
  )
  assert float(total) == pytest.approx(float(sum(terms.values())))


def test_with_resnet_all_four_terms_are_differentiable():
  net = fill_random(nnx.eval_shape(lambda: resnet.ResNet50(rngs=nnx.Rngs(0))), seed=1)
  net.eval()
  ir, vis, fused = (_images(seed, (1, 32, 32, 1)) for seed in (8, 9, 10))

  def value_and_grad(net, ir, vis, fused):
    objective = loss_lib.S4FusionLoss(net, temperature=10.0)
    return jax.value_and_grad(lambda f: objective(ir, vis, f)[0], has_aux=False)(fused), objective(
      ir, vis, fused
    )[1]

  (total, grad), terms = fast_jit(value_and_grad)(net, ir, vis, fused)
  assert set(terms) == {"ssim", "l1", "gradient", "entropy"}
  assert 0 < float(terms["entropy"]) <= np.log(1000) + 1e-3
  assert np.isfinite(float(total)) and bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.abs(grad).max()) > 0
