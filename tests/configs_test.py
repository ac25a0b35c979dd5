"""Every config file loads, passes the schema, and says how to run it."""

import glob
import importlib
import os

from absl.testing import absltest
from absl.testing import parameterized

from ue_jax.runtime import checks
from tests import helpers

NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(helpers.REPO, "configs", "*.py"))
               if not os.path.basename(p).startswith(("_", "common")))


class ConfigsTest(parameterized.TestCase):

  @parameterized.parameters(*NAMES)
  def test_valid_and_documented(self, name):
    module = importlib.import_module(f"configs.{name}")
    cfg = module.get_config()
    if name == "test_tiny":  # its data come from the command line
      cfg.data.train_path = cfg.data.test_path = "x.npz"
    if name == "protect":  # python -m ue_jax.protect: the folder is the data
      checks.check_protect_config(cfg)
    else:
      checks.check_config(cfg)
    self.assertEqual(cfg.name, name)
    if name != "test_tiny":
      self.assertIn(f"--config=configs/{name}.py", module.__doc__)

  def test_fashion_mnist_rows_share_the_recipe(self):
    base = importlib.import_module("configs.fashion_mnist_samplewise")
    ref = base.get_config()
    for name in NAMES:
      if name.startswith("fashion_mnist"):
        cfg = importlib.import_module(f"configs.{name}").get_config()
        self.assertEqual(cfg.data, ref.data, name)
        self.assertEqual(cfg.model, ref.model, name)
        self.assertEqual(cfg.evaluate.epochs, ref.evaluate.epochs, name)
        self.assertEqual(cfg.evaluate.augment, ref.evaluate.augment, name)
        self.assertEqual(cfg.noise.eps, ref.noise.eps, name)


if __name__ == "__main__":
  absltest.main()
