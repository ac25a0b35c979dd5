"""The package's import rule (ue_jax/__init__.py): imports point down the
groups, never up or sideways, read from the source of every module."""

import ast
import configparser
import os
import sys

from absl.testing import absltest

from tests import helpers

# What each group may import besides itself. search and evaluation sit side
# by side: search trains with evaluation's one training loop (train.py), and
# the release reads search's noise layouts (layouts.py); neither imports the
# other's stages.
LOWER = ("core", "models", "parallel", "io", "runtime")
ALLOWED = {
    "core": ("models", "runtime.errors"),
    "models": ("core", "runtime.errors"),
    "runtime": ("core", "models", "io"),
    "io": ("core", "runtime"),
    "parallel": ("core", "models", "io", "runtime"),
    "search": LOWER + ("evaluation.train",),
    "evaluation": LOWER + ("search.layouts",),
}


def package_of(path):
  """The dotted package below ue_jax of a file inside a ue_jax/ folder
  ("" for ue_jax/x.py; None outside one)."""
  parts = os.path.normpath(os.path.abspath(path)).split(os.sep)[:-1]
  if "ue_jax" not in parts:
    return None
  top = len(parts) - 1 - parts[::-1].index("ue_jax")
  return ".".join(parts[top + 1:])


def imports(path, package=None):
  """The ue_jax modules a file imports, as dotted names below ue_jax;
  relative imports resolve against `package` (dotted, below ue_jax; by
  default where the file lies inside ue_jax/)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  package = package_of(path) if package is None else package
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.level:
      parts = package.split(".") if package else []
      if package is None or node.level - 1 > len(parts):
        raise ValueError(f"{path}: a relative import beyond ue_jax")
      base = ".".join(parts[:len(parts) - (node.level - 1)]
                      + ([node.module] if node.module else []))
      found += [f"{base}.{a.name}".lstrip(".") for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module == "ue_jax" or node.module.startswith("ue_jax.")):
      base = node.module[len("ue_jax"):].lstrip(".")
      found += [f"{base}.{a.name}".lstrip(".") for a in node.names]
    elif isinstance(node, ast.Import):
      found += [a.name[len("ue_jax."):] for a in node.names
                if a.name.startswith("ue_jax.")]
  return found


class ImportRuleTest(absltest.TestCase):

  def test_imports_point_down(self):
    root = os.path.join(helpers.REPO, "ue_jax")
    checked = 0
    for group, allowed in ALLOWED.items():
      for name in sorted(os.listdir(os.path.join(root, group))):
        if not name.endswith(".py"):
          continue
        for target in imports(os.path.join(root, group, name)):
          checked += 1
          ok = target.split(".")[0] == group or any(
              target == a or target.startswith(a + ".") for a in allowed)
          self.assertTrue(ok, f"ue_jax/{group}/{name} imports {target}")
    self.assertGreater(checked, 50)

  def test_a_crossing_is_seen(self):
    # The check above reads `from ue_jax.evaluation import evaluate` as
    # evaluation.evaluate, which search may not import.
    path = self.create_tempfile(content=(
        "from ue_jax.evaluation import evaluate\n"
        "import ue_jax.core.noise\n")).full_path
    self.assertEqual(imports(path), ["evaluation.evaluate", "core.noise"])

  def test_relative_imports_are_seen(self):
    # Relative imports resolve against the file's own package below ue_jax.
    path = self.create_tempfile(content=(
        "from . import evaluate\n"
        "from .train import fit\n"
        "from ..search import generate\n"
        "from .. import pipeline\n")).full_path
    self.assertEqual(imports(path, package="evaluation"),
                     ["evaluation.evaluate", "evaluation.train.fit",
                      "search.generate", "pipeline"])
    # The package follows from where a file lies inside ue_jax/.
    root = os.path.join(self.create_tempdir().full_path, "ue_jax")
    os.makedirs(os.path.join(root, "core"))
    inside = os.path.join(root, "core", "x.py")
    with open(inside, "w", encoding="utf-8") as f:
      f.write("from ..evaluation import train\n")
    self.assertEqual(imports(inside), ["evaluation.train"])


# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"absl": "absl-py", "ml_collections": "ml-collections",
                 "orbax": "orbax-checkpoint", "PIL": "pillow",
                 "tensorflow_datasets": "tensorflow-datasets"}


def third_party_imports(root):
  """The top-level names of every module the package imports that is
  neither the standard library nor ue_jax."""
  names = set()
  for folder, _, files in os.walk(root):
    for name in files:
      if not name.endswith(".py"):
        continue
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
          names.add(node.module.split(".")[0])
  return {n for n in names
          if n != "ue_jax" and n not in sys.stdlib_module_names}


class DeclaredDependenciesTest(absltest.TestCase):

  def test_every_import_is_declared(self):
    parser = configparser.ConfigParser()
    parser.read(os.path.join(helpers.REPO, "setup.cfg"))
    lines = parser["options"]["install_requires"].split()
    for extra in parser["options.extras_require"].values():
      lines += extra.split()
    declared = {line.split(">")[0].split("=")[0].split("<")[0].lower()
                for line in lines if line.strip()}
    with open(os.path.join(helpers.REPO, "requirements.txt"),
              encoding="utf-8") as f:
      listed = f.read().lower()
    found = third_party_imports(os.path.join(helpers.REPO, "ue_jax"))
    self.assertIn("orbax", found)
    for name in sorted(found):
      dist = DISTRIBUTIONS.get(name, name).lower()
      self.assertIn(dist, declared, f"ue_jax imports {name}: declare {dist} "
                    "in setup.cfg")
      self.assertIn(dist, listed, f"ue_jax imports {name}: list {dist} in "
                    "requirements.txt")


if __name__ == "__main__":
  absltest.main()
