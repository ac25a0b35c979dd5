"""The installed command line: both entry points run from any directory
(the configs ship with the package as the `configs` package), how --config
finds a config, and the install facts that README.md, setup.cfg,
requirements.txt and .ci/run state."""

import configparser
import json
import os
import re
import subprocess
import sys

import numpy as np
from absl.testing import absltest
from PIL import Image

from tests import helpers
from ue_jax.runtime import cli

# A tiny search on the default config (configs/protect.py, eps = 16/255).
PROTECT_TINY = ("--config.model.name=small_cnn_avg", "--config.model.width=4",
                "--config.noise.num_steps=2", "--config.generate.max_rounds=1",
                "--config.generate.train_steps=2",
                "--config.generate.batch_size=16", "--config.protect.size=8",
                "--config.protect.preview=2")
PROTECT_EPS_255 = 16


def installed_env(cache_dir):
  """The CLI environment without PYTHONPATH: only what pip installed (and
  the current directory, for `python -m`) is importable."""
  env = helpers.cli_env(cache_dir)
  env.pop("PYTHONPATH", None)
  return env


class OutsideTheRepositoryTest(absltest.TestCase):
  """`python -m ue_jax.main` and `python -m ue_jax.protect` run in a
  directory with no configs/ folder, as after `pip install`."""

  def run_in(self, cwd, *argv):
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd,
                          env=installed_env(os.path.join(cwd, "xla_cache")),
                          capture_output=True, text=True, timeout=600,
                          check=False)

  def test_main_runs_the_shipped_config(self):
    cwd = self.create_tempdir().full_path
    helpers.write_npz(cwd)
    self.assertFalse(os.path.exists(os.path.join(cwd, "configs")))
    proc = self.run_in(cwd, "ue_jax.main", "--config=configs/test_tiny.py",
                       "--workdir=run", "--stage=generate",
                       "--config.data.train_path=train.npz",
                       "--config.data.test_path=test.npz",
                       "--config.generate.max_rounds=1")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(cwd, "run", "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["config_name"], "test_tiny")
    self.assertEqual(results["rounds"], 1)
    noise = np.load(os.path.join(cwd, "run", "noise.npy"))
    self.assertEqual(noise.shape, (96, 12, 12, 1))
    self.assertLessEqual(np.abs(noise).max(), results["epsilon"] * (1 + 1e-6))
    self.assertGreater(np.abs(noise).max(), 0)

  def test_protect_runs_with_the_shipped_default_config(self):
    cwd = self.create_tempdir().full_path
    written = helpers.write_image_tree(
        os.path.join(cwd, "in"), classes=("cat", "dog"), per_class=8,
        size=(20, 16), splits=("",))
    proc = self.run_in(cwd, "ue_jax.protect", "--input=in", "--output=out",
                       *PROTECT_TINY)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(cwd, "out", ".ue_jax", "results.json")) as f:
      self.assertEqual(json.load(f)["protected"], len(written))
    changed = 0
    for rel, pixels in written.items():
      with Image.open(os.path.join(cwd, "out", rel)) as copy:
        self.assertEqual((copy.size, copy.mode), ((20, 16), "RGB"), rel)
        delta = np.abs(np.asarray(copy).astype(int) - pixels)
      self.assertLessEqual(delta.max(), PROTECT_EPS_255, rel)
      changed += int(delta.max() > 0)
    self.assertEqual(changed, len(written))


class ConfigLookupTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.cwd = self.create_tempdir().full_path
    before = os.getcwd()
    os.chdir(self.cwd)
    self.addCleanup(os.chdir, before)

  def test_shipped_configs_are_the_importable_package(self):
    path = cli.shipped_config("test_tiny")
    self.assertEqual(os.path.basename(path), "test_tiny.py")
    self.assertTrue(os.path.isfile(os.path.join(os.path.dirname(path),
                                                "common.py")))
    import configs  # pylint: disable=g-import-not-at-top
    self.assertEqual(os.path.dirname(path),
                     os.path.dirname(os.path.abspath(configs.__file__)))
    self.assertEqual(cli.shipped_config("no_such_config"), "")

  def test_configs_path_falls_back_to_the_shipped_file(self):
    shipped = cli.shipped_config("test_tiny")
    self.assertEqual(cli.resolve_config("configs/test_tiny.py"), shipped)
    self.assertEqual(cli.resolve_config("./configs/test_tiny.py"), shipped)
    self.assertEqual(cli.resolve_config("configs/test_tiny.py:a=1"),
                     f"{shipped}:a=1")
    for unchanged in ("configs/no_such_config.py", "elsewhere/test_tiny.py",
                      "test_tiny.py", "configs/test_tiny"):
      self.assertEqual(cli.resolve_config(unchanged), unchanged)
    self.assertEqual(
        cli.resolve_config_flag(["prog", "--config", "configs/test_tiny.py",
                                 "--config.name=configs/test_tiny.py"]),
        ["prog", "--config", shipped, "--config.name=configs/test_tiny.py"])
    self.assertEqual(
        cli.resolve_config_flag(["prog", "--config=configs/test_tiny.py"]),
        ["prog", f"--config={shipped}"])

  def test_a_file_under_the_current_directory_wins(self):
    os.makedirs("configs")
    with open(os.path.join("configs", "test_tiny.py"), "w") as f:
      f.write("def get_config():\n  return None\n")
    self.assertEqual(cli.resolve_config("configs/test_tiny.py"),
                     "configs/test_tiny.py")


