"""io/folder_source.py and io/folder_cache.py: image-folder trees and tars of
them as a dataset (data.source=folder), their order and labels, sizes and
modes, refusals, and the decoded-array cache. Synthetic trees are written
with PIL; the real CIFAR-10 test reads $UE_JAX_CIFAR10 when it is set."""

import io
import os
import tarfile
import time
from unittest import mock

import chex
import numpy as np
from absl.testing import absltest
from PIL import Image

from configs import test_tiny
from tests import helpers
from ue_jax import pipeline
from ue_jax.evaluation import release as release_lib
from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.io import folder_cache
from ue_jax.io import folder_source
from ue_jax.runtime.errors import UEError

CIFAR10_ENV = "UE_JAX_CIFAR10"


def save(root, rel, pixels, mode=None):
  path = os.path.join(root, *rel.split("/"))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels, mode).save(path)
  return path


def add_member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
  info = tarfile.TarInfo(name)
  info.type, info.size, info.linkname = kind, len(data), link
  tar.addfile(info, io.BytesIO(data) if data else None)


def png_bytes(pixels):
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="PNG")
  return out.getvalue()


class LayoutTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.tree = os.path.join(self.tmp, "tree")
    self.written = helpers.write_image_tree(
        self.tree, classes=("zebra", "ant", "moth"), per_class=3)

  def load(self, **kw):
    kw.setdefault("cache_dir", "none")
    return folder_source.load(**kw)

  def test_tar_and_folder_give_identical_arrays(self):
    plain = self.load(path=self.tree)
    for name, top in (("t.tar", ""), ("t.tar.gz", "wrap"), ("t.tgz", "")):
      packed = self.load(path=helpers.tar_tree(
          self.tree, os.path.join(self.tmp, name), top=top))
      chex.assert_trees_all_equal(packed, plain)
      self.assertEqual(packed["train_images"].dtype, np.uint8)

  def test_order_labels_and_pixels(self):
    out = self.load(path=self.tree)
    self.assertEqual(list(out["class_names"]), ["ant", "moth", "zebra"])
    np.testing.assert_array_equal(out["train_labels"],
                                  [0, 0, 0, 1, 1, 1, 2, 2, 2])
    chex.assert_shape(out["train_images"], (9, 6, 8, 3))
    # Row r is the r-th file in (class, name) order, pixel for pixel (PNG).
    names = sorted(k for k in self.written if k.startswith("train/"))
    names.sort(key=lambda k: (k.split("/")[1], k))
    for row, name in enumerate(names):
      np.testing.assert_array_equal(out["train_images"][row],
                                    self.written[name])

  def test_order_is_by_path_parts_and_integer_names(self):
    root = os.path.join(self.tmp, "parts")
    pixels = np.zeros((4, 4, 3), np.uint8)
    # "a-b" sorts before "a/" as text but after "a" as a class name; a
    # nested file sorts by its parts.
    for i, rel in enumerate(("10/b.png", "10/a/z.png", "2/x.png", "2/w.png",
                             "2-b/q.png")):
      save(self.tmp, f"parts/train/{rel}", pixels + i)
      save(self.tmp, f"parts/test/{rel}", pixels + i)
    out = self.load(path=root)
    # Not all names are integers: text order, "10" < "2" < "2-b".
    self.assertEqual(list(out["class_names"]), ["10", "2", "2-b"])
    np.testing.assert_array_equal(out["train_images"][:, 0, 0, 0],
                                  [1, 0, 3, 2, 4])
    ints = os.path.join(self.tmp, "ints")
    for rel in ("10/a.png", "9/a.png"):
      for split in ("train", "test"):
        save(self.tmp, f"ints/{split}/{rel}", pixels)
    self.assertEqual(list(self.load(path=ints)["class_names"]), ["9", "10"])

  def test_class_trees_by_train_and_test_path(self):
    bare = os.path.join(self.tmp, "bare")
    helpers.write_image_tree(bare, classes=("b", "a"), splits=("",))
    tar = helpers.tar_tree(bare, os.path.join(self.tmp, "bare.tgz"),
                           top="bare")
    out = self.load(train_path=bare, test_path=tar)
    chex.assert_trees_all_equal(out["train_images"], out["test_images"])
    np.testing.assert_array_equal(out["test_labels"], [0, 0, 0, 1, 1, 1])

  def test_gray_trees_keep_one_channel_and_mixed_modes_are_rgb(self):
    gray = os.path.join(self.tmp, "gray")
    written = helpers.write_image_tree(gray, mode="L", per_class=2)
    out = self.load(path=gray)
    chex.assert_shape(out["train_images"], (4, 6, 8, 1))
    np.testing.assert_array_equal(out["train_images"][0],
                                  written["train/cat/00.png"])
    rgb = np.full((6, 8, 3), (10, 20, 30), np.uint8)
    save(gray, "test/dog/rgb.png", rgb)
    mixed = self.load(path=gray)
    chex.assert_shape(mixed["train_images"], (4, 6, 8, 3))
    # A gray image is repeated to three channels, exactly.
    np.testing.assert_array_equal(
        mixed["train_images"][0],
        np.repeat(written["train/cat/00.png"], 3, -1))
    np.testing.assert_array_equal(mixed["test_images"][-1], rgb)

  def test_image_size_resizes_bilinear(self):
    odd = np.random.default_rng(1).integers(0, 256, (9, 13, 3), np.uint8)
    save(self.tree, "train/ant/odd.png", odd)
    with self.assertRaisesRegex(
        UEError, r"train/ant/odd.png is 13x9 pixels, but the first image "
        r"\(train/ant/00.png\) is 8x6; .*data.image_size=N"):
      self.load(path=self.tree)
    out = self.load(path=self.tree, image_size=5)
    chex.assert_shape((out["train_images"], out["test_images"]),
                      [(10, 5, 5, 3), (9, 5, 5, 3)])
    want = np.asarray(Image.fromarray(odd).resize(
        (5, 5), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out["train_images"][3], want)

  def test_dataset_through_data_load(self):
    train, test = data_lib.load("my_pets", source="folder", path=self.tree,
                                cache_dir="none")
    self.assertEqual((train.num_classes, train.class_names),
                     (3, ("ant", "moth", "zebra")))
    self.assertEqual(train.take(np.array([4])).class_names,
                     train.class_names)
    np.testing.assert_array_equal(test.source_index, np.arange(9))
    sub = data_lib.stratified_subset(train, 6, seed=0)
    np.testing.assert_array_equal(np.bincount(sub.labels), [2, 2, 2])


class RefusalTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.tree = os.path.join(self.tmp, "tree")
    helpers.write_image_tree(self.tree)

  def refused(self, pattern, **kw):
    kw.setdefault("cache_dir", os.path.join(self.tmp, "cache"))
    with self.assertRaisesRegex(UEError, pattern):
      folder_source.load(**kw)
    self.assertFalse(os.path.exists(kw["cache_dir"]))  # nothing cached

  def test_layout_problems(self):
    self.refused("does not exist", path=os.path.join(self.tmp, "nope"))
    only_train = os.path.join(self.tmp, "only_train")
    helpers.write_image_tree(only_train, splits=("train",))
    self.refused(r"holds no test/ folder \(found: train\)", path=only_train)
    os.makedirs(os.path.join(self.tree, "train", "emu"))
    with open(os.path.join(self.tree, "train", "emu", "notes.txt"), "w") as f:
      f.write("no images here\n")
    self.refused(r"class folder train/emu of .* holds no image files",
                 path=self.tree)
    os.remove(os.path.join(self.tree, "train", "emu", "notes.txt"))
    save(self.tree, "train/emu/0.png", np.zeros((6, 8, 3), np.uint8))
    self.refused(r"class folders differ: test lacks 'emu'", path=self.tree)
    self.refused("not both", path=self.tree, train_path=self.tree)

  def test_corrupt_image_is_named(self):
    with open(os.path.join(self.tree, "test", "dog", "01.png"), "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\nbroken")
    self.refused(r"test/dog/01.png is unusable: not a readable image",
                 path=self.tree)

  def test_tar_members_outside_the_tree(self):
    good = png_bytes(np.zeros((4, 4, 3), np.uint8))
    for i, (bad, kind, link) in enumerate((
        ("../evil.png", tarfile.REGTYPE, ""),
        ("/abs/evil.png", tarfile.REGTYPE, ""),
        ("train/cat/../../../evil.png", tarfile.REGTYPE, ""),
        ("train/cat/ln.png", tarfile.SYMTYPE, "../../../etc/passwd"))):
      path = os.path.join(self.tmp, f"bad{i}.tar")
      with tarfile.open(path, "w") as tar:
        for split in ("train", "test"):
          for cls in ("cat", "dog"):
            add_member(tar, f"{split}/{cls}/0.png", good)
        add_member(tar, bad, b"" if link else good, kind, link)
      self.refused(f"tar member '{bad}' "
                   + ("is a link" if link else "points outside the tree"),
                   path=path)
    # '..' that stays inside the tree is only a detour.
    path = os.path.join(self.tmp, "detour.tar")
    with tarfile.open(path, "w") as tar:
      for split in ("train", "test"):
        for cls in ("cat", "dog"):
          add_member(tar, f"{split}/x/../{cls}/0.png", good)
    out = folder_source.load(path=path, cache_dir="none")
    self.assertEqual(list(out["class_names"]), ["cat", "dog"])

  def test_not_a_tar(self):
    path = os.path.join(self.tmp, "junk.tar.gz")
    with open(path, "wb") as f:
      f.write(b"not gzip at all")
    self.refused("is not a readable tar archive", path=path)
    self.refused("neither a folder nor a", path=os.path.join(
        self.tree, "train", "cat", "00.png"))


class CacheTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.tree = os.path.join(self.tmp, "tree")
    helpers.write_image_tree(self.tree)
    self.cache = os.path.join(self.tmp, "cache")

  def load(self, **kw):
    return folder_source.load(path=self.tree, cache_dir=self.cache, **kw)

  def test_second_load_reads_the_cache(self):
    first = self.load()
    files = os.listdir(self.cache)
    self.assertLen(files, 1)  # no temporary left behind
    with mock.patch.object(folder_source, "decode_splits",
                           side_effect=AssertionError("decoded again")):
      second = self.load()
    chex.assert_trees_all_equal(second, first)
    # Another image size is another entry.
    self.assertEqual(self.load(image_size=4)["train_images"].shape[1:],
                     (4, 4, 3))
    self.assertLen(os.listdir(self.cache), 2)

  def test_key_follows_the_content(self):
    def key():
      return folder_cache.key({"path": folder_source.fingerprint(self.tree)},
                              0)
    before, first = key(), self.load()
    self.assertEqual(key(), before)
    target = os.path.join(self.tree, "train", "cat", "00.png")
    new = np.full((6, 8, 3), 7, np.uint8)
    Image.fromarray(new).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    self.assertNotEqual(key(), before)
    np.testing.assert_array_equal(self.load()["train_images"][0], new)
    self.assertFalse(np.array_equal(first["train_images"][0], new))
    # A tar is keyed by its bytes, wherever it lies.
    a = helpers.tar_tree(self.tree, os.path.join(self.tmp, "a.tar"))
    self.assertEqual(folder_source.fingerprint(a),
                     "tar:" + artifacts.file_sha256(a))

  def test_corrupt_cache_is_rewritten(self):
    first = self.load()
    (name,) = os.listdir(self.cache)
    path = os.path.join(self.cache, name)
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 3] ^= 0xFF  # inside the image bytes: the CRC fails
    with open(path, "wb") as f:
      f.write(raw)
    self.assertIsNone(folder_cache.load(path))
    chex.assert_trees_all_equal(self.load(), first)  # decoded again
    self.assertIsNotNone(folder_cache.load(path))   # and rewritten
    with open(path, "wb") as f:
      f.write(b"PK\x03\x04 truncated")
    chex.assert_trees_all_equal(self.load(), first)

  def test_cache_dir_none_and_default(self):
    folder_source.load(path=self.tree, cache_dir="none")
    self.assertFalse(os.path.exists(self.cache))
    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": self.cache}):
      self.assertEqual(folder_cache.resolve_dir(""),
                       os.path.join(self.cache, "ue_jax"))
      folder_source.load(path=self.tree, cache_dir="")
    self.assertLen(os.listdir(os.path.join(self.cache, "ue_jax")), 1)


