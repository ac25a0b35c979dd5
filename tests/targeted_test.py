"""Targeted adversarial poisons (noise.kind tap and sep, search/targeted.py):
the target mapping, the ensemble loss, the PGD toward the targets, sep's
checkpoints through pretraining and resume, the config rules, and the CLI
end to end."""

import functools
import json
import os
import shutil
import tempfile

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest

from configs import test_tiny
from ue_jax.config import checks
from ue_jax.core import losses
from ue_jax.core import noise as noise_lib
from ue_jax.core.state import create_state
from ue_jax.io import checkpoint as checkpoint_lib
from ue_jax.io import metrics
from ue_jax.io import workdir as workdir_lib
from ue_jax.parallel import memory
from ue_jax.parallel import sharding
from ue_jax.runtime.errors import UEError
from ue_jax.search import generate
from ue_jax.search import resume
from ue_jax.search import targeted
from tests import helpers

EPS = 8 / 255


class Linear(nn.Module):
  """A fixed linear classifier: its logits move a lot within eps."""
  classes: int

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def linear_state(ds, seed=0):
  return create_state(Linear(ds.num_classes), optax.sgd(0.1), seed=seed,
                      image_shape=ds.images.shape[1:],
                      noise_shape=ds.images.shape)


def whole_batch(ds):
  n = len(ds.labels)
  return {"image": ds.images, "label": ds.labels,
          "index": np.arange(n, dtype=np.int32),
          "mask": np.ones(n, np.float32)}


def target_scores(state, batch, delta, shift):
  """(mean cross-entropy toward the targets, rate of predicted targets) of
  the frozen model on clip(x + delta)."""
  x = noise_lib.perturb(noise_lib.to_float(batch["image"]), delta)
  logits = state.apply_fn(state.variables, x, train=False)
  targets = targeted.target_labels(batch["label"], logits.shape[-1], shift)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return float(loss.mean()), float(jnp.mean(jnp.argmax(logits, -1)
                                            == targets))


def tiny_config(kind, **noise):
  cfg = test_tiny.get_config()
  cfg.noise.kind = kind
  cfg.generate.train_steps = 0
  cfg.generate.pretrain_epochs = 3
  cfg.generate.error_max_stop_accuracy = 0.0  # every round runs
  cfg.generate.min_rounds = cfg.generate.max_rounds = 2
  cfg.noise.num_steps = 2
  cfg.noise.sep_members = 2
  cfg.checkpoint.every_batches = 1
  cfg.checkpoint.max_to_keep = 100
  for key, value in noise.items():
    cfg.noise[key] = value
  return cfg


class TargetsTest(absltest.TestCase):

  def test_the_target_mapping_is_a_derangement(self):
    for classes in range(2, 13):
      labels = jnp.arange(classes)
      shifts = {targeted.shift_for(kind, classes) for kind in targeted.KINDS}
      for shift in shifts | {classes + 1, 3 * classes - 1}:
        with self.subTest(classes=classes, shift=shift):
          t = np.asarray(targeted.target_labels(labels, classes, shift))
          self.assertTrue(np.all(t != np.arange(classes)))  # none keeps its
          np.testing.assert_array_equal(np.sort(t), np.arange(classes))

  def test_the_methods_own_shifts(self):
    self.assertEqual(targeted.shift_for("tap", 10), 1)     # (y + 1) mod K
    self.assertEqual(targeted.shift_for("sep", 10), 5)     # (y + 5) mod 10
    self.assertEqual(targeted.shift_for("sep", 100), 50)   # (y + 50) mod 100
    self.assertEqual(targeted.shift_for("sep", 10, 3), 3)  # given

  def test_member_epochs_evenly_spaced_ending_at_the_last(self):
    # SEP: 30 of 120 epochs are every 4th, the last included.
    self.assertEqual(targeted.member_epochs(120, 30),
                     tuple(range(4, 121, 4)))
    self.assertEqual(targeted.member_epochs(10, 5), (2, 4, 6, 8, 10))
    self.assertEqual(targeted.member_epochs(4, 4), (1, 2, 3, 4))
    self.assertEqual(targeted.member_epochs(7, 1), (7,))
    for epochs in range(1, 30):
      for members in range(1, epochs + 1):
        kept = targeted.member_epochs(epochs, members)
        self.assertLen(set(kept), members)
        self.assertEqual(kept[-1], epochs)
        self.assertGreaterEqual(kept[0], 1)


class EnsembleLossTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    ds = helpers.synthetic(n=16, channels=3)
    # Three members with BatchNorm statistics of their own.
    cls.states = [helpers.tiny_state(ds, seed=s, noise=False)
                  for s in range(3)]
    cls.states = [s.replace(batch_stats=jax.tree.map(
        lambda v, k=k: v + 0.1 * k, s.batch_stats))
                  for k, s in enumerate(cls.states)]
    cls.members = jax.tree.map(lambda *v: jnp.stack(v),
                               *[s.variables for s in cls.states])
    batch = whole_batch(ds)
    cls.x = noise_lib.to_float(batch["image"])
    cls.targets = targeted.target_labels(batch["label"], 4, 1)
    mask = np.ones(16, np.float32)
    mask[-3:] = 0.0  # 3 padding rows
    cls.mask = mask

  def member_loss(self, state, x):
    logits = state.apply_fn(state.variables, x, train=False)
    return losses.summed_cross_entropy(logits, self.targets, self.mask)

  def ensemble(self, x, members=None):
    return targeted.ensemble_loss(self.states[0].apply_fn,
                                  self.members if members is None
                                  else members, x, self.targets, self.mask)

  def test_mean_of_the_members_losses_and_gradients(self):
    def naive(x):
      return sum(self.member_loss(s, x) for s in self.states) / 3

    chex.assert_trees_all_close(self.ensemble(self.x), naive(self.x),
                                rtol=1e-5)
    chex.assert_trees_all_close(jax.grad(self.ensemble)(self.x),
                                jax.grad(naive)(self.x), rtol=1e-4,
                                atol=1e-7)
    jitted = jax.jit(jax.value_and_grad(self.ensemble))(self.x)
    chex.assert_trees_all_close(jitted, jax.value_and_grad(naive)(self.x),
                                rtol=1e-4, atol=1e-7)

  def test_one_member_is_that_model(self):
    one = jax.tree.map(lambda v: v[1:2], self.members)
    chex.assert_trees_all_close(self.ensemble(self.x, one),
                                self.member_loss(self.states[1], self.x),
                                rtol=1e-5)


class NoiseStepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds = helpers.synthetic(n=64, channels=3, classes=4)
    cls.batch = whole_batch(cls.ds)

  def step(self, state, **kw):
    args = dict(eps=EPS, step_size=1 / 255, num_steps=20, num_classes=4,
                shift=1)
    args.update(kw)
    return jax.jit(functools.partial(targeted.noise_step, **args))(
        state, self.batch)[0]

  def test_lowers_the_target_loss_and_raises_the_target_rate(self):
    state = linear_state(self.ds)
    for shift in (1, 2):
      with self.subTest(shift=shift):
        after = self.step(state, shift=shift)
        delta = after.noise
        loss0, rate0 = target_scores(state, self.batch, state.noise, shift)
        loss1, rate1 = target_scores(state, self.batch, delta, shift)
        self.assertLess(loss1, loss0 - 0.3)
        self.assertGreater(rate1, rate0 + 0.3)
        # The model is frozen: only the noise moved, within the budget.
        chex.assert_trees_all_equal(after.params, state.params)
        self.assertLessEqual(float(jnp.abs(delta).max()), EPS + 1e-6)
        x = noise_lib.to_float(self.batch["image"])
        chex.assert_trees_all_close(noise_lib.perturb(x, delta), x + delta,
                                    atol=1e-6)  # inside [0, 1]

  def test_uses_seps_members_not_the_state_model(self):
    state = linear_state(self.ds, seed=0)
    other = linear_state(self.ds, seed=1)
    ensemble = targeted.with_member_slots(state, 1).replace(
        opt_state={targeted.MEMBERS: jax.tree.map(lambda v: v[None],
                                                  other.variables)})
    chex.assert_trees_all_equal(self.step(ensemble, ensemble=True).noise,
                                self.step(other).noise)
    self.assertFalse(np.array_equal(self.step(state).noise,
                                    self.step(other).noise))

  def test_eot_draws_afresh_at_every_call(self):
    # The model never steps, so the rng moves instead: a second round from
    # the same noise draws other augmentations; the same state, the same.
    state = linear_state(self.ds)
    kw = dict(eot_augment="crop_flip", num_steps=3)
    first = self.step(state, **kw)
    chex.assert_trees_all_equal(self.step(state, **kw).noise, first.noise)
    self.assertFalse(np.array_equal(jax.random.key_data(first.rng),
                                    jax.random.key_data(state.rng)))
    second = self.step(first.replace(noise=state.noise), **kw)
    self.assertFalse(np.array_equal(second.noise, first.noise))

  def test_eot_and_classwise_stay_within_eps(self):
    state = helpers.tiny_state(self.ds)
    after = self.step(targeted.with_member_slots(state, 2), ensemble=True,
                      eot_augment="crop_flip", eot_samples=2, num_steps=3)
    self.assertLessEqual(float(jnp.abs(after.noise).max()), EPS + 1e-6)
    self.assertGreater(float(jnp.abs(after.noise).max()), 0.0)
    classwise = state.replace(noise=jnp.zeros((4, *self.ds.image_shape)))
    after = self.step(classwise, layout="classwise", num_steps=3)
    self.assertEqual(after.noise.shape, (4, *self.ds.image_shape))
    self.assertLessEqual(float(jnp.abs(after.noise).max()), EPS + 1e-6)


