"""A single class protected beside a reference set (--reference): only the
owner's files are written, the reference's noise rows stay zero, and the
held-out check trains on reference + copies against reference + originals."""

import json
import os
import subprocess
import tempfile

import chex
import numpy as np
from absl.testing import absltest
from PIL import Image

from configs import protect as protect_config
from tests import helpers
from tests import protect_test
from ue_jax import protect_folder as protect
from ue_jax.io import folder_source
from ue_jax.io import image_folder as folder_lib
from ue_jax.io import reference as reference_lib
from ue_jax.runtime.errors import UEError


def tiny_config(arg=None):
  """configs/protect.py[:arg] with protect_test.TINY's overrides."""
  cfg = protect_config.get_config(arg)
  for flag in protect_test.TINY:
    dotted, value = flag[len("--config."):].split("=")
    block, field = dotted.split(".")
    cfg[block][field] = type(cfg[block][field])(value)
  return cfg


def write_loose(folder, count, seed, size=(20, 16), low=0, high=256):
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  for k in range(count):
    pixels = rng.integers(low, high, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f"p{k}.png"))


class ReferenceCliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_reference_")
    cls.mine = os.path.join(cls.tmp, "mine")
    write_loose(cls.mine, 6, seed=0)
    root = os.path.join(cls.tmp, "ref_root")
    helpers.write_image_tree(root, classes=("cat", "dog", "mine"),
                             per_class=5, size=(20, 16))
    cls.tar = os.path.join(cls.tmp, "ref.tar.gz")
    helpers.tar_tree(root, cls.tar, top="data")
    cls.held = os.path.join(cls.tmp, "held")
    write_loose(os.path.join(cls.held, "mine"), 4, seed=1)
    cls.out = os.path.join(cls.tmp, "out")
    cls.env = helpers.cli_env(os.path.join(cls.tmp, "xla_cache"))
    cls.proc = subprocess.run(
        protect_test.protect_command(
            f"--input={cls.mine}", f"--output={cls.out}",
            f"--reference={cls.tar}", f"--heldout={cls.held}",
            "--config.evaluate.epochs=1"),
        cwd=helpers.REPO, env=cls.env, capture_output=True, text=True,
        timeout=600, check=False)
    with open(os.path.join(cls.out, ".ue_jax", "results.json")) as f:
      cls.results = json.load(f)

  def test_only_the_owners_files_are_written_within_eps(self):
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-3000:])
    written = sorted(n for n in os.listdir(self.out) if not n.startswith("."))
    self.assertEqual(written, [f"p{k}.png" for k in range(6)])
    for name in written:
      a = np.asarray(Image.open(os.path.join(self.mine, name)), np.int16)
      b = np.asarray(Image.open(os.path.join(self.out, name)), np.int16)
      self.assertLessEqual(np.abs(a - b).max(), protect_test.EPS_255)

  def test_summary_and_psnr_of_each_copy(self):
    for line in protect.EXPECTATIONS:
      self.assertIn(line, self.proc.stdout)
    self.assertIn("visibility: PSNR median", self.proc.stdout)
    with open(os.path.join(self.out, ".ue_jax", "manifest.json")) as f:
      files = json.load(f)["files"]
    for record in files:
      a = np.asarray(Image.open(os.path.join(self.mine, record["input"])),
                     np.float64)
      b = np.asarray(Image.open(os.path.join(self.out, record["output"])),
                     np.float64)
      want = 10 * np.log10(255 ** 2 / np.mean((a - b) ** 2))
      self.assertAlmostEqual(record["psnr_db"], want, places=1)
    self.assertAlmostEqual(self.results["psnr_db_median"],
                           np.median([r["psnr_db"] for r in files]))

  def test_reference_rows_keep_zero_noise(self):
    noise = np.load(os.path.join(self.out, ".ue_jax", "noise.npy"))
    # 6 own rows, then 10 reference rows (cat, dog; "mine" left out).
    self.assertEqual(noise.shape[0], 16)
    chex.assert_trees_all_equal(noise[6:], np.zeros_like(noise[6:]))
    self.assertGreater(np.abs(noise[:6]).max(), 0)

  def test_results_name_the_reference_and_the_heldout_check(self):
    ref = self.results["reference"]
    self.assertEqual(ref["classes"], ["cat", "dog"])
    self.assertEqual(ref["images"], 10)
    self.assertEqual(self.results["classes"], ["mine"])
    for key in ("clean_test_accuracy", "unlearnable_test_accuracy"):
      self.assertBetween(self.results[key], 0.0, 1.0)
    self.assertEqual(self.results["config"]["noise"]["fit_classes"], [0])

  def test_another_reference_is_refused_on_the_same_output(self):
    other = os.path.join(self.tmp, "other_ref")
    helpers.write_image_tree(other, classes=("cat", "dog"), per_class=2,
                             size=(20, 16), splits=("",), seed=5)
    cfg = tiny_config()
    before = sorted(os.listdir(os.path.join(self.out, ".ue_jax")))
    with self.assertRaisesRegex(UEError, "differs from the one whose noise"):
      protect.run(cfg, self.mine, self.out, reference=other)
    self.assertEqual(sorted(os.listdir(os.path.join(self.out, ".ue_jax"))),
                     before)


