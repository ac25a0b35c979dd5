"""The battery driver: its plan, a resumed run trains only the missing cells,
and the clean side is reused across releases of the same data."""

import json
import os
import tempfile

import numpy as np
from absl.testing import absltest

from configs import test_tiny
from tests import helpers
from ue_jax.evaluation import battery
from ue_jax.runtime.errors import UEError


class Killed(Exception):
  pass


def tiny_cfg(workdir, **battery_fields):
  cfg = test_tiny.get_config()
  cfg.data.train_path = cfg.data.test_path = "x.npz"
  cfg.battery.learners = ("small_cnn_avg:2",)
  cfg.battery.defenses = ("none", "bit_depth", "grayscale")
  cfg.battery.epochs = 2
  cfg.battery.clean_cache = os.path.join(workdir, "shared_clean")
  for k, v in battery_fields.items():
    cfg.battery[k] = v
  return cfg


def write_release(path, train, *, shift):
  """A 'release': the training images shifted by `shift` grey levels."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  images = np.clip(train.images.astype(int) + shift, 0, 255).astype(np.uint8)
  np.savez(path, images=images, labels=train.labels,
           indices=train.source_index)


class Counting:
  """battery.train_curve, counted, optionally raising at call `kill_at`;
  with `fake`, a fixed curve instead of a training (for the bookkeeping)."""

  def __init__(self, kill_at=None, fake=False):
    self.calls, self.kill_at, self.fake = [], kill_at, fake

  def __call__(self, cfg, ds, test, **kw):
    self.calls.append(kw["label"])
    if self.kill_at is not None and len(self.calls) == self.kill_at:
      raise Killed(kw["label"])
    if self.fake:
      return {"curve": [0.5, 0.25], "train_curve": [0.5, 0.5],
              "seconds": 0.0}
    return battery.train_curve(cfg, ds, test, **kw)


class PlanTest(absltest.TestCase):

  def test_star_and_cross(self):
    cfg = tiny_cfg("/tmp")
    cfg.battery.learners = ("small_cnn", "vgg11:8", "vit:2")
    cfg.battery.defenses = ("crop_flip", "none", "mixup")
    cfg.evaluate.width = 5
    star = battery.plan(cfg)
    self.assertEqual(star, [("small_cnn", 5, "crop_flip"),
                            ("vgg11", 8, "crop_flip"),
                            ("vit", 2, "crop_flip"),
                            ("small_cnn", 5, "none"),
                            ("small_cnn", 5, "mixup")])
    cfg.battery.cells = "cross"
    cross = battery.plan(cfg)
    self.assertLen(cross, 9)
    self.assertLen(set(cross), 9)

  def test_unknown_names(self):
    cfg = tiny_cfg("/tmp", learners=("resnet50",))
    with self.assertRaisesRegex(UEError, "unknown learner 'resnet50'"):
      battery.plan(cfg)
    cfg = tiny_cfg("/tmp", defenses=("none", "jpeg"))
    with self.assertRaisesRegex(UEError, "unknown defense 'jpeg'"):
      battery.plan(cfg)

  def test_recipe_defaults_to_the_evaluate_block(self):
    cfg = tiny_cfg("/tmp", epochs=0)
    cfg.evaluate.seed = 5
    e = battery.recipe(cfg).evaluate
    self.assertEqual((e.epochs, e.batch_size, e.lr, e.seed),
                     (cfg.evaluate.epochs, cfg.evaluate.batch_size,
                      cfg.evaluate.lr, 5))
    cfg.battery.update(epochs=3, batch_size=8, lr=0.05, seed=7)
    e = battery.recipe(cfg).evaluate
    self.assertEqual((e.epochs, e.batch_size, e.lr, e.seed), (3, 8, 0.05, 7))
    self.assertEqual(cfg.evaluate.epochs, 1)  # the config is not changed
    self.assertEqual(battery.adv_eps(cfg), cfg.noise.eps)


class ResumeTest(absltest.TestCase):

  def test_killed_battery_reruns_only_missing_cells(self):
    with tempfile.TemporaryDirectory() as tmp:
      train = helpers.synthetic(64, size=8, classes=4, seed=0)
      test = helpers.synthetic(32, size=8, classes=4, seed=1)
      cfg = tiny_cfg(tmp)
      w1 = os.path.join(tmp, "w1")
      write_release(os.path.join(w1, "release", "unlearnable_train.npz"),
                    train, shift=30)
      # Cells: none (clean, unlearnable), bit_depth (clean, unlearnable),
      # grayscale not applicable. Killed in bit_depth's unlearnable run.
      first = Counting(kill_at=4)
      with self.assertRaises(Killed):
        battery.run(cfg, train, test, w1, trainer=first)
      self.assertLen(first.calls, 4)
      self.assertFalse(os.path.exists(os.path.join(w1, "battery",
                                                   "battery.json")))
      again = Counting()
      summary = battery.run(cfg, train, test, w1, trainer=again)
      # Only the missing training: bit_depth's clean side is cached.
      self.assertEqual(again.calls,
                       ["battery_unlearnable_small_cnn_avg:2/bit_depth"])
      with open(summary["battery_path"]) as f:
        out = json.load(f)
      cells = {r["defense"]: r for r in out["cells"]}
      self.assertEqual(cells["grayscale"]["status"], "not_applicable")
      self.assertIn("1 channel", cells["grayscale"]["reason"])
      self.assertTrue(cells["bit_depth"]["clean_cached"])
      self.assertFalse(cells["none"]["clean_cached"])
      for d in ("none", "bit_depth"):
        r = cells[d]
        u = r["curves"]["unlearnable"]
        self.assertLen(u, 2)
        self.assertLen(r["curves"]["clean"], 2)
        self.assertEqual(r["unlearnable_test_accuracy"], u[-1])
        self.assertEqual(r["best_unlearnable_test_accuracy"], max(u))
        self.assertEqual(u[r["best_unlearnable_epoch"] - 1], max(u))
        self.assertAlmostEqual(r["gap"], r["clean_test_accuracy"] - u[-1])
        for a in u:  # multiples of 1/32 on 32 test images
          self.assertAlmostEqual(a * 32, round(a * 32), places=4)
      for name in ("battery.md", "battery.png"):
        self.assertTrue(os.path.exists(os.path.join(w1, "battery", name)))
      with open(os.path.join(w1, "battery", "battery.md")) as f:
        self.assertIn("| small_cnn_avg:2 | bit_depth |", f.read())
      # A third run trains nothing.
      idle = Counting()
      battery.run(cfg, train, test, w1, trainer=idle)
      self.assertEqual(idle.calls, [])

      # Another release of the same data (another workdir) reuses the
      # clean side from the shared cache: unlearnable trainings only.
      w2 = os.path.join(tmp, "w2")
      write_release(os.path.join(w2, "release", "unlearnable_train.npz"),
                    train, shift=-20)
      other = Counting(fake=True)
      second = battery.run(cfg, train, test, w2, trainer=other)
      self.assertEqual(sorted(other.calls), [
          "battery_unlearnable_small_cnn_avg:2/bit_depth",
          "battery_unlearnable_small_cnn_avg:2/none"])
      with open(second["battery_path"]) as f:
        out2 = json.load(f)
      clean1 = [r["curves"]["clean"] for r in out["cells"]
                if r["status"] == "done"]
      clean2 = [r["curves"]["clean"] for r in out2["cells"]
                if r["status"] == "done"]
      self.assertEqual(clean1, clean2)
      self.assertNotEqual(out["release_sha256"], out2["release_sha256"])
      for r in out2["cells"]:
        if r["status"] == "done":
          self.assertEqual(r["curves"]["unlearnable"], [0.5, 0.25])
          self.assertEqual(r["best_unlearnable_test_accuracy"], 0.5)
          self.assertEqual(r["best_unlearnable_epoch"], 1)

  def test_release_must_match_the_data(self):
    with tempfile.TemporaryDirectory() as tmp:
      train = helpers.synthetic(64, size=8, classes=4, seed=0)
      other = helpers.synthetic(48, size=8, classes=4, seed=0)
      path = os.path.join(tmp, "r.npz")
      write_release(path, other, shift=5)
      cfg = tiny_cfg(tmp, release_path=path)
      with self.assertRaisesRegex(UEError, "released"):
        battery.load_release(cfg, train, tmp)
      cfg.battery.release_path = os.path.join(tmp, "missing.npz")
      with self.assertRaisesRegex(UEError, "no released dataset"):
        battery.load_release(cfg, train, tmp)


class CacheKeyTest(absltest.TestCase):
  """What the cell and clean-side cache keys hold: the compute dtype (a
  bfloat16 learner is another training), not where the data is cached."""

  def _run(self, cfg, train, test, workdir):
    trainer = Counting(fake=True)
    battery.run(cfg, train, test, workdir, trainer=trainer)
    return sorted(trainer.calls)

  def test_compute_dtype_and_cache_dir(self):
    with tempfile.TemporaryDirectory() as tmp:
      train = helpers.synthetic(64, size=8, classes=4, seed=0)
      test = helpers.synthetic(32, size=8, classes=4, seed=1)
      cfg = tiny_cfg(tmp, defenses=("none",))
      write_release(os.path.join(tmp, "release", "unlearnable_train.npz"),
                    train, shift=30)
      both = ["battery_clean_small_cnn_avg:2/none",
              "battery_unlearnable_small_cnn_avg:2/none"]
      self.assertEqual(self._run(cfg, train, test, tmp), both)
      # Where the decoded arrays are cached changes nothing computed.
      cfg.data.cache_dir = os.path.join(tmp, "elsewhere")
      cfg.data.download = True
      self.assertEqual(self._run(cfg, train, test, tmp), [])
      # Another compute dtype trains both sides again, and the float32
      # results stay cached beside the bfloat16 ones.
      cfg.model.compute_dtype = "bfloat16"
      self.assertEqual(self._run(cfg, train, test, tmp), both)
      self.assertEqual(self._run(cfg, train, test, tmp), [])
      cfg.model.compute_dtype = "float32"
      self.assertEqual(self._run(cfg, train, test, tmp), [])
      # What the data is still counts: another subset size is another key.
      cfg.data.train_size = 64
      self.assertEqual(self._run(cfg, train, test, tmp), both)

  def test_keys(self):
    train = helpers.synthetic(16, size=8, classes=4, seed=0)
    test = helpers.synthetic(8, size=8, classes=4, seed=1)
    cfg = tiny_cfg("/tmp")
    key = battery.recipe_key(cfg, "small_cnn_avg", 2, "none")
    dkey = battery.data_key(cfg, train, test)
    cfg.data.cache_dir = "none"
    self.assertEqual(battery.data_key(cfg, train, test), dkey)
    cfg.data.name = "other"
    self.assertNotEqual(battery.data_key(cfg, train, test), dkey)
    cfg.model.compute_dtype = "bfloat16"
    self.assertNotEqual(battery.recipe_key(cfg, "small_cnn_avg", 2, "none"),
                        key)


if __name__ == "__main__":
  absltest.main()
