"""benchmarks/gpu_paper.sh: its two commands (throughput.py, then
`python -m ue_jax.main` with the run's overrides) in the smoke mode on the
CPU, on a tiny image tree; every override reaches the run's config, and
each names a field of the paper's config too. About a minute on 2 cores."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest

from configs import cifar10_samplewise
from tests import helpers

SCRIPT = os.path.join(helpers.REPO, "benchmarks", "gpu_paper.sh")


def _run(*args, env=None):
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True,
                        text=True, timeout=600, check=False,
                        env=dict(os.environ, PYTHON=sys.executable,
                                 **(env or {})))


def _overrides():
  """{field path: value text} of the script's --config.* overrides."""
  with open(SCRIPT, encoding="utf-8") as f:
    return dict(re.findall(r"--config\.([\w.]+)=(\S+)", f.read()))


class GpuPaperTest(absltest.TestCase):

  def test_every_override_is_a_field_of_the_paper_config(self):
    cfg = cifar10_samplewise.get_config()
    fields = _overrides()
    self.assertContainsSubset(
        {"data.source", "data.path", "model.compute_dtype",
         "generate.max_seconds", "evaluate.epochs", "evaluate.train_clean"},
        set(fields))
    for path in fields:
      block, name = path.split(".")
      self.assertIn(name, cfg[block], path)

  def test_refuses_missing_data_and_unknown_arguments(self):
    missing = _run("--data=/nonexistent/cifar10.tar.gz",
                   env={"OUT": tempfile.mkdtemp(prefix="ue_jax_gpu_")})
    self.assertEqual(missing.returncode, 2, missing.stderr)
    self.assertIn("error: no data at '/nonexistent/cifar10.tar.gz'",
                  missing.stderr)
    unknown = _run("--fast")
    self.assertEqual(unknown.returncode, 2)
    self.assertIn("unknown argument --fast", unknown.stderr)

  def test_smoke_runs_both_commands_with_every_override(self):
    tmp = tempfile.mkdtemp(prefix="ue_jax_gpu_paper_")
    tree = os.path.join(tmp, "tree")
    helpers.write_image_tree(tree, classes=("a", "b", "c", "d"),
                             per_class=10, size=(8, 8))
    out = os.path.join(tmp, "out")
    proc = _run("--smoke", f"--data={tree}", env={"OUT": out})
    self.assertEqual(proc.returncode, 0, proc.stdout[-3000:])
    with open(os.path.join(out, "gpu_paper.log"), encoding="utf-8") as f:
      log = f.read()
    self.assertIn("gpu_paper.sh: throughput exit 0", log)
    self.assertIn("gpu_paper.sh: exit 0", log)

    # 1. throughput.py: a row per compute dtype at the smoke's sizes
    with open(os.path.join(out, "throughput.json"), encoding="utf-8") as f:
      rows = json.load(f)["rows"]
    self.assertEqual([r["dtype"] for r in rows], ["float32", "bfloat16"])
    has_torch = importlib.util.find_spec("torch") is not None
    for r in rows:
      self.assertEqual((r["model"], r["width"], r["shape"], r["batch"],
                        r["pgd_steps"]), ("small_cnn", 4, [8, 8, 3], 8, 2))
      for key in ("pgd_image_steps_per_s", "model_step_images_per_s",
                  "eval_images_per_s"):
        self.assertTrue(math.isfinite(r[key]) and r[key] > 0, r)
      self.assertEqual("torch_pgd_image_steps_per_s" in r, has_torch)

    # 2. ue_jax.main: the overrides are the run's config
    with open(os.path.join(out, "run", "config.json"), encoding="utf-8") as f:
      cfg = json.load(f)["config"]
    self.assertEqual(cfg["name"], "test_tiny")
    got = {path: cfg[path.split(".")[0]][path.split(".")[1]]
           for path in _overrides()}
    self.assertEqual(got, {
        "data.source": "folder", "data.path": tree, "data.cache_dir": "none",
        "model.compute_dtype": "bfloat16", "generate.max_seconds": 60.0,
        "evaluate.epochs": 1, "evaluate.train_clean": False})
    with open(os.path.join(out, "run", "results.json"),
              encoding="utf-8") as f:
      results = json.load(f)
    self.assertEqual(results["train_size"], 40)
    self.assertBetween(results["unlearnable_test_accuracy"], 0.0, 1.0)
    self.assertLessEqual(results["noise_max_abs"], 8 / 255 + 1e-6)
    with open(os.path.join(out, "run", "metrics.jsonl"),
              encoding="utf-8") as f:
      stages = [json.loads(line)["stage"] for line in f]
    self.assertEqual(stages.count("generate"), results["completed_rounds"])
    # one epoch on the release, none on the clean images
    self.assertEqual(stages.count("evaluate_unlearnable"), 1)
    self.assertNotIn("evaluate_clean", stages)


if __name__ == "__main__":
  absltest.main()
