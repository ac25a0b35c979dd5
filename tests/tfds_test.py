"""The CIFAR-10 config's own code path, TFDS included, end to end on TFDS's
mock data (random images of the real shapes; nothing is downloaded), at the
paper's model size: ResNet-18 of width 64 on 32x32x3, a few images and
steps. Skipped when tensorflow_datasets is not installed (the `data`
extra; .ci/run installs it)."""

import json
import os
import tempfile

import numpy as np
from absl.testing import absltest

from configs import cifar10_samplewise
from ue_jax import pipeline

try:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
except ImportError:
  tfds = None


@absltest.skipIf(tfds is None, "tensorflow_datasets is not installed "
                 "(pip install -e '.[data]')")
class Cifar10MockTest(absltest.TestCase):

  def test_cifar10_samplewise_on_mock_data(self):
    cfg = cifar10_samplewise.get_config()
    self.assertEqual((cfg.data.source, cfg.model.name, cfg.model.width),
                     ("tfds", "resnet18", 64))
    cfg.data.train_size, cfg.data.test_size = 32, 16
    for block in (cfg.generate, cfg.evaluate):
      block.batch_size = block.eval_batch_size = 16
    cfg.generate.train_steps = 1
    cfg.generate.max_rounds = 1
    cfg.noise.num_steps = 2
    cfg.evaluate.epochs = 1
    cfg.evaluate.train_clean = False
    workdir = tempfile.mkdtemp(prefix="ue_jax_tfds_")
    with tfds.testing.mock_data(num_examples=64):
      results = pipeline.run(cfg, workdir)
    self.assertEqual(results["dataset"], "cifar10")
    self.assertEqual((results["train_size"], results["test_size"]), (32, 16))
    self.assertEqual(results["rounds"], 1)
    noise = np.load(os.path.join(workdir, "noise.npy"))
    self.assertEqual(noise.shape, (32, 32, 32, 3))
    self.assertLessEqual(np.abs(noise).max(), 8 / 255 + 1e-7)
    self.assertGreater(np.abs(noise).max(), 0.0)  # 2 PGD steps moved it
    with np.load(results["release_path"]) as f:
      self.assertEqual(f["images"].shape, (32, 32, 32, 3))
      self.assertEqual(f["images"].dtype, np.uint8)
    self.assertLessEqual(results["release_max_pixel_change"], 8)
    self.assertLen(results["curves"]["unlearnable"], 1)
    with open(os.path.join(workdir, "results.json")) as f:
      self.assertEqual(json.load(f)["model_width"], 64)


if __name__ == "__main__":
  absltest.main()
