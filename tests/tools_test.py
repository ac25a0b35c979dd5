"""tools/export_folder.py on a synthetic colour image tree: the CIFAR-10
route writes each picked image, under its class name and its source index,
at the size its position asks for, and shrinking the file back gives the
original pixels (to within the resampling's error)."""

import os
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest
from PIL import Image

from tests import helpers

sys.path.insert(0, os.path.join(helpers.REPO, "tools"))
import export_folder  # pylint: disable=g-import-not-at-top,wrong-import-position


class ExportFolderTest(absltest.TestCase):

  def test_cifar10_route_writes_upscaled_copies_under_class_names(self):
    tmp = tempfile.mkdtemp(prefix="ue_jax_tools_")
    tree = os.path.join(tmp, "tree")
    # Smooth pictures (a gradient per image), which bicubic resampling
    # keeps to within a few levels, unlike random pixels.
    written = helpers.write_image_tree(tree, classes=("cat", "dog"),
                                       per_class=4, size=(32, 32))
    yy, xx = np.mgrid[0:32, 0:32]
    originals = {}
    for rel in sorted(written):
      k = len(originals)
      pixels = np.stack([(xx * 4 + k * 9) % 256, (yy * 4 + k * 5) % 200,
                         np.full_like(xx, 40 + 20 * k)], -1).astype(np.uint8)
      Image.fromarray(pixels, "RGB").save(os.path.join(tree, rel))
      originals[rel] = pixels
    out = os.path.join(tmp, "out")
    subprocess.run([sys.executable, os.path.join(helpers.REPO, "tools",
                                                 "export_folder.py"),
                    "--dataset=cifar10", f"--path={tree}", f"--out={out}",
                    "--n=8", "--split=train"], check=True, cwd=helpers.REPO,
                   capture_output=True,
                   env={**os.environ, "XDG_CACHE_HOME": tmp})
    self.assertEqual(sorted(os.listdir(out)), ["cat", "dog"])
    files = sorted(os.path.join(c, f) for c in ("cat", "dog")
                   for f in os.listdir(os.path.join(out, c)))
    self.assertLen(files, 8)
    sizes = set()
    # The tree's train rows in order: cat/00..03, then dog/00..03.
    train_rels = sorted(r for r in originals if r.startswith("train/"))
    for rel in files:
      cls, name = rel.split("/")
      index = int(os.path.splitext(name)[0])
      source = train_rels[index]
      self.assertEqual(source.split("/")[1], cls)
      with Image.open(os.path.join(out, rel)) as image:
        self.assertEqual(image.mode, "RGB")
        self.assertIn(image.size, export_folder.SIZES["cifar10"])
        sizes.add(image.size)
        back = np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC),
                          np.float32)
      error = np.abs(back - originals[source].astype(np.float32))
      # Wrapping gradients have one sharp edge; the rest is smooth.
      self.assertLess(float(np.median(error)), 2.0, rel)
    self.assertEqual(sizes, set(export_folder.SIZES["cifar10"]))


if __name__ == "__main__":
  absltest.main()
