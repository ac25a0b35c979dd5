"""A run imports only what it uses: the battery, the noise kinds the search
loop does not make, the image-folder sources, the models it does not build
and the differentiable JPEG load on demand, and the name tables that stand
in for them (models.MODULES, search.MAKERS, core/defense_names.py) agree
with the modules they name."""

import os
import re
import subprocess
import sys

from absl.testing import absltest

from tests import helpers
from ue_jax import models
from ue_jax import search
from ue_jax.config import checks
from ue_jax.core import defense_names
from ue_jax.core import defenses
from ue_jax.search import shortcuts
from ue_jax.search import targeted

# What a default run (configs/test_tiny.py: error_min, small_cnn_avg, npz
# data, no battery) does not load (docs/architecture.md, "What one run
# imports").
ON_DEMAND = (
    "ue_jax.core.defended_step", "ue_jax.core.defenses", "ue_jax.core.jpeg",
    "ue_jax.core.shortcuts", "ue_jax.evaluation.battery",
    "ue_jax.evaluation.battery_report", "ue_jax.io.folder_cache",
    "ue_jax.io.folder_source", "ue_jax.io.image_folder",
    "ue_jax.models.mobilenet", "ue_jax.models.vgg", "ue_jax.models.vit",
    "ue_jax.search.baselines", "ue_jax.search.shortcuts",
    "ue_jax.search.targeted",
)


def _child(code: str) -> str:
  """stdout of `code` run in a fresh interpreter (its own sys.modules)."""
  proc = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


class DefaultRunTest(absltest.TestCase):

  def test_a_tiny_search_loads_none_of_the_on_demand_modules(self):
    # tools/import_count.py runs the CLI in a child process (test_tiny to
    # --stage=generate, generate.max_rounds=1) and lists what it loaded.
    proc = subprocess.run(
        [sys.executable, os.path.join(helpers.REPO, "tools",
                                      "import_count.py"),
         "--stage=generate", "--list"], cwd=helpers.REPO,
        capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    lines = proc.stdout.splitlines()
    listed = [re.fullmatch(r"\s*(\d+) (ue_jax\S*)", line) for line in lines]
    loaded = {m.group(2) for m in listed if m}
    count = re.match(r"(\d+) modules, (\d+) lines", lines[0])
    self.assertEqual(int(count.group(1)), len(loaded))
    self.assertEqual(int(count.group(2)),
                     sum(int(m.group(1)) for m in listed if m))
    # The listing saw the run: the search, its model and steps ran.
    self.assertContainsSubset(
        {"ue_jax.search.generate", "ue_jax.search.harness",
         "ue_jax.models.small_cnn", "ue_jax.core.steps", "ue_jax.io.npz"},
        loaded)
    self.assertEmpty(sorted(loaded & set(ON_DEMAND)))


class OnDemandTest(absltest.TestCase):

  def test_each_loads_when_asked_for(self):
    out = _child(
        "import sys\n"
        "import jax.numpy as jnp\n"
        "from ue_jax import pipeline, search\n"
        "from ue_jax.core import augment\n"
        "from ue_jax.models import get_model\n"
        f"on_demand = {ON_DEMAND!r}\n"
        "def loaded():\n"
        "  return sorted(m for m in on_demand if m in sys.modules)\n"
        "print('imports', loaded())\n"
        "get_model('vit', num_classes=3, width=8)\n"
        "print('vit', loaded())\n"
        "search.maker('ar')\n"
        "print('ar', loaded())\n"
        "augment.jpeg_round_trip(jnp.zeros((1, 8, 8, 3)), 50)\n"
        "print('jpeg', loaded())\n"
        "pipeline._battery()\n"
        "print('battery', loaded())\n")
    got = dict(line.split(" ", 1) for line in out.splitlines())
    self.assertEqual(got["imports"], "[]")
    self.assertEqual(got["vit"], "['ue_jax.models.vit']")
    self.assertEqual(got["ar"], str(sorted(
        ["ue_jax.models.vit", "ue_jax.search.shortcuts",
         "ue_jax.core.shortcuts"])))
    self.assertIn("'ue_jax.core.jpeg'", got["jpeg"])
    for module in ("ue_jax.evaluation.battery", "ue_jax.core.defenses",
                   "ue_jax.core.defended_step",
                   "ue_jax.evaluation.battery_report"):
      self.assertIn(repr(module), got["battery"])


class NameTablesTest(absltest.TestCase):

  def test_each_model_name_builds_its_class(self):
    for name, (module, cls, fixed) in models.MODULES.items():
      model = models.get_model(name, num_classes=3, width=4)
      self.assertEqual(type(model).__name__, cls, name)
      self.assertEqual(type(model).__module__, f"ue_jax.models.{module}")
      for field, value in fixed.items():
        self.assertEqual(getattr(model, field), value, name)
    self.assertEqual(models.MODULES["small_cnn_avg"][2], {"pool": "avg"})

  def test_noise_kinds_by_module(self):
    by_module = {}
    for kind, module in search.MAKERS.items():
      by_module.setdefault(module, []).append(kind)
    self.assertEqual(by_module, {"baselines": ["random"],
                                 "shortcuts": list(shortcuts.KINDS),
                                 "targeted": list(targeted.KINDS)})
    self.assertCountEqual([*search.MAKERS, "error_min", "error_max"],
                          checks.NOISE_KINDS)
    self.assertIs(search.maker("tap"), targeted)
    self.assertIs(search.maker("lsp"), shortcuts)
    self.assertIsNone(search.maker("error_min"))
    self.assertIsNone(search.maker("error_max"))

  def test_defense_names_are_the_defenses(self):
    self.assertEqual(defense_names.NAMES, defenses.NAMES)


if __name__ == "__main__":
  absltest.main()
