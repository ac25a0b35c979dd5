"""noise.fit_classes: the noise of some classes is searched, the others'
stays zero (a data owner's class beside a reference set), and the battery's
per-group accuracy that measures it."""

import os
import tempfile

import chex
import numpy as np
from absl.testing import absltest

from ue_jax.config import checks
from ue_jax.evaluation import battery
from ue_jax.evaluation import evaluate
from ue_jax.evaluation import release
from ue_jax.io import data as data_lib
from ue_jax.io import metrics
from ue_jax.runtime.errors import UEError
from ue_jax.search import generate
from ue_jax.training import layouts
from tests import generate_test
from tests import helpers


class FitRowsTest(absltest.TestCase):

  def test_batches_keep_the_training_rows_as_noise_index(self):
    train = helpers.synthetic(n=20, classes=4)
    fit = layouts.fit_set("samplewise", train, fraction=1.0, seed=0,
                          classes=(1, 3))
    rows = np.flatnonzero(np.isin(train.labels, (1, 3)))
    self.assertLen(fit, len(rows))
    batch = fit.batch(np.array([0, 1, len(fit), len(fit)]))
    # Each example keeps its row of the training set (its noise row) and
    # its own image and label; a padding slot is the training set's
    # padding: index past every noise row, mask 0.
    np.testing.assert_array_equal(batch["index"],
                                  [rows[0], rows[1], len(train), len(train)])
    np.testing.assert_array_equal(batch["mask"], [1, 1, 0, 0])
    np.testing.assert_array_equal(batch["label"][:2], train.labels[rows[:2]])
    np.testing.assert_array_equal(batch["image"][:2], train.images[rows[:2]])

  def test_without_classes_the_fit_set_is_the_training_set(self):
    train = helpers.synthetic(n=20, classes=4)
    self.assertIs(layouts.fit_set("samplewise", train, fraction=0.2, seed=0),
                  train)

  def test_classwise_keeps_the_subsets_rows_of_those_classes(self):
    train = helpers.synthetic(n=40, classes=4)
    whole = data_lib.stratified_rows(train, 8, 5)
    fit = layouts.fit_set("classwise", train, fraction=0.2, seed=5,
                          classes=(2,))
    mine = whole[train.labels[whole] == 2]
    np.testing.assert_array_equal(fit.rows, mine)
    self.assertLen(fit, 2)  # 0.2 of 40, stratified: 2 of class 2
    np.testing.assert_array_equal(fit.labels, [2, 2])
    every = layouts.fit_set("classwise", train, fraction=1.0, seed=5,
                            classes=(1, 3))
    np.testing.assert_array_equal(every.rows,
                                  np.flatnonzero(np.isin(train.labels, (1, 3))))


class FitClassesSearchTest(absltest.TestCase):

  def test_classwise_fits_only_its_classes_row(self):
    train = helpers.synthetic(n=96, classes=4)
    cfg = generate_test.tiny_config(fit_classes=(2,), layout="classwise",
                                    num_steps=1)
    cfg.generate.classwise_subset = 1.0
    workdir = tempfile.mkdtemp(prefix="ue_jax_fit_classes_cw_")
    summary = generate.run(cfg, train, workdir, metrics.MetricLog(workdir))
    noise = np.load(os.path.join(workdir, "noise.npy"))
    self.assertEqual(noise.shape, (4, 12, 12, 1))
    others = np.delete(noise, 2, axis=0)
    chex.assert_trees_all_equal(others, np.zeros_like(others))
    self.assertGreater(np.abs(noise[2]).max(), 0)
    self.assertLessEqual(np.abs(noise).max(), cfg.noise.eps + 1e-7)
    self.assertEqual(summary["noise_fit_size"], int((train.labels == 2).sum()))

  def test_only_the_fit_classes_get_noise(self):
    train = helpers.synthetic(n=96, classes=4)
    cfg = generate_test.tiny_config(fit_classes=(2,))
    workdir = tempfile.mkdtemp(prefix="ue_jax_fit_classes_")
    summary = generate.run(cfg, train, workdir, metrics.MetricLog(workdir))
    noise = np.load(os.path.join(workdir, "noise.npy"))
    mine = train.labels == 2
    chex.assert_trees_all_equal(noise[~mine], np.zeros_like(noise[~mine]))
    self.assertTrue(np.all(np.abs(noise[mine]).max(axis=(1, 2, 3)) > 0))
    self.assertLessEqual(np.abs(noise).max(), cfg.noise.eps + 1e-7)
    self.assertEqual(summary["noise_fit_size"], int(mine.sum()))
    # The stop test scores the fit class only: its accuracy is a multiple
    # of 1 / (its example count).
    log = metrics.read_log(os.path.join(workdir, "metrics.jsonl"),
                           "generate")
    for record in log:
      count = record["train_accuracy"] * mine.sum()
      self.assertAlmostEqual(count, round(count), places=4)

  def test_the_release_counts_the_fit_classes_as_protected(self):
    train = helpers.synthetic(n=20, classes=4)
    cfg = generate_test.tiny_config(fit_classes=(1, 3))
    np.testing.assert_array_equal(release.protection(cfg, train),
                                  np.isin(train.labels, (1, 3)))
    cfg.partial.classes = (2,)
    np.testing.assert_array_equal(release.protection(cfg, train),
                                  train.labels == 2)

  def test_refused_where_the_other_rows_would_not_stay_zero(self):
    for noise in ({"init": "uniform"}, {"kind": "random"}):
      cfg = generate_test.tiny_config(fit_classes=(1,), **noise)
      with self.assertRaisesRegex(UEError, "noise.fit_classes"):
        checks.check_config(cfg)


class GroupAccuracyTest(absltest.TestCase):

  def test_from_a_confusion_matrix(self):
    m = [[8, 2, 0], [1, 1, 8], [0, 0, 10]]  # rows: true class
    got = battery.class_accuracy(m, (1,))
    self.assertAlmostEqual(got["protected_classes"], 1 / 10)
    self.assertAlmostEqual(got["other_classes"], (8 + 10) / 20)

  def test_cell_record_has_both_sides(self):
    side = {"curve": [0.5], "train_curve": [0.9], "seconds": 1.0,
            "confusion": [[5, 5], [0, 10]]}
    old_clean = {k: v for k, v in side.items() if k != "confusion"}
    record = battery.summarize("r", 4, "crop_flip", side, old_clean,
                               clean_cached=True, classes=(0,))
    self.assertEqual(record["protected_classes_test_accuracy"],
                     {"clean": None, "unlearnable": 0.5})
    self.assertEqual(record["other_classes_test_accuracy"],
                     {"clean": None, "unlearnable": 1.0})
    plain = battery.summarize("r", 4, "crop_flip", side, side,
                              clean_cached=True)
    self.assertNotIn("protected_classes_test_accuracy", plain)

  def test_protected_classes_of_a_config(self):
    cfg = generate_test.tiny_config(fit_classes=(3,))
    self.assertEqual(evaluate.protected_classes(cfg), (3,))
    cfg.partial.classes = (1, 2)
    self.assertEqual(evaluate.protected_classes(cfg), (1, 2))


if __name__ == "__main__":
  absltest.main()