class ClassNamesTest(absltest.TestCase):

  def test_known_and_fallback_names(self):
    ds = helpers.synthetic(8, classes=4)
    self.assertEqual(data_lib.class_names(ds), ("0", "1", "2", "3"))
    cifar = data_lib.make_dataset(np.zeros((10, 2, 2, 3), np.uint8),
                                  np.arange(10), 10, "cifar10")
    self.assertEqual(data_lib.class_names(cifar)[:2],
                     ("airplane", "automobile"))
    own = data_lib.make_dataset(ds.images, ds.labels, 4, "cifar10",
                                ("a", "b", "c", "d"))
    self.assertEqual(data_lib.class_names(own), ("a", "b", "c", "d"))
    with self.assertRaisesRegex(UEError, "2 class names for 4 classes"):
      data_lib.make_dataset(ds.images, ds.labels, 4, "x", ("a", "b"))

  def test_figure_rows_are_labelled(self):
    images = np.zeros((2, 4, 4, 3), np.uint8)
    fig = release_lib.figure_rows(images, np.zeros((2, 4, 4, 3)), images,
                                  eps=0.1, row_labels=["cat", "dog"])
    self.assertEqual([ax.get_ylabel() for ax in fig.axes[::3]],
                     ["cat", "dog"])

  def test_pipeline_records_the_folder_classes(self):
    tmp = self.create_tempdir().full_path
    tree = os.path.join(tmp, "tree")
    helpers.write_image_tree(tree, classes=("owl", "bee"), per_class=16,
                             size=(12, 12), mode="L")
    cfg = test_tiny.get_config()
    cfg.data.source, cfg.data.path = "folder", helpers.tar_tree(
        tree, os.path.join(tmp, "tree.tar"))
    cfg.data.cache_dir = os.path.join(tmp, "cache")
    cfg.noise.kind = "random"
    out = pipeline.run(cfg, os.path.join(tmp, "w"),
                       stages=("generate", "release"))
    self.assertEqual(out["class_names"], ["bee", "owl"])
    self.assertEqual(out["num_classes"], 2)
    released = np.load(out["release_path"], allow_pickle=False)
    chex.assert_shape(released["images"], (32, 12, 12, 1))
    np.testing.assert_array_equal(released["labels"], [0] * 16 + [1] * 16)


class RealCifar10Test(absltest.TestCase):
  """The real CIFAR-10 as a JPEG tar (e.g. /work/shared/data/
  cifar10-jpeg.tar.gz, README there), decoded without a cache."""

  def test_cifar10_tar(self):
    path = os.environ.get(CIFAR10_ENV)
    if not path:
      self.skipTest(f"set {CIFAR10_ENV} to the CIFAR-10 JPEG tar to run it")
    train, test = data_lib.load("cifar10", source="folder", path=path,
                                cache_dir="none")
    chex.assert_shape((train.images, test.images),
                      [(50000, 32, 32, 3), (10000, 32, 32, 3)])
    np.testing.assert_array_equal(np.bincount(train.labels), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    self.assertEqual(train.class_names, data_lib.CLASS_NAMES["cifar10"])
    self.assertAlmostEqual(float(train.images.mean()), 120.69, delta=0.1)


if __name__ == "__main__":
  absltest.main()