class SnapshotsTest(absltest.TestCase):

  def test_keeps_the_chosen_epochs_in_order(self):
    ds = helpers.synthetic(n=8)
    state = helpers.tiny_state(ds)
    placement = sharding.Placement(sharding.make_mesh(1))
    keep = targeted.Snapshots(10, 4, placement.replicated)
    for epoch in range(1, 11):
      keep(epoch, state.replace(params=jax.tree.map(
          lambda v, e=epoch: jnp.full_like(v, e), state.params)))
    members = keep.install(state).opt_state[targeted.MEMBERS]
    for leaf in jax.tree.leaves(members["params"]):
      np.testing.assert_array_equal(leaf.reshape(4, -1)[:, 0],
                                    [3, 5, 8, 10])


class SearchTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_targeted_test_")
    cls.train = helpers.synthetic(n=96)

  def run_search(self, cfg, workdir):
    return generate.run(cfg, self.train, workdir, metrics.MetricLog(workdir))

  def test_sep_keeps_its_ensemble_through_a_resume(self):
    cfg = tiny_config("sep")
    full = os.path.join(self.tmp, "sep")
    summary = self.run_search(cfg, full)
    self.assertFalse(summary["stop_reached"])
    noise = np.load(os.path.join(full, "noise.npy"))
    self.assertLessEqual(np.abs(noise).max(), cfg.noise.eps + 1e-7)
    # Checkpoint 1, after the pretraining: epochs 2 and 3 of 3 as members,
    # the last one the frozen model itself.
    template, _ = generate.build(cfg, self.train)
    ckpt = checkpoint_lib.Checkpoints(
        os.path.join(full, resume.CHECKPOINTS), max_to_keep=100)
    state, meta = ckpt.restore(template, 1)
    ckpt.close()
    self.assertEqual((meta["round"], meta["pos"]), (1, 0))
    members = state.opt_state[targeted.MEMBERS]
    chex.assert_trees_all_equal(jax.tree.map(lambda v: v[1], members),
                                state.variables)
    self.assertFalse(all(np.array_equal(a[0], b) for a, b in zip(
        jax.tree.leaves(members), jax.tree.leaves(state.variables))))
    # Cut back to it: the resumed search (no pretraining) gives the same
    # noise bit for bit.
    cut = full + "_cut"
    shutil.copytree(full, cut)
    os.remove(os.path.join(cut, "noise.npy"))
    folder = os.path.join(cut, resume.CHECKPOINTS)
    for number in os.listdir(folder):
      if number.isdigit() and int(number) > 1:
        shutil.rmtree(os.path.join(folder, number))
    self.run_search(cfg, cut)
    np.testing.assert_array_equal(noise,
                                  np.load(os.path.join(cut, "noise.npy")))


