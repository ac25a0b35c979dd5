"""Which modules of ue_jax one run of `python -m ue_jax.main` imports, and
how many lines they hold.

Runs the CLI in a child process on configs/test_tiny.py (synthetic .npz
data in a temporary folder, generate.max_rounds=1, the default stages or
--stage), then prints how many ue_jax modules the child had loaded at its
end and their lines; --list adds each module with its line count. The
child imports ue_jax from the current directory, so run it from the root
of the checkout to measure (an older worktree measures its own code).

  python tools/import_count.py --list
  python tools/import_count.py --stage=generate --set=noise.kind=ar --list
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app
from absl import flags

_STAGE = flags.DEFINE_string("stage", "all", "The run's --stage.")
_SET = flags.DEFINE_multi_string(
    "set", [], "More overrides of the tiny config, FIELD=VALUE (passed as "
    "--config.FIELD=VALUE).")
_LIST = flags.DEFINE_bool("list", False,
                          "Also print each module with its line count.")

MARK = "import_count: "
# The child: the CLI as `python -m ue_jax.main` runs it, then one line with
# the (module, file) of every ue_jax module it loaded.
CHILD = f"""
import json, runpy, sys
try:
  runpy.run_module("ue_jax.main", run_name="__main__", alter_sys=True)
except SystemExit as e:
  if e.code:
    raise
print({MARK!r} + json.dumps(sorted(
    (m, getattr(sys.modules[m], "__file__", None)) for m in list(sys.modules)
    if m == "ue_jax" or m.startswith("ue_jax."))))
"""


def write_data(folder, n_train=96, n_test=64, size=12, classes=4):
  """(train, test) .npz paths of grey images whose brightness names their
  class (the tiny config's synthetic data)."""
  paths = []
  for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = (rng.random((n, size, size, 1)) * 80
              + (labels * 40)[:, None, None, None]).astype(np.uint8)
    path = os.path.join(folder, f"{split}.npz")
    np.savez(path, images=images, labels=labels)
    paths.append(path)
  return paths


def loaded_modules(stage="all", overrides=(), cwd=None):
  """[(module, file)] of the ue_jax modules a tiny run of the CLI, started
  in `cwd`, had loaded at its end."""
  with tempfile.TemporaryDirectory(prefix="ue_jax_imports_") as tmp:
    train, test = write_data(tmp)
    argv = ["--config=configs/test_tiny.py", f"--workdir={tmp}/w",
            f"--stage={stage}", f"--config.data.train_path={train}",
            f"--config.data.test_path={test}",
            "--config.generate.max_rounds=1",
            *(f"--config.{o}" for o in overrides)]
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=cwd,
                          capture_output=True, text=True, check=False)
  found = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
  if proc.returncode or not found:
    raise RuntimeError(f"the run failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-4000:]}")
  return [tuple(m) for m in json.loads(found[-1][len(MARK):])]


def line_count(path) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for _ in f)


def main(argv):
  del argv
  modules = loaded_modules(_STAGE.value, _SET.value, cwd=os.getcwd())
  counts = sorted((line_count(f) if f else 0, m) for m, f in modules)
  print(f"{len(counts)} modules, {sum(c for c, _ in counts)} lines")
  if _LIST.value:
    for count, module in counts:
      print(f"{count:5d} {module}")
    print("ue_jax imported from", os.path.dirname(dict(modules)["ue_jax"]))


if __name__ == "__main__":
  app.run(main)
