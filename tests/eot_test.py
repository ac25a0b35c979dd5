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


class EotNoiseStepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds = helpers.synthetic(n=16)
    state = helpers.tiny_state(cls.ds)
    state, _ = jax.jit(steps.model_step)(state,
                                         data_lib.gather(cls.ds,
                                                         np.arange(16)))
    cls.state = state
    cls.batch = data_lib.gather(cls.ds, np.arange(8))

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
        aug = augment_lib.augment(keys[i], images, kind="crop_flip", pad=4)
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


if __name__ == "__main__":
  absltest.main()
