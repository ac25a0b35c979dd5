"""The order the generator's model steps walk the training set in: data
stored class by class (an image-folder tree) must not make every model
batch a single class, which kept the search at chance on real CIFAR-10."""

import tempfile

import numpy as np
from absl.testing import absltest

from configs import common
from configs import fashion_mnist
from configs import test_tiny
from ue_jax.training import train as train_lib
from ue_jax.io import data as data_lib
from ue_jax.io import metrics
from ue_jax.search import generate
from tests import helpers


def class_sorted(n=128, classes=4):
  """helpers.synthetic's learnable images, stored one class after another."""
  ds = helpers.synthetic(n=n, classes=classes)
  return ds.take(np.argsort(ds.labels, kind="stable"))


class WalkOrderTest(absltest.TestCase):

  def test_shuffled_is_a_seeded_permutation(self):
    a = data_lib.walk_order(50, kind="shuffled", seed=3)
    np.testing.assert_array_equal(np.sort(a), np.arange(50))
    np.testing.assert_array_equal(
        a, data_lib.walk_order(50, kind="shuffled", seed=3))
    self.assertFalse(np.array_equal(
        a, data_lib.walk_order(50, kind="shuffled", seed=4)))
    self.assertIsNone(data_lib.walk_order(50, kind="stored", seed=3))

  def test_cycle_batches_walk_the_order_once_per_epoch(self):
    order = data_lib.walk_order(12, kind="shuffled", seed=0)
    walk = train_lib.cycle_batches(12, 4, order=order)
    epoch = np.concatenate([next(walk) for _ in range(3)])
    np.testing.assert_array_equal(epoch, order)
    np.testing.assert_array_equal(next(walk), order[:4])  # wraps around
    resumed = train_lib.cycle_batches(12, 4, start=4, order=order)
    np.testing.assert_array_equal(next(resumed), order[4:8])

  def test_class_sorted_data_gets_mixed_batches(self):
    labels = np.repeat(np.arange(10), 500)  # CIFAR-10 sized, as a folder
    self.assertLessEqual(data_lib.classes_per_batch(labels, 256), 2)
    order = data_lib.walk_order(len(labels), kind="shuffled", seed=0)
    self.assertEqual(data_lib.classes_per_batch(labels, 256, order=order), 10)

  def test_defaults(self):
    self.assertEqual(common.base().generate.model_order, "shuffled")
    # Its figures were measured on the IDX files' own (mixed) order.
    self.assertEqual(fashion_mnist.get_config()
                     .generate.model_order, "stored")


class ClassSortedSearchTest(absltest.TestCase):
  """The generator trained on class-sorted data: walked as stored it only
  knows the classes of its last batches; shuffled, it learns them all."""

  def generator_accuracy(self, order: str) -> float:
    cfg = test_tiny.get_config()
    cfg.generate.model_order = order
    cfg.generate.train_steps = 40
    cfg.generate.max_rounds = 1
    cfg.noise.num_steps = 1
    workdir = tempfile.mkdtemp(prefix=f"ue_jax_order_{order}_")
    summary = generate.run(cfg, class_sorted(), workdir,
                           metrics.MetricLog(workdir))
    return summary["generator_clean_train_accuracy"]

  def test_shuffled_walk_learns_every_class(self):
    with self.assertLogs(level="WARNING") as logs:
      stored = self.generator_accuracy("stored")
    self.assertTrue(any("model_order=stored" in m for m in logs.output))
    shuffled = self.generator_accuracy("shuffled")
    # 4 classes: stored ends on the last class's batches (about chance).
    self.assertLessEqual(stored, 0.5)
    self.assertGreaterEqual(shuffled, 0.9)


if __name__ == "__main__":
  absltest.main()
