"""Class-wise noise: the clipped-mean update, indexing by label, and the
release of noise[label]; the random and error-maximizing baselines."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from configs import test_tiny
from ue_jax.io import data as data_lib
from ue_jax.training import layouts
from ue_jax.core import noise as noise_lib
from ue_jax.evaluation import release
from ue_jax.core import steps
from tests import helpers

EPS, ALPHA = 8 / 255, 0.8 / 255


class ClassMeanTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_made_case(self):
    # Three classes; class 2 is absent, and one row of class 0 is padding.
    old = jnp.array([[0.01, 0.0], [0.0, -0.02], [0.03, 0.03]])
    per_sample = jnp.array([[0.02, -0.04],   # class 0
                            [0.04, 0.02],    # class 0
                            [0.5, 0.5],      # class 0, padding (mask 0)
                            [-0.01, 0.01],   # class 1
                            [0.03, 0.05]])   # class 1
    labels = jnp.array([0, 0, 0, 1, 1])
    mask = jnp.array([1.0, 1.0, 0.0, 1.0, 1.0])
    new = self.variant(functools.partial(noise_lib.class_mean, eps=0.025))(
        old, per_sample, labels, mask)
    expected = jnp.array([[0.025, -0.01],   # mean of rows 0, 1; clipped
                          [0.01, 0.025],    # mean of rows 3, 4; 0.03 clipped
                          [0.03, 0.03]])    # absent: unchanged
    chex.assert_trees_all_close(new, expected, atol=1e-7)


class ClasswiseStepTest(chex.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds = helpers.synthetic(n=48)  # 4 classes
    state = helpers.tiny_state(cls.ds)
    model_step = jax.jit(steps.model_step)
    for rows in [np.arange(16), np.arange(16, 32), np.arange(32, 48)] * 2:
      state, _ = model_step(state, data_lib.gather(cls.ds, rows))
    key = jax.random.key(3)
    cls.state = state.replace(noise=noise_lib.random_noise(
        key, (4,) + cls.ds.images.shape[1:], eps=EPS / 2))
    cls.step = staticmethod(jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=1,
        layout="classwise")))

  def test_update_is_the_mean_of_per_sample_updates(self):
    rows = np.array([0, 1, 2, 5, 6, 9, 13, 48], np.int32)  # no class-3 row
    batch = data_lib.gather(self.ds, rows)
    new = np.asarray(self.step(self.state, batch)[0].noise)
    # Per-sample reference: sample-wise noise rows set to their class noise,
    # one sample-wise PGD step each, then the per-class clipped mean by hand.
    sample = self.state.replace(noise=self.state.noise[self.ds.labels])
    per = steps.noise_step(sample, batch, eps=EPS, step_size=ALPHA,
                           num_steps=1)[0].noise
    labels = self.ds.labels
    for c in range(4):
      members = rows[(rows < 48)][labels[rows[rows < 48]] == c]
      if len(members):
        expected = np.clip(np.mean(np.asarray(per)[members], 0), -EPS, EPS)
      else:
        expected = np.asarray(self.state.noise[c])
      np.testing.assert_allclose(new[c], expected, atol=1e-6, err_msg=str(c))
    self.assertFalse(np.allclose(new[0], self.state.noise[0]))

  def test_noise_follows_labels(self):
    new = self.step(self.state, data_lib.gather(self.ds, np.arange(16)))[0]
    per = layouts.per_example("classwise", np.asarray(new.noise),
                              self.ds.labels)
    for c in range(4):
      members = per[self.ds.labels == c]
      np.testing.assert_array_equal(members, np.broadcast_to(
          members[0], members.shape))
      for d in range(c):
        self.assertGreater(np.abs(per[self.ds.labels == d][0] - members[0])
                           .max(), 1e-4)
    # And the batch noise that the steps see is the same: noise[label].
    batch = data_lib.gather(self.ds, np.array([5, 6, 48], np.int32))
    got = steps.batch_noise(new, batch, layout="classwise")
    chex.assert_trees_all_equal(got[:2], new.noise[self.ds.labels[[5, 6]]])
    chex.assert_trees_all_equal(got[2], jnp.zeros_like(got[2]))  # padding

  def test_descends_and_max_ascends_the_loss(self):
    batch = data_lib.gather(self.ds, np.arange(48))
    up = jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=1,
        layout="classwise", maximize=True))
    state = self.state
    noise_of = lambda s: s.noise[self.ds.labels]
    before = helpers.mean_loss(state, batch, noise_of(state))
    down_state, up_state = state, state
    for _ in range(3):
      down_state = self.step(down_state, batch)[0]
      up_state = up(up_state, batch)[0]
    self.assertLess(helpers.mean_loss(state, batch, noise_of(down_state)),
                    before - 1e-3)
    self.assertGreater(helpers.mean_loss(state, batch, noise_of(up_state)),
                       before + 1e-3)

  def test_release_applies_the_class_noise(self):
    cfg = test_tiny.get_config()
    cfg.noise.layout = "classwise"
    # Mid-grey images, so no pixel is clipped and the change is the noise.
    ds = self.ds.replace_images(np.full_like(self.ds.images, 128))
    noise = np.stack([np.full(ds.images.shape[1:], v, np.float32)
                      for v in (-6, -2, 3, 7)]) / 255
    out = release.run(cfg, ds, self.create_tempdir().full_path, noise=noise)
    images = np.load(out["release_path"])["images"].astype(int) - 128
    np.testing.assert_array_equal(images[:, 0, 0, 0],
                                  np.array([-6, -2, 3, 7])[ds.labels])


class RandomNoiseTest(absltest.TestCase):

  def test_inside_the_ball_and_uniform(self):
    eps = 16 / 255
    noise = np.asarray(noise_lib.random_noise(jax.random.key(0),
                                              (200, 28, 28, 1), eps=eps))
    self.assertLessEqual(np.abs(noise).max(), eps)
    # U(-eps, eps): mean 0, variance eps^2/3, |noise| uniform on [0, eps].
    self.assertLess(abs(noise.mean()), 0.01 * eps)
    self.assertAlmostEqual(noise.var() / (eps ** 2 / 3), 1.0, delta=0.01)
    hist, _ = np.histogram(noise, bins=10, range=(-eps, eps))
    np.testing.assert_allclose(hist / noise.size, 0.1, atol=0.005)

  def test_patches_are_constant_blocks_of_independent_draws(self):
    eps, p = 16 / 255, 4
    noise = np.asarray(noise_lib.random_noise(
        jax.random.key(1), (10, 30, 29, 2), eps=eps, patch=p))
    self.assertLessEqual(np.abs(noise).max(), eps)
    for i in range(0, 30, p):      # every block (cut at the border) is flat
      for j in range(0, 29, p):
        block = noise[:, i:i + p, j:j + p, :]
        chex.assert_trees_all_equal(block, np.broadcast_to(
            block[:, :1, :1, :], block.shape))
    grid = noise[:, ::p, ::p, :]    # one value per block, 10*8*8*2 of them
    self.assertEqual(grid.shape, (10, 8, 8, 2))
    self.assertGreater(len(np.unique(grid)), 0.99 * grid.size)
    self.assertAlmostEqual(grid.var() / (eps ** 2 / 3), 1.0, delta=0.1)
    # patch 1 is the per-entry baseline, draw for draw
    chex.assert_trees_all_equal(
        noise_lib.random_noise(jax.random.key(2), (3, 5, 5, 1), eps=eps),
        jax.random.uniform(jax.random.key(2), (3, 5, 5, 1), minval=-eps,
                           maxval=eps))

  def test_sign_values_are_plus_or_minus_eps_with_equal_odds(self):
    eps = 8 / 255
    noise = np.asarray(noise_lib.random_noise(
        jax.random.key(3), (100, 14, 14, 3), eps=eps, patch=2,
        values="sign"))
    np.testing.assert_array_equal(np.abs(noise), np.float32(eps))
    self.assertAlmostEqual(float((noise[:, ::2, ::2] > 0).mean()), 0.5,
                           delta=0.02)


class PartialReleaseTest(absltest.TestCase):

  def test_only_selected_examples_change(self):
    ds = helpers.synthetic(n=100, classes=4)
    cfg = test_tiny.get_config()
    noise = np.full(ds.images.shape, 4 / 255, np.float32)
    for rate, classes, count in ((0.3, (), 30), (1.0, (1, 3), 50),
                                 (0.0, (), 0)):
      cfg.partial.rate, cfg.partial.classes = rate, classes
      out = release.run(cfg, ds, self.create_tempdir().full_path,
                        noise=noise)
      with np.load(out["release_path"]) as f:
        images, protected = f["images"], f["protected"]
      changed = np.any(images != ds.images, axis=(1, 2, 3))
      np.testing.assert_array_equal(changed, protected)
      self.assertEqual(protected.sum(), count)
      self.assertEqual(out["protected_count"], count)
      self.assertAlmostEqual(out["poison_rate"], count / 100)
      if classes:
        np.testing.assert_array_equal(protected,
                                      np.isin(ds.labels, classes))
    # Seeded: the same selection every time, another one for another seed.
    a = release.select_protected(ds.labels, rate=0.3, seed=0)
    np.testing.assert_array_equal(
        a, release.select_protected(ds.labels, rate=0.3, seed=0))
    self.assertFalse(np.array_equal(
        a, release.select_protected(ds.labels, rate=0.3, seed=1)))


if __name__ == "__main__":
  absltest.main()
