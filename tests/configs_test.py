"""Every config file and every variant it lists loads, passes the schema,
and says how to run it; variants are chosen by `file.py:key=value`."""

import ast
import glob
import importlib
import os
import re

from absl.testing import absltest
from absl.testing import parameterized

from configs import common
from ue_jax.config import checks
from tests import helpers

NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(helpers.REPO, "configs", "*.py"))
               if not os.path.basename(p).startswith(("_", "common")))
# (file, argument after `file.py:`) of every experiment: each file's
# VARIANTS ("" = no argument), or the file alone if it has none.
VARIANTS = [(name, arg) for name in NAMES for arg in getattr(
    importlib.import_module(f"configs.{name}"), "VARIANTS", ("",))]
# The experiments' names: the config_name of their results and their
# default workdir runs/<name>; each variant keeps the name it had as a file.
EXPERIMENTS = {
    "cifar10_samplewise", "cifar10_classwise", "cifar10_cpu_samplewise",
    "cifar10_cpu_classwise", "cifar10_cpu_tap", "cifar10_cpu_sep",
    "cifar10_cpu_robust", "cifar10_cpu_robust_classwise",
    "cifar100_samplewise", "cifar100_classwise",
    "svhn_samplewise", "svhn_classwise", "fashion_mnist_samplewise",
    "fashion_mnist_classwise", "fashion_mnist_random",
    "fashion_mnist_random_classwise", "fashion_mnist_error_max",
    "fashion_mnist_ar", "fashion_mnist_partial", "fashion_mnist_strongest",
    "protect", "protect_robust", "test_tiny"}


def load(name, arg=""):
  """get_config of configs/NAME.py as --config=configs/NAME.py[:arg]."""
  module = importlib.import_module(f"configs.{name}")
  return module.get_config(arg) if arg else module.get_config()


