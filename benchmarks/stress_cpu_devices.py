"""Short two-device runs of `ue_jax.main` in a row while other processes load
the cores: does XLA:CPU's in-process all-reduce abort or hang?

With several CPU devices in one process every step's all-reduce waits for
all devices at a rendezvous, and XLA aborts the process when one device is
late by more than its timeouts (by default a warning after 20 s, the abort
40 s later: "Termination timeout ... Expected 2 threads to join the
rendezvous, but only 1 of them arrived"). `distributed.use_cpu_cores`
lengthens those timeouts for several devices; `--old-timeouts` puts XLA's
defaults back in XLA_FLAGS (a user's value wins there), which is the
behaviour before that change.

Each run is a subprocess (its own process group, killed after
`--hang-timeout` seconds: a hang) of a small Fashion-MNIST search and
evaluation: the quick start's config (configs/fashion_mnist_samplewise.py)
cut to `--train-size` training and `--test-size` test images, `--max-rounds`
search rounds of K = `--num-steps` and `--epochs` epochs of the learner on
the release (and on the clean images with `--train-clean`).
`--load` processes that each spin one core run the whole time. For every
run it records the exit code, the seconds, whether stderr holds XLA's
termination message or its stuck-rendezvous warning, whether it hung, and
the accuracies of results.json. The runs share JAX's persistent
compilation cache (`--compile-cache`), so that after the first one they
spend their time running steps rather than compiling. The JSON summary
(`--out`) is rewritten after every run, and a second call with the same
`--out` goes on from the runs it holds. Not part of the tests (minutes per
run).

  python benchmarks/stress_cpu_devices.py --runs=3 --old-timeouts \\
      --out=runs/stress/old.json
  python benchmarks/stress_cpu_devices.py --runs=20 --out=runs/stress/new.json

Needs the real Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from ue_jax.parallel import distributed
# pylint: enable=g-import-not-at-top,wrong-import-position

# XLA's own values (xla/debug_options_flags.cc), as before use_cpu_cores set
# longer ones.
XLA_DEFAULT_TIMEOUTS = (
    ("xla_cpu_collective_call_warn_stuck_timeout_seconds", 20),
    ("xla_cpu_collective_call_terminate_timeout_seconds", 40),
    ("xla_cpu_collective_timeout_seconds", 1800),
)
TERMINATION = "Termination timeout"
STUCK = "may be stuck"
RENDEZVOUS = "rendezvous"
BURN = "while True:\n  pass\n"


def main_argv(a, workdir: str):
  """`python -m ue_jax.main` for one run."""
  return [sys.executable, "-m", "ue_jax.main",
          "--config=configs/fashion_mnist_samplewise.py",
          f"--workdir={workdir}", "--overwrite",
          f"--cpu_devices={a.cpu_devices}",
          f"--config.data.train_size={a.train_size}",
          f"--config.data.test_size={a.test_size}",
          f"--config.generate.max_rounds={a.max_rounds}",
          f"--config.noise.num_steps={a.num_steps}",
          f"--config.evaluate.epochs={a.epochs}",
          f"--config.evaluate.train_clean={a.train_clean}",
          *a.override]


def run_env(old_timeouts: bool, compile_cache: str = ""):
  """The environment of a run: XLA's default timeouts forced with
  `old_timeouts`, else whatever use_cpu_cores sets; JAX's persistent
  compilation cache in `compile_cache` (if given)."""
  env = dict(os.environ)
  if compile_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=compile_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  if old_timeouts:
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = " ".join(
        [flags] + [f"--{k}={v}" for k, v in XLA_DEFAULT_TIMEOUTS]).strip()
  return env


def classify(returncode, stderr: str, hung: bool) -> dict:
  """What a run's exit code and stderr say."""
  return {
      "exit_code": returncode,
      "hung": hung,
      "termination_timeout": TERMINATION in stderr,
      "stuck_warning": STUCK in stderr,
      "rendezvous_in_stderr": RENDEZVOUS in stderr,
      "ok": returncode == 0 and not hung,
  }


def one_run(argv, env, *, hang_timeout: float, log_path: str) -> dict:
  """Runs argv in its own process group; kills the group after
  `hang_timeout` seconds."""
  start = time.perf_counter()
  load = os.getloadavg()[0]
  with open(log_path, "w") as log:
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    hung = False
    try:
      proc.wait(timeout=hang_timeout)
    except subprocess.TimeoutExpired:
      hung = True
    finally:  # a hang, or this script stopped (the run is not recorded)
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
  seconds = time.perf_counter() - start
  with open(log_path, errors="replace") as log:
    output = log.read()
  record = classify(proc.returncode, output, hung)
  record.update(seconds=round(seconds, 1), load_before=round(load, 2),
                load_after=round(os.getloadavg()[0], 2), log=log_path)
  return record


