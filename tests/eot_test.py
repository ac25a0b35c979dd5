"""Augmentation-aware (expectation over transformations) noise steps:
the PGD direction is the sign of the gradient of the loss averaged over
the drawn augmentations; off, the paper's step is unchanged."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest

from ue_jax.core import augment as augment_lib
from ue_jax.core import noise as noise_lib
from ue_jax.core import steps
from ue_jax.io import data as data_lib
from tests import helpers

EPS, ALPHA = 16 / 255, 1.6 / 255


class PgdEotTest(absltest.TestCase):

  def test_key_free_loss_gives_plain_pgd(self):
    x = jnp.linspace(0.1, 0.9, 12).reshape(3, 4)
    target = jnp.linspace(1.0, 0.0, 12).reshape(3, 4)
    loss = lambda im: jnp.sum((im - target) ** 3)
    plain = noise_lib.pgd(loss, x, jnp.zeros_like(x), eps=0.1,
                          step_size=0.03, num_steps=3)
    eot = noise_lib.pgd_eot(lambda im, k: loss(im), x, jnp.zeros_like(x),
                            jax.random.key(0), eps=0.1, step_size=0.03,
                            num_steps=3)
    chex.assert_trees_all_equal(plain, eot)

  def test_step_t_uses_key_t(self):
    # loss = sum(im * s(key)) with s = +-1: descent moves delta by -step*s.
    x = jnp.full((2, 5), 0.5)
    key = jax.random.key(3)
    s = lambda k: jax.random.rademacher(k, x.shape, jnp.float32)
    d = noise_lib.pgd_eot(lambda im, k: jnp.sum(im * s(k)), x,
                          jnp.zeros_like(x), key, eps=1.0, step_size=0.01,
                          num_steps=2)
    want = -0.01 * (s(jax.random.fold_in(key, 0))
                    + s(jax.random.fold_in(key, 1)))
    chex.assert_trees_all_close(d, want, atol=1e-7)


def _trained_tiny_state():
  """A tiny model after one model step (so BatchNorm has statistics), its
  16-image dataset, and a batch of its first 8 images."""
  ds = helpers.synthetic(n=16)
  state, _ = jax.jit(steps.model_step)(
      helpers.tiny_state(ds), data_lib.gather(ds, np.arange(16)))
  return ds, state, data_lib.gather(ds, np.arange(8))


class EotNoiseStepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds, cls.state, cls.batch = _trained_tiny_state()

  def test_one_step_is_sign_of_the_averaged_gradient(self):
    r = 3
    new, _ = jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=1,
        eot_augment="crop_flip", eot_samples=r))(self.state, self.batch)
    got = steps.batch_noise(new, self.batch)
    # Independent: a Python loop over the r draws of step 0's key.
    state, batch = self.state, self.batch
    x = noise_lib.to_float(batch["image"])
    keys = jax.random.split(jax.random.fold_in(steps.eot_key(state, batch),
                                               0), r)

    def avg_loss(images):
      total = 0.0
      for i in range(r):
        aug_key = jax.random.split(keys[i])[0]  # [1]: REM's adversary
        aug = augment_lib.augment(aug_key, images, kind="crop_flip", pad=4)
        logits = state.apply_fn(state.variables, aug, train=False)
        total += jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["label"]) * batch["mask"])
      return total / r

    g = jax.grad(avg_loss)(x)
    want = noise_lib.project(-ALPHA * jnp.sign(g), x, eps=EPS)
    chex.assert_trees_all_close(got, want, atol=1e-7)
    # And it differs from the un-augmented step.
    plain, _ = jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=1))(
            self.state, self.batch)
    self.assertFalse(np.array_equal(steps.batch_noise(plain, self.batch),
                                    got))

  def test_bound_steps_off_is_the_paper_step(self):
    off = steps.bound_steps(eps=EPS, step_size=ALPHA, num_steps=2)[1]
    self.assertNotIn("eot_augment", off.keywords)
    on = steps.bound_steps(eps=EPS, step_size=ALPHA, num_steps=2,
                           eot_augment="crop", eot_samples=2)[1]
    self.assertEqual((on.keywords["eot_augment"],
                      on.keywords["eot_samples"]), ("crop", 2))


class RemTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds, cls.state, cls.batch = _trained_tiny_state()

  def test_attack_ascends_to_the_corner_of_its_ball(self):
    # loss = sum((im - t)^2) with t far below/above: ascent moves every
    # pixel by `radius` away from t, from any start inside the ball.
    x = jnp.array([[0.3, 0.5, 0.7]])
    t = jnp.array([[0.0, 1.0, 0.0]])
    adv = steps.Adversary(radius=0.05, steps=8, step_size=0.02)
    out = adv.attack(lambda im: jnp.sum((im - t) ** 2), x,
                     jax.random.key(0))
    chex.assert_trees_all_close(out, jnp.array([[0.35, 0.45, 0.75]]),
                                atol=1e-6)

  def test_zero_steps_draw_a_uniform_point_of_the_ball_whatever_the_loss(self):
    # SEM's point (rem_steps=0): the uniform start itself, the same for any
    # loss, within the radius, inside [0, 1], spread over the whole ball.
    x = jax.random.uniform(jax.random.key(1), (64, 8, 8, 3), minval=0.1,
                           maxval=0.9)
    sem = steps.Adversary(radius=4 / 255, steps=0, step_size=1 / 255)
    key = jax.random.key(2)
    up = sem.attack(jnp.sum, x, key)
    down = sem.attack(lambda im: -jnp.sum(im ** 2), x, key)
    chex.assert_trees_all_equal(up, down)
    eta = up - x
    self.assertLessEqual(float(jnp.max(jnp.abs(eta))), 4 / 255 + 1e-6)
    # uniform on [-r, r]: mean |eta| = r / 2, and both signs about equally
    self.assertAlmostEqual(float(jnp.mean(jnp.abs(eta))) * 255, 2.0,
                           delta=0.05)
    self.assertAlmostEqual(float(jnp.mean(eta > 0)), 0.5, delta=0.02)
    # at the edges of [0, 1] the point is clipped into the image range
    edges = jnp.concatenate([jnp.zeros_like(x[:32]), jnp.ones_like(x[32:])])
    clipped = sem.attack(jnp.sum, edges, key)
    self.assertGreaterEqual(float(jnp.min(clipped)), 0.0)
    self.assertLessEqual(float(jnp.max(clipped)), 1.0)
    self.assertGreater(float(jnp.max(clipped[:32])), 0.0)
    self.assertLess(float(jnp.min(clipped[32:])), 1.0)
    with_steps = steps.Adversary(radius=4 / 255, steps=2, step_size=4 / 255)
    climbed = with_steps.attack(jnp.sum, x, key) - x
    # two ascent steps on sum(im) push every pixel to the top of the ball
    chex.assert_trees_all_close(climbed, jnp.full_like(x, 4 / 255),
                                atol=1e-6)

  def test_zero_radius_model_step_is_the_plain_step(self):
    plain, _ = jax.jit(steps.model_step)(self.state, self.batch)
    zero = steps.Adversary(radius=0.0, steps=2, step_size=0.01)
    robust, _ = jax.jit(functools.partial(steps.model_step, adv=zero))(
        self.state, self.batch)
    chex.assert_trees_all_close(plain.params, robust.params, atol=1e-6)
    some = steps.Adversary(radius=8 / 255, steps=2, step_size=4 / 255)
    moved, _ = jax.jit(functools.partial(steps.model_step, adv=some))(
        self.state, self.batch)
    leaves = jax.tree.leaves(jax.tree.map(
        lambda a, b: jnp.max(jnp.abs(a - b)), moved.params, plain.params))
    self.assertGreater(float(max(leaves)), 1e-6)

  def test_noise_gradient_is_taken_at_the_fixed_adversarial_point(self):
    adv = steps.Adversary(radius=4 / 255, steps=3, step_size=2 / 255)
    r = 2
    new, _ = jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=1,
        eot_augment="crop", eot_samples=r, adv=adv))(self.state, self.batch)
    got = steps.batch_noise(new, self.batch)
    state, batch = self.state, self.batch
    x = noise_lib.to_float(batch["image"])
    loss = steps._eval_loss(state, batch["label"], batch["mask"])
    keys = jax.random.split(jax.random.fold_in(steps.eot_key(state, batch),
                                               0), r)
    etas, aug_keys = [], []
    for i in range(r):
      aug_key, adv_key = jax.random.split(keys[i])
      seen = augment_lib.augment(aug_key, x, kind="crop", pad=4)
      etas.append(adv.attack(loss, seen, adv_key) - seen)
      aug_keys.append(aug_key)
    # Danskin: grad of the mean loss at t(x) + eta with eta held fixed.
    g = jax.grad(lambda im: sum(
        loss(augment_lib.augment(k, im, kind="crop", pad=4) + e)
        for k, e in zip(aug_keys, etas)) / r)(x)
    want = noise_lib.project(-ALPHA * jnp.sign(g), x, eps=EPS)
    chex.assert_trees_all_close(got, want, atol=1e-7)
    self.assertLessEqual(float(jnp.max(jnp.abs(jnp.stack(etas)))),
                         4 / 255 + 1e-6)


if __name__ == "__main__":
  absltest.main()
