"""benchmarks/gpu_paper.sh --smoke: the full-scale GPU run's code path at
tiny sizes on the CPU (a made-up JPEG tar read by the folder source), and
the JSON it leaves: every stage present, throughputs > 0, accuracies in
[0, 1]. About 2 to 3 minutes on 2 shared CPU cores (eleven ResNet-18
compilations), hence marked slow; the budget arithmetic is tested apart,
in milliseconds."""

import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from unittest import mock

import pytest
from absl.testing import absltest

from benchmarks import gpu_paper
from tests import helpers


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


class BudgetTest(absltest.TestCase):

  def test_epochs_fit_the_time_left(self):
    plan = functools.partial(gpu_paper.plan_epochs, train_images=49920,
                             test_images=10000, first_call_s=10.0,
                             max_epochs=30)
    # 10000 images/s: 5.33 s an epoch, 6.67 s with the margin.
    epochs, epoch_s = plan(150.0, images_per_s=10000.0)
    self.assertAlmostEqual(epoch_s, (49920 + 10000 / 3) / 10000)
    self.assertEqual(epochs, int((150 - 15 - 20) / (1.25 * epoch_s)))
    self.assertEqual(plan(1e6, images_per_s=10000.0)[0], 30)
    self.assertEqual(plan(10.0, images_per_s=10000.0)[0], 1)
    self.assertEqual(plan(150.0, images_per_s=None), (1, None))

  def test_no_throughput_part_starts_past_its_share(self):
    size = gpu_paper.SIZES["smoke"]
    out = gpu_paper.throughput(size, "float32", time.perf_counter() - 1)
    self.assertEqual([r["dtype"] for r in out["jax"] + out["torch"]],
                     ["float32", "bfloat16"] * 2)
    for row in out["jax"] + out["torch"] + [out["train_step"]]:
      self.assertIn("skipped", row)


  def test_a_failing_part_is_recorded_and_the_others_run(self):
    def broken(*args, **kwargs):
      del args, kwargs
      raise RuntimeError("no such device")
    size = gpu_paper.SIZES["smoke"]
    with mock.patch.object(gpu_paper.gpu_check, "jax_throughput", broken), \
        mock.patch.object(gpu_paper.gpu_check, "torch_throughput", broken), \
        mock.patch.object(gpu_paper, "loop_vs_scan", broken), \
        self.assertLogs(level="ERROR"):
      out = gpu_paper.throughput(size, "float32", time.perf_counter() + 60)
    self.assertEqual([r["dtype"] for r in out["jax"] + out["torch"]],
                     ["float32", "bfloat16"] * 2)
    for row in out["jax"] + out["torch"] + [out["train_step"]]:
      self.assertEqual(row["error"], "RuntimeError: no such device")


class GpuPaperSmokeTest(absltest.TestCase):

  @pytest.mark.slow
  def test_smoke_run_writes_every_stage(self):
    out = tempfile.mkdtemp(prefix="ue_jax_gpu_paper_")
    env = dict(os.environ, PYTHON=sys.executable, OUT=out)
    env.pop("UE_JAX_CIFAR10", None)  # the smoke run makes its own tar
    proc = subprocess.run(
        ["bash", os.path.join(helpers.REPO, "benchmarks", "gpu_paper.sh"),
         "--smoke"], env=env, capture_output=True, text=True, timeout=900,
        check=False)
    self.assertEqual(proc.returncode, 0, proc.stdout[-3000:])
    with open(os.path.join(out, "gpu_paper.json")) as f:
      report = json.load(f)
    self.assertEqual(report["mode"], "smoke")
    stages = report["stages"]
    self.assertEqual(list(stages), ["throughput", "generate", "evaluate"])

    rates = stages["throughput"]
    self.assertEqual([r["dtype"] for r in rates["jax"]],
                     ["float32", "bfloat16"])
    for row in rates["jax"]:
      self.assertTrue(_positive(row["pgd_image_steps_per_s"]), row)
      self.assertTrue(_positive(row["model_step_images_per_s"]), row)
    step = rates["train_step"]
    self.assertTrue(_positive(step["loop_images_per_s"]), step)
    self.assertTrue(_positive(step["scan_images_per_s"]), step)
    self.assertEqual([r["dtype"] for r in rates["torch"]],
                     ["float32", "bfloat16"])
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
      has_torch = True
    except ImportError:
      has_torch = False
    for row in rates["torch"]:  # CI's environment has no torch
      if has_torch:
        self.assertTrue(_positive(row["pgd_image_steps_per_s"]), row)
        self.assertTrue(_positive(row["model_step_images_per_s"]), row)
      else:  # recorded as failed, and the later stages still ran
        self.assertIn("torch", row.get("error", "") + row.get("skipped", ""),
                      row)

    gen = stages["generate"]
    self.assertEqual((gen["train_images"], gen["test_images"]), (80, 40))
    self.assertEqual(gen["settings"]["eps_255"], 8.0)
    self.assertEqual(gen["compute_dtype"], "bfloat16")
    self.assertGreater(gen["max_seconds"], 0)
    self.assertLen(gen["round_accuracies"], gen["completed_rounds"])
    for acc in gen["round_accuracies"] + [
        gen["final_train_accuracy_on_release"]]:
      self.assertBetween(acc, 0.0, 1.0)
    self.assertTrue(_positive(gen["pgd_image_steps_per_s"]), gen)
    self.assertLessEqual(gen["noise_max_abs"], 8 / 255 + 1e-6)
    self.assertTrue(_positive(gen["memory"]["plan_device_bytes"]))

    ev = stages["evaluate"]
    self.assertBetween(ev["epochs"], 1, 2)
    self.assertLen(ev["test_accuracy"], ev["epochs"])
    for acc in ev["test_accuracy"]:
      self.assertBetween(acc, 0.0, 1.0)
    self.assertLess(report["wall_seconds"], 400)

    with open(os.path.join(out, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
    self.assertLen([r for r in records if r["stage"] == "generate"],
                   gen["completed_rounds"])
    self.assertLen([r for r in records
                    if r["stage"] == "evaluate_unlearnable"], ev["epochs"])
    with open(os.path.join(out, "gpu_paper.log")) as f:
      self.assertIn("gpu_paper.sh: exit 0", f.read())


if __name__ == "__main__":
  absltest.main()
