"""The command line end to end on tiny synthetic data, and its error handling."""

import json
import os
import signal
import subprocess
import tempfile
import time

import numpy as np
from absl.testing import absltest

from tests import helpers
from tests import protect_stop_test
from ue_jax.io import metrics
from ue_jax.parallel import distributed
from ue_jax.runtime import interrupt
from ue_jax.runtime.errors import Stopped


class EndToEndTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_test_")
    cls.train, cls.test = helpers.write_npz(cls.tmp)
    cls.data = [f"--config.data.train_path={cls.train}",
                f"--config.data.test_path={cls.test}"]

  def test_all_stages(self):
    workdir = os.path.join(self.tmp, "run")
    proc = helpers.run_main(workdir, *self.data, "--config.generate.max_rounds=2")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    for key in ("config_name", "dataset", "model", "epsilon", "rounds",
                "stop_reached", "generation_seconds", "clean_test_accuracy",
                "unlearnable_test_accuracy", "curves", "noise_path",
                "release_path", "figure_path", "curves_path"):
      self.assertIn(key, results)
    self.assertEqual(results["config_name"], "test_tiny")
    # --cpu_devices=1, the default: JAX's single CPU device.
    self.assertLen(results["devices"], 1)
    self.assertEqual(results["rounds"], 2)
    self.assertIsInstance(results["stop_reached"], bool)
    for name in ("clean", "unlearnable"):  # the last epoch's, as reported
      self.assertEqual(results[f"{name}_test_accuracy"],
                       results["curves"][name][-1])
    self.assertLen(results["curves"]["clean"], 1)
    # The last epoch's confusion matrix: rows are the test labels, its
    # trace is the reported accuracy, its diagonal the per-class ones.
    test_labels = np.load(self.test, allow_pickle=False)["labels"]
    for name in ("clean", "unlearnable"):
      m = np.asarray(results["confusion"][name])
      np.testing.assert_array_equal(
          m.sum(1), np.bincount(test_labels, minlength=len(m)))
      self.assertAlmostEqual(np.trace(m) / m.sum(),
                             results[f"{name}_test_accuracy"], places=6)
      np.testing.assert_allclose(results["per_class_test_accuracy"][name],
                                 np.diag(m) / m.sum(1))
    for key in ("noise_path", "release_path", "figure_path", "curves_path"):
      self.assertTrue(os.path.exists(results[key]), key)
    noise = np.load(results["noise_path"], allow_pickle=False)
    self.assertEqual(noise.shape, (96, 12, 12, 1))
    self.assertLessEqual(np.abs(noise).max(), results["epsilon"] + 1e-6)
    release = np.load(results["release_path"], allow_pickle=False)
    clean = np.load(self.train, allow_pickle=False)["images"]
    change = np.abs(release["images"].astype(int) - clean.astype(int))
    self.assertLessEqual(change.max(), 8)
    np.testing.assert_array_equal(release["indices"], np.arange(96))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      stages = [json.loads(line)["stage"] for line in f]
    self.assertEqual(stages.count("generate"), 2)
    self.assertEqual(stages.count("evaluate_clean"), 1)

  def test_workdir_defaults_to_runs_and_the_config_name(self):
    """No --workdir: the run's folder is runs/<config.name> under the
    current directory, and the same command again resumes it."""
    cwd = tempfile.mkdtemp(prefix="ue_jax_cwd_")
    cmd = helpers.main_command("unused", *self.data, stage="generate")
    cmd = [a for a in cmd if not a.startswith("--workdir=")]
    cmd.append("--config.generate.max_rounds=1")
    for _ in range(2):
      proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                            timeout=600, check=False)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(os.listdir(cwd), ["runs"])
    workdir = os.path.join(cwd, "runs", "test_tiny")
    with open(os.path.join(workdir, "config.json")) as f:
      self.assertEqual(json.load(f)["config"]["name"], "test_tiny")
    self.assertTrue(os.path.isfile(os.path.join(workdir, "noise.npy")))
    self.assertIn(f"the run's folder is {workdir}", proc.stderr)

  def test_eps_typed_as_a_decimal_releases_8_levels(self):
    # 0.0313725 lies a hair below 8/255: taken as 8/255, so the release of
    # a +-eps noise changes pixels by exactly 8 levels, not 7.
    workdir = os.path.join(self.tmp, "eps_decimal")
    proc = helpers.run_main(workdir, *self.data, "--config.noise.eps=0.0313725",
                    "--config.noise.kind=random",
                    "--config.noise.random_values=sign",
                    "--config.evaluate.train_clean=False")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["epsilon_255"], 8.0)
    self.assertEqual(results["release_max_pixel_change"], 8)
    release = np.load(results["release_path"], allow_pickle=False)
    clean = np.load(self.train, allow_pickle=False)["images"]
    change = np.abs(release["images"].astype(int) - clean.astype(int))
    self.assertEqual(change.max(), 8)
    self.assertIn("noise.eps=0.0313725 is taken as 8/255", proc.stderr)

  def test_one_device_per_core_on_request(self):
    # --cpu_devices=-1: one CPU device per core, as far as the tiny config's
    # batch sizes (32, 32, 16, 32) allow; the noise shape is the same.
    workdir = os.path.join(self.tmp, "per_core")
    proc = helpers.run_main(workdir, *self.data, "--cpu_devices=-1",
                    "--config.generate.max_rounds=1", stage="generate")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "results.json")) as f:
      self.assertLen(json.load(f)["devices"], distributed.cpu_device_count(
          distributed.cpu_cores(), (32, 16)))
    self.assertEqual(np.load(os.path.join(workdir, "noise.npy")).shape,
                     (96, 12, 12, 1))

  def test_relative_workdir(self):
    # Orbax needs absolute paths; users type relative ones.
    workdir = os.path.relpath(os.path.join(self.tmp, "relative"),
                              helpers.REPO)
    proc = helpers.run_main(workdir, *self.data, "--config.generate.max_rounds=1",
                    stage="generate")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertTrue(os.path.exists(os.path.join(self.tmp, "relative",
                                                "noise.npy")))

  def test_same_config_same_noise(self):
    a, b = (os.path.join(self.tmp, name) for name in ("det_a", "det_b"))
    for workdir in (a, b):
      proc = helpers.run_main(workdir, *self.data, stage="generate")
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    np.testing.assert_array_equal(np.load(os.path.join(a, "noise.npy")),
                                  np.load(os.path.join(b, "noise.npy")))


