"""Throughput of the generator's jitted steps, built as a run builds them
(generate.build over the mesh) and timed with benchmarks/timing.py.

  python benchmarks/throughput.py                      # the defaults below
  python benchmarks/throughput.py --model=resnet18 --width=16 \
      --shape=28,28,1 --batch=256 --steps=20 [--unroll=False]
  python benchmarks/throughput.py --devices=1,2,4,8 --model=small_cnn \
      --width=16 --batch=256 --steps=10 --images=2048
  python benchmarks/throughput.py --measure=roofline --devices=1,-1 \
      --out=runs/roofline.json

--measure=steps (default) times one model's three steps: PGD (the noise
step, K sign-gradient steps; image*steps/s), the model step (forward,
backward, clip, SGD; images/s) and the stop test's eval step on the release
(images/s). --measure=roofline times the PGD step of the three models of
MODELS and sets its FLOP/s against this machine's roofs (below); it writes
the figure next to the JSON (OUT.png).

Each step is timed over sweeps of --images synthetic images (default: one
batch) in batches of --batch: one untimed sweep (it compiles), then the
median of --repeats sweeps. Every row also holds the PGD step's FLOPs and
bytes from XLA's cost analysis of the lowered (global, unpartitioned)
program, XLA's argument + temporary bytes of the compiled PGD step on one
device (memory_analysis(), per partition) and the noise rows and bytes each
device holds.

--devices: empty (default) runs here, on JAX's default devices. A list runs
one subprocess per entry, each entry a --cpu_devices setting of ue_jax.main
(1 = one XLA device on all cores, N = N devices, -1 = one per core); on a CPU
the devices are slices of the same cores, so the figures read as the
overhead of sharding, not a speed-up.

The roofs (first entry of --devices): the compute peak is the fastest
float32 matrix product XLA runs here (2048^2, best of 5), which is what a
convolution can at best become; the memory roof is the read bandwidth of a
sum over 256 MiB. XLA's "bytes accessed" counts every operand read and
write, most of which hit the caches, so points can lie above the memory
roof; the compute roof is the one that binds. The JSON also holds the
nominal peak from /proc/cpuinfo's clock x cores x 64 float32 FLOP per cycle
(two 512-bit FMA pipes); the matrix product beats it when the cores boost
above the nominal clock, so the measured one is the roof used.

Every mode writes one JSON (--out) and prints a short summary.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import timing
# pylint: enable=g-import-not-at-top,wrong-import-position

MIB = 1 << 20
# name -> what a step's rate counts per image of a sweep
PARTS = {"pgd": "image_steps", "model_step": "images", "eval": "images"}


@dataclasses.dataclass(frozen=True)
class Spec:
  """One model's steps to time."""
  model: str = "resnet18"
  width: int = 16
  shape: tuple = (28, 28, 1)  # H, W, C
  batch: int = 256
  steps: int = 20             # K, PGD steps per call
  images: int = 0             # per sweep; 0 = one batch
  storage: str = "float32"    # noise.storage
  dtype: str = "float32"      # model.compute_dtype


# The roofline's models: small_cnn and the quick start's width-16 ResNet-18
# at 28x28x1, batch 256, and the paper's ResNet-18 at 32x32x3, batch 32.
MODELS = {
    "small_cnn": Spec("small_cnn", 32, (28, 28, 1), 256, 20),
    "resnet18_w16": Spec("resnet18", 16, (28, 28, 1), 256, 20),
    "resnet18_w64": Spec("resnet18", 64, (32, 32, 3), 32, 20),
}


