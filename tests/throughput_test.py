"""benchmarks/throughput.py at tiny sizes: every mode writes its JSON, and
the figures in it agree with each other (no timing thresholds); a bfloat16
row times bfloat16 convolutions; the PyTorch twin computes the same
function as the Flax model."""

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
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
    "eval_images_per_s", "peak_bytes_in_use"}
TWIN_KEYS = {
    "torch", "torch_device", "torch_check", "torch_pgd_seconds",
    "torch_pgd_seconds_all", "torch_pgd_image_steps_per_s",
    "torch_model_step_seconds", "torch_model_step_seconds_all",
    "torch_model_step_images_per_s", "pgd_ours_over_torch",
    "model_step_ours_over_torch"}


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

  def check_row(self, row, extra=frozenset()):
    self.assertEqual(set(row), ROW_KEYS | extra)
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
    # XLA:CPU keeps no memory statistics; an accelerator reports its peak
    self.assertEqual(row["peak_bytes_in_use"] is None,
                     row["platform"] == "cpu")

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

  @absltest.skipUnless(importlib.util.find_spec("torch"), "needs torch")
  def test_twin_beside_each_dtype(self):
    results, stdout = run(*TINY, "--torch=True", "--threads=1",
                          "--dtype=float32,bfloat16")
    rows = results["rows"]
    self.assertEqual([r["dtype"] for r in rows], ["float32", "bfloat16"])
    for row in rows:
      self.check_row(row, TWIN_KEYS)
      for part, per_image in (("pgd", row["pgd_steps"]), ("model_step", 1)):
        times = row[f"torch_{part}_seconds_all"]
        self.assertLen(times, 1)
        self.assertAlmostEqual(
            row[f"torch_{part}_{throughput.PARTS[part]}_per_s"]
            * statistics.median(times) / (row["images"] * per_image), 1,
            places=9)
        # ours/torch: the ratio of the rates, so of the inverse seconds
        self.assertAlmostEqual(
            row[f"{part}_ours_over_torch"],
            row[f"torch_{part}_seconds"] / row[f"{part}_seconds"], places=9)
      self.assertNotIn("torch_eval_seconds", row)
      # small_cnn has no strided convolution: both paddings agree
      check = row["torch_check"]
      for padding in ("xla_padding", "torch_padding"):
        for mode in ("eval", "train"):
          self.assertLess(check[padding][mode],
                          1e-5 * max(1.0, check["logit_scale"]), check)
    self.assertIn("| float32 |", stdout)
    self.assertIn("| bfloat16 |", stdout)

  @absltest.skipUnless(importlib.util.find_spec("torch"), "needs torch")
  def test_twin_computes_the_same_resnet(self):
    # ue_jax's ResNet-18 pads its convolutions as PyTorch's padding=1 does:
    # the twin in that padding (its default) gives the same logits; in
    # XLA's "SAME" (one extra row and column at the end where the stride is
    # 2) different ones, so the check can tell.
    from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
    check = torch_reference.same_function("resnet18", 4, (16, 16, 3))
    scale = check["logit_scale"]
    self.assertGreater(scale, 0)
    for mode in ("eval", "train"):
      self.assertLess(check["torch_padding"][mode], 1e-4 * max(1.0, scale),
                      check)
      self.assertGreater(check["xla_padding"][mode],
                         100 * check["torch_padding"][mode], check)

  def test_bfloat16_rows_time_bfloat16_convolutions(self):
    # The PGD step a bfloat16 row times convolves in bfloat16, a float32
    # row's in float32; the noise stays float32 in both.
    for dtype in ("float32", "bfloat16"):
      state, steps, batches = throughput.build(throughput.Spec(
          "resnet18", 4, (8, 8, 3), 8, 2, dtype=dtype))
      hlo = steps["pgd"].lower(state, batches[0]).as_text()
      convs = [line for line in hlo.splitlines() if "convolution" in line]
      self.assertNotEmpty(convs)
      self.assertEqual({"bf16" in line for line in convs},
                       {dtype == "bfloat16"}, dtype)
      self.assertEqual(state.noise.dtype, np.float32)

  def test_roofline_here(self):
    # The roofline's code path with a tiny model and made-up roofs (the
    # real roofs multiply 2048^2 matrices and sum 256 MiB).
    tiny = {"small_cnn": throughput.Spec("small_cnn", 4, (8, 8, 1), 8, 2)}
    folder = tempfile.mkdtemp(prefix="ue_jax_roofline_")
    out = os.path.join(folder, "roofline.json")
    roofline = throughput._roofline  # pylint: disable=protected-access
    with mock.patch.object(throughput, "MODELS", tiny), \
        mock.patch.object(roofline, "roofs", lambda: {
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
