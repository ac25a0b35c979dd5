"""generate.max_seconds: the search stops at the wall-clock cap with a
checkpoint, releases the noise as it is, and a rerun with a larger cap (or
none) resumes to the noise of a run never capped, bit for bit."""

import os
import tempfile
from unittest import mock

import numpy as np
from absl.testing import absltest

from configs import test_tiny
from tests import helpers
from ue_jax.io import metrics
from ue_jax.io import workdir as workdir_lib
from ue_jax.config import checks
from ue_jax.runtime.errors import UEError
from ue_jax.search import generate
from ue_jax.search import harness
from ue_jax.search import resume


def tiny_config(max_seconds=0.0):
  cfg = test_tiny.get_config()
  cfg.generate.min_rounds = cfg.generate.max_rounds = 2
  cfg.generate.max_seconds = max_seconds
  return cfg


def run(cfg, train, workdir):
  return generate.run(cfg, train, workdir, metrics.MetricLog(workdir))


def noise(workdir):
  return np.load(os.path.join(workdir, "noise.npy"))


class TimeCapTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_time_cap_test_")
    cls.train = helpers.synthetic(n=96)
    cls.full = os.path.join(cls.tmp, "full")
    cls.summary = run(tiny_config(), cls.train, cls.full)

  def test_uncapped_run_is_not_capped(self):
    self.assertFalse(self.summary["capped"])
    self.assertEqual(self.summary["completed_rounds"], 2)

  def test_cap_mid_round_then_resume_matches_an_uncapped_run(self):
    # 2 model steps and 3 noise batches a round; the cap is asked before
    # each batch and at the top of each round: the 6th question falls
    # before round 1's third noise batch.
    answers = iter([False] * 5 + [True])
    real = generate.over_time

    def over_time(max_seconds, clock, *, round_end=False):
      self.assertEqual(max_seconds, 60.0)
      real(max_seconds, clock, round_end=round_end)
      return next(answers)

    workdir = os.path.join(self.tmp, "capped")
    with mock.patch.object(harness, "over_time", over_time), \
        self.assertLogs(level="WARNING") as logs:
      capped = run(tiny_config(60.0), self.train, workdir)
    self.assertTrue(capped["capped"])
    self.assertFalse(capped["stop_reached"])
    self.assertEqual((capped["rounds"], capped["completed_rounds"]), (1, 0))
    self.assertBetween(capped["final_train_accuracy_on_release"], 0.0, 1.0)
    self.assertTrue(any("generate.max_seconds=60 reached (round 1, after "
                        "2/3 noise batches" in line for line in logs.output),
                    logs.output)
    partial = noise(workdir)
    self.assertLessEqual(np.abs(partial).max(), 8 / 255 + 1e-6)
    # Rows of the two finished noise batches moved, those of the third not.
    self.assertEqual(int(np.sum(np.any(partial != 0, axis=(1, 2, 3)))), 64)
    os.remove(os.path.join(workdir, "noise.npy"))
    resumed = run(tiny_config(0.0), self.train, workdir)
    self.assertFalse(resumed["capped"])
    self.assertEqual(resumed["completed_rounds"], 2)
    np.testing.assert_array_equal(noise(workdir), noise(self.full))
    rounds = [r["round"] for r in metrics.read_log(
        os.path.join(workdir, "metrics.jsonl"), "generate")]
    self.assertEqual(rounds, [1, 2])

  def test_cap_already_spent_does_no_batch(self):
    workdir = os.path.join(self.tmp, "spent")
    summary = run(tiny_config(1e-9), self.train, workdir)
    self.assertTrue(summary["capped"])
    self.assertEqual(summary["completed_rounds"], 0)
    self.assertFalse(np.any(noise(workdir)))
    self.assertTrue(os.listdir(os.path.join(workdir, resume.CHECKPOINTS)))

  def test_over_time(self):
    self.assertFalse(generate.over_time(0.0, 1e9))
    self.assertFalse(generate.over_time(10.0, 9.9))
    self.assertTrue(generate.over_time(10.0, 10.0))

  def test_field_is_validated_and_operational(self):
    cfg = tiny_config(-1.0)
    cfg.data.train_path = cfg.data.test_path = "x.npz"
    with self.assertRaisesRegex(UEError, r"generate.max_seconds must lie in "
                                r"\[0, 1000000000.0\], got -1.0"):
      checks.check_config(cfg)
    # A workdir accepts another cap: a capped search resumes under it.
    a, b = tiny_config(10.0), tiny_config(0.0)
    self.assertEqual(
        workdir_lib.identity(workdir_lib.canonical(a), "generate"),
        workdir_lib.identity(workdir_lib.canonical(b), "generate"))


if __name__ == "__main__":
  absltest.main()
