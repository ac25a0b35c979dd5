"""Throughput of the generator's jitted steps, built as a run builds them
(generate.build over the mesh), optionally beside the PyTorch twin's
(benchmarks/torch_reference.py) on the same batches.

  python benchmarks/throughput.py                      # the defaults below
  python benchmarks/throughput.py --model=resnet18 --width=16 \
      --shape=28,28,1 --batch=256 --steps=20 [--unroll=False]
  python benchmarks/throughput.py --devices=1,2,4,8 --model=small_cnn \
      --width=16 --batch=256 --steps=10 --images=2048
  python benchmarks/throughput.py --measure=roofline --devices=1,-1 \
      --out=runs/roofline.json
  python benchmarks/throughput.py --torch=True --threads=2 \
      --model=small_cnn --width=32 --out=runs/torch_small_cnn.json
  python benchmarks/throughput.py --model=resnet18 --width=64 \
      --shape=32,32,3 --batch=512 --dtype=float32,bfloat16 --torch=True

--measure=steps (default) times one model's three steps: PGD (the noise
step, K sign-gradient steps; image*steps/s), the model step (forward,
backward, clip, SGD; images/s) and the stop test's eval step on the release
(images/s), one row per --dtype entry (model.compute_dtype). --measure=roofline
times the PGD step of the three models of MODELS and sets its FLOP/s against
this machine's roofs (below); it writes the figure next to the JSON (OUT.png).

Each step is timed over sweeps of --images synthetic images (default: one
batch) in batches of --batch: one untimed sweep (it compiles), then the
median of --repeats sweeps. Every row also holds the PGD step's FLOPs and
bytes from XLA's cost analysis of the lowered (global, unpartitioned)
program, XLA's argument + temporary bytes of the compiled PGD step on one
device (memory_analysis(), per partition), the noise rows and bytes each
device holds, and the device's peak bytes in use so far (None on XLA:CPU,
which does not count them).

--torch=True adds the twin (the same architecture, initialisation and SGD
settings, PGD from a zero start in eval mode) on the same batches, on CUDA
where torch has it, else on the CPU (--threads); a bfloat16 row runs it
under torch.autocast. Its PGD and model-step sweeps take turns with JAX's
(one untimed sweep of each first), medians reported; ratios are ours/torch.
The row also holds the same-function check: the largest |logit difference|
between the Flax model and the twin loaded with its weights (4 images, eval
and train mode), with the twin in PyTorch's symmetric padding (its default
and ue_jax's: near float32 rounding) and in XLA's "SAME" padding (differs
where a convolution has stride 2, a check that the check can fail). On a CPU, run it on idle cores: torch's OpenMP
threads slow down far more than XLA's when a core is taken.

--devices: empty (default) runs here, on JAX's default devices. A list runs
one subprocess per entry, each entry a --cpu_devices setting of ue_jax.main
(1 = one XLA device on all cores, N = N devices, -1 = one per core); on a CPU
the devices are slices of the same cores, so the figures read as the
overhead of sharding, not a speed-up.

The roofs (the first entry of --devices; benchmarks/_roofline.py): the
fastest float32 matrix product and the read bandwidth of a sum over 256 MiB.

Every mode writes one JSON (--out) and prints a short summary.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import _roofline
# pylint: enable=g-import-not-at-top,wrong-import-position

MIB = 1 << 20
# name -> what a step's rate counts per image of a sweep
PARTS = {"pgd": "image_steps", "model_step": "images", "eval": "images"}
TWIN_PARTS = ("pgd", "model_step")


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


# ----------------------------------------------------------------- timing
def _interleaved(fns: dict, repeats: int) -> dict:
  """One untimed call of each of `fns` (compilation, warm-up), then
  `repeats` rounds calling each in turn; each returns its own seconds.
  {name: [seconds]}."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      times[name].append(fn())
  return times


class _Sweeps:
  """Sweeps of the generator's jitted steps over `batches`, the state
  threaded through (the steps donate it); each call returns its seconds
  until the last output is ready."""

  def __init__(self, state, steps, batches):
    self.state, self.steps, self.batches = state, steps, batches

  def __call__(self, part: str) -> float:
    import jax  # pylint: disable=g-import-not-at-top
    t0 = time.perf_counter()
    out = None
    for batch in self.batches:
      out = self.steps[part](self.state, batch)
      if part != "eval":
        self.state = out[0]
    jax.block_until_ready(out)
    return time.perf_counter() - t0


