"""The min-min steps: sign of the noise update, which state each step touches,
which noise rows change, and that each jitted step compiles once."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest

from ue_jax.io import data as data_lib
from ue_jax.core import noise as noise_lib
from ue_jax.core import steps
from ue_jax.parallel import sharding
from ue_jax.training import train as train_lib
from tests import helpers

EPS, ALPHA, K = 8 / 255, 0.8 / 255, 5


def loss_with_noise(state, batch):
  """Mean loss of the frozen model on clip(x + noise[index])."""
  return helpers.mean_loss(state, batch, steps.batch_noise(state, batch))


class StepsTest(chex.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds = helpers.synthetic(n=48)
    state = helpers.tiny_state(cls.ds)
    # Train a few steps so the model is not at its initial point.
    model_step = jax.jit(steps.model_step)
    for rows in [np.arange(16), np.arange(16, 32), np.arange(32, 48)] * 2:
      state, _ = model_step(state, data_lib.gather(cls.ds, rows))
    cls.state = state
    # staticmethod: a jitted function stored on a class would bind `self`.
    cls.noise_step = staticmethod(jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=K)))
    cls.max_step = staticmethod(jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=K,
        maximize=True)))

  def test_noise_step_lowers_the_loss(self):
    batch = data_lib.gather(self.ds, np.arange(16))
    before = loss_with_noise(self.state, batch)
    after_min = loss_with_noise(self.noise_step(self.state, batch)[0], batch)
    after_max = loss_with_noise(self.max_step(self.state, batch)[0], batch)
    self.assertLess(after_min, before - 1e-3)   # error-minimizing
    self.assertGreater(after_max, before + 1e-3)  # the bug to fear

  def test_only_batch_rows_change(self):
    rows = np.array([3, 7, 20, 21, 40, 48, 48, 48], np.int32)  # 48 = padding
    batch = data_lib.gather(self.ds, rows)
    new = self.noise_step(self.state, batch)[0].noise
    changed = np.flatnonzero(np.abs(np.asarray(new)).reshape(48, -1).max(1))
    np.testing.assert_array_equal(changed, [3, 7, 20, 21, 40])
    self.assertLessEqual(float(jnp.max(jnp.abs(new))), EPS + 1e-7)

  def test_noise_step_touches_only_noise(self):
    batch = data_lib.gather(self.ds, np.arange(16))
    new = self.noise_step(self.state, batch)[0]
    chex.assert_trees_all_equal(
        (new.params, new.batch_stats, new.opt_state, new.step, new.rng),
        (self.state.params, self.state.batch_stats, self.state.opt_state,
         self.state.step, self.state.rng))
    self.assertFalse(np.array_equal(new.noise, self.state.noise))

  def test_model_step_touches_no_noise(self):
    state = self.state.replace(noise=jnp.full_like(self.state.noise, 0.01))
    new, metrics = jax.jit(steps.model_step)(
        state, data_lib.gather(self.ds, np.arange(16)))
    chex.assert_trees_all_equal(new.noise, jnp.full_like(state.noise, 0.01))
    self.assertEqual(int(new.step), int(state.step) + 1)
    chex.assert_tree_all_finite(metrics)
    leaves = zip(jax.tree.leaves(new.params), jax.tree.leaves(
        self.state.params))
    self.assertTrue(any(not np.array_equal(a, b) for a, b in leaves))

  def test_model_step_sees_the_noise(self):
    batch = data_lib.gather(self.ds, np.arange(16))
    noisy = self.state.replace(noise=jnp.full_like(self.state.noise, EPS))
    step = jax.jit(steps.model_step)
    a = step(self.state, batch)[1]["loss"]
    b = step(noisy, batch)[1]["loss"]
    self.assertNotAlmostEqual(float(a), float(b), places=5)

  def test_model_step_loss_and_accuracy_count_only_valid_rows(self):
    rows = np.array([5, 9, 14, 30, 47, 48, 48, 48], np.int32)  # 48: padding
    batch = data_lib.gather(self.ds, rows)
    _, metrics = jax.jit(steps.model_step)(self.state, batch)
    # The same forward pass (train mode, zero noise, no augmentation); the
    # mean over the 5 valid rows only.
    logits, _ = self.state.apply_fn(
        self.state.variables, noise_lib.to_float(batch["image"]), train=True,
        mutable=["batch_stats"])
    logits, labels = np.asarray(logits)[:5], batch["label"][:5]
    want = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    self.assertAlmostEqual(float(metrics["loss"]), float(want.mean()),
                           places=5)
    hits = np.argmax(logits, -1) == labels
    self.assertAlmostEqual(float(metrics["accuracy"]), hits.mean(), places=6)

  def test_model_steps_refuse_padded_batches(self):
    # BatchNorm's batch statistics would count the padding rows: the drivers'
    # model steps take full batches only.
    placement = sharding.Placement(sharding.make_mesh(1))
    shardings = placement.state_shardings(self.state)
    step = placement.jit_step(steps.model_step, shardings, full_batches=True)
    state = jax.tree.map(jnp.copy, self.state)
    with self.assertRaisesRegex(ValueError, "full batches only"):
      step(state, data_lib.gather(self.ds, np.array([0, 1, 48, 48])))
    state, _ = step(state, data_lib.gather(self.ds, np.arange(4)))
    self.assertEqual(int(state.step), int(self.state.step) + 1)

  def test_eval_step_counts_only_valid_rows(self):
    rows = np.array([0, 1, 2, 48, 48], np.int32)
    batch = data_lib.gather(self.ds, rows)
    out = steps.eval_step(self.state, batch)
    self.assertEqual(float(out["count"]), 3.0)
    # Against the predictions and losses of the 3 valid rows alone.
    valid = data_lib.gather(self.ds, rows[:3])
    logits = self.state.apply_fn(self.state.variables,
                                 noise_lib.to_float(valid["image"]),
                                 train=False)
    hits = np.argmax(np.asarray(logits), -1) == valid["label"]
    self.assertEqual(float(out["correct"]), float(hits.sum()))
    self.assertAlmostEqual(float(out["loss"]), 3 * helpers.mean_loss(
        self.state, valid, 0.0), places=4)

  def test_confusion_matrix_matches_the_predictions(self):
    rows = np.array([0, 1, 2, 3, 4, 5, 48, 48], np.int32)
    batch = data_lib.gather(self.ds, rows)
    out = steps.eval_step(self.state, batch)
    logits = self.state.apply_fn(self.state.variables,
                                 noise_lib.to_float(batch["image"]),
                                 train=False)
    pred = np.argmax(np.asarray(logits), -1)[:6]
    want = np.zeros(out["confusion"].shape)
    np.add.at(want, (np.asarray(batch["label"])[:6], pred), 1)
    chex.assert_trees_all_equal(np.asarray(out["confusion"]), want)
    self.assertEqual(float(np.trace(want)), float(out["correct"]))

  def test_each_step_compiles_once(self):
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)
    def model_fn(state, batch):
      return steps.model_step(state, batch)

    @chex.assert_max_traces(n=1)
    def noise_fn(state, batch):
      return steps.noise_step(state, batch, eps=EPS, step_size=ALPHA,
                              num_steps=2)

    @chex.assert_max_traces(n=1)
    def eval_fn(state, batch):
      return steps.eval_step(state, batch, release_eps=EPS)

    model_step = jax.jit(model_fn, donate_argnums=0)
    noise_step = jax.jit(noise_fn, donate_argnums=0)
    eval_step = jax.jit(eval_fn)
    state = jax.tree.map(jnp.copy, self.state)  # donated below
    model_batches = train_lib.cycle_batches(48, 16)
    for _ in range(3):  # three "rounds"
      state, _ = model_step(state, data_lib.gather(self.ds, next(
          model_batches)))
      for rows in data_lib.batches(48, 20):  # last batch is padded
        state, _ = noise_step(state, data_lib.gather(self.ds, rows))
        eval_step(state, data_lib.gather(self.ds, rows))


if __name__ == "__main__":
  absltest.main()