def build(spec: Spec):
  """The generator's state and jitted steps ({"pgd", "model_step", "eval"})
  from generate.build for `spec` on synthetic uint8 data, over a mesh of
  every device, and the host batches of one sweep."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from configs import common
  from ue_jax.io import data as data_lib
  from ue_jax.search import generate
  # pylint: enable=g-import-not-at-top
  n = spec.images or spec.batch
  if n % spec.batch:
    raise ValueError(f"--images={n} must be a multiple of --batch="
                     f"{spec.batch} (the model step takes full batches)")
  rng = np.random.default_rng(0)
  train = data_lib.make_dataset(
      rng.integers(0, 256, (n, *spec.shape), dtype=np.uint8),
      rng.integers(0, 10, n), 10)
  cfg = common.base()
  cfg.model.name, cfg.model.width = spec.model, spec.width
  cfg.model.compute_dtype = spec.dtype
  cfg.noise.num_steps, cfg.noise.storage = spec.steps, spec.storage
  cfg.generate.batch_size = cfg.generate.eval_batch_size = spec.batch
  state, (model_step, noise_step, eval_step) = generate.build(cfg, train)
  batches = [data_lib.gather(train, rows)
             for rows in data_lib.batches(n, spec.batch)]
  return state, {"pgd": noise_step, "model_step": model_step,
                 "eval": eval_step}, batches


def measure(spec: Spec, *, parts=tuple(PARTS), repeats: int = 3) -> dict:
  """One row: `spec`, the device count, each part's median sweep seconds
  and rate, the PGD step's cost and memory analysis, the noise per device."""
  # pylint: disable=g-import-not-at-top
  import jax
  from ue_jax.core import noise as noise_lib
  # pylint: enable=g-import-not-at-top
  state, steps, batches = build(spec)
  lowered = steps["pgd"].lower(state, batches[0])
  cost = lowered.cost_analysis()
  memory = lowered.compile().memory_analysis()
  shard = state.noise.addressable_shards[0].data
  images = len(batches) * spec.batch
  row = dict(dataclasses.asdict(spec), shape=list(spec.shape), images=images,
             calls=len(batches), pgd_steps=spec.steps,
             unroll=noise_lib.unroll_length(spec.steps) > 1,
             devices=jax.device_count(), platform=jax.default_backend(),
             noise_rows_per_device=shard.shape[0],
             noise_bytes_per_device=shard.nbytes,
             noise_step_argument_bytes=getattr(
                 memory, "argument_size_in_bytes", None),
             noise_step_temp_bytes=getattr(memory, "temp_size_in_bytes",
                                           None),
             flops=cost["flops"], bytes=cost["bytes accessed"])
  del row["steps"]
  for part in parts:
    state, times = timing.sweeps_seconds(
        steps[part], state, batches, repeats=repeats,
        returns_state=part != "eval")
    seconds = statistics.median(times)
    count = images * (spec.steps if part == "pgd" else 1)
    row[f"{part}_seconds"] = seconds
    row[f"{part}_seconds_all"] = times
    row[f"{part}_{PARTS[part]}_per_s"] = count / seconds
  if "pgd" in parts:
    row["flops_per_image_step"] = cost["flops"] / (spec.batch * spec.steps)
    row["flops_per_s"] = cost["flops"] * len(batches) / row["pgd_seconds"]
  return row


def roofs() -> dict:
  """This machine's compute and memory roofs, on the default device."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  # pylint: enable=g-import-not-at-top
  n = 2048
  x = jnp.ones((n, n), jnp.float32)
  gemm = jax.jit(lambda p, q: p @ q)
  out = {"gemm_flops_per_s": 2 * n**3 / min(
      timing.call_seconds(gemm, x, x, repeats=5))}
  # Read bandwidth: a sum over 256 MiB. (A pass that writes a new 256 MiB
  # array measures the kernel's page faults on the fresh output, ~6 GB/s.)
  big = jnp.ones((64 << 20,), jnp.float32)
  out["memory_bytes_per_s"] = big.nbytes / min(
      timing.call_seconds(jax.jit(jnp.sum), big, repeats=5))
  return out


def nominal_peak():
  """cores x nominal MHz x 64 float32 FLOP/cycle (2 x 512-bit FMA)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      mhz = [float(line.split(":")[1]) for line in f
             if line.startswith("cpu MHz")]
  except OSError:
    mhz = []
  if not mhz:
    return None, None
  return len(mhz) * max(mhz) * 1e6 * 64, max(mhz)


def specs(a):
  """The models a run of these flags measures: name -> Spec."""
  if a.measure == "roofline":
    return MODELS
  shape = tuple(int(s) for s in a.shape.split(","))
  return {a.model: Spec(a.model, a.width, shape, a.batch, a.steps, a.images,
                        a.storage, a.dtype)}


def measure_here(a, setting: str) -> dict:
  """Every row of these flags on this process's devices (`setting`: the
  --cpu_devices entry it was started with, "" for JAX's default)."""
  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import distributed
  if setting:  # before JAX starts its backends
    distributed.use_cpu_cores(int(setting), batch_sizes=[
        s.batch for s in specs(a).values()])
  from ue_jax.core import noise as noise_lib
  # pylint: enable=g-import-not-at-top
  if not a.unroll:
    noise_lib.MAX_UNROLL = 1
  parts = ("pgd",) if a.measure == "roofline" else tuple(PARTS)
  out = {"rows": [dict(measure(spec, parts=parts, repeats=a.repeats),
                       name=name, setting=setting)
                  for name, spec in specs(a).items()]}
  if a.measure == "roofline" and a.limits:
    out.update(roofs())
  return out