def read(*path):
  with open(os.path.join(helpers.REPO, *path), encoding="utf-8") as f:
    return f.read()


class InstallFactsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.setup = configparser.ConfigParser()
    self.setup.read(os.path.join(helpers.REPO, "setup.cfg"))

  def test_one_python_floor_everywhere(self):
    floor = re.fullmatch(r">=(3\.\d+)",
                         self.setup["options"]["python_requires"].strip())
    self.assertIsNotNone(floor)
    # jax 0.10 and flax 0.12, install_requires' floors, need Python 3.11.
    self.assertGreaterEqual(tuple(map(int, floor.group(1).split("."))),
                            (3, 11))
    self.assertEqual(re.findall(r"Python (3\.\d+) or newer",
                                read("README.md")), [floor.group(1)])
    self.assertEqual(re.findall(r"Python >= (3\.\d+)", read(".ci", "run")),
                     [floor.group(1)])
    self.assertNotRegex(read("README.md") + read(".ci", "run"),
                        r"Python (>= )?3\.(10|[0-9])\b")

  def test_requirements_hold_what_the_readme_test_command_runs(self):
    command = next(line for line in read("README.md").splitlines()
                   if "-m pytest" in line)
    extras = re.search(r"-e '\.\[([a-z,]+)\]'", command).group(1).split(",")
    declared = self.setup["options.extras_require"]
    for extra in extras:
      self.assertIn(extra, declared)
    needed = {"pytest"} | ({"pytest-xdist"} if re.search(r" -n \d", command)
                           else set())
    listed = {re.split(r"[<>=\[ ]", line)[0].lower()
              for line in read("requirements.txt").splitlines()
              if line.strip() and not line.startswith("#")}
    test_extra = {re.split(r"[<>=\[ ]", line)[0].lower()
                  for line in declared["test"].split() if line}
    self.assertLessEqual(needed, listed)
    self.assertLessEqual(needed, test_extra)
    # requirements.txt is install_requires plus the test extra.
    core = {re.split(r"[<>=\[ ]", line)[0].lower()
            for line in self.setup["options"]["install_requires"].split()}
    self.assertEqual(listed, core | test_extra)

  def test_ci_finds_cifar10_beside_the_checkout_only(self):
    """.ci/run's CIFAR-10 lookup, run in a scratch checkout: the copy in
    ../shared/data is taken; without it none is (no machine's own path)."""
    script = read(".ci", "run")
    block = re.search(r"^# The real CIFAR-10.*?^fi$", script,
                      re.MULTILINE | re.DOTALL).group(0)
    root = self.create_tempdir().full_path
    checkout = os.path.join(root, "checkout")
    os.makedirs(checkout)
    env = {k: v for k, v in os.environ.items() if k != "UE_JAX_CIFAR10"}

    def found():
      return subprocess.run(
          ["bash", "-c", f"set -euo pipefail\n{block}\n"
           "echo \"${UE_JAX_CIFAR10:-none}\""], cwd=checkout, env=env,
          capture_output=True, text=True, check=True).stdout.strip()

    self.assertEqual(found(), "none")
    data = os.path.join(root, "shared", "data")
    os.makedirs(data)
    with open(os.path.join(data, "cifar10-jpeg.tar.gz"), "wb") as f:
      f.write(b"")
    self.assertEqual(found(), os.path.join(os.path.realpath(data),
                                           "cifar10-jpeg.tar.gz"))


if __name__ == "__main__":
  absltest.main()
