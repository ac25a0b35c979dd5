"""Slow: the whole pipeline on a small subset of the real Fashion-MNIST shows
the accuracy gap (Debian's dataset-fashion-mnist; skipped when absent)."""

import json
import os
import tempfile

from absl.testing import absltest
import pytest

from ue_jax import data
from tests import main_test

pytestmark = pytest.mark.slow


@absltest.skipUnless(os.path.isdir(data.DEBIAN_FASHION_MNIST),
                     "needs: apt-get install dataset-fashion-mnist")
class FashionMnistTest(absltest.TestCase):

  def test_unlearnable_release_is_not_learnable(self):
    workdir = tempfile.mkdtemp(prefix="ue_jax_fmnist_")
    proc = main_test.run_main(
        workdir, "--config.data.train_size=1000",
        "--config.data.test_size=2000", "--config.generate.max_rounds=5",
        "--config.evaluate.epochs=8",
        config="configs/fashion_mnist_samplewise.py")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "results.json")) as f:
      r = json.load(f)
    clean, unlearnable = r["clean_test_accuracy"], r["unlearnable_test_accuracy"]
    self.assertGreaterEqual(clean, 0.70)
    self.assertLessEqual(unlearnable, 0.40)
    self.assertGreaterEqual(clean - unlearnable, 0.35)
    self.assertEqual(r["release_max_pixel_change"], 16)  # eps = 16/255


if __name__ == "__main__":
  absltest.main()