class ReferenceUnitTest(absltest.TestCase):

  def test_single_class_without_reference_names_the_flag(self):
    tmp = tempfile.mkdtemp()
    helpers.write_image_tree(tmp, classes=("cats",), per_class=2,
                             splits=("",))
    with self.assertRaisesRegex(UEError, "single class .* --reference="):
      folder_lib.scan(tmp)
    listing = folder_lib.scan(tmp, one_class=True)
    self.assertEqual(listing.classes, ("cats",))

  def test_a_loose_folder_is_one_class_named_after_it(self):
    tmp = os.path.join(tempfile.mkdtemp(), "holiday")
    write_loose(tmp, 3, seed=0)
    listing = folder_lib.scan(tmp + "/", one_class=True)
    self.assertEqual(listing.classes, ("holiday",))
    self.assertEqual(sorted(e.path for e in listing.entries),
                     ["p0.png", "p1.png", "p2.png"])
    self.assertEqual({e.label for e in listing.entries}, {0})

  def test_stratified_subset_is_even_and_seeded(self):
    tmp = tempfile.mkdtemp()
    helpers.write_image_tree(tmp, classes=("a", "b", "c"), per_class=7,
                             splits=("",))
    split = folder_source.split_of_tree(tmp, "--reference")
    keep = np.ones(len(split.names), bool)
    rows = reference_lib.stratified_names(split, keep, 9, seed=0)
    np.testing.assert_array_equal(np.bincount(split.labels[rows]), [3, 3, 3])
    np.testing.assert_array_equal(
        rows, reference_lib.stratified_names(split, keep, 9, seed=0))
    self.assertLen(reference_lib.stratified_names(split, keep, 0, seed=0), 21)

  def test_load_leaves_out_the_owners_class_names(self):
    tmp = tempfile.mkdtemp()
    helpers.write_image_tree(tmp, classes=("a", "b"), per_class=2,
                             splits=("",))
    ref = reference_lib.load(tmp, size=4, channels=3, exclude=("a",))
    self.assertEqual(ref.classes, ("b",))
    chex.assert_shape(ref.images, (2, 4, 4, 3))
    np.testing.assert_array_equal(ref.labels, [0, 0])
    with self.assertRaisesRegex(UEError, "no class other than the input's"):
      reference_lib.load(tmp, size=4, channels=3, exclude=("a", "b"))

  def test_robust_variant_gives_the_owners_class_one_luma_pattern(self):
    """protect.py:robust=true beside a reference: class-wise noise, one
    row per class; the reference's rows stay zero, the owner's row is a
    luma pattern (R = G = B), and every copy (all of one size) carries that
    pattern, up to the rounding of its pixels. (The owner's pixels stay
    eps away from 0 and 255: no clip to the pixel range leaves the form.)"""
    tmp = tempfile.mkdtemp(prefix="ue_jax_reference_robust_")
    mine, ref, out = (os.path.join(tmp, d) for d in ("mine", "ref", "out"))
    write_loose(mine, 6, seed=0, size=(16, 16), low=20, high=236)
    helpers.write_image_tree(ref, classes=("cat", "dog"), per_class=5,
                             size=(16, 16), splits=("",))
    cfg = tiny_config("robust=true")
    cfg.generate.max_rounds = 2
    self.assertEqual((cfg.noise.layout, cfg.noise.form), ("classwise", "luma"))
    with self.assertLogs(level="WARNING") as logs:
      protect.run(cfg, mine, out, reference=ref)
    self.assertTrue(any("class-wise noise for one class" in line
                        for line in logs.output))
    noise = np.load(os.path.join(out, ".ue_jax", "noise.npy"))
    chex.assert_shape(noise, (3, 16, 16, 3))
    chex.assert_trees_all_equal(noise[1:], np.zeros_like(noise[1:]))
    self.assertGreater(np.abs(noise[0]).max(), 0)
    chex.assert_trees_all_close(noise[0, ..., 0], noise[0, ..., 1], atol=1e-6)
    chex.assert_trees_all_close(noise[0, ..., 0], noise[0, ..., 2], atol=1e-6)
    eps = round(cfg.noise.eps * 255)
    for k in range(6):
      a = np.asarray(Image.open(os.path.join(mine, f"p{k}.png")), np.int16)
      b = np.asarray(Image.open(os.path.join(out, f"p{k}.png")), np.int16)
      self.assertLessEqual(np.abs(a - b).max(), eps)
      self.assertLessEqual(np.abs((b - a) - noise[0] * 255).max(), 0.5 + 1e-3)

  def test_a_reference_overlapping_the_input_is_refused(self):
    tmp = tempfile.mkdtemp()
    mine = os.path.join(tmp, "mine")
    write_loose(mine, 2, seed=0)
    cfg = protect_config.get_config()
    with self.assertRaisesRegex(UEError, "--reference .* overlaps --input"):
      protect.run(cfg, mine, os.path.join(tmp, "out"), reference=tmp)
    self.assertFalse(os.path.exists(os.path.join(tmp, "out")))


if __name__ == "__main__":
  absltest.main()
