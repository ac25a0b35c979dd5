"""The battery driver: its plan, a resumed run trains only the missing cells,
and the clean side is reused across releases of the same data."""

import json
import os
import tempfile
from unittest import mock

import numpy as np
from absl.testing import absltest

from configs import test_tiny
from tests import helpers
from ue_jax.core import defenses
from ue_jax.evaluation import battery
from ue_jax.io import data as data_lib
from ue_jax.parallel import device_data
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


class FakeCurves:
  """A trainer that returns fixed curves: `clean` for the clean-trained
  side, `unlearnable` for the release side."""

  def __init__(self, clean, unlearnable):
    self.clean, self.unlearnable = clean, unlearnable

  def __call__(self, cfg, ds, test, **kw):
    curve = self.clean if "_clean_" in kw["label"] else self.unlearnable
    return {"curve": curve, "train_curve": [0.5] * len(curve),
            "seconds": 1.0}


class BestEpochTest(absltest.TestCase):
  """Every cell records each side's best epoch (the maximum of its stored
  curve, the first of equals) beside the last, in battery.json and in the
  table, also for a cell written before the clean side's best epoch."""

  def test_best_beside_last(self):
    with tempfile.TemporaryDirectory() as tmp:
      train = helpers.synthetic(64, size=8, classes=4, seed=0)
      test = helpers.synthetic(32, size=8, classes=4, seed=1)
      cfg = tiny_cfg(tmp, defenses=("none", "bit_depth"), epochs=4)
      write_release(os.path.join(tmp, "release", "unlearnable_train.npz"),
                    train, shift=30)
      trainer = FakeCurves(clean=[0.25, 0.75, 0.5, 0.625],
                           unlearnable=[0.5, 0.25, 0.5, 0.375])
      summary = battery.run(cfg, train, test, tmp, trainer=trainer)
      with open(summary["battery_path"]) as f:
        cells = json.load(f)["cells"]
      self.assertLen(cells, 2)
      for r in cells:
        for side in ("clean", "unlearnable"):
          curve = r["curves"][side]
          best = r[f"best_{side}_test_accuracy"]
          self.assertEqual(best, max(curve))
          self.assertGreaterEqual(best, r[f"{side}_test_accuracy"])
          self.assertEqual(r[f"{side}_test_accuracy"], curve[-1])
          self.assertEqual(curve[r[f"best_{side}_epoch"] - 1], best)
        self.assertEqual((r["best_clean_epoch"], r["best_unlearnable_epoch"]),
                         (2, 1))
      md_path = os.path.join(tmp, "battery", "battery.md")
      with open(md_path) as f:
        md = f.read()
      self.assertIn("| clean | clean best (epoch) | unlearnable | "
                    "unlearnable best (epoch) | gap |", md)
      self.assertIn("| small_cnn_avg:2 | none | 62.5 | 75.0 (2) | 37.5 | "
                    "50.0 (1) | 25.0 | 2 |", md)
      # A cell file without the clean side's best epoch (an older battery)
      # is completed from its curves on the next run.
      cell_dir = os.path.join(tmp, "battery", "cells")
      for name in os.listdir(cell_dir):
        path = os.path.join(cell_dir, name)
        with open(path) as f:
          old = json.load(f)
        for key in ("best_clean_epoch", "best_clean_test_accuracy"):
          old.pop(key)
        with open(path, "w") as f:
          json.dump(old, f)
      os.remove(md_path)
      idle = Counting()
      battery.run(cfg, train, test, tmp, trainer=idle)
      self.assertEqual(idle.calls, [])
      with open(md_path) as f:
        self.assertEqual(f.read(), md)


class TestImagesTest(absltest.TestCase):
  """Which images each defense's learner trains and is scored on: an input
  normalization acts on the test images too, the other defenses leave them
  as they are."""

  def _seen(self, defense):
    """(train images, test images, test_transform) that
    evaluate.train_model receives in battery.train_curve."""
    train = helpers.synthetic(32, size=8, channels=3, classes=4, seed=0)
    test = helpers.synthetic(16, size=8, channels=3, classes=4, seed=1)
    cfg = tiny_cfg("/tmp")
    _, dtrain, dtest = device_data.on_mesh(cfg.mesh.data, train, test)
    seen = {}

    def fake_train_model(cfg, ds, test, **kw):
      seen.update(train=ds.host_images(), test=test.host_images(),
                  transform=kw.get("test_transform"))
      return [{"test_accuracy": 0.5, "train_accuracy": 0.5,
               "confusion": [[1, 0], [0, 1]]}]

    with mock.patch.object(battery.evaluate, "train_model",
                           fake_train_model):
      battery.train_curve(cfg, dtrain, dtest, name="small_cnn_avg", width=2,
                          defense=defense, label="t")
    return train, test, seen

  def test_histogram_equalize_equalizes_both_sets(self):
    train, test, seen = self._seen("histogram_equalize")
    np.testing.assert_array_equal(seen["train"],
                                  defenses.equalize_u8(train.images))
    np.testing.assert_array_equal(seen["test"],
                                  defenses.equalize_u8(test.images))
    self.assertIsNone(seen["transform"])

  def test_colour_standardize_scores_standardized_test_images(self):
    train, test, seen = self._seen("colour_standardize")
    np.testing.assert_array_equal(seen["train"], train.images)
    np.testing.assert_array_equal(seen["test"], test.images)
    self.assertIs(seen["transform"], defenses.colour_standardize)

  def test_jpeg_and_grayscale_leave_the_test_set(self):
    for defense in ("jpeg10", "grayscale"):
      _, test, seen = self._seen(defense)
      np.testing.assert_array_equal(seen["test"], test.images)
      self.assertIsNone(seen["transform"])

  def test_colour_standardize_removes_a_per_class_colour_offset(self):
    """Trained under colour_standardize, a learner on images with a
    per-class colour offset (the shortcut) learns what it learns from the
    images without it, and scores test images with per-image offsets as
    it scores them without: the same curve, above chance. (Standardizing
    after the crop's zero padding, or scoring raw test images, gives other
    curves here.)"""
    train, test = quadrants(128, seed=0), quadrants(32, seed=1)
    per_class = np.array([[0, 30, 10], [40, 0, 20], [10, 20, 40],
                          [30, 40, 0]])
    per_image = np.random.default_rng(2).integers(0, 50, (32, 1, 1, 3))
    moved_train = data_lib.make_dataset(
        (train.images + per_class[train.labels][:, None, None, :]).astype(
            np.uint8), train.labels, 4)
    moved_test = data_lib.make_dataset(
        (test.images + per_image).astype(np.uint8), test.labels, 4)
    cfg = tiny_cfg("/tmp", epochs=3)
    curves = []
    for a, b in ((train, test), (moved_train, moved_test)):
      _, a, b = device_data.on_mesh(cfg.mesh.data, a, b)
      curves.append(battery.train_curve(
          cfg, a, b, name="small_cnn_avg", width=8,
          defense="colour_standardize", label="t")["curve"])
    self.assertLen(curves[0], 3)
    self.assertEqual(curves[0], curves[1])
    self.assertGreater(max(curves[0]), 0.5)


def quadrants(n, *, seed):
  """Colour images 8x8 whose class (4) is which quadrant is 50 levels
  brighter than uniform noise in [30, 100): learnable after a per-image
  standardization; levels stay below 150, so offsets up to 100 fit."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 4
  images = rng.integers(30, 100, (n, 8, 8, 3))
  for k in range(4):
    r, c = divmod(k, 2)
    images[labels == k, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 50
  return data_lib.make_dataset(images.astype(np.uint8), labels, 4)


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