def read_results(workdir: str) -> dict:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    results = json.load(f)
  return {k: results.get(k) for k in ("clean_test_accuracy",
                                      "unlearnable_test_accuracy")}


def write_json(path: str, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def summarize(runs) -> dict:
  return {
      "runs": len(runs),
      "ok": sum(r["ok"] for r in runs),
      "termination_timeouts": sum(r["termination_timeout"] for r in runs),
      "hangs": sum(r["hung"] for r in runs),
      "other_failures": sum(not r["ok"] and not r["hung"]
                            and not r["termination_timeout"] for r in runs),
      "stuck_warnings": sum(r["stuck_warning"] for r in runs),
      "seconds_min_median_max": (
          [min(s), sorted(s)[len(s) // 2], max(s)]
          if (s := [r["seconds"] for r in runs]) else []),
  }


def start_burners(count: int):
  return [subprocess.Popen([sys.executable, "-c", BURN],
                           start_new_session=True) for _ in range(count)]


def stop_burners(burners):
  for proc in burners:
    proc.kill()
    proc.wait()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", type=int, default=20)
  p.add_argument("--load", type=int, default=2,
                 help="competing processes, each spinning one core")
  p.add_argument("--old-timeouts", action="store_true",
                 help="XLA's default collective timeouts (the old behaviour)")
  p.add_argument("--hang-timeout", type=float, default=600.0,
                 help="seconds before a run counts as hung and is killed")
  p.add_argument("--cpu-devices", type=int, default=2)
  p.add_argument("--train-size", type=int, default=1000)
  p.add_argument("--test-size", type=int, default=1000)
  p.add_argument("--max-rounds", type=int, default=1)
  p.add_argument("--num-steps", type=int, default=10, help="K")
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--train-clean", action="store_true",
                 help="also train the learner on the clean images")
  p.add_argument("--override", action="append", default=[],
                 help="one more ue_jax.main flag, e.g. "
                      "--override=--config.evaluate.train_clean=False")
  p.add_argument("--compile-cache", default="",
                 help="JAX's persistent compilation cache for the runs (they "
                      "compile the same programs; the first run fills it): "
                      "a folder, default WORKDIR/jax_cache; 'none': off")
  p.add_argument("--workdir", default="runs/stress",
                 help="the runs' workdirs and logs go below it")
  p.add_argument("--out", default="runs/stress/summary.json")
  a = p.parse_args()
  workdir = os.path.abspath(a.workdir)
  os.makedirs(workdir, exist_ok=True)
  os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
  mode = "old" if a.old_timeouts else "new"
  runs = []
  if os.path.exists(a.out):  # go on from an interrupted call
    with open(a.out) as f:
      runs = json.load(f)["per_run"]
  cache = {"": os.path.join(workdir, "jax_cache"), "none": ""}.get(
      a.compile_cache, a.compile_cache)
  env = run_env(a.old_timeouts, cache)
  settings = {"mode": mode, "argv": main_argv(a, "WORKDIR"),
              "xla_flags_given": env.get("XLA_FLAGS", ""),
              "compile_cache": cache,
              "timeouts_set_by_use_cpu_cores": dict(
                  distributed.COLLECTIVE_TIMEOUTS),
              "load": a.load, "hang_timeout": a.hang_timeout,
              "cores": distributed.cpu_cores()}
  # SIGTERM ends this script through the `finally`s below: the burners and
  # the run in progress are killed, not left behind.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  burners = start_burners(a.load)
  started = time.perf_counter()
  done_before = len(runs)
  try:
    for i in range(len(runs), a.runs):
      run_dir = os.path.join(workdir, f"{mode}_{i:02d}")
      record = one_run(main_argv(a, run_dir), env,
                       hang_timeout=a.hang_timeout,
                       log_path=run_dir + ".log")
      record.update(index=i, **read_results(run_dir))
      runs.append(record)
      write_json(a.out, {"settings": settings, "summary": summarize(runs),
                         "per_run": runs})
      rate = (i + 1 - done_before) / (time.perf_counter() - started)
      eta = (a.runs - i - 1) / rate
      print(f"run {i + 1}/{a.runs} ({mode} timeouts): exit "
            f"{record['exit_code']}, {record['seconds']:.0f} s, "
            f"hung {record['hung']}, termination "
            f"{record['termination_timeout']}, stuck warning "
            f"{record['stuck_warning']}, load {record['load_before']}; "
            f"{rate * 60:.2f} runs/min, ETA {eta / 60:.1f} min", flush=True)
  finally:
    stop_burners(burners)
  print(json.dumps(summarize(runs)))


if __name__ == "__main__":
  main()
