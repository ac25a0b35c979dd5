"""`python -m ue_jax.protect` on a folder of real Fashion-MNIST image files,
checked with pillow and hashlib directly (not with the code under test).

The folder: 160 images in 4 class folders, at 28x28, 56x56 and 40x36, in
modes L, RGB and RGBA (a non-trivial alpha), one JPEG with an EXIF rotation,
one corrupt file, one text file. A tiny model and one round keep the search
to seconds.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest
from PIL import Image
from PIL import ImageOps

from configs import protect as protect_config
from tests import helpers
from ue_jax.io import data as data_lib
from ue_jax.runtime.errors import UEError
from ue_jax import protect_folder as protect

EPS_255 = 16  # configs/protect.py: eps = 16/255
TINY = ("--config.model.name=small_cnn_avg", "--config.model.width=4",
        "--config.noise.num_steps=2", "--config.generate.max_rounds=1",
        "--config.generate.train_steps=2", "--config.generate.batch_size=64",
        "--config.protect.size=16", "--config.protect.preview=3")
CORRUPT = "3/corrupt.png"
ROTATED = "2/rotated.jpg"


def sha(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def tree_hashes(root):
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      out[os.path.relpath(path, root)] = sha(path)
  return out


def upright(path):
  with Image.open(path) as image:
    return ImageOps.exif_transpose(image)


def make_folder(root):
  """Writes the test folder; returns the relative paths of its images."""
  train, _ = data_lib.load("fashion_mnist", source="idx")
  names = []
  for i in range(160):
    label = int(train.labels[i] % 4)
    image = Image.fromarray(train.images[i, ..., 0], "L")
    if i % 4 == 1:
      image = image.resize((56, 56), Image.Resampling.BICUBIC)
    elif i % 4 == 2:
      image = image.resize((40, 36), Image.Resampling.BICUBIC)
    if i % 3 == 1:
      image = image.convert("RGB")
    elif i % 3 == 2:
      pixels = np.asarray(image.convert("RGBA")).copy()
      pixels[..., 3] = (np.arange(pixels.shape[1]) * 7 % 256)[None, :]
      image = Image.fromarray(pixels, "RGBA")
    name = f"{label}/{i:03d}.png"
    os.makedirs(os.path.join(root, str(label)), exist_ok=True)
    image.save(os.path.join(root, name))
    names.append(name)
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees to display
  Image.fromarray(train.images[200, :, 4:24, 0], "L").save(
      os.path.join(root, ROTATED), quality=95, exif=exif)
  with open(os.path.join(root, CORRUPT), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
  with open(os.path.join(root, "README.txt"), "w", encoding="utf-8") as f:
    f.write("not an image\n")
  return sorted(names + [ROTATED])


def protect_command(*flags):
  return [sys.executable, "-m", "ue_jax.protect", *TINY, *flags]


class ProtectTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_protect_")
    cls.src = os.path.join(cls.tmp, "in")
    cls.names = make_folder(cls.src)
    cls.before = tree_hashes(cls.src)
    cls.out = os.path.join(cls.tmp, "out")
    cls.env = helpers.cli_env(os.path.join(cls.tmp, "xla_cache"))
    cls.proc = cls.run_cli(f"--input={cls.src}", f"--output={cls.out}")
    cls.copies = {n: os.path.join(cls.out, n[:-4] + ".png")
                  for n in cls.names}
    cls.first = {n: sha(p) for n, p in cls.copies.items()}
    with open(os.path.join(cls.out, ".ue_jax", "manifest.json")) as f:
      cls.manifest = json.load(f)

  @classmethod
  def run_cli(cls, *flags):
    return subprocess.run(protect_command(*flags), cwd=helpers.REPO,
                          env=cls.env, capture_output=True, text=True,
                          timeout=600, check=False)

  def test_exit_names_the_corrupt_file(self):
    self.assertEqual(self.proc.returncode, 1, self.proc.stderr[-3000:])
    last = self.proc.stderr.strip().splitlines()[-1]
    self.assertTrue(last.startswith("error: 1 file(s) could not be "
                                    f"protected (the other {len(self.names)}"
                                    " are protected)"), last)
    self.assertIn(CORRUPT, last)
    self.assertIn("1 JPEG input(s) (e.g. 2/rotated.jpg) are written as PNG: "
                  "re-encoding a protected copy as JPEG weakens the "
                  "protection", self.proc.stderr)
    self.assertFalse(os.path.exists(os.path.join(self.out, CORRUPT)))

  def test_names_sizes_modes_bound_alpha(self):
    written = sorted(
        os.path.relpath(os.path.join(d, n), self.out)
        for d, _, files in os.walk(self.out) if ".ue_jax" not in d
        for n in files)
    self.assertEqual(written, sorted(n[:-4] + ".png" for n in self.names))
    changed = 0
    for name in self.names:
      original = upright(os.path.join(self.src, name))
      with Image.open(self.copies[name]) as copy:
        self.assertEqual(copy.format, "PNG")
        self.assertEqual((copy.size, copy.mode),
                         (original.size, original.mode), name)
        x = np.asarray(original).astype(int).reshape(*original.size[::-1], -1)
        y = np.asarray(copy).astype(int).reshape(*copy.size[::-1], -1)
      color = slice(0, 3 if original.mode.startswith("RGB") else 1)
      delta = np.abs(y[..., color] - x[..., color])
      self.assertLessEqual(delta.max(), EPS_255, name)
      changed += int(delta.max() > 0)
      if original.mode.endswith("A"):
        np.testing.assert_array_equal(y[..., -1], x[..., -1])
    self.assertEqual(changed, len(self.names))
    # The EXIF rotation was applied: stored 20x28, shown and copied 28x20.
    self.assertEqual(upright(os.path.join(self.src, ROTATED)).size, (28, 20))

  def test_manifest(self):
    files = {r["input"]: r for r in self.manifest["files"]}
    self.assertEqual(sorted(files), self.names)
    for name, record in files.items():
      self.assertEqual(record["input_sha256"],
                       sha(os.path.join(self.src, name)))
      self.assertEqual(record["output_sha256"], self.first[name])
      with Image.open(self.copies[name]) as copy:
        self.assertEqual((list(copy.size), copy.mode),
                         (record["size"], record["mode"]))
      self.assertEqual(record["label"], name.split("/")[0])
    self.assertEqual([f["input"] for f in self.manifest["failed"]], [CORRUPT])
    self.assertIn("README.txt", self.manifest["ignored"])
    self.assertTrue(os.path.exists(os.path.join(self.out, ".ue_jax",
                                                "preview.png")))

  def test_input_unchanged(self):
    self.assertEqual(tree_hashes(self.src), self.before)

  def test_resume_redoes_only_missing_files(self):
    out = os.path.join(self.tmp, "resumed")
    subprocess.run(["cp", "-a", self.out, out], check=True)
    work = os.path.join(out, ".ue_jax")
    # A crash after some files: the last 20 copies and their records are
    # gone, a temporary file is left behind, one kept copy is damaged.
    lost = self.names[-20:]
    for name in lost:
      os.remove(os.path.join(out, name[:-4] + ".png"))
    with open(os.path.join(work, "written.jsonl")) as f:
      lines = [l for l in f if json.loads(l)["input"] not in lost]
    with open(os.path.join(work, "written.jsonl"), "w") as f:
      f.writelines(lines)
    with open(os.path.join(out, "0", ".tmp-ue_jax-x.png"), "wb") as f:
      f.write(b"half")
    damaged = self.names[0][:-4] + ".png"
    with open(os.path.join(out, damaged), "ab") as f:
      f.write(b"x")
    kept = {n: os.stat(os.path.join(out, n[:-4] + ".png")).st_mtime_ns
            for n in self.names if n not in lost}
    proc = self.run_cli(f"--input={self.src}", f"--output={out}")
    self.assertEqual(proc.returncode, 1, proc.stderr[-3000:])
    with open(os.path.join(work, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["written"], len(lost) + 1)
    self.assertEqual(results["skipped_verified"], len(self.names) - 21)
    for name in self.names:
      path = os.path.join(out, name[:-4] + ".png")
      self.assertEqual(sha(path), self.first[name], name)  # same bytes
      if name in kept and name[:-4] + ".png" != damaged:
        self.assertEqual(os.stat(path).st_mtime_ns, kept[name], name)
    self.assertFalse(os.path.exists(os.path.join(out, "0",
                                                 ".tmp-ue_jax-x.png")))
    self.assertEqual(tree_hashes(self.src), self.before)

  def test_heldout_numbers_do_not_outlive_their_run(self):
    # results.json is rebuilt each run: a rerun without --heldout keeps the
    # search's part (no new search) but drops the held-out accuracies.
    src = os.path.join(self.tmp, "held_src")
    held = os.path.join(self.tmp, "held_test")
    out = os.path.join(self.tmp, "held_out")
    helpers.write_image_tree(src, classes=("cat", "dog"), per_class=8,
                             size=(20, 16), splits=("",))
    helpers.write_image_tree(held, classes=("cat", "dog"), per_class=4,
                             size=(20, 16), splits=("",), seed=1)
    results_path = os.path.join(out, ".ue_jax", "results.json")
    proc = self.run_cli(f"--input={src}", f"--output={out}",
                        f"--heldout={held}", "--config.evaluate.epochs=1")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(results_path) as f:
      first = json.load(f)
    for key in ("clean_test_accuracy", "unlearnable_test_accuracy",
                "rounds", "written"):
      self.assertIn(key, first)
    proc = self.run_cli(f"--input={src}", f"--output={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(results_path) as f:
      second = json.load(f)
    self.assertNotIn("clean_test_accuracy", second)
    self.assertNotIn("unlearnable_test_accuracy", second)
    self.assertEqual(second["generation_seconds"], first["generation_seconds"])
    self.assertEqual((second["written"], second["skipped_verified"]),
                     (0, first["written"]))

  def test_bad_input(self):
    """Each case refused before anything is written, the input unchanged;
    through the CLI (exit 2, one line) for the first, in-process for the
    rest (the same UEError the CLI prints)."""
    empty = os.path.join(self.tmp, "empty")
    flat = os.path.join(self.tmp, "flat")
    os.makedirs(empty, exist_ok=True)
    os.makedirs(flat, exist_ok=True)
    Image.new("L", (8, 8)).save(os.path.join(flat, "a.png"))
    cases = (
        (flat, f"{self.tmp}/o1", f"--input {flat} is not labelled: put each "
         "class's images in a subfolder named after the class"),
        (self.src, f"{self.src}/protected", "lies inside --input"),
        (self.src, self.tmp, "contains --input"),
        (f"{self.tmp}/missing", f"{self.tmp}/o2", "does not exist"),
        (empty, f"{self.tmp}/o3", "holds no image files"),
        (self.src, flat, "is not empty and was not written by "
         "ue_jax.protect"),
    )
    proc = self.run_cli(f"--input={flat}", f"--output={self.tmp}/o1")
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertNotIn("Traceback", proc.stderr)
    lines = [l for l in proc.stderr.strip().splitlines()
             if l.startswith("error")]
    self.assertLen(lines, 1)
    self.assertIn(cases[0][2], lines[0])
    self.assertIn("or pass --labels=FILE.csv with rows `file,label`",
                  lines[0])
    proc = self.run_cli(f"--input={self.src}", f"--output={self.tmp}/o4",
                        "--config.protect.sise=3")
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "error: --config.protect.sise: no such config field; "
                     'Did you mean "size" instead of "sise"?')
    self.assertNotIn("Traceback", proc.stderr)
    cfg = protect_config.get_config()
    for src, out, message in cases:
      with self.assertRaisesRegex(UEError, re.escape(message)):
        protect.run(cfg, src, out)
      if out not in (self.tmp, flat):
        self.assertFalse(os.path.exists(out), out)
    self.assertEqual(os.listdir(flat), ["a.png"])
    self.assertEqual(tree_hashes(self.src), self.before)


if __name__ == "__main__":
  absltest.main()