def measure_in_subprocess(a, setting: str, limits: bool) -> dict:
  skip = ("devices", "worker", "limits", "out")
  argv = ([sys.executable, os.path.abspath(__file__), "--worker",
           f"--devices={setting}"] + (["--limits"] if limits else []) +
          [f"--{k}={v}" for k, v in vars(a).items() if k not in skip])
  proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                        cwd=REPO, timeout=3600)
  if proc.returncode:
    sys.exit(f"--devices={setting} failed (exit {proc.returncode}):\n"
             f"{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(results):
  """The printed table of `results`."""
  rows = results["rows"]
  lines = []
  if results["measure"] == "roofline":
    peak = results["gemm_flops_per_s"]
    lines.append(f"roofs: GEMM {peak / 1e9:.0f} GFLOP/s (nominal "
                 f"{(results['nominal_peak'] or 0) / 1e9:.0f} at "
                 f"{results['nominal_mhz']} MHz), memory "
                 f"{results['memory_bytes_per_s'] / 1e9:.0f} GB/s")
    lines.append("| model | batch | K | devices | MFLOP / image-step | "
                 "FLOP / byte | image-steps/s | GFLOP/s | of GEMM peak |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
      lines.append(
          f"| {r['name']} | {r['batch']} | {r['pgd_steps']} | {r['devices']}"
          f" | {r['flops_per_image_step'] / 1e6:.1f} "
          f"| {r['flops'] / r['bytes']:.1f} "
          f"| {r['pgd_image_steps_per_s']:.0f} | {r['flops_per_s'] / 1e9:.0f}"
          f" | {r['flops_per_s'] / peak:.0%} |")
    return "\n".join(lines)
  r0 = rows[0]
  lines.append(
      f"{r0['model']} width {r0['width']}, input "
      f"{','.join(map(str, r0['shape']))}, {r0['images']} images, batch "
      f"{r0['batch']}, K={r0['pgd_steps']}, noise {r0['storage']}, "
      f"{r0['dtype']} compute, unroll={r0['unroll']}, {r0['platform']}, "
      f"{results['cpu_cores']} CPU cores, JAX {results['jax']}")
  lines.append("| devices | PGD image·steps/s | model step images/s | eval "
               "images/s | noise rows / device | noise MiB / device | "
               "noise step args + temp MiB / device |")
  lines.append("|---|---|---|---|---|---|---|")

  def rate(r, key):
    text = f"{r[key]:.1f}"
    return text + (f" ({r[key] / r0[key]:.2f}x)" if len(rows) > 1 else "")
  for r in rows:
    step = ((r["noise_step_argument_bytes"] or 0)
            + (r["noise_step_temp_bytes"] or 0))
    lines.append(
        f"| {r['devices']} | {rate(r, 'pgd_image_steps_per_s')} | "
        f"{rate(r, 'model_step_images_per_s')} | "
        f"{rate(r, 'eval_images_per_s')} | {r['noise_rows_per_device']} | "
        f"{r['noise_bytes_per_device'] / MIB:.2f} | {step / MIB:.2f} |")
  return "\n".join(lines)


def plot(results, path):
  """The roofline figure of `results` (measure=roofline) to `path`."""
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


def flag(text: str) -> bool:
  if text.lower() not in ("true", "false", "1", "0"):
    raise argparse.ArgumentTypeError(f"{text!r}: use True or False")
  return text.lower() in ("true", "1")


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--measure", choices=("steps", "roofline"), default="steps")
  p.add_argument("--devices", default="",
                 help="--cpu_devices settings, one subprocess each (e.g. "
                 "1,2,4,8 or 1,-1); empty: this process")
  p.add_argument("--model", default="resnet18")
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--shape", default="28,28,1", help="H,W,C")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=20, help="K, PGD steps")
  p.add_argument("--images", type=int, default=0,
                 help="images per timed sweep (0: one batch)")
  p.add_argument("--storage", default="float32", help="noise.storage")
  p.add_argument("--dtype", default="float32", help="model.compute_dtype")
  p.add_argument("--unroll", type=flag, default=True,
                 help="False: PGD as a rolled lax.scan (True unrolls it "
                 "on CPU only; elsewhere it is always rolled)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default="", help="JSON file (default: "
                 "runs/throughput.json, runs/roofline.json)")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--limits", action="store_true", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  a = parse(argv)
  if a.worker:
    print(json.dumps(measure_here(a, a.devices)))
    return
  settings = [s.strip() for s in a.devices.split(",") if s.strip()]
  results = {"measure": a.measure, "argv": argv, "rows": []}
  for i, setting in enumerate(settings or [""]):
    limits = a.measure == "roofline" and i == 0
    if setting:
      run = measure_in_subprocess(a, setting, limits)
    else:
      a.limits = limits
      run = measure_here(a, "")
    results["rows"] += run.pop("rows")
    results.update(run)
  import jax  # pylint: disable=g-import-not-at-top
  results["nominal_peak"], results["nominal_mhz"] = nominal_peak()
  results.update(jax=jax.__version__, cpu_cores=os.cpu_count(),
                 load_average=os.getloadavg())
  out = a.out or os.path.join("runs", ("roofline" if a.measure == "roofline"
                                       else "throughput") + ".json")
  if os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  print(summary(results))
  if a.measure == "roofline":
    plot(results, os.path.splitext(out)[0] + ".png")
    print(f"wrote {out} and {os.path.splitext(out)[0]}.png")
  else:
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