def leaves(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(leaves(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


class ConfigsTest(parameterized.TestCase):

  @parameterized.parameters(*VARIANTS)
  def test_valid_and_documented(self, name, arg):
    cfg = load(name, arg)
    if name == "test_tiny":  # its data come from the command line
      cfg.data.train_path = cfg.data.test_path = "x.npz"
    if name == "protect":  # python -m ue_jax.protect: the folder is the data
      checks.check_protect_config(cfg)
    else:
      checks.check_config(cfg)
    if name != "test_tiny":
      command = f"--config=configs/{name}.py" + (f":{arg}" if arg else "")
      doc = importlib.import_module(f"configs.{name}").__doc__
      self.assertRegex(doc, re.escape(command) + r"(\s|$)")

  def test_every_experiment_is_a_variant_with_its_own_name(self):
    names = [load(name, arg).name for name, arg in VARIANTS]
    self.assertLen(set(names), len(names))
    self.assertEqual(set(names), EXPERIMENTS)
    for name in NAMES:  # a file's default is the experiment of its name
      if name in EXPERIMENTS:
        self.assertEqual(load(name).name, name)

  def test_variants_differ_only_in_what_they_are(self):
    # Each pair of a family's variants gives different configs, and the
    # same variant spelt another way (keys reordered, defaults named) gives
    # the same config.
    cifar = importlib.import_module("configs.cifar10_samplewise")
    self.assertEqual(cifar.get_config("layout=classwise,scale=cpu"),
                     cifar.get_config("scale=cpu,layout=classwise"))
    self.assertEqual(cifar.get_config(None), cifar.get_config(
        "scale=paper,layout=samplewise,kind=error_min,robust=false"))
    self.assertEqual(load("fashion_mnist"),
                     load("fashion_mnist", "variant=samplewise"))
    for name in ("cifar10_samplewise", "paper", "fashion_mnist"):
      args = importlib.import_module(f"configs.{name}").VARIANTS
      dicts = [leaves(load(name, arg).to_dict()) for arg in args]
      for i, a in enumerate(dicts):
        for b in dicts[i + 1:]:
          self.assertNotEqual({k: v for k, v in a.items() if k != "name"},
                              {k: v for k, v in b.items() if k != "name"},
                              (name, a["name"], b["name"]))

  @parameterized.parameters(
      ("cifar10_samplewise", "bogus=1",
       "unknown config argument 'bogus'; keys: scale, layout, kind, robust"),
      ("cifar10_samplewise", "scale=gpu",
       "scale='gpu': choose one of paper, cpu"),
      ("cifar10_samplewise", "scale",
       "'scale' is not key=value; keys: scale, layout, kind, robust"),
      ("cifar10_samplewise", "scale=cpu,scale=paper",
       "'scale' given twice"),
      ("cifar10_samplewise", "kind=tap", "scale=cpu,layout=samplewise only"),
      ("cifar10_samplewise", "scale=cpu,layout=classwise,kind=sep",
       "scale=cpu,layout=samplewise only"),
      ("cifar10_samplewise", "robust=true",
       "robust=true is a variant of scale=cpu only"),
      ("cifar10_samplewise", "scale=cpu,kind=sep,robust=true",
       "robust=true is a variant of kind=error_min only"),
      ("paper", "dataset=cifar10", "dataset='cifar10': choose one of "
       "cifar100, svhn"),
      ("fashion_mnist", "variant=lsp", "variant='lsp': choose one of "
       "samplewise, classwise, random, random_classwise, error_max, ar, "
       "partial, strongest"),
  )
  def test_an_unknown_variant_is_refused_naming_the_choices(self, name, arg,
                                                            message):
    with self.assertRaisesRegex(ValueError, re.escape(message)):
      load(name, arg)

  def test_parse_arg(self):
    choices = dict(a=("x", "y"), b=("1", "2", "3"))
    self.assertEqual(common.parse_arg(None, **choices), {"a": "x", "b": "1"})
    self.assertEqual(common.parse_arg("", **choices), {"a": "x", "b": "1"})
    self.assertEqual(common.parse_arg(" b = 3 ,", **choices),
                     {"a": "x", "b": "3"})
    self.assertEqual(common.parse_arg("b=2,a=y", **choices),
                     {"a": "y", "b": "2"})

  def test_config_files_import_only_ml_collections_and_common(self):
    for path in sorted(glob.glob(os.path.join(helpers.REPO, "configs",
                                              "*.py"))):
      with open(path) as f:
        tree = ast.parse(f.read())
      imported = set()
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
          imported |= {f"{node.module}.{a.name}" for a in node.names}
      with self.subTest(config=os.path.basename(path)):
        self.assertLessEqual(imported, {"ml_collections", "configs.common"})

  def test_fashion_mnist_rows_share_the_recipe(self):
    ref = load("fashion_mnist")
    for name, arg in VARIANTS:
      if name == "fashion_mnist":
        cfg = load(name, arg)
        self.assertEqual(cfg.data, ref.data, arg)
        self.assertEqual(cfg.model, ref.model, arg)
        self.assertEqual(cfg.evaluate.epochs, ref.evaluate.epochs, arg)
        self.assertEqual(cfg.evaluate.augment, ref.evaluate.augment, arg)
        self.assertEqual(cfg.noise.eps, ref.noise.eps, arg)

  def test_experiment_configs_are_thin_variants_of_the_base(self):
    """Each experiment config is common.base() with a few fields changed
    (measured: 2 to 17 of its 91 leaf fields), not a copy of the whole
    schema; the bound keeps them so."""
    base = leaves(common.base().to_dict())
    for name, arg in VARIANTS:
      if name == "protect":  # the folder tool's own schema
        continue
      cfg = leaves(load(name, arg).to_dict())
      self.assertEqual(set(cfg), set(base), name)  # no field of its own
      changed = [k for k in base if cfg[k] != base[k]]
      self.assertLessEqual(len(changed), 20, (name, arg, changed))
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
    cfg = load("fashion_mnist")
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
