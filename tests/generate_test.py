"""The search driver in-process for each noise kind and layout: resume from a
mid-run checkpoint gives the same noise bit for bit, error-maximizing noise
raises the loss of its fixed pretrained model, random noise needs no model."""

import functools
import os
import shutil
import tempfile

from unittest import mock

import jax
import numpy as np
from absl.testing import absltest

from configs import test_tiny
from ue_jax.config import checks
from ue_jax.core import noise as noise_lib
from ue_jax.io import artifacts
from ue_jax.io import checkpoint as checkpoint_lib
from ue_jax.parallel import sharding
from ue_jax.search import baselines
from ue_jax.search import generate
from ue_jax.search import resume
from ue_jax.io import metrics
from ue_jax.core import steps
from ue_jax.training import train as train_lib
from tests import helpers
from ue_jax.runtime.errors import UEError


def tiny_config(**noise):
  cfg = test_tiny.get_config()
  cfg.generate.min_rounds = cfg.generate.max_rounds = 2
  cfg.checkpoint.every_batches = 1
  cfg.checkpoint.max_to_keep = 100
  for key, value in noise.items():
    cfg.noise[key] = value
  return cfg


def run(cfg, train, workdir):
  return generate.run(cfg, train, workdir, metrics.MetricLog(workdir))


class GenerateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_generate_test_")
    cls.train = helpers.synthetic(n=96)

  def resume_matches(self, cfg, name, keep):
    """Runs to the end, then again from a copy cut back to checkpoint
    `keep`; returns (summary, workdir) of the full run."""
    full = os.path.join(self.tmp, name)
    summary = run(cfg, self.train, full)
    cut = full + "_cut"
    shutil.copytree(full, cut)
    os.remove(os.path.join(cut, "noise.npy"))
    folder = os.path.join(cut, resume.CHECKPOINTS)
    for number in os.listdir(folder):
      if number.isdigit() and int(number) > keep:
        shutil.rmtree(os.path.join(folder, number))
    resumed = run(cfg, self.train, cut)
    np.testing.assert_array_equal(np.load(os.path.join(full, "noise.npy")),
                                  np.load(os.path.join(cut, "noise.npy")))
    self.assertEqual(resumed["rounds"], summary["rounds"])
    rounds = [r["round"] for r in metrics.read_log(
        os.path.join(cut, "metrics.jsonl"), "generate")]
    self.assertEqual(rounds, [1, 2])
    return summary, full

  def test_classwise_resumes(self):
    cfg = tiny_config(layout="classwise", num_steps=1)
    # 96 images -> a 19-image fit subset -> 1 noise batch of 32 per round;
    # checkpoints per round: after the batch and at the end: cut inside
    # round 2.
    summary, full = self.resume_matches(cfg, "classwise", keep=3)
    noise = np.load(os.path.join(full, "noise.npy"))
    self.assertEqual(noise.shape, (4, 12, 12, 1))
    self.assertEqual(summary["noise_fit_size"], 19)
    self.assertLessEqual(np.abs(noise).max(), cfg.noise.eps + 1e-7)

  def test_a_raised_min_rounds_continues_a_stopped_search(self):
    """A search that met its stop rule at round 2, resumed with
    min_rounds=3, runs round 3 from where it stopped: the noise of a
    straight 3-round run, bit for bit."""
    two = tiny_config(layout="classwise", num_steps=1)
    two.generate.stop_accuracy = 0.0  # met at every round: min_rounds rules
    two.generate.max_rounds = 5
    first = os.path.join(self.tmp, "stopped")
    self.assertEqual(run(two, self.train, first)["rounds"], 2)
    three = tiny_config(layout="classwise", num_steps=1)
    three.generate.stop_accuracy = 0.0
    three.generate.min_rounds, three.generate.max_rounds = 3, 5
    straight = run(three, self.train, os.path.join(self.tmp, "straight"))
    self.assertEqual(straight["rounds"], 3)
    with self.assertLogs(level="INFO") as logs:
      continued = run(three, self.train, first)
    self.assertTrue(any("the search continues" in line
                        for line in logs.output))
    self.assertEqual(continued["rounds"], 3)
    self.assertTrue(continued["stop_reached"])
    np.testing.assert_array_equal(np.load(straight["noise_path"]),
                                  np.load(continued["noise_path"]))
    rounds = [r["round"] for r in metrics.read_log(
        os.path.join(first, "metrics.jsonl"), "generate")]
    self.assertEqual(rounds, [1, 2, 3])
    # Resumed again with the first config, the finished search stays put.
    self.assertEqual(run(two, self.train, first)["rounds"], 3)

  def test_at_bound_writes_the_signs_of_the_same_search(self):
    """noise.at_bound: the same search, its noise written as eps * sign;
    the rows of classes outside noise.fit_classes stay zero; a kind that is
    not searched is refused."""
    found = {}
    for at_bound in (False, True):
      cfg = tiny_config(fit_classes=(1, 2), at_bound=at_bound)
      workdir = os.path.join(self.tmp, f"at_bound_{at_bound}")
      found[at_bound] = np.load(run(cfg, self.train, workdir)["noise_path"])
    eps = np.float32(cfg.noise.eps)
    np.testing.assert_array_equal(found[True], np.sign(found[False]) * eps)
    others = ~np.isin(self.train.labels, (1, 2))
    self.assertTrue(np.all(found[True][others] == 0))
    mine = found[True][~others]
    self.assertGreater(np.mean(np.abs(mine) == eps), 0.5)
    self.assertTrue(np.all((mine == 0) | (np.abs(mine) == eps)))
    # A luma noise gets one sign per pixel: its channel mean's.
    cfg = tiny_config(form="luma", at_bound=True)
    stored = np.array([[[[0.01, 0.01, -0.03]], [[1e-9, -1e-9, 0.0]]]],
                      np.float32)
    np.testing.assert_array_equal(
        generate.exported(cfg)(stored),
        np.array([[[[-1, -1, -1]], [[0, 0, 0]]]], np.float32) * eps)
    cfg = tiny_config(kind="random", at_bound=True)
    with self.assertRaisesRegex(UEError, "noise.at_bound"):
      checks.check_config(cfg)

  def test_error_max_resumes_after_pretraining_and_raises_the_loss(self):
    cfg = tiny_config(kind="error_max")
    cfg.generate.train_steps = 0
    cfg.generate.pretrain_epochs = 3
    cfg.generate.error_max_stop_accuracy = 0.0
    cfg.noise.step_size = 2 / 255
    cfg.noise.num_steps = 4
    # Checkpoint 1 is the pretrained model: the resumed run skips training.
    summary, full = self.resume_matches(cfg, "error_max", keep=1)
    self.assertIn("pretrain_test_accuracy", summary)
    pretrain_log = metrics.read_log(os.path.join(full + "_cut",
                                                 "metrics.jsonl"),
                                    baselines.PRETRAIN)
    self.assertLen(pretrain_log, 3)
    # The frozen pretrained model: its loss on the release is higher.
    template, _ = generate.build(cfg, self.train)
    ckpt = checkpoint_lib.Checkpoints(
        os.path.join(full, resume.CHECKPOINTS), max_to_keep=100)
    state, meta = ckpt.restore(template, 1)
    ckpt.close()
    self.assertEqual((meta["round"], meta["pos"]), (1, 0))
    self.assertEqual(float(np.abs(state.noise).max()), 0.0)
    eval_fn = jax.jit(functools.partial(steps.eval_step,
                                        release_eps=cfg.noise.eps))
    _, clean_loss = train_lib.sweep(eval_fn, state, self.train, 32)
    state = state.replace(noise=np.load(os.path.join(full, "noise.npy")))
    _, noisy_loss = train_lib.sweep(eval_fn, state, self.train, 32)
    self.assertGreater(noisy_loss, clean_loss + 0.1)

  def test_noise_pass_waits_for_the_devices_only_to_log(self):
    """2 rounds of 3 noise batches: the host waits for the devices for
    progress only to write a line (one at the end of each pass, more only
    when a pass outlasts 10 s), not after every batch; the last line of
    each pass counts all 96 images."""
    cfg = tiny_config()
    cfg.checkpoint.every_batches = 0
    fake, calls = helpers.counting_jax()
    with mock.patch.object(metrics, "jax", fake), \
        self.assertLogs(level="INFO") as logs:
      run(cfg, self.train, os.path.join(self.tmp, "waits"))
    lines = [line for line in logs.output if " noise: " in line]
    self.assertLen(calls, len(lines))
    for r in (1, 2):
      self.assertTrue(any(f"generate round {r}/2 noise: 96/96 img" in line
                          for line in lines), r)

  def test_random_needs_no_search(self):
    for layout, shape in (("samplewise", (96, 12, 12, 1)),
                          ("classwise", (4, 12, 12, 1))):
      cfg = tiny_config(kind="random", layout=layout)
      workdir = os.path.join(self.tmp, f"random_{layout}")
      summary = run(cfg, self.train, workdir)
      noise = np.load(summary["noise_path"])
      self.assertEqual(noise.shape, shape)
      self.assertEqual(summary["rounds"], 0)
      self.assertLessEqual(np.abs(noise).max(), cfg.noise.eps)
      self.assertFalse(os.path.exists(os.path.join(workdir,
                                                   resume.CHECKPOINTS)))
      again = run(cfg, self.train, workdir + "_again")  # seeded
      np.testing.assert_array_equal(noise, np.load(again["noise_path"]))

  def test_random_noise_is_drawn_on_the_mesh_and_written_in_chunks(self):
    """No host holds the whole random noise: it is drawn sharded on the
    mesh and written a chunk of rows at a time; its values are those of
    one draw of the whole noise on one device, bit for bit."""
    cfg = tiny_config(kind="random", random_values="sign", random_patch=5)
    written = []
    write = artifacts.NpyWriter.write

    def spy(writer, start, rows):
      written.append(len(rows))
      return write(writer, start, rows)

    row_bytes = 12 * 12 * 1 * 4
    with mock.patch.object(sharding, "EXPORT_BYTES", 10 * row_bytes), \
        mock.patch.object(artifacts.NpyWriter, "write", spy):
      summary = run(cfg, self.train, os.path.join(self.tmp, "random_chunks"))
    self.assertEqual(written, [10] * 9 + [6])  # 96 rows, 10 at a time
    whole = noise_lib.random_noise(
        jax.random.fold_in(jax.random.key(cfg.seed), 2), (96, 12, 12, 1),
        eps=cfg.noise.eps, patch=5, values="sign")
    noise = np.load(summary["noise_path"])
    np.testing.assert_array_equal(noise, np.asarray(whole))
    self.assertEqual(summary["noise_max_abs"], np.float32(cfg.noise.eps))


if __name__ == "__main__":
  absltest.main()
