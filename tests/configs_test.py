"""Every config file loads, passes the schema, and says how to run it."""

import ast
import glob
import importlib
import os
import re

from absl.testing import absltest
from absl.testing import parameterized

from ue_jax.config import checks
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

  def test_experiment_configs_are_thin_variants_of_the_base(self):
    """Each experiment config is common.base() with a few fields changed
    (measured: 2 to 17 of its 85 leaf fields), not a copy of the whole
    schema; the bound keeps them so."""
    from configs import common  # pylint: disable=g-import-not-at-top

    def leaves(d, prefix=""):
      out = {}
      for k, v in d.items():
        if isinstance(v, dict):
          out.update(leaves(v, f"{prefix}{k}."))
        else:
          out[prefix + k] = v
      return out

    base = leaves(common.base().to_dict())
    for name in NAMES:
      if name == "protect":  # the folder tool's own schema
        continue
      cfg = leaves(importlib.import_module(f"configs.{name}").get_config()
                   .to_dict())
      self.assertEqual(set(cfg), set(base), name)  # no field of its own
      changed = [k for k in base if cfg[k] != base[k]]
      self.assertLessEqual(len(changed), 20, (name, changed))
      self.assertIn("name", changed)

  def test_docstrings_point_to_measurements_instead_of_copying_them(self):
    # A figure measured with a config lives in docs/ (one place, where it
    # is rerun and dated), not in the config's docstring, where it drifts.
    # Published figures ("Paper (Table 1 ...): 19.93 %") are not ours and
    # stay. Caught: accuracies written to 3 decimals, timings in s / min /
    # h, and any "Measured" that does not point into README.md or docs/.
    measured = re.compile(r"\b0\.\d{3}\b|\b\d+(\.\d+)? ?(s|min|h)\b")
    for path in sorted(glob.glob(os.path.join(helpers.REPO, "configs",
                                              "*.py"))):
      with open(path) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
      for line in doc.splitlines():
        with self.subTest(config=os.path.basename(path), line=line):
          self.assertIsNone(measured.search(line))
          if line.startswith("Measured"):
            self.assertRegex(line, r"docs/|README\.md")

  def test_battery_is_off_by_default_and_its_default_plan(self):
    from ue_jax import pipeline  # pylint: disable=g-import-not-at-top
    from ue_jax.evaluation import battery  # pylint: disable=g-import-not-at-top
    cfg = importlib.import_module("configs.fashion_mnist_samplewise"
                                  ).get_config()
    self.assertEqual(pipeline.default_stages(cfg),
                     ("generate", "release", "evaluate"))
    cfg.battery.enabled = True
    self.assertEqual(pipeline.default_stages(cfg)[-1], "battery")
    cells = battery.plan(cfg)
    # Every learner with crop+flip, then the generator's architecture
    # with each other defense: 5 + 13 cells.
    self.assertLen(cells, 18)
    self.assertEqual(cells[0], ("resnet18", 16, "crop_flip"))
    self.assertEqual({d for n, _, d in cells if n == "resnet18"},
                     set(cfg.battery.defenses))


if __name__ == "__main__":
  absltest.main()
