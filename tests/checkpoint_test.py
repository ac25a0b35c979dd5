"""Checkpoints: the non-finite guard, and fault injection through the CLI.

Generation runs are killed (SIGKILL) at several points, or stopped with
SIGTERM, then resumed with the same command; the noise must equal, bit for
bit, that of a run never interrupted, and the metric log must hold each round
once. The subprocesses share a persistent XLA compilation cache, so only the
first one compiles.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import chex
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from ue_jax.io import checkpoint as checkpoint_lib
from ue_jax.io import metrics
from ue_jax.runtime.errors import UEError
from tests import helpers

# 96 training images in batches of 32 make 3 noise batches a round; with a
# checkpoint after every batch and at the round's end, round r writes
# checkpoints 4r-3 .. 4r.
ROUNDS = 3
PER_ROUND = 4


def checkpoint_numbers(workdir):
  """The finished checkpoints (Orbax renames a checkpoint when complete)."""
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


class GuardTest(chex.TestCase):

  def test_nonfinite_state_is_never_saved(self):
    ds = helpers.synthetic(n=8)
    state = helpers.tiny_state(ds)
    ckpt = checkpoint_lib.Checkpoints(self.create_tempdir().full_path,
                                      max_to_keep=3)
    self.assertEqual(ckpt.save(state, {"round": 1}, where="(a)"), 1)
    bad = state.replace(noise=state.noise.at[3, 0, 0, 0].set(jnp.nan))
    self.assertEqual(checkpoint_lib.nonfinite_fields(bad), ["noise"])
    with self.assertRaisesRegex(UEError, r"non-finite values in noise \(b\).*"
                                r"checkpoint 1 .* is the last good one"):
      ckpt.save(bad, {"round": 2}, where="(b)")
    self.assertEqual(ckpt.latest(), 1)
    restored, meta = ckpt.restore(bad)
    chex.assert_trees_all_equal(restored, state)
    self.assertEqual(meta, {"round": 1})
    ckpt.close()


class FaultInjectionTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_ckpt_test_")
    train, test = helpers.write_npz(cls.tmp)
    cls.overrides = [
        f"--config.data.train_path={train}", f"--config.data.test_path={test}",
        f"--config.generate.max_rounds={ROUNDS}",
        f"--config.generate.min_rounds={ROUNDS}",
        "--config.checkpoint.every_batches=1",
        "--config.checkpoint.max_to_keep=3"]
    cls.env = helpers.cli_env(os.path.join(cls.tmp, "xla_cache"))
    reference = os.path.join(cls.tmp, "reference")
    proc = helpers.run_main(reference, *cls.overrides, stage="generate",
                            env=cls.env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint_numbers(reference)[-1] == ROUNDS * PER_ROUND
    cls.reference_noise = np.load(os.path.join(reference, "noise.npy"),
                                  allow_pickle=False)

  @classmethod
  def command(cls, workdir, *extra):
    return helpers.main_command(workdir, *cls.overrides, *extra,
                                stage="generate")

  def start(self, workdir, *extra):
    with open(workdir + ".stderr", "w", encoding="utf-8") as stderr:
      return subprocess.Popen(self.command(workdir, *extra), cwd=helpers.REPO,
                              env=self.env, stdout=subprocess.DEVNULL,
                              stderr=stderr)

  def wait_for_checkpoint(self, proc, workdir, number, timeout=120.0):
    deadline = time.monotonic() + timeout
    while (checkpoint_numbers(workdir) or [0])[-1] < number:
      if proc.poll() is not None:
        self.fail(f"exited with {proc.returncode} before checkpoint {number}")
      if time.monotonic() > deadline:
        proc.kill()
        self.fail(f"no checkpoint {number} after {timeout} s")
      time.sleep(0.005)

  def resume_to_the_end(self, workdir, *extra):
    proc = helpers.run_main(workdir, *self.overrides, *extra,
                            stage="generate", env=self.env, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("resuming from checkpoint", proc.stderr)
    np.testing.assert_array_equal(
        np.load(os.path.join(workdir, "noise.npy"), allow_pickle=False),
        self.reference_noise)
    rounds = [r["round"] for r in metrics.read_log(
        os.path.join(workdir, "metrics.jsonl"), "generate")]
    self.assertEqual(rounds, list(range(1, ROUNDS + 1)))

  def test_sigkill_at_three_points_then_resume(self):
    workdir = os.path.join(self.tmp, "killed")
    # Each run resumes where the previous one was killed: inside round 1's
    # noise pass (the delay lands it mostly in the save of checkpoint 3);
    # right after round 1 ended; inside round 3's noise pass.
    for number, delay in ((2, 0.03), (PER_ROUND, 0.0),
                          (2 * PER_ROUND + 2, 0.06)):
      before = (checkpoint_numbers(workdir) or [0])[-1]
      self.assertLess(before, number)
      proc = self.start(workdir)
      self.wait_for_checkpoint(proc, workdir, number)
      time.sleep(delay)
      os.kill(proc.pid, signal.SIGKILL)
      self.assertEqual(proc.wait(timeout=60), -signal.SIGKILL)
    self.assertFalse(os.path.exists(os.path.join(workdir, "noise.npy")))
    self.resume_to_the_end(workdir)
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    # Half-written checkpoints of the killed runs are gone.
    self.assertEqual([name for name in names if not name.isdigit()], [])

  def test_sigkill_inside_the_model_steps(self):
    # A checkpoint after every batch, model steps included (time-based with
    # a tiny period): round 1 writes 6 (2 model steps, 3 noise batches, the
    # end), so checkpoints 7 and 8 are taken after model steps 3 and 4.
    workdir = os.path.join(self.tmp, "killed_in_model_steps")
    often = "--config.checkpoint.every_seconds=1e-9"
    proc = self.start(workdir, often)
    self.wait_for_checkpoint(proc, workdir, 7)
    os.kill(proc.pid, signal.SIGKILL)
    self.assertEqual(proc.wait(timeout=60), -signal.SIGKILL)
    number = checkpoint_numbers(workdir)[-1]
    with open(os.path.join(workdir, "checkpoints", str(number), "meta",
                           "metadata"), encoding="utf-8") as f:
      meta = json.load(f)
    self.assertEqual((meta["round"], meta["pos"]), (2, 0), number)
    self.resume_to_the_end(workdir, often)

  def test_sigterm_saves_then_resumes(self):
    workdir = os.path.join(self.tmp, "terminated")
    proc = self.start(workdir)
    self.wait_for_checkpoint(proc, workdir, 3)
    proc.send_signal(signal.SIGTERM)
    self.assertEqual(proc.wait(timeout=60), 128 + signal.SIGTERM)
    with open(workdir + ".stderr", encoding="utf-8") as f:
      last = f.read().strip().splitlines()[-1]
    self.assertRegex(last, r"^stopped: SIGTERM received .*checkpoint \d+ "
                     r"saved in .*; rerun the same command to resume$")
    number = checkpoint_numbers(workdir)[-1]
    self.assertIn(f"checkpoint {number} saved", last)
    with open(os.path.join(workdir, "checkpoints", str(number), "meta",
                           "metadata"), encoding="utf-8") as f:
      self.assertGreaterEqual(json.load(f)["round"], 1)
    self.assertFalse(os.path.exists(os.path.join(workdir, "noise.npy")))
    self.resume_to_the_end(workdir)


  def test_unfinished_search_on_another_device_count_is_refused(self):
    # A copy of the reference without its last checkpoint: the latest is
    # mid-round (before round 3's stop test). Its checkpoints name the
    # count they were made on, and a rerun on another one is refused with
    # one line that says how to resume, leaving them alone.
    reference = os.path.join(self.tmp, "reference")
    workdir = os.path.join(self.tmp, "unfinished_other_count")
    shutil.copytree(reference, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints",
                               str(ROUNDS * PER_ROUND)))
    with open(os.path.join(reference, "results.json"), encoding="utf-8") as f:
      count = len(json.load(f)["devices"])
    other = 1 if count > 1 else 2
    before = checkpoint_numbers(workdir)
    proc = helpers.run_main(workdir, *self.overrides,
                            f"--cpu_devices={other}", stage="generate",
                            env=self.env, timeout=300)
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertNotIn("Traceback", proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    self.assertRegex(last, rf"^error: checkpoint {before[-1]} in .* was made "
                     rf"on {count} device\(s\) in 1 process\(es\), this run "
                     rf"has {other} .*--cpu_devices={count}")
    self.assertEqual(checkpoint_numbers(workdir), before)
    with open(os.path.join(workdir, "checkpoints", str(before[-1]), "meta",
                           "metadata"), encoding="utf-8") as f:
      meta = json.load(f)
    self.assertEqual((meta["devices"], meta["processes"]), (count, 1))
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      self.assertEqual(json.load(f)["run"],
                       {"devices": count, "processes": 1})

  def test_finished_search_reruns_on_another_device_count(self):
    # The reference's search finished: a rerun on another count (the
    # fallback after a multi-device stall) is accepted, computes no step
    # and exports the same noise bit for bit.
    reference = os.path.join(self.tmp, "reference")
    workdir = os.path.join(self.tmp, "finished_other_count")
    shutil.copytree(reference, workdir)
    os.remove(os.path.join(workdir, "noise.npy"))
    with open(os.path.join(reference, "results.json"), encoding="utf-8") as f:
      count = len(json.load(f)["devices"])
    other = 1 if count > 1 else 2
    proc = helpers.run_main(workdir, *self.overrides,
                            f"--cpu_devices={other}", stage="generate",
                            env=self.env, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(checkpoint_numbers(workdir),
                     checkpoint_numbers(reference))
    np.testing.assert_array_equal(
        np.load(os.path.join(workdir, "noise.npy")),
        np.load(os.path.join(reference, "noise.npy")))

  def test_diverging_run_stops_with_one_line(self):
    workdir = os.path.join(self.tmp, "diverged")
    # Only model_step's constants change, so the rest comes from the cache.
    diverge = ["--config.generate.lr=100", "--config.generate.weight_decay=1",
               "--config.generate.train_steps=20"]
    proc = helpers.run_main(workdir, *self.overrides, *diverge,
                            stage="generate", env=self.env, timeout=300)
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    last = proc.stderr.strip().splitlines()[-1]
    self.assertRegex(last, r"^error: non-finite (values in|model loss) "
                     r".*stopped without saving")
    self.assertNotIn("Traceback", proc.stderr)
    self.assertFalse(os.path.exists(os.path.join(workdir, "noise.npy")))


if __name__ == "__main__":
  absltest.main()
