"""The noise math: projection, PGD sign convention, release bounds."""

from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from ue_jax.core import noise as noise_lib


class ProjectTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_inside_ball_and_unit_box_and_idempotent(self):
    key_x, key_d = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(key_x, (8, 5, 5, 3))
    delta = jax.random.normal(key_d, x.shape)  # far outside the ball
    eps = 8 / 255
    project = self.variant(lambda d, x: noise_lib.project(d, x, eps=eps))
    p = project(delta, x)
    self.assertLessEqual(float(jnp.max(jnp.abs(p))), eps + 1e-7)
    chex.assert_trees_all_equal(jnp.all(x + p >= -1e-7), True)
    chex.assert_trees_all_equal(jnp.all(x + p <= 1 + 1e-7), True)
    chex.assert_trees_all_close(project(p, x), p, atol=1e-7)

  def test_keeps_points_already_feasible(self):
    x = jnp.full((4, 4), 0.5)
    d = jnp.linspace(-0.01, 0.01, 16).reshape(4, 4)
    chex.assert_trees_all_close(noise_lib.project(d, x, eps=0.02), d,
                                atol=1e-7)

  def test_pgd_descends_a_quadratic(self):
    # loss = sum((x - t)^2): descent moves each pixel toward t by step_size.
    x = jnp.full((2, 3), 0.5)
    target = jnp.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.6]])
    loss = lambda im: jnp.sum((im - target) ** 2)
    d = noise_lib.pgd(loss, x, jnp.zeros_like(x), eps=0.1, step_size=0.03,
                      num_steps=2)
    expected = jnp.array([[-0.06, 0.06, 0.0], [0.06, -0.06, 0.06]])
    chex.assert_trees_all_close(d, expected, atol=1e-6)
    up = noise_lib.pgd(loss, x, jnp.zeros_like(x), eps=0.1, step_size=0.03,
                       num_steps=2, maximize=True)
    chex.assert_trees_all_close(up[0, :2], -expected[0, :2], atol=1e-6)

  def test_pgd_respects_eps_after_many_steps(self):
    x = jnp.full((3,), 0.5)
    loss = lambda im: jnp.sum(im)
    d = noise_lib.pgd(loss, x, jnp.zeros_like(x), eps=0.05, step_size=0.02,
                      num_steps=40)
    chex.assert_trees_all_close(d, jnp.full((3,), -0.05), atol=1e-7)

class UnrollTest(parameterized.TestCase):
  """PGD's scan is unrolled for CPU only: for another platform the program
  holds one rolled loop with one copy of the step, and both programs give
  the same noise."""

  def setUp(self):
    super().setUp()
    k1, k2 = jax.random.split(jax.random.key(0))
    self.x = jax.random.uniform(k1, (4, 6, 6, 2))
    w = jax.random.normal(k2, (6 * 6 * 2, 3))
    self.loss = lambda im: jnp.sum(jnp.tanh(im.reshape(4, -1) @ w) ** 2)
    self.eot_loss = lambda im, key: self.loss(
        im + 0.01 * jax.random.normal(key, im.shape))

  def program(self, eot: bool, platform, num_steps=7):
    if eot:
      fn = lambda x, d: noise_lib.pgd_eot(
          self.eot_loss, x, d, jax.random.key(3), eps=0.1, step_size=0.02,
          num_steps=num_steps, platform=platform)
    else:
      fn = lambda x, d: noise_lib.pgd(
          self.loss, x, d, eps=0.1, step_size=0.02, num_steps=num_steps,
          platform=platform)
    return jax.jit(fn), (self.x, jnp.zeros_like(self.x))

  def step_copies(self, eot: bool, platform):
    """(the unroll of the jaxpr's scan, sign ops (one per copy of the PGD
    step) in the program XLA compiled, while loops in the lowered program)."""
    fn, args = self.program(eot, platform)
    (scan,) = [e for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns[0].params[
        "jaxpr"].eqns if e.primitive.name == "scan"]
    lowered = fn.lower(*args)
    return (scan.params["unroll"],
            lowered.compile().as_text().count(" sign("),
            lowered.as_text().count("stablehlo.while"))

  @parameterized.parameters(False, True)
  def test_rolled_off_cpu_unrolled_on_cpu(self, eot):
    # EOT's random draws bring two loops of their own (threefry).
    extra = 2 if eot else 0
    self.assertEqual(self.step_copies(eot, "gpu"), (1, 1, 1 + extra))
    self.assertEqual(self.step_copies(eot, "tpu"), (1, 1, 1 + extra))
    self.assertEqual(self.step_copies(eot, "cpu"), (7, 7, extra))

  @parameterized.parameters(False, True)
  def test_same_noise_either_way(self, eot):
    fn_cpu, args = self.program(eot, "cpu")
    fn_gpu, _ = self.program(eot, "gpu")
    rolled, unrolled = fn_gpu(*args), fn_cpu(*args)
    self.assertGreater(float(jnp.max(jnp.abs(rolled))), 0.05)  # it moved
    chex.assert_trees_all_equal(rolled, unrolled)

  def test_length_and_default_platform(self):
    self.assertEqual(noise_lib.unroll_length(7, "cpu"), 7)
    self.assertEqual(noise_lib.unroll_length(200, "cpu"),
                     noise_lib.MAX_UNROLL)
    self.assertEqual(noise_lib.unroll_length(200, "gpu"), 1)
    # No platform: JAX's default backend when the step is traced.
    with mock.patch.object(jax, "default_backend", return_value="gpu"):
      self.assertEqual(noise_lib.unroll_length(20), 1)
    with mock.patch.object(jax, "default_backend", return_value="cpu"):
      self.assertEqual(noise_lib.unroll_length(20), 20)