class ConfigRulesTest(absltest.TestCase):

  def config(self, kind, **fields):
    cfg = tiny_config(kind)
    cfg.data.train_path = cfg.data.test_path = "x.npz"
    for dotted, value in fields.items():
      block, field = dotted.split("__")
      cfg[block][field] = value
    return cfg

  def test_accepted(self):
    checks.check_config(self.config("tap", noise__eot_augment="crop_flip",
                                    noise__init="normal"))
    checks.check_config(self.config("sep", noise__target_shift=3))

  def test_refused(self):
    for kind, fields, words in (
        ("tap", {"generate__train_steps": 1}, "generate.train_steps=0"),
        ("tap", {"generate__pretrain_epochs": 0}, "at least 1"),
        ("sep", {"noise__sep_members": 4}, r"at least 4 \(got 3\)"),
        ("error_max", {"noise__target_shift": 1}, "leave it at 0")):
      with self.subTest(kind=kind, fields=fields):
        with self.assertRaisesRegex(UEError, words):
          checks.check_config(self.config(kind, **fields))

  def test_the_memory_plan_counts_seps_members(self):
    ds = helpers.synthetic(n=64)
    cfg = tiny_config("sep", sep_members=3)
    plan = memory.plan_for_config(cfg, ds, devices=1)
    self.assertEqual(plan["opt_state"], 3 * plan["params"])
    cfg.noise.kind = "tap"
    plan = memory.plan_for_config(cfg, ds, devices=1)
    self.assertEqual(plan["opt_state"], plan["params"])

  def test_a_workdir_recorded_before_the_fields_still_resumes(self):
    tmp = self.create_tempdir().full_path
    train, test = helpers.write_npz(tmp, n_train=16, n_test=8)
    cfg = test_tiny.get_config()
    cfg.data.train_path, cfg.data.test_path = train, test
    workdir = os.path.join(tmp, "old")
    path = workdir_lib.claim(cfg, workdir, overwrite=False)
    with open(path) as f:
      record = json.load(f)
    for field in ("target_shift", "sep_members", "at_bound"):
      del record["config"]["noise"][field]
    with open(path, "w") as f:
      json.dump(record, f)
    workdir_lib.verify(cfg, workdir, overwrite=False)
    cfg.noise.target_shift = 2
    with self.assertRaisesRegex(UEError, "noise.target_shift: 0 there"):
      workdir_lib.verify(cfg, workdir, overwrite=False)

  def test_a_shift_that_keeps_the_class_is_refused(self):
    ds = helpers.synthetic(n=64)  # 4 classes
    cfg = self.config("tap", noise__target_shift=8)
    with self.assertRaisesRegex(UEError, "multiple of the 4 classes"):
      checks.check_data(cfg, ds, ds)
    cfg.noise.target_shift = 5
    checks.check_data(cfg, ds, ds)


class EndToEndTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_targeted_cli_")
    cls.train, cls.test = helpers.write_npz(cls.tmp)
    cls.env = helpers.cli_env(os.path.join(cls.tmp, "xla_cache"))

  def test_tap_and_sep_release(self):
    clean = np.load(self.train)["images"].astype(int)
    for kind in ("tap", "sep"):
      with self.subTest(kind=kind):
        workdir = os.path.join(self.tmp, kind)
        proc = helpers.run_main(
            workdir, f"--config.data.train_path={self.train}",
            f"--config.data.test_path={self.test}",
            f"--config.noise.kind={kind}", "--config.generate.train_steps=0",
            "--config.generate.pretrain_epochs=2",
            "--config.noise.sep_members=2", "--config.generate.max_rounds=1",
            "--config.noise.init=normal", env=self.env)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(os.path.join(workdir, "results.json")) as f:
          results = json.load(f)
        self.assertEqual(results["rounds"], 1)
        self.assertIn("pretrain_test_accuracy", results)
        self.assertIn("unlearnable_test_accuracy", results)
        release = np.load(results["release_path"])
        change = np.abs(release["images"].astype(int) - clean)
        self.assertLessEqual(change.max(), 8)
        self.assertGreater(change.max(), 0)


if __name__ == "__main__":
  absltest.main()
