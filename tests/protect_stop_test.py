"""`python -m ue_jax.protect` stopped by SIGINT/SIGTERM at each point of a
run: while its modules import, while the search compiles, while the
held-out check trains. Each ends with exit 128 + the signal number and one
`stopped:` line on stderr, its last, with no traceback."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl.testing import absltest

from tests import helpers
from ue_jax.io import metrics

TINY = ("--config.model.name=small_cnn_avg", "--config.model.width=4",
        "--config.noise.num_steps=2", "--config.generate.max_rounds=1",
        "--config.generate.train_steps=2", "--config.generate.batch_size=16",
        "--config.protect.size=8", "--config.protect.preview=2")
RERUN = "; rerun the same command to continue"


def catches(pid: int, signum: int) -> bool:
  """Whether process `pid` has a handler for `signum` (Linux: the SigCgt
  mask of /proc/PID/status). Python catches SIGINT from its start, SIGTERM
  only once a program installs a handler."""
  with open(f"/proc/{pid}/status", encoding="ascii") as f:
    mask = next(int(line.split()[1], 16) for line in f
                if line.startswith("SigCgt:"))
  return bool(mask >> (signum - 1) & 1)


class Run:
  """The command running, its stderr collected line by line."""

  def __init__(self, argv, cwd, env):
    self.proc = subprocess.Popen(argv, cwd=cwd, env=env,
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stderr:
      self.lines.append(line.rstrip("\n"))

  def wait_for(self, pattern: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not any(re.search(pattern, line) for line in list(self.lines)):
      if self.proc.poll() is not None or time.monotonic() > deadline:
        raise AssertionError(f"no line matching {pattern!r}: "
                             + "\n".join(self.lines[-20:]))
      time.sleep(0.05)

  def stop(self, signum: int, timeout: float = 300):
    """Sends `signum`; returns (exit code, stderr lines)."""
    self.proc.send_signal(signum)
    code = self.proc.wait(timeout=timeout)
    self._reader.join(timeout=60)
    return code, self.lines


class ProtectStopTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_protect_stop_")
    cls.src = os.path.join(cls.tmp, "in")
    cls.heldout = os.path.join(cls.tmp, "heldout")
    cls.names = helpers.write_image_tree(
        cls.src, classes=("cat", "dog"), per_class=8, size=(20, 16),
        splits=("",))
    helpers.write_image_tree(cls.heldout, classes=("cat", "dog"),
                             per_class=4, size=(20, 16), splits=("",), seed=1)
    cls.env = helpers.cli_env(os.path.join(cls.tmp, "xla_cache"))

  def start(self, out, *flags):
    return Run([sys.executable, "-m", "ue_jax.protect", f"--input={self.src}",
                f"--output={out}", *TINY, *flags], self.tmp, self.env)

  def assert_stopped(self, code, lines, signum):
    """The exit code, no traceback, and the one `stopped:` line (returned),
    the last line of stderr."""
    text = "\n".join(lines)
    self.assertEqual(code, 128 + signum, text[-3000:])
    self.assertNotIn("Traceback", text)
    stopped = [line for line in lines if line.startswith("stopped:")]
    self.assertLen(stopped, 1, text[-3000:])
    self.assertEqual(lines[-1], stopped[0])
    return stopped[0]

  def test_while_importing(self):
    for signum in (signal.SIGINT, signal.SIGTERM):
      name = signal.Signals(signum).name
      out = os.path.join(self.tmp, f"out_import_{name}")
      run = self.start(out)
      # From the moment the command installs its handlers (its first
      # statement), seconds before jax is imported.
      deadline = time.monotonic() + 60
      while not catches(run.proc.pid, signal.SIGTERM):
        self.assertTrue(run.proc.poll() is None
                        and time.monotonic() < deadline,
                        "the command installed no SIGTERM handler: a "
                        "SIGTERM would end it silently")
        time.sleep(0.005)
      code, lines = run.stop(signum)
      line = self.assert_stopped(code, lines, signum)
      self.assertEqual(line, f"stopped: {name} received (starting; nothing "
                       f"was written){RERUN}")
      self.assertFalse(os.path.exists(out))

  def test_sigint_while_the_search_compiles(self):
    out = os.path.join(self.tmp, "out_compile")
    run = self.start(out)
    run.wait_for(r"memory plan:")
    code, lines = run.stop(signal.SIGINT)
    line = self.assert_stopped(code, lines, signal.SIGINT)
    # The search's own stop after its batch, or (a signal a hair before the
    # search took the signals over) the command's.
    self.assertRegex(line, r"^stopped: SIGINT received \((round 1, .*\); "
                     r"checkpoint \d+ saved in .*checkpoints; rerun the same "
                     r"command to resume|protecting .*" + re.escape(RERUN)
                     + ")$")

  def test_sigterm_while_the_heldout_check_trains(self):
    out = os.path.join(self.tmp, "out_heldout")
    run = self.start(out, f"--heldout={self.heldout}",
                     "--config.evaluate.epochs=1000")
    # Past the writing: an epoch of a held-out training is logged.
    log = os.path.join(out, ".ue_jax", "metrics.jsonl")
    deadline = time.monotonic() + 300
    while not (os.path.exists(log) and any(
        r["stage"].startswith("evaluate_") for r in metrics.read_log(log))):
      self.assertIsNone(run.proc.poll(), "\n".join(run.lines[-20:]))
      self.assertLess(time.monotonic(), deadline)
      time.sleep(0.05)
    code, lines = run.stop(signal.SIGTERM)
    line = self.assert_stopped(code, lines, signal.SIGTERM)
    self.assertEqual(line, f"stopped: SIGTERM received (protecting "
                     f"{self.src} into {out}; the copies written and the "
                     f"search's last checkpoint are kept){RERUN}")
    for rel in self.names:  # written before the stop, and kept
      self.assertTrue(os.path.exists(os.path.join(out, rel)), rel)


if __name__ == "__main__":
  absltest.main()
