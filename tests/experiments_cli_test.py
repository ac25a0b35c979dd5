"""The paper's other experiments through the command line, on tiny synthetic
data: class-wise noise on whole chosen classes, random noise on a random
fraction, then the report over both runs."""

import json
import os
import tempfile

import numpy as np
from absl.testing import absltest

from ue_jax.evaluation import report
from tests import helpers


class ExperimentsCliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_experiments_test_")
    train, test = helpers.write_npz(cls.tmp)
    cls.clean = np.load(train)["images"]
    # The evaluation steps compile once for both runs.
    cls.env = helpers.cli_env(os.path.join(cls.tmp, "xla_cache"))
    cls.data = [f"--config.data.train_path={train}",
                f"--config.data.test_path={test}"]

  def run_main(self, name, *overrides):
    workdir = os.path.join(self.tmp, name)
    proc = helpers.run_main(workdir, *self.data, *overrides, env=self.env)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "results.json")) as f:
      return workdir, json.load(f)

  def check_release(self, results):
    with np.load(results["release_path"]) as f:
      images, protected = f["images"], f["protected"]
    changed = np.any(images != self.clean, axis=(1, 2, 3))
    self.assertFalse(changed[~protected].any())  # unprotected: clean
    self.assertTrue(changed[protected].all())
    return protected

  def test_classwise_classes_and_random_fraction(self):
    classwise, results = self.run_main(
        "classwise", "--config.noise.layout=classwise",
        "--config.noise.num_steps=1", "--config.partial.classes=(1,)")
    self.assertEqual((results["noise_kind"], results["noise_layout"]),
                     ("error_min", "classwise"))
    self.assertEqual(np.load(results["noise_path"]).shape, (4, 12, 12, 1))
    protected = self.check_release(results)
    labels = np.load(results["release_path"])["labels"]
    np.testing.assert_array_equal(protected, labels == 1)
    self.assertEqual(results["poison_rate"], 0.25)
    for group in ("protected_classes", "other_classes"):
      self.assertEqual(set(results[f"{group}_test_accuracy"]),
                       {"unlearnable", "clean", "clean_remainder"})
    self.assertEqual(results["clean_remainder_size"], 72)

    random, results = self.run_main(
        "random", "--config.noise.kind=random", "--config.partial.rate=0.5",
        "--config.evaluate.train_clean=False")
    self.assertEqual(results["rounds"], 0)
    noise = np.load(results["noise_path"])
    self.assertEqual(noise.shape, (96, 12, 12, 1))
    self.assertLessEqual(np.abs(noise).max(), results["epsilon"])
    self.assertEqual(self.check_release(results).sum(), 48)
    self.assertNotIn("clean_test_accuracy", results)
    self.assertIn("clean_remainder_test_accuracy", results)

    written = report.write([classwise, random], os.path.join(self.tmp, "r"))
    with open(written["table"]) as f:
      text = f.read()
    self.assertIn("| classwise | error-minimizing | classwise | 0.25 |", text)
    self.assertIn("| random | random | samplewise | 0.50 | — |", text)


if __name__ == "__main__":
  absltest.main()
