"""benchmarks/throughput.py at tiny sizes: every mode writes its JSON, and
the figures in it agree with each other (no timing thresholds)."""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

from benchmarks import throughput
from tests import helpers

SCRIPT = os.path.join(helpers.REPO, "benchmarks", "throughput.py")
TINY = ["--model=small_cnn", "--width=4", "--shape=8,8,1", "--batch=8",
        "--steps=2", "--images=16", "--repeats=1"]
ROW_KEYS = {
    "name", "setting", "model", "width", "shape", "batch", "pgd_steps",
    "images", "calls", "storage", "dtype", "unroll", "devices", "platform",
    "noise_rows_per_device", "noise_bytes_per_device",
    "noise_step_argument_bytes", "noise_step_temp_bytes", "flops", "bytes",
    "flops_per_image_step", "flops_per_s", "pgd_seconds", "pgd_seconds_all",
    "pgd_image_steps_per_s", "model_step_seconds", "model_step_seconds_all",
    "model_step_images_per_s", "eval_seconds", "eval_seconds_all",
    "eval_images_per_s"}


def run(*flags):
  out = os.path.join(tempfile.mkdtemp(prefix="ue_jax_throughput_"),
                     "out.json")
  proc = subprocess.run([sys.executable, SCRIPT, *flags, f"--out={out}"],
                        capture_output=True, text=True, timeout=600,
                        check=False, cwd=helpers.REPO)
  if proc.returncode:
    raise AssertionError(proc.stderr[-3000:])
  with open(out, encoding="utf-8") as f:
    return json.load(f), proc.stdout


class ThroughputTest(absltest.TestCase):

  def check_row(self, row):
    self.assertEqual(set(row), ROW_KEYS)
    self.assertEqual(row["images"], row["calls"] * row["batch"])
    for part, per_image in (("pgd", row["pgd_steps"]), ("model_step", 1),
                            ("eval", 1)):
      seconds, rate = row[f"{part}_seconds"], row[
          f"{part}_{throughput.PARTS[part]}_per_s"]
      self.assertTrue(math.isfinite(rate) and rate > 0, row)
      self.assertLen(row[f"{part}_seconds_all"], 1)
      self.assertEqual(seconds, statistics.median(row[f"{part}_seconds_all"]))
      # images * K (PGD) or images per sweep, at the reported rate
      self.assertAlmostEqual(rate * seconds / (row["images"] * per_image), 1,
                             places=9)
    self.assertAlmostEqual(
        row["flops_per_image_step"] * row["batch"] * row["pgd_steps"]
        / row["flops"], 1, places=9)
    self.assertAlmostEqual(row["flops_per_s"] * row["pgd_seconds"]
                           / (row["flops"] * row["calls"]), 1, places=9)
    for key in ("flops", "bytes", "noise_step_argument_bytes",
                "noise_step_temp_bytes"):
      self.assertGreater(row[key], 0, key)
    # float32 noise rows of 8x8x1 pixels
    self.assertEqual(row["noise_bytes_per_device"],
                     row["noise_rows_per_device"] * 8 * 8 * 1 * 4)

  def test_steps_here(self):
    results, stdout = run(*TINY, "--unroll=False")
    self.assertEqual(results["measure"], "steps")
    (row,) = results["rows"]
    self.check_row(row)
    self.assertEqual((row["model"], row["width"], row["shape"], row["batch"],
                      row["pgd_steps"], row["images"], row["calls"]),
                     ("small_cnn", 4, [8, 8, 1], 8, 2, 16, 2))
    self.assertEqual((row["devices"], row["setting"]), (1, ""))
    self.assertFalse(row["unroll"])
    self.assertEqual(row["noise_rows_per_device"], 16)
    self.assertIn("| 1 |", stdout)

  def test_devices_one_subprocess_each(self):
    results, stdout = run(*TINY, "--devices=1,2")
    rows = results["rows"]
    self.assertEqual([(r["setting"], r["devices"]) for r in rows],
                     [("1", 1), ("2", 2)])
    for row in rows:
      self.check_row(row)
      self.assertTrue(row["unroll"])
      # each device holds 1/devices of the noise rows; together, every row
      self.assertEqual(row["noise_rows_per_device"] * row["devices"],
                       row["images"])
    self.assertEqual(rows[1]["noise_rows_per_device"] * 2,
                     rows[0]["noise_rows_per_device"])
    self.assertEqual(rows[1]["noise_bytes_per_device"] * 2,
                     rows[0]["noise_bytes_per_device"])
    self.assertIn("(1.00x)", stdout)
    self.assertIn("| 2 |", stdout)

  def test_roofline_here(self):
    # The roofline's code path with a tiny model and made-up roofs (the
    # real roofs multiply 2048^2 matrices and sum 256 MiB).
    tiny = {"small_cnn": throughput.Spec("small_cnn", 4, (8, 8, 1), 8, 2)}
    folder = tempfile.mkdtemp(prefix="ue_jax_roofline_")
    out = os.path.join(folder, "roofline.json")
    with mock.patch.object(throughput, "MODELS", tiny), \
        mock.patch.object(throughput, "roofs", lambda: {
            "gemm_flops_per_s": 1e11, "memory_bytes_per_s": 1e10}):
      throughput.main(["--measure=roofline", "--repeats=1", f"--out={out}"])
    with open(out, encoding="utf-8") as f:
      results = json.load(f)
    self.assertTrue(os.path.getsize(os.path.join(folder, "roofline.png")))
    self.assertEqual(results["gemm_flops_per_s"], 1e11)
    (row,) = results["rows"]
    self.assertEqual(row["name"], "small_cnn")
    self.assertNotIn("model_step_seconds", row)  # roofline: PGD only
    self.assertAlmostEqual(row["pgd_image_steps_per_s"] * row["pgd_seconds"],
                           8 * 2)


if __name__ == "__main__":
  absltest.main()
