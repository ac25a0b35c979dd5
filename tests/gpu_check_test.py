"""benchmarks/gpu_check.sh in its CPU smoke mode: the prepared accelerator
check runs end to end and reports every part it promises."""

import json
import math
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from tests import helpers
from ue_jax.models.resnet import ResNet


class GpuCheckTest(absltest.TestCase):

  def test_bfloat16_model_computes_in_bfloat16(self):
    # The check's bfloat16 rows must time bfloat16 convolutions, with float32
    # parameters (Flax's dtype is the compute dtype) and float32 logits.
    x = np.zeros((2, 32, 32, 3), np.float32)
    convs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
      model = ResNet(10, width=4, dtype=dtype)
      variables = model.init(jax.random.key(0), x, train=False)
      self.assertTrue(all(leaf.dtype == jnp.float32
                          for leaf in jax.tree.leaves(variables["params"])))
      apply = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
      self.assertEqual(apply(variables, x).dtype, jnp.float32)
      hlo = apply.lower(variables, x).as_text()
      convs[jnp.dtype(dtype).name] = [
          line for line in hlo.splitlines() if "convolution" in line]
    self.assertNotEmpty(convs["bfloat16"])
    self.assertTrue(all("bf16" in line for line in convs["bfloat16"]))
    self.assertFalse(any("bf16" in line for line in convs["float32"]))

  def test_smoke_run_reports_every_part(self):
    out = tempfile.mkdtemp(prefix="ue_jax_gpu_check_")
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", os.path.join(helpers.REPO, "benchmarks", "gpu_check.sh"),
         "--smoke", out], env=env, capture_output=True, text=True,
        timeout=900, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(out, "gpu_check.json")) as f:
      report = json.load(f)
    self.assertEqual(report["mode"], "smoke")
    self.assertEqual([r["dtype"] for r in report["throughput"]],
                     ["float32", "bfloat16"])
    for row in report["throughput"]:
      for key in ("pgd_image_steps_per_s", "model_step_images_per_s"):
        self.assertTrue(math.isfinite(row[key]) and row[key] > 0, row)
    round_ = report["round"]
    self.assertEqual(round_["images"], 64)
    self.assertGreater(round_["seconds"], round_["generation_seconds"])
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
      has_cuda = torch.cuda.is_available()
    except ImportError:
      has_cuda = False
    if not has_cuda:  # recorded with its reason, never silently absent
      self.assertIn("skipped", report["torch"])


if __name__ == "__main__":
  absltest.main()
