"""Data and releases a block of rows at a time: batches gathered on the mesh
equal the host batches, the streamed release equals the whole-array release
byte for byte, a release file is read by rows, and only process 0 writes.
(Shards on 8 devices and per-process blocks: tests/sharding_test.py.)"""

import io
import os
from unittest import mock

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from configs import test_tiny
from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.parallel import device_data
from ue_jax.evaluation import evaluate
from ue_jax.training import layouts
from ue_jax.core import noise as noise_lib
from ue_jax.io import npz
from ue_jax.evaluation import release
from ue_jax.parallel import sharding
from ue_jax.runtime.errors import UEError
from tests import helpers

EPS = 8 / 255


def placement():
  return sharding.Placement(sharding.make_mesh(0))


def seen_by_a_step(ds, rows):
  """The batch a jitted step gets for `ds.batch(rows)`, as numpy."""
  step = ds.placement.jit_step(lambda state, batch: batch,
                               ds.placement.replicated, returns_state=False)
  out = step(np.zeros((), np.float32), ds.batch(rows))
  return {k: np.asarray(v) for k, v in out.items()}


def whole_release(cfg, ds, noise):
  """The release as it was computed before, on whole host arrays."""
  per_example = layouts.per_example(cfg.noise.layout, noise, ds.labels)
  protected = release.protection(cfg, ds)
  images = noise_lib.release_images(ds.images, per_example, eps=EPS,
                                    paper_release=cfg.noise.paper_release)
  images = np.where(protected[:, None, None, None], images, ds.images)
  out = io.BytesIO()
  np.savez(out, images=images, labels=ds.labels, indices=ds.source_index,
           protected=protected)
  change = np.abs(images.astype(np.int16) - ds.images.astype(np.int16))
  return out.getvalue(), int(change.max()), float(change.mean())


class DeviceDataTest(absltest.TestCase):

  def test_steps_see_the_host_batches(self):
    ds = helpers.synthetic(n=50)
    on_mesh = device_data.place(ds, placement())
    view_rows = np.array([3, 7, 8, 20, 41, 49])
    for host, dev, n in ((ds, on_mesh, 50),
                         (ds.take(view_rows), on_mesh.take(view_rows), 6)):
      for rows in data_lib.batches(n, 16):  # the last one padded
        want = data_lib.gather(host, rows)
        got = seen_by_a_step(dev, rows)
        self.assertEqual(sorted(got), sorted(want))
        for key in want:
          np.testing.assert_array_equal(got[key], want[key], key)
    # A view of a view maps to the base rows.
    nested = on_mesh.take(view_rows).take(np.array([5, 0]))
    np.testing.assert_array_equal(seen_by_a_step(
        nested, np.arange(2))["image"], ds.images[[49, 3]])

  def test_place_reads_only_its_block_of_the_chosen_rows(self):
    ds = helpers.synthetic(n=30)
    images = Recorder(ds.images)
    source = data_lib.Dataset(images, ds.labels, 4, ds.source_index)
    rows = np.array([1, 4, 9, 10, 22])
    placed = device_data.place(source, placement(), rows)
    self.assertEqual(placed.block, (0, 5))  # one process: its block is all
    self.assertLen(images.keys, 1)
    np.testing.assert_array_equal(images.keys[0], rows)
    np.testing.assert_array_equal(np.asarray(placed.images), ds.images[rows])
    np.testing.assert_array_equal(placed.source_index, rows)


class Recorder:
  """Images that record which rows are read."""

  def __init__(self, images):
    self.images, self.keys = images, []
    self.shape, self.dtype, self.ndim = images.shape, images.dtype, 4

  def __len__(self):
    return len(self.images)

  def __getitem__(self, key):
    self.keys.append(key)
    return self.images[key]