class _Twin:
  """The PyTorch twin of `spec`'s model on the same host batches (NCHW
  float): sweeps of its PGD and model step, timed to the device's end."""

  def __init__(self, spec: Spec, batches, threads: int):
    # pylint: disable=g-import-not-at-top
    import torch
    from benchmarks import torch_reference as ref
    # pylint: enable=g-import-not-at-top
    self.torch, self.ref, self.steps = torch, ref, spec.steps
    if threads:
      torch.set_num_threads(threads)
    self.device = torch.device("cuda" if torch.cuda.is_available()
                               else "cpu")
    torch.manual_seed(0)
    self.model = ref.get_model(spec.model, in_channels=spec.shape[-1],
                               num_classes=10, width=spec.width).to(
                                   self.device)
    self.opt = ref.make_optimizer(self.model)
    self.batches = []
    for batch in batches:
      x, y = ref.to_tensors(batch["image"], batch["label"])
      self.batches.append((ref.to_float(x).to(self.device),
                           y.to(self.device)))
    self.autocast = spec.dtype == "bfloat16"

  def __call__(self, part: str) -> float:
    torch, ref = self.torch, self.ref
    t0 = time.perf_counter()
    with (torch.autocast(self.device.type, dtype=torch.bfloat16)
          if self.autocast else contextlib.nullcontext()):
      for x, y in self.batches:
        if part == "pgd":
          with ref.frozen(self.model):
            ref.min_min_pgd(self.model, x, y, torch.zeros_like(x),
                            eps=8 / 255, step_size=0.8 / 255,
                            num_steps=self.steps)
        else:
          ref.model_step(self.model, self.opt, x, y)
    if self.device.type == "cuda":
      torch.cuda.synchronize()
    return time.perf_counter() - t0

  def describe(self) -> dict:
    torch = self.torch
    return {"torch": torch.__version__, "torch_device": (
        torch.cuda.get_device_name() if self.device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads")}


# ------------------------------------------------------------------- rows
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


def measure(spec: Spec, *, parts=tuple(PARTS), repeats: int = 3,
            twin: bool = False, threads: int = 0) -> dict:
  """One row: `spec`, the device count, each part's median sweep seconds
  and rate (with `twin`, the twin's beside them), the PGD step's cost and
  memory analysis, the noise per device, the peak device memory."""
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
  sweeps = _Sweeps(state, steps, batches)
  other = _Twin(spec, batches, threads) if twin else None
  for part in parts:
    fns = {"": functools.partial(sweeps, part)}
    if other and part in TWIN_PARTS:
      fns["torch_"] = functools.partial(other, part)
    count = images * (spec.steps if part == "pgd" else 1)
    for prefix, times in _interleaved(fns, repeats).items():
      seconds = statistics.median(times)
      row[f"{prefix}{part}_seconds"] = seconds
      row[f"{prefix}{part}_seconds_all"] = times
      row[f"{prefix}{part}_{PARTS[part]}_per_s"] = count / seconds
    if len(fns) > 1:
      row[f"{part}_ours_over_torch"] = (row[f"torch_{part}_seconds"]
                                        / row[f"{part}_seconds"])
  if "pgd" in parts:
    row["flops_per_image_step"] = cost["flops"] / (spec.batch * spec.steps)
    row["flops_per_s"] = cost["flops"] * len(batches) / row["pgd_seconds"]
  if other:
    row.update(other.describe(), torch_check=other.ref.same_function(
        spec.model, spec.width, spec.shape))
  stats = jax.devices()[0].memory_stats() or {}
  row["peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
  return row


def specs(a):
  """The rows a run of these flags measures: [(name, Spec)]."""
  if a.measure == "roofline":
    return list(MODELS.items())
  shape = tuple(int(s) for s in a.shape.split(","))
  return [(a.model, Spec(a.model, a.width, shape, a.batch, a.steps, a.images,
                         a.storage, dtype.strip()))
          for dtype in a.dtype.split(",") if dtype.strip()]


def measure_here(a, setting: str) -> dict:
  """Every row of these flags on this process's devices (`setting`: the
  --cpu_devices entry it was started with, "" for JAX's default)."""
  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import distributed
  if setting:  # before JAX starts its backends
    distributed.use_cpu_cores(int(setting), batch_sizes=[
        s.batch for _, s in specs(a)])
  from ue_jax.core import noise as noise_lib
  # pylint: enable=g-import-not-at-top
  if not a.unroll:
    noise_lib.MAX_UNROLL = 1
  parts = ("pgd",) if a.measure == "roofline" else tuple(PARTS)
  out = {"rows": [dict(measure(spec, parts=parts, repeats=a.repeats,
                               twin=a.torch, threads=a.threads),
                       name=name, setting=setting)
                  for name, spec in specs(a)]}
  if a.measure == "roofline" and a.limits:
    out.update(_roofline.roofs())
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


# ----------------------------------------------------------------- report
def summary(results):
  """The printed table of `results`."""
  rows = results["rows"]
  if results["measure"] == "roofline":
    return _roofline.table(results)
  r0 = rows[0]
  lines = [f"{r0['model']} width {r0['width']}, input "
           f"{','.join(map(str, r0['shape']))}, {r0['images']} images, batch "
           f"{r0['batch']}, K={r0['pgd_steps']}, noise {r0['storage']}, "
           f"unroll={r0['unroll']}, {r0['platform']}, {results['cpu_cores']} "
           f"CPU cores, JAX {results['jax']}"
           + (f", torch {r0['torch']} on {r0['torch_device']}"
              if "torch" in r0 else "")]

  def rate(r, key):
    text = f"{r[key]:.1f}"
    return text + (f" ({r[key] / r0[key]:.2f}x)" if len(rows) > 1 else "")
  columns = [
      ("devices", lambda r: r["devices"]), ("dtype", lambda r: r["dtype"]),
      ("PGD image·steps/s", lambda r: rate(r, "pgd_image_steps_per_s")),
      ("model step images/s", lambda r: rate(r, "model_step_images_per_s")),
      ("eval images/s", lambda r: rate(r, "eval_images_per_s")),
      ("noise rows / device", lambda r: r["noise_rows_per_device"]),
      ("noise MiB / device",
       lambda r: f"{r['noise_bytes_per_device'] / MIB:.2f}"),
      ("noise step args + temp MiB / device", lambda r: "%.2f" % (
          ((r["noise_step_argument_bytes"] or 0)
           + (r["noise_step_temp_bytes"] or 0)) / MIB))]
  if r0["peak_bytes_in_use"] is not None:
    columns.append(("peak MiB",
                    lambda r: f"{r['peak_bytes_in_use'] / MIB:.0f}"))
  if "torch" in r0:
    columns += [
        ("torch PGD", lambda r: f"{r['torch_pgd_image_steps_per_s']:.1f}"),
        ("ours/torch", lambda r: f"{r['pgd_ours_over_torch']:.2f}"),
        ("torch step", lambda r: f"{r['torch_model_step_images_per_s']:.1f}"),
        ("ours/torch", lambda r: f"{r['model_step_ours_over_torch']:.2f}"),
        ("max logit diff, torch / XLA padding", lambda r: "%.1e / %.1e" % (
            r["torch_check"]["torch_padding"]["eval"],
            r["torch_check"]["xla_padding"]["eval"]))]
  lines.append("| " + " | ".join(c[0] for c in columns) + " |")
  lines.append("|" + "---|" * len(columns))
  for r in rows:
    lines.append("| " + " | ".join(str(c[1](r)) for c in columns) + " |")
  return "\n".join(lines)


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
  p.add_argument("--dtype", default="float32",
                 help="model.compute_dtype; a comma list (float32,bfloat16) "
                 "gives a row each")
  p.add_argument("--unroll", type=flag, default=True,
                 help="False: PGD as a rolled lax.scan (True unrolls it "
                 "on CPU only; elsewhere it is always rolled)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--torch", type=flag, default=False,
                 help="True: time the PyTorch twin beside each step and "
                 "check it computes the same function")
  p.add_argument("--threads", type=int, default=0,
                 help="torch CPU threads (0: torch's default)")
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
  results["nominal_peak"], results["nominal_mhz"] = _roofline.nominal_peak()
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
    _roofline.plot(results, os.path.splitext(out)[0] + ".png")
    print(f"wrote {out} and {os.path.splitext(out)[0]}.png")
  else:
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
