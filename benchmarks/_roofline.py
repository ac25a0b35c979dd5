"""The roofline of benchmarks/throughput.py (--measure=roofline): this
machine's compute and memory roofs, the table and the figure. Private to
throughput.py, kept apart so that one stays a readable size.

The compute roof is the fastest float32 matrix product XLA runs here (2048^2,
best of 5), which is what a convolution can at best become; the memory roof
is the read bandwidth of a sum over 256 MiB. XLA's "bytes accessed" counts
every operand read and write, most of which hit the caches, so points can
lie above the memory roof; the compute roof is the one that binds. The
nominal peak is /proc/cpuinfo's clock x cores x 64 float32 FLOP per cycle
(two 512-bit FMA pipes); the matrix product beats it when the cores boost
above the nominal clock, so the measured one is the roof used.
"""

import time


def _best_seconds(fn, *args, repeats: int = 5) -> float:
  """The fastest of `repeats` calls of fn(*args) to its outputs' end,
  after one untimed call (compilation)."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return min(times)


def roofs() -> dict:
  """This machine's compute and memory roofs, on the default device."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  # pylint: enable=g-import-not-at-top
  n = 2048
  x = jnp.ones((n, n), jnp.float32)
  out = {"gemm_flops_per_s": 2 * n**3 / _best_seconds(
      jax.jit(lambda p, q: p @ q), x, x)}
  # Read bandwidth: a sum over 256 MiB. (A pass that writes a new 256 MiB
  # array measures the kernel's page faults on the fresh output, ~6 GB/s.)
  big = jnp.ones((64 << 20,), jnp.float32)
  out["memory_bytes_per_s"] = big.nbytes / _best_seconds(jax.jit(jnp.sum),
                                                         big)
  return out


def nominal_peak():
  """(cores x nominal MHz x 64 float32 FLOP/cycle, MHz), or Nones."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      mhz = [float(line.split(":")[1]) for line in f
             if line.startswith("cpu MHz")]
  except OSError:
    mhz = []
  if not mhz:
    return None, None
  return len(mhz) * max(mhz) * 1e6 * 64, max(mhz)


def table(results) -> str:
  """The printed roofs and one line per row of `results`."""
  peak = results["gemm_flops_per_s"]
  lines = [f"roofs: GEMM {peak / 1e9:.0f} GFLOP/s (nominal "
           f"{(results['nominal_peak'] or 0) / 1e9:.0f} at "
           f"{results['nominal_mhz']} MHz), memory "
           f"{results['memory_bytes_per_s'] / 1e9:.0f} GB/s",
           "| model | batch | K | devices | MFLOP / image-step | "
           "FLOP / byte | image-steps/s | GFLOP/s | of GEMM peak |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in results["rows"]:
    lines.append(
        f"| {r['name']} | {r['batch']} | {r['pgd_steps']} | {r['devices']}"
        f" | {r['flops_per_image_step'] / 1e6:.1f} "
        f"| {r['flops'] / r['bytes']:.1f} "
        f"| {r['pgd_image_steps_per_s']:.0f} | {r['flops_per_s'] / 1e9:.0f}"
        f" | {r['flops_per_s'] / peak:.0%} |")
  return "\n".join(lines)


def plot(results, path):
  """The roofline figure of `results` to `path`."""
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  # pylint: enable=g-import-not-at-top
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
  for r in results["rows"]:
    color = colors.setdefault(r["devices"], f"C{len(colors)}")
    x, y = r["flops"] / r["bytes"], r["flops_per_s"] / 1e9
    ax.loglog([x], [y], markers.get(r["name"], "x"), color=color, ms=8)
    ax.annotate(f"{r['name']} ({r['devices']} dev) {y / (peak / 1e9):.0%}",
                (x, y), textcoords="offset points", xytext=(6, -4),
                fontsize=7)
  ax.set_xlabel("arithmetic intensity (FLOP / byte, XLA cost analysis)")
  ax.set_ylabel("GFLOP/s")
  ax.set_title("PGD step (K sign-gradient steps) on this CPU, float32")
  ax.legend(fontsize=7, loc="lower right")
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
