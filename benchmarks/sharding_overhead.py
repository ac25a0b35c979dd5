"""Throughput and per-device memory of the sharded steps on 1, 2, 4, 8 devices.

  python benchmarks/sharding_overhead.py [--devices=1,2,4,8] [--n=2048] \
      [--model=small_cnn --width=16 --shape=28,28,1 --batch=256 --steps=10]

One subprocess per device count (JAX fixes the count at start-up; on a CPU
the devices are `jax_num_cpu_devices` slices of the same cores, so the
figure to read is the overhead of sharding, not a speed-up). Each runs
generate.build (noise sharded on `data`, batches split, params replicated)
and times `--repeats` sweeps of noise steps (PGD image·steps/s) and of model
steps (images/s), medians, after one warm-up sweep. Memory per device: the
noise rows each device holds (from `noise.addressable_shards`) and XLA's
argument + temporary bytes of the compiled noise step on one device
(`memory_analysis()`, per partition).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(a):
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", int(a.devices))
  sys.path.insert(0, REPO)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  from ue_jax.io import data as data_lib  # pylint: disable=g-import-not-at-top
  from ue_jax.search import generate  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from benchmarks.timing import sweep_seconds  # pylint: disable=g-import-not-at-top

  shape = tuple(int(s) for s in a.shape.split(","))
  rng = np.random.default_rng(0)
  train = data_lib.make_dataset(
      rng.integers(0, 256, (a.n, *shape), dtype=np.uint8),
      rng.integers(0, 10, a.n), 10)
  cfg = common.base()
  cfg.model.name, cfg.model.width = a.model, a.width
  cfg.noise.num_steps, cfg.noise.storage = a.steps, a.storage
  cfg.generate.batch_size = cfg.generate.eval_batch_size = a.batch
  placement = sharding.Placement(sharding.make_mesh(0))
  state, (model_step, noise_step, _) = generate.build(cfg, train, placement)
  batches = [data_lib.gather(train, rows)
             for rows in data_lib.batches(a.n, a.batch)]
  memory = noise_step.lower(state, batches[0]).compile().memory_analysis()

  times = {"noise": [], "model": []}
  for r in range(a.repeats + 1):  # the first sweep compiles (not timed)
    state, t_noise = sweep_seconds(noise_step, state, batches)
    state, t_model = sweep_seconds(model_step, state, batches)
    if r:
      times["noise"].append(t_noise)
      times["model"].append(t_model)
  images = len(batches) * a.batch
  shard = state.noise.addressable_shards[0].data
  print(json.dumps({
      "devices": jax.device_count(),
      "pgd_image_steps_per_s": images * a.steps / statistics.median(
          times["noise"]),
      "model_images_per_s": images / statistics.median(times["model"]),
      "noise_rows_per_device": shard.shape[0],
      "noise_bytes_per_device": shard.nbytes,
      "noise_step_argument_bytes": memory.argument_size_in_bytes,
      "noise_step_temp_bytes": memory.temp_size_in_bytes,
  }))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", default="1,2,4,8")
  p.add_argument("--n", type=int, default=2048)
  p.add_argument("--model", default="small_cnn")
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--shape", default="28,28,1")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--storage", default="float32")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    worker(a)
    return
  import jax  # pylint: disable=g-import-not-at-top
  print(f"{a.model} width {a.width}, input {a.shape}, {a.n} images, batch "
        f"{a.batch}, K={a.steps}, noise {a.storage}, {os.cpu_count()} CPU "
        f"cores, JAX {jax.__version__}")
  print("| devices | PGD image·steps/s | model images/s | noise rows / device"
        " | noise MiB / device | noise step args + temp MiB / device |")
  print("|---|---|---|---|---|---|")
  base = None
  for d in a.devices.split(","):
    argv = [sys.executable, os.path.abspath(__file__), "--worker",
            f"--devices={d}"] + [arg for arg in sys.argv[1:]
                                 if not arg.startswith("--devices")]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True,
                          cwd=REPO, timeout=1800)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    base = base or r
    mib = 1 << 20
    step_bytes = (r["noise_step_argument_bytes"]
                  + r["noise_step_temp_bytes"])
    print(f"| {r['devices']} | {r['pgd_image_steps_per_s']:.0f} "
          f"({r['pgd_image_steps_per_s'] / base['pgd_image_steps_per_s']:.2f}"
          f"x) | {r['model_images_per_s']:.0f} "
          f"({r['model_images_per_s'] / base['model_images_per_s']:.2f}x) | "
          f"{r['noise_rows_per_device']} | "
          f"{r['noise_bytes_per_device'] / mib:.2f} | "
          f"{step_bytes / mib:.2f} |", flush=True)


if __name__ == "__main__":
  main()
