"""The package's import rule (docs/architecture.md, "Import order"): a module
imports only its own group and the layers below it, read from the source of
every module; groups on one layer do not import each other."""

import ast
import configparser
import os
import re
import sys

from absl.testing import absltest

from tests import helpers

ENTRY = ""  # the group of the entry modules, ue_jax/*.py


def layers(doc=os.path.join(helpers.REPO, "docs", "architecture.md")):
  """The layers of docs/architecture.md, top first: the fenced block after
  the heading "## Import order", one layer a line, each a tuple of groups
  ("search/ evaluation/" -> ("search", "evaluation"); "*.py" -> ENTRY)."""
  with open(doc, encoding="utf-8") as f:
    text = f.read()
  found = re.search(r"^## Import order\n.*?^```\n(.*?)^```", text,
                    re.MULTILINE | re.DOTALL)
  if not found:
    raise ValueError(f"{doc}: no fenced block under '## Import order'")
  order = []
  for line in found.group(1).splitlines():
    layer = []
    for token in line.split():
      if token == "*.py":
        layer.append(ENTRY)
      elif re.fullmatch(r"[a-z_]+/", token):
        layer.append(token[:-1])
      else:
        raise ValueError(f"{doc}: {token!r} in the import order is neither "
                         "a group (name/) nor *.py")
    if layer:
      order.append(tuple(layer))
  return order


def allowed_imports(order):
  """group -> the groups it may import besides itself: those of every layer
  below its own."""
  allowed = {}
  for i, layer in enumerate(order):
    below = {g for lower in order[i + 1:] for g in lower}
    for group in layer:
      if group in allowed:
        raise ValueError(f"group {group!r} is in two layers")
      allowed[group] = below
  return allowed


def group_of(target, root):
  """The group of a dotted name below ue_jax (`search.generate.run` ->
  search; `pipeline`, a module of ue_jax/ itself, -> ENTRY)."""
  head = target.split(".")[0]
  return head if os.path.isdir(os.path.join(root, head)) else ENTRY


def modules(root):
  """(group, path) of every .py file below `root` (an ue_jax/ folder)."""
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    rel = os.path.relpath(folder, root)
    group = ENTRY if rel == "." else rel.split(os.sep)[0]
    for name in sorted(files):
      if name.endswith(".py"):
        yield group, os.path.join(folder, name)


def upward_imports(root, order):
  """'path imports target' for every import of a module below `root` that
  does not point down `order`; also every group folder `order` leaves out."""
  allowed = allowed_imports(order)
  problems = []
  groups = sorted(d for d in os.listdir(root)
                  if os.path.isdir(os.path.join(root, d))
                  and d != "__pycache__")
  problems += [f"ue_jax/{g}/ is in no layer of the import order"
               for g in groups if g not in allowed]
  for group, path in modules(root):
    for target in imports(path):
      to = group_of(target, root)
      if to != group and to not in allowed.get(group, ()):
        problems.append(f"{os.path.relpath(path, os.path.dirname(root))} "
                        f"imports {target}")
  return problems


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
    order = layers()
    self.assertEqual(order[0], (ENTRY,))
    self.assertEqual(order[-1], ("runtime",))
    self.assertEqual(upward_imports(root, order), [])
    self.assertGreater(sum(len(imports(p)) for _, p in modules(root)), 100)

  def test_an_upward_import_fails(self):
    # A synthetic package: each planted import breaks the documented order
    # (an absolute one up, a relative one up, one sideways within a layer,
    # one into an entry module), and each is reported.
    root = os.path.join(self.create_tempdir().full_path, "ue_jax")
    planted = {
        "core/x.py": "from ue_jax.search import generate\n",
        "io/y.py": "from ..training import train\n",
        "search/z.py": "from ue_jax.evaluation import release\n",
        "runtime/w.py": "from ue_jax import pipeline\n",
        "training/ok.py": ("from ue_jax.parallel import sharding\n"
                           "from ..core import noise\n"
                           "from . import layouts\n"),
        "pipeline.py": "from ue_jax.search import generate\n",
    }
    for group in {g for layer in layers() for g in layer if g}:
      os.makedirs(os.path.join(root, group))
    for name, source in planted.items():
      with open(os.path.join(root, name), "w", encoding="utf-8") as f:
        f.write(source)
    self.assertEqual(sorted(upward_imports(root, layers())), [
        "ue_jax/core/x.py imports search.generate",
        "ue_jax/io/y.py imports training.train",
        "ue_jax/runtime/w.py imports pipeline",
        "ue_jax/search/z.py imports evaluation.release",
    ])
    # A group folder the documented order does not place is reported too.
    os.makedirs(os.path.join(root, "extra"))
    self.assertIn("ue_jax/extra/ is in no layer of the import order",
                  upward_imports(root, layers()))

  def test_order_is_parsed_from_the_doc(self):
    doc = self.create_tempfile(content=(
        "# x\n\n## Import order\n\nText.\n\n```\n*.py\n"
        "search/  evaluation/\n\ncore/\n```\n")).full_path
    order = layers(doc)
    self.assertEqual(order, [(ENTRY,), ("search", "evaluation"), ("core",)])
    self.assertEqual(allowed_imports(order)["search"], {"core"})
    self.assertEqual(allowed_imports(order)[ENTRY],
                     {"search", "evaluation", "core"})
    bad = self.create_tempfile(content=(
        "## Import order\n\n```\nsearch\n```\n")).full_path
    with self.assertRaisesRegex(ValueError, "neither a group"):
      layers(bad)

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


def shipped_packages(parser):
  """The top-level packages the distribution ships (setup.cfg, read by
  `parser`: its [options.packages.find] include, ue_jax and configs)."""
  include = parser["options.packages.find"]["include"]
  return {name.strip().split(".")[0] for name in include.split(",")
          if name.strip()}


def third_party_imports(root, first_party=("ue_jax",)):
  """The top-level names of every module the package imports that is
  neither the standard library nor one of `first_party`."""
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
          if n not in first_party and n not in sys.stdlib_module_names}


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
    shipped = shipped_packages(parser)
    self.assertEqual(shipped, {"ue_jax", "configs"})
    found = third_party_imports(os.path.join(helpers.REPO, "ue_jax"),
                                first_party=shipped)
    self.assertIn("orbax", found)
    self.assertIn("configs", third_party_imports(
        os.path.join(helpers.REPO, "ue_jax")))
    for name in sorted(found):
      dist = DISTRIBUTIONS.get(name, name).lower()
      self.assertIn(dist, declared, f"ue_jax imports {name}: declare {dist} "
                    "in setup.cfg")
      self.assertIn(dist, listed, f"ue_jax imports {name}: list {dist} in "
                    "requirements.txt")


if __name__ == "__main__":
  absltest.main()
