"""io/image_folder.py: labels from a CSV or the layout, modes, the noise's
way to native size, and atomic checked writes."""

import os

import numpy as np
from absl.testing import absltest
from PIL import Image

from ue_jax.io import image_folder as folder_lib
from ue_jax.runtime.errors import UEError


def save(root, name, image):
  path = os.path.join(root, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path)
  return path


class ScanTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    for name in ("b.png", "a.jpg", "sub/c.bmp"):
      save(self.root, name, Image.new("L", (5, 4), 9))

  def test_csv_labels(self):
    csv = os.path.join(self.create_tempdir().full_path, "labels.csv")
    with open(csv, "w", encoding="utf-8") as f:
      f.write("file,label\nb.png,10\na.jpg,9\nsub/c.bmp,10\n")
    listing = folder_lib.scan(self.root, labels_csv=csv)
    # Sorted paths; integer class names sorted as numbers (9 before 10).
    self.assertEqual([e.path for e in listing.entries],
                     ["a.jpg", "b.png", "sub/c.bmp"])
    self.assertEqual(listing.classes, ("9", "10"))
    self.assertEqual([e.label for e in listing.entries], [0, 1, 1])
    self.assertEqual([e.output for e in listing.entries],
                     ["a.png", "b.png", "sub/c.png"])

  def test_csv_must_label_every_image(self):
    csv = os.path.join(self.create_tempdir().full_path, "labels.csv")
    with open(csv, "w", encoding="utf-8") as f:
      f.write("b.png,x\na.jpg,y\n")
    with self.assertRaisesRegex(UEError, "1 image.* have no row.*sub/c.bmp"):
      folder_lib.scan(self.root, labels_csv=csv)

  def test_layout_and_collisions(self):
    root = self.create_tempdir().full_path
    for name in ("cat/1.png", "dog/x/2.webp", "dog/3.tif"):
      save(root, name, Image.new("RGB", (3, 3)))
    listing = folder_lib.scan(root)
    self.assertEqual([(e.path, e.label) for e in listing.entries],
                     [("cat/1.png", 0), ("dog/3.tif", 1),
                      ("dog/x/2.webp", 1)])
    save(root, "cat/1.jpg", Image.new("RGB", (3, 3)))
    with self.assertRaisesRegex(UEError, "would both be written as cat/1.png"):
      folder_lib.scan(root)


class PixelsTest(absltest.TestCase):

  def test_to_native_is_bounded_and_interpolates(self):
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.05, 0.05, (8, 8, 3)).astype(np.float32)
    eps = 0.04
    for method in ("bilinear", "nearest"):
      out = folder_lib.to_native(noise, width=21, height=13, channels=3,
                                 eps=eps, method=method)
      self.assertEqual(out.shape, (13, 21, 3))
      self.assertLessEqual(np.abs(out).max(), eps)
    # Nearest at an integer factor repeats each value in a 2x2 block.
    out = folder_lib.to_native(noise, width=16, height=16, channels=3,
                               eps=1.0, method="nearest")
    np.testing.assert_array_equal(out[::2, ::2], noise)
    np.testing.assert_array_equal(out[1::2, 1::2], noise)
    # A gray file gets the channel mean.
    gray = folder_lib.to_native(noise, width=8, height=8, channels=1,
                                eps=1.0, method="nearest")
    np.testing.assert_allclose(gray[..., 0], noise.mean(-1), atol=1e-7)

  def test_modes_and_checked_write(self):
    root = self.create_tempdir().full_path
    palette = Image.new("P", (6, 5))
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((1, 1), 1)
    picture = folder_lib.read(save(root, "p.png", palette))
    self.assertEqual((picture.mode, picture.file_mode), ("RGB", "P"))
    self.assertEqual(tuple(picture.pixels[1, 1]), (200, 10, 10))
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 3] = np.arange(6) * 40
    original = folder_lib.read(save(root, "a.png",
                                    Image.fromarray(rgba, "RGBA")))
    copy = rgba.copy()
    copy[..., :3] = 3
    out = os.path.join(root, "out", "a.png")
    folder_lib.write_png(out, Image.fromarray(copy, "RGBA"))
    self.assertEqual(os.listdir(os.path.dirname(out)), ["a.png"])
    self.assertEqual(folder_lib.check_copy(out, original, max_delta=3)[1], 3)
    with self.assertRaisesRegex(folder_lib.BadFile, "differs by 3 > 2"):
      folder_lib.check_copy(out, original, max_delta=2)
    copy[0, 0, 3] += 1
    folder_lib.write_png(out, Image.fromarray(copy, "RGBA"))
    with self.assertRaisesRegex(folder_lib.BadFile, "alpha"):
      folder_lib.check_copy(out, original, max_delta=3)
    with open(os.path.join(root, "bad.png"), "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\nbroken")
    with self.assertRaisesRegex(folder_lib.BadFile, "not a readable image"):
      folder_lib.read(os.path.join(root, "bad.png"))


if __name__ == "__main__":
  absltest.main()