class StopSignalTest(absltest.TestCase):
  """SIGINT / SIGTERM outside the generation loop: exit 130 / 143 with one
  `stopped:` line, no traceback, what was finished kept."""

  def test_signal_raises_stopped_and_handlers_come_back(self):
    before = signal.getsignal(signal.SIGTERM)
    with self.assertRaises(Stopped) as raised:
      with interrupt.RaiseOnSignal("in the release stage") as stop:
        stop.what = "in the evaluate stage"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode
    self.assertEqual(raised.exception.exit_code, 143)
    self.assertEqual(str(raised.exception), "SIGTERM received (in the "
                     "evaluate stage); rerun the same command to continue")
    self.assertIs(signal.getsignal(signal.SIGTERM), before)
    # Not an Exception: a broad `except Exception` does not take it.
    self.assertFalse(issubclass(Stopped, Exception))

  def test_signal_while_importing(self):
    # From the command's first statement on, seconds before jax is
    # imported: one `stopped:` line, no traceback, exit 128 + signal, and
    # nothing written.
    tmp = self.create_tempdir().full_path
    for signum in (signal.SIGINT, signal.SIGTERM):
      name = signal.Signals(signum).name
      workdir = os.path.join(tmp, f"run_{name}")
      run = protect_stop_test.Run(
          helpers.main_command(workdir, stage="generate"), helpers.REPO,
          helpers.cli_env(os.path.join(tmp, "xla_cache")))
      deadline = time.monotonic() + 60
      while not protect_stop_test.catches(run.proc.pid, signal.SIGTERM):
        self.assertTrue(run.proc.poll() is None
                        and time.monotonic() < deadline,
                        "no SIGTERM handler: a SIGTERM would end it silently")
        time.sleep(0.005)
      code, lines = run.stop(signum)
      text = "\n".join(lines)
      self.assertEqual(code, 128 + signum, text[-3000:])
      self.assertNotIn("Traceback", text)
      self.assertEqual(lines[-1], f"stopped: {name} received (before the "
                       "first stage; nothing was written); rerun the same "
                       "command to continue")
      self.assertFalse(os.path.exists(workdir))

  def test_evaluate_and_battery_stop_with_one_line(self):
    tmp = self.create_tempdir().full_path
    train, test = helpers.write_npz(tmp)
    data = [f"--config.data.train_path={train}",
            f"--config.data.test_path={test}", "--config.noise.kind=random"]
    env = helpers.cli_env(os.path.join(tmp, "xla_cache"))
    workdir = os.path.join(tmp, "run")
    log = os.path.join(workdir, "metrics.jsonl")

    def stop_when_logged(extra, stage, signum, prefix):
      cmd = helpers.main_command(workdir, *data, *extra, stage=stage)
      proc = subprocess.Popen(cmd, cwd=helpers.REPO, env=env,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
      deadline = time.monotonic() + 300
      while not (os.path.exists(log) and any(
          r["stage"].startswith(prefix) for r in metrics.read_log(log))):
        self.assertIsNone(proc.poll(), "exited before training")
        self.assertLess(time.monotonic(), deadline)
        time.sleep(0.05)
      proc.send_signal(signum)
      _, stderr = proc.communicate(timeout=120)
      self.assertEqual(proc.returncode, 128 + signum, stderr[-3000:])
      self.assertNotIn("Traceback", stderr)
      return stderr.strip().splitlines()[-1]

    last = stop_when_logged(["--config.evaluate.epochs=1000"], "all",
                            signal.SIGINT, "evaluate_")
    self.assertRegex(last, r"^stopped: SIGINT received \(in the evaluate "
                     r"stage; .*\); rerun the same command to continue$")
    self.assertTrue(os.path.exists(os.path.join(
        workdir, "release", "unlearnable_train.npz")))
    last = stop_when_logged(
        ["--config.battery.epochs=1000",
         "--config.battery.learners=('small_cnn_avg',)",
         "--config.battery.defenses=('none',)"], "battery", signal.SIGTERM,
        "battery_")
    self.assertRegex(last, r"^stopped: SIGTERM received \(in the battery "
                     r"stage; its finished cells are kept in .*cells\); "
                     r"rerun the same command to continue$")


if __name__ == "__main__":
  absltest.main()
