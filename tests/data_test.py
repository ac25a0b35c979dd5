"""Data: IDX/npz readers, stratified subsets, padded batches, clear errors."""

import gzip
import os
import tempfile
import time

import numpy as np
from absl.testing import absltest

from ue_jax.io import data
from ue_jax.training import train as train_lib
from ue_jax.runtime.errors import UEError
from tests import helpers


def write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


class DataTest(absltest.TestCase):

  def test_idx_round_trip(self):
    folder = self.create_tempdir().full_path
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
      imgs = rng.integers(0, 256, (n, 5, 4), dtype=np.uint8)
      labels = rng.integers(0, 10, n).astype(np.uint8)
      images_file, labels_file = data.IDX_FILES[split]
      write_idx(os.path.join(folder, images_file + ".gz"), imgs)
      write_idx(os.path.join(folder, labels_file + ".gz"), labels)
    train, test = data.load("fashion_mnist", source="idx", data_dir=folder)
    self.assertEqual(train.images.shape, (30, 5, 4, 1))
    np.testing.assert_array_equal(test.images[..., 0], imgs)
    np.testing.assert_array_equal(test.labels, labels)
    np.testing.assert_array_equal(train.index, np.arange(30))

  def test_stratified_subset(self):
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    ds = data.make_dataset(np.zeros((100, 2, 2, 1), np.uint8), labels, 4)
    sub = data.stratified_subset(ds, 50, seed=3)
    np.testing.assert_array_equal(np.bincount(sub.labels), [20, 15, 10, 5])
    self.assertTrue(np.all(np.diff(sub.source_index) > 0))
    np.testing.assert_array_equal(sub.labels, labels[sub.source_index])
    np.testing.assert_array_equal(sub.index, np.arange(50))
    again = data.stratified_subset(ds, 50, seed=3)
    np.testing.assert_array_equal(sub.source_index, again.source_index)
    other = data.stratified_subset(ds, 50, seed=4)
    self.assertFalse(np.array_equal(sub.source_index, other.source_index))

  def test_padded_batches_cover_every_row_once(self):
    seen = np.concatenate(list(data.batches(10, 4)))
    self.assertEqual(len(seen), 12)
    np.testing.assert_array_equal(seen[:10], np.arange(10))
    np.testing.assert_array_equal(seen[10:], [10, 10])  # padding marker
    batch = data.gather(helpers.synthetic(10), seen[8:12])
    np.testing.assert_array_equal(batch["mask"], [1, 1, 0, 0])

  def test_cycle_batches_are_full_and_visit_all(self):
    it = train_lib.cycle_batches(10, 4)
    rows = np.concatenate([next(it) for _ in range(5)])
    np.testing.assert_array_equal(rows, np.tile(np.arange(10), 2))

  def test_cycle_batches_resume_from_a_step(self):
    it = train_lib.cycle_batches(10, 4)
    walk = [next(it) for _ in range(7)]
    resumed = train_lib.cycle_batches(10, 4, start=3)
    for s in range(3, 7):
      np.testing.assert_array_equal(next(resumed), walk[s])
      np.testing.assert_array_equal(walk[s], (s * 4 + np.arange(4)) % 10)

  def test_npz(self):
    folder = self.create_tempdir().full_path
    train_path, test_path = helpers.write_npz(folder)
    train, test = data.load("synthetic", source="npz", train_path=train_path,
                            test_path=test_path)
    self.assertEqual(train.num_classes, 4)
    self.assertEqual(test.images.dtype, np.uint8)

  def test_npz_refuses_pickle(self):
    path = os.path.join(self.create_tempdir().full_path, "bad.npz")
    np.savez(path, images=np.array([{"a": 1}], dtype=object),
             labels=np.zeros(1))
    with self.assertRaisesRegex(UEError, "without pickle"):
      data.load_npz(path, None, "bad")

  def test_missing_folder_fails_fast(self):
    start = time.perf_counter()
    with self.assertRaisesRegex(UEError, "apt-get install dataset-fashion"):
      data.load("fashion_mnist", source="idx",
                data_dir=os.path.join(tempfile.gettempdir(), "no_such_dir"))
    self.assertLess(time.perf_counter() - start, 5)

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(UEError, "unknown dataset 'imagenet42'"):
      data.load("imagenet42")

  def test_bad_labels(self):
    with self.assertRaisesRegex(UEError, "labels must lie in"):
      data.make_dataset(np.zeros((2, 2, 2), np.uint8), [0, 5], 3)


if __name__ == "__main__":
  absltest.main()