class StreamedNpzTest(absltest.TestCase):

  def test_stream_writer_writes_the_bytes_of_savez(self):
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (37, 5, 5, 3), dtype=np.uint8),
              "labels": rng.integers(0, 9, 37).astype(np.int32),
              "protected": rng.random(37) < 0.5, "scalar": np.float32(2.5)}
    want = io.BytesIO()
    np.savez(want, **arrays)
    got = io.BytesIO()
    with npz.StreamWriter(got) as out:
      out.begin("images", arrays["images"].shape, np.uint8)
      for start in range(0, 37, 10):
        out.write(arrays["images"][start:start + 10])
      for key in ("labels", "protected", "scalar"):
        out.add(key, arrays[key])
    self.assertEqual(got.getvalue(), want.getvalue())
    with self.assertRaisesRegex(ValueError, "left incomplete"):
      with npz.StreamWriter(io.BytesIO()) as out:
        out.begin("images", (4, 2), np.uint8)
        out.write(np.zeros((3, 2), np.uint8))

  def test_member_rows_equal_slices_of_the_whole_array(self):
    tmp = self.create_tempdir().full_path
    images = np.random.default_rng(1).integers(0, 256, (23, 4, 4, 1),
                                               dtype=np.uint8)
    stored, packed = (os.path.join(tmp, f) for f in ("a.npz", "b.npz"))
    np.savez(stored, labels=np.arange(23), images=images)
    np.savez_compressed(packed, images=images)
    mapped = npz.member(stored, "images")
    self.assertIsInstance(mapped, np.memmap)
    for lo, hi in ((0, 23), (5, 12), (22, 23), (7, 7)):
      np.testing.assert_array_equal(mapped[lo:hi], images[lo:hi])
    np.testing.assert_array_equal(mapped[[20, 2, 9]], images[[20, 2, 9]])
    self.assertIsNone(npz.member(packed, "images"))  # read it whole
    self.assertIsNone(npz.member(stored, "absent"))

  def test_release_file_is_read_by_blocks(self):
    tmp = self.create_tempdir().full_path
    ds = helpers.synthetic(n=40)
    cfg = test_tiny.get_config()
    noise = np.random.default_rng(2).uniform(-EPS, EPS, ds.images.shape)
    summary, kept = release.release(cfg, ds, tmp,
                                    noise=noise.astype(np.float32))
    read = evaluate.load_release(device_data.place(ds, placement()), tmp)
    with np.load(summary["release_path"]) as f:
      whole = f["images"]
    for got in (read.images, kept.images):
      np.testing.assert_array_equal(np.asarray(got.images)[:40], whole)
      np.testing.assert_array_equal(seen_by_a_step(got, np.arange(40))[
          "image"], whole)
    np.testing.assert_array_equal(read.protected, kept.protected)


class StreamedReleaseTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("samplewise", "samplewise", False, 1.0, ()),
      ("classwise_paper", "classwise", True, 1.0, ()),
      ("partial_rate", "samplewise", False, 0.3, ()),
      ("partial_classes", "classwise", False, 1.0, (1, 3)))
  def test_equals_the_whole_array_release(self, layout_name, paper, rate,
                                          classes):
    ds = helpers.synthetic(n=45)
    cfg = test_tiny.get_config()
    cfg.noise.layout, cfg.noise.paper_release = layout_name, paper
    cfg.partial.rate, cfg.partial.classes = rate, classes
    shape = layouts.noise_shape(layout_name, ds)
    noise = np.random.default_rng(3).uniform(-EPS, EPS, shape).astype(
        np.float32)
    want, max_change, mean_change = whole_release(cfg, ds, noise)
    tmp = self.create_tempdir().full_path
    # Chunks of 8 images (12 x 12 x 1 bytes each): 6 chunks.
    with mock.patch.object(sharding, "EXPORT_BYTES", 8 * 144):
      out = release.run(cfg, ds, tmp, noise=noise)
    with open(out["release_path"], "rb") as f:
      self.assertEqual(f.read(), want)
    self.assertEqual(out["release_max_pixel_change"], max_change)
    self.assertEqual(out["release_mean_abs_pixel_change"], mean_change)
    self.assertCountEqual(os.listdir(os.path.dirname(out["release_path"])),
                          ["unlearnable_train.npz"])

  def test_only_process_zero_writes(self):
    ds = helpers.synthetic(n=45)
    cfg = test_tiny.get_config()
    noise = np.full(ds.images.shape, 2 / 255, np.float32)
    tmp = self.create_tempdir().full_path
    with mock.patch.object(artifacts, "writes_files", lambda: False):
      out = release.run(cfg, ds, tmp, noise=noise)
    self.assertEqual(os.listdir(tmp), [])
    self.assertEqual(out["release_max_pixel_change"], 2)

  def test_a_subset_is_refused_with_one_line(self):
    # The release covers the configured training set; a view of part of it
    # is a UEError (one line, exit 2 through main.py), nothing is written.
    ds = device_data.place(helpers.synthetic(n=16), placement())
    cfg = test_tiny.get_config()
    tmp = self.create_tempdir().full_path
    noise = np.zeros((8, *ds.image_shape), np.float32)
    with self.assertRaisesRegex(UEError, "release the whole training set"):
      release.run(cfg, ds.take(np.arange(8)), tmp, noise=noise)
    self.assertEqual(os.listdir(tmp), [])

  def test_noise_file_is_checked_in_chunks(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "noise.npy")
    noise = np.zeros((30, 4, 4, 1), np.float32)
    noise[25, 1, 1, 0] = 0.25  # in the last chunk
    np.save(path, noise)
    with mock.patch.object(artifacts, "CHECK_BYTES", 64):  # 4 rows a chunk
      with self.assertRaisesRegex(UEError, "max |noise| = 0.250000"):
        artifacts.load_noise(path, shape=noise.shape, eps=EPS)
      noise[25, 1, 1, 0], noise[29, 0, 0, 0] = 0.0, np.nan
      np.save(path, noise)
      with self.assertRaisesRegex(UEError, "non-finite"):
        artifacts.load_noise(path, shape=noise.shape, eps=EPS)
    np.save(path, noise[:5] * 0)
    self.assertIsInstance(artifacts.load_noise(path, shape=(5, 4, 4, 1),
                                               eps=EPS), np.memmap)


if __name__ == "__main__":
  absltest.main()