class ReleaseTest(parameterized.TestCase):

  @parameterized.parameters(8 / 255, 16 / 255, 0.1, 1.0)
  def test_uint8_bound(self, eps):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    x = images / 255.0
    delta = np.clip(x + rng.uniform(-eps, eps, images.shape), 0, 1) - x
    released = noise_lib.release_images(images, delta, eps=eps)
    self.assertEqual(released.dtype, np.uint8)
    change = np.abs(released.astype(int) - images.astype(int))
    self.assertLessEqual(change.max(), eps * 255 + 1e-9)
    self.assertGreater(change.max(), 0)

  def test_rounds_to_nearest(self):
    images = np.array([[100, 100, 100, 0, 255]], np.uint8)
    delta = np.array([[2.4, -2.6, 7.99, -3.0, 3.0]]) / 255
    released = noise_lib.release_images(images, delta, eps=8 / 255)
    np.testing.assert_array_equal(released, [[102, 97, 108, 0, 255]])

  def test_paper_release_is_one_sided_and_floors(self):
    images = np.array([[100, 100, 100]], np.uint8)
    delta = np.array([[1.6, -4.0, 7.99]]) / 255
    released = noise_lib.release_images(images, delta, eps=8 / 255,
                                        paper_release=True)
    np.testing.assert_array_equal(released, [[101, 100, 107]])

  def test_eps_a_hair_below_k_over_255_is_snapped(self):
    for given, want in ((0.0313725, 8 / 255), (8 / 255, 8 / 255),
                        (16 / 255 + 5e-5, 16 / 255), (0.03, 0.03),
                        (1.0, 1.0), (1e-5, 1e-5)):
      self.assertEqual(noise_lib.snap_eps(given), want, given)
    self.assertEqual(noise_lib.max_delta_u8(noise_lib.snap_eps(0.0313725)),
                     8)
    self.assertEqual(noise_lib.max_delta_u8(0.0313725), 7)  # the trap

  def test_jax_and_numpy_agree(self):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 5, 5, 1), dtype=np.uint8)
    delta = rng.uniform(-8 / 255, 8 / 255, images.shape).astype(np.float32)
    a = noise_lib.release_images(images, delta, eps=8 / 255)
    b = noise_lib.release_images(jnp.asarray(images), jnp.asarray(delta),
                                 eps=8 / 255)
    np.testing.assert_array_equal(a, np.asarray(b))


if __name__ == "__main__":
  absltest.main()
