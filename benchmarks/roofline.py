"""Achieved FLOP/s of the PGD step against this machine's limits (roofline).

  python benchmarks/roofline.py [--out=docs/roofline] [--devices=1,-1]

For each model (small_cnn 28x28x1 batch 256 K=20, the quick start's
width-16 ResNet-18 28x28x1 batch 256 K=20, the paper's ResNet-18 32x32x3
batch 32 K=20) it builds the noise step exactly as a run does
(generate.build, over the mesh), counts its FLOPs and bytes with XLA's cost
analysis of the lowered (global, unpartitioned) program, and times it
(median of --repeats after a warm-up). One subprocess per device setting
(`--cpu_devices` of ue_jax.main: 1 = one XLA device on all cores, -1 = one
per core).

The roofs: the compute peak is the fastest float32 matrix product XLA runs
here (2048^2, best of 5), which is what a convolution can at best become;
the memory roof is the read bandwidth of a sum over 256 MiB. XLA's "bytes
accessed" counts every operand read and write of the program, most of which
hit the caches (a width-16 ResNet layer's activations for a batch of 256 are
about 13 MB against 2 MiB of L2 per core and 32 MiB of L3), so points can
lie above the memory roof; the compute roof is the one that binds. The
script also prints the nominal peak from /proc/cpuinfo's clock x cores x 64
float32 FLOP per cycle (two 512-bit FMA pipes, true for AVX-512 cores such as
this AMD EPYC Zen 5); the matrix product beats that
figure when the cores boost above the nominal clock, so the measured one is
the roof used. Writes OUT.json and OUT.png.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (ue_jax model, width, input HWC, batch, K)
MODELS = {
    "small_cnn": ("small_cnn", 32, (28, 28, 1), 256, 20),
    "resnet18_w16": ("resnet18", 16, (28, 28, 1), 256, 20),
    "resnet18_w64": ("resnet18", 64, (32, 32, 3), 32, 20),
}


def worker(a):
  sys.path.insert(0, REPO)
  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import distributed
  from benchmarks.timing import call_seconds
  distributed.use_cpu_cores(a.devices, batch_sizes=[m[3] for m in
                                                 MODELS.values()])
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs import common
  from ue_jax.io import data as data_lib
  from ue_jax.search import generate
  # pylint: enable=g-import-not-at-top
  out = {"devices": jax.device_count(), "models": {}}
  if a.limits:
    n = 2048
    x = jnp.ones((n, n), jnp.float32)
    gemm = jax.jit(lambda p, q: p @ q)
    out["gemm_flops_per_s"] = 2 * n**3 / min(call_seconds(gemm, x, x,
                                                          repeats=5))
    # Read bandwidth: a sum over 256 MiB. (A pass that writes a new 256 MiB
    # array measures the kernel's page faults on the fresh output, ~6 GB/s.)
    big = jnp.ones((64 << 20,), jnp.float32)
    out["memory_bytes_per_s"] = big.nbytes / min(call_seconds(
        jax.jit(jnp.sum), big, repeats=5))
  for key, (name, width, shape, b, k) in MODELS.items():
    rng = np.random.default_rng(0)
    ds = data_lib.make_dataset(
        rng.integers(0, 256, (b, *shape), dtype=np.uint8),
        rng.integers(0, 10, b), 10)
    cfg = common.base()
    cfg.model.name, cfg.model.width = name, width
    cfg.noise.num_steps = k
    cfg.generate.batch_size = cfg.generate.eval_batch_size = b
    state, (_, noise_step, _) = generate.build(cfg, ds)
    batch = data_lib.gather(ds, np.arange(b))
    cost = noise_step.lower(state, batch).cost_analysis()
    times = []
    for r in range(a.repeats + 1):
      t0 = time.perf_counter()
      state, _ = noise_step(state, batch)
      jax.block_until_ready(state)
      if r:  # the first call compiles
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    out["models"][key] = {
        "batch": b, "pgd_steps": k, "flops": cost["flops"],
        "bytes": cost["bytes accessed"], "seconds": seconds,
        "image_steps_per_s": b * k / seconds,
        "flops_per_s": cost["flops"] / seconds,
        "flops_per_image_step": cost["flops"] / (b * k)}
  print(json.dumps(out))


def nominal_peak():
  """cores x nominal MHz x 64 float32 FLOP/cycle (2 x 512-bit FMA)."""
  with open("/proc/cpuinfo", encoding="utf-8") as f:
    mhz = [float(line.split(":")[1]) for line in f if line.startswith(
        "cpu MHz")]
  if not mhz:
    return None, None
  return len(mhz) * max(mhz) * 1e6 * 64, max(mhz)


def plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  peak, bw = results["gemm_flops_per_s"], results["memory_bytes_per_s"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ai = np.logspace(-1, 3, 200)
  ax.loglog(ai, np.minimum(peak, bw * ai) / 1e9, "k-", lw=1.5,
            label=f"roof: GEMM {peak / 1e9:.0f} GFLOP/s, "
            f"memory {bw / 1e9:.0f} GB/s")
  if results.get("nominal_peak"):
    ax.axhline(results["nominal_peak"] / 1e9, color="gray", ls=":",
               label=f"nominal clock x 64 FLOP/cycle "
               f"({results['nominal_peak'] / 1e9:.0f})")
  markers = {"small_cnn": "s", "resnet18_w16": "o", "resnet18_w64": "D"}
  colors = {}
  for run in results["runs"]:
    color = colors.setdefault(run["devices"], f"C{len(colors)}")
    for key, m in run["models"].items():
      x = m["flops"] / m["bytes"]
      y = m["flops_per_s"] / 1e9
      ax.loglog([x], [y], markers[key], color=color, ms=8)
      ax.annotate(f"{key} ({run['devices']} dev) {y / (peak / 1e9):.0%}",
                  (x, y), textcoords="offset points", xytext=(6, -4),
                  fontsize=7)
  ax.set_xlabel("arithmetic intensity (FLOP / byte, XLA cost analysis)")
  ax.set_ylabel("GFLOP/s")
  ax.set_title("PGD step (K sign-gradient steps) on this CPU, float32")
  ax.legend(fontsize=7, loc="lower right")
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", default="1,-1",
                 help="--cpu_devices settings to run, one subprocess each")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default="runs/roofline")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--limits", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    a.devices = int(a.devices)
    worker(a)
    return
  results = {"runs": []}
  for i, d in enumerate(a.devices.split(",")):
    argv = [sys.executable, os.path.abspath(__file__), "--worker",
            f"--devices={d}", f"--repeats={a.repeats}"] + (
                ["--limits"] if i == 0 else [])
    proc = subprocess.run(argv, capture_output=True, text=True, check=True,
                          cwd=REPO, timeout=3600)
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("gemm_flops_per_s", "memory_bytes_per_s"):
      if key in run:
        results[key] = run.pop(key)
    results["runs"].append(run)
  results["nominal_peak"], results["nominal_mhz"] = nominal_peak()
  results["load_average"] = os.getloadavg()
  peak = results["gemm_flops_per_s"]
  print(f"roofs: GEMM {peak / 1e9:.0f} GFLOP/s (nominal "
        f"{(results['nominal_peak'] or 0) / 1e9:.0f} at "
        f"{results['nominal_mhz']} MHz), memory "
        f"{results['memory_bytes_per_s'] / 1e9:.0f} GB/s")
  print("| model | batch | K | devices | MFLOP / image-step | FLOP / byte | "
        "image-steps/s | GFLOP/s | of GEMM peak |")
  print("|---|---|---|---|---|---|---|---|---|")
  for run in results["runs"]:
    for key, m in run["models"].items():
      print(f"| {key} | {m['batch']} | {m['pgd_steps']} | {run['devices']} "
            f"| {m['flops_per_image_step'] / 1e6:.1f} "
            f"| {m['flops'] / m['bytes']:.1f} "
            f"| {m['image_steps_per_s']:.0f} | {m['flops_per_s'] / 1e9:.0f} "
            f"| {m['flops_per_s'] / peak:.0%} |")
  if os.path.dirname(a.out):
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
  with open(a.out + ".json", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  plot(results, a.out + ".png")
  print(f"wrote {a.out}.json and {a.out}.png")


if __name__ == "__main__":
  main()
