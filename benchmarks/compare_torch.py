"""ue_jax against a PyTorch reference of the original, side by side (CPU).

For each model it measures, in one process with the two frameworks taking
turns (repeats interleaved, medians reported):
  (a) PGD throughput (image*steps/s) of one batch, K steps, eval mode;
  (b) model-step throughput (images/s): forward, backward, clip, SGD;
  (c) end to end: the sample-wise min-min search on a fixed stratified
      Fashion-MNIST subset until the stop rule (or the round cap), wall time,
      rounds and final accuracy on the released images
      (ue_jax.search.generate.run against torch_reference.generate).
It also checks that the torch twin computes the same function as the Flax
model (logits with the Flax weights loaded), with XLA-style "SAME" padding
and with PyTorch's symmetric padding.

Models: small_cnn (width 32, 28x28x1), resnet18_w16 (28x28x1) and
resnet18_w64 (the paper's ResNet-18, 32x32x3; throughput only, at batch 32
and the paper's K = 20: about 4 s per call on 2 cores. At K = 2 ue_jax's
fixed cost per call, the noise gather/scatter and the cross-device sums,
weighs 15 % more, so short runs understate it).
ue_jax runs as `python -m ue_jax.main` does: on JAX's single CPU device
(`--cpu-devices=-1`: one XLA CPU device per core, the batch split over them).
Throughput ratios are ours/torch, wall-time ratios torch/ours, so > 1 always
means ue_jax is faster. ue_jax's wall time includes XLA compilation (the first
round); the compile time is also measured ahead of time and subtracted in
separate columns, and per-round seconds are in the JSON.

Full benchmark (from the repository root, TORCH_VENV a venv holding
torch==2.13.0 and ue_jax; about 10 min on 2 idle cores).
Run it on an idle machine: with other work on the cores torch's OpenMP
threads slow down by up to ~30x, far more than XLA's, and the comparison is
meaningless.

  TORCH_VENV/bin/python benchmarks/compare_torch.py \
      --out=runs/compare_torch.json

Throughput only, or without the paper-sized ResNet-18, or one model:

  TORCH_VENV/bin/python benchmarks/compare_torch.py --skip-e2e
  TORCH_VENV/bin/python benchmarks/compare_torch.py --skip-full-resnet
  TORCH_VENV/bin/python benchmarks/compare_torch.py \
      --models=resnet18_w16 --e2e-repeats=3

Smoke test (seconds):

  TORCH_VENV/bin/python benchmarks/compare_torch.py --batch=16 \
      --pgd-steps=2 --full-batch=4 --full-pgd-steps=1 --repeats=1 \
      --e2e-size=64 --e2e-batch=16 --e2e-num-steps=2 --e2e-train-steps=2 \
      --e2e-max-rounds=1 --out=/tmp/compare_smoke.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import torch_reference as tr
from configs import common
from ue_jax.io import data as data_lib
from ue_jax.search import generate
from ue_jax.io import metrics
from ue_jax.parallel import distributed
from ue_jax.models import get_model
# pylint: enable=g-import-not-at-top,wrong-import-position

# name -> (ue_jax model name, width, input shape HWC, is the big one, has e2e)
MODELS = {
    "small_cnn": ("small_cnn", 32, (28, 28, 1), False, True),
    "resnet18_w16": ("resnet18", 16, (28, 28, 1), False, True),
    "resnet18_w64": ("resnet18", 64, (32, 32, 3), True, False),
}
EPS, STEP = 8 / 255, 0.8 / 255  # throughput runs; the value does not matter


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default=",".join(MODELS),
                 help=f"comma-separated subset of {list(MODELS)}")
  p.add_argument("--skip-full-resnet", action="store_true",
                 help="drop resnet18_w64 (slow)")
  p.add_argument("--skip-e2e", action="store_true")
  p.add_argument("--skip-check", action="store_true",
                 help="skip the same-function check of the torch twin")
  p.add_argument("--repeats", type=int, default=3,
                 help="timed repeats per throughput (median reported)")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--pgd-steps", type=int, default=20)
  p.add_argument("--full-batch", type=int, default=32,
                 help="batch for resnet18_w64")
  p.add_argument("--full-pgd-steps", type=int, default=20,
                 help="PGD steps for resnet18_w64")
  p.add_argument("--e2e-size", type=int, default=1000)
  p.add_argument("--e2e-repeats", type=int, default=1,
                 help="end-to-end runs per framework (median reported)")
  p.add_argument("--e2e-eps", type=float, default=16.0, help="0-255 units")
  p.add_argument("--e2e-step", type=float, default=1.6, help="0-255 units")
  p.add_argument("--e2e-num-steps", type=int, default=20, help="K")
  p.add_argument("--e2e-train-steps", type=int, default=10, help="M")
  p.add_argument("--e2e-batch", type=int, default=256)
  p.add_argument("--e2e-stop", type=float, default=0.99)
  p.add_argument("--e2e-max-rounds", type=int, default=8)
  p.add_argument("--threads", type=int, default=2, help="torch threads")
  p.add_argument("--cpu-devices", type=int, default=1,
                 help="XLA CPU devices for ue_jax (1: one device on all "
                 "cores, as python -m ue_jax.main by default; -1: one per "
                 "core)")
  p.add_argument("--save-noise", default="",
                 help="folder: write each side's end-to-end noise there "
                 "(<model>_<side>.npy, float32 NHWC)")
  p.add_argument("--sides", default="ours,torch",
                 help="which to run: ours,torch (default), or one of them "
                 "alone, to see whether sharing a process costs either side")
  p.add_argument("--out", default="runs/compare_torch.json")
  p.add_argument("--verbose", action="store_true",
                 help="show ue_jax's per-round INFO logs")
  return p.parse_args(argv)


def selected_models(args):
  names = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = [m for m in names if m not in MODELS]
  if unknown:
    raise SystemExit(f"unknown --models {unknown}; choose from {list(MODELS)}")
  if args.skip_full_resnet:
    names = [m for m in names if not MODELS[m][3]]
  return names


# ------------------------------------------------------------ both sides
class Ours:
  """ue_jax's generator state and steps as a run builds them
  (generate.build: over the mesh of every device, state donated), on one
  fixed batch; each call continues from the state the last one returned."""

  def __init__(self, name, width, shape, images, labels, num_steps):
    self.ds = data_lib.make_dataset(images, labels, 10)
    cfg = common.base()
    cfg.model.name, cfg.model.width = name, width
    cfg.noise.eps, cfg.noise.step_size, cfg.noise.num_steps = (EPS, STEP,
                                                               num_steps)
    cfg.generate.batch_size = cfg.generate.eval_batch_size = len(images)
    self.state, (self.model_fn, self.noise_fn, _) = generate.build(cfg,
                                                                   self.ds)
    self.batch = data_lib.gather(self.ds, np.arange(len(self.ds)))

  def _time(self, fn):
    t0 = time.perf_counter()
    self.state, _ = fn(self.state, self.batch)
    jax.block_until_ready(self.state)
    return time.perf_counter() - t0

  def pgd(self):
    return self._time(self.noise_fn)

  def model_step(self):
    return self._time(self.model_fn)


class Torch:
  """The torch twin on the same batch (NCHW float)."""

  def __init__(self, name, width, shape, images, labels, num_steps):
    torch.manual_seed(0)
    self.model = tr.get_model(name, in_channels=shape[-1], num_classes=10,
                              width=width)
    self.opt = tr.make_optimizer(self.model)
    x, self.y = tr.to_tensors(images, labels)
    self.x = tr.to_float(x)
    self.num_steps = num_steps

  def pgd(self):
    return tr.time_pgd(self.model, self.x, self.y, eps=EPS, step_size=STEP,
                       num_steps=self.num_steps)

  def model_step(self):
    t0 = time.perf_counter()
    tr.model_step(self.model, self.opt, self.x, self.y)
    return time.perf_counter() - t0


def interleaved(fn_ours, fn_torch, repeats):
  """Warm-up of each, then `repeats` alternating timings; returns the
  first-call seconds and the lists of timings (None for a side not run)."""
  fns = (fn_ours, fn_torch)
  first = tuple(f() if f else None for f in fns)
  times = tuple([] if f else None for f in fns)
  for _ in range(repeats):
    for f, t in zip(fns, times):
      if f:
        t.append(f())
  return first, times[0], times[1]


def _rate(count, seconds):
  return None if seconds is None else count / statistics.median(seconds)


def _ratio(a, b):
  return None if a is None or b is None else a / b


def throughput(key, args):
  name, width, shape, big, _ = MODELS[key]
  batch = args.full_batch if big else args.batch
  k = args.full_pgd_steps if big else args.pgd_steps
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
  labels = rng.integers(0, 10, batch)
  ours = theirs = None
  if "ours" in args.sides:
    ours = Ours(name, width, shape, images, labels, k)
  if "torch" in args.sides:
    theirs = Torch(name, width, shape, images, labels, k)
  first_pgd, pgd_o, pgd_t = interleaved(ours and ours.pgd,
                                        theirs and theirs.pgd, args.repeats)
  first_ms, ms_o, ms_t = interleaved(ours and ours.model_step,
                                     theirs and theirs.model_step,
                                     args.repeats)
  r = {"model": key, "input": list(shape), "batch": batch, "pgd_steps": k,
       "pgd_ours": _rate(batch * k, pgd_o),
       "pgd_torch": _rate(batch * k, pgd_t),
       "step_ours": _rate(batch, ms_o),
       "step_torch": _rate(batch, ms_t),
       "first_call_seconds": {"pgd_ours": first_pgd[0],
                              "pgd_torch": first_pgd[1],
                              "step_ours": first_ms[0],
                              "step_torch": first_ms[1]},
       "seconds": {"pgd_ours": pgd_o, "pgd_torch": pgd_t,
                   "step_ours": ms_o, "step_torch": ms_t}}
  r["pgd_ratio"] = _ratio(r["pgd_ours"], r["pgd_torch"])
  r["step_ratio"] = _ratio(r["step_ours"], r["step_torch"])
  return r


def same_function(key, n=4):
  """Max |logit difference| between the Flax model and its torch twin with
  the Flax weights (eval and train mode), for both torch paddings."""
  name, width, shape, _, _ = MODELS[key]
  rng = np.random.default_rng(1)
  x = rng.random((n, *shape), dtype=np.float32)
  model = get_model(name, num_classes=10, width=width)
  variables = model.init(jax.random.key(0), x, train=False)
  out = {}
  ours_eval = np.asarray(jax.jit(
      lambda v, x: model.apply(v, x, train=False))(variables, x))
  ours_train = np.asarray(jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
  )(variables, x))
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  for label, xla in (("xla_padding", True), ("torch_padding", False)):
    twin = tr.get_model(name, in_channels=shape[-1], num_classes=10,
                        width=width, xla_padding=xla)
    tr.load_flax_variables(twin, jax.device_get(variables))
    with torch.no_grad():
      t_eval = twin.eval()(xt).numpy()
      t_train = twin.train()(xt).numpy()
    out[label] = {"eval": float(np.abs(t_eval - ours_eval).max()),
                  "train": float(np.abs(t_train - ours_train).max())}
  out["logit_scale"] = float(np.abs(ours_eval).max())
  return out


# ------------------------------------------------------------ end to end
def ours_config(name, width, args):
  """A base() config with the end-to-end settings."""
  cfg = common.base()
  cfg.data.name = "fashion_mnist"
  cfg.model.name, cfg.model.width = name, width
  cfg.noise.eps = args.e2e_eps / 255
  cfg.noise.step_size = args.e2e_step / 255
  cfg.noise.num_steps = args.e2e_num_steps
  cfg.noise.init = "zeros"
  g = cfg.generate
  g.batch_size = g.eval_batch_size = args.e2e_batch
  g.train_steps = args.e2e_train_steps
  g.stop_accuracy = args.e2e_stop
  g.min_rounds, g.max_rounds = 1, args.e2e_max_rounds
  return cfg


def ours_compile_seconds(cfg, train):
  """Seconds to trace and compile the three jitted steps of a run (ahead of
  time, same shapes), i.e. what generate.run spends compiling."""
  state, fns = generate.build(cfg, train)
  rows = next(data_lib.batches(len(train), cfg.generate.batch_size))
  batch = data_lib.gather(train, rows)
  t0 = time.perf_counter()
  for fn in fns:
    fn.lower(state, batch).compile()
  return time.perf_counter() - t0


def _save_noise(args, key, side, noise):
  if args.save_noise:
    os.makedirs(args.save_noise, exist_ok=True)
    np.save(os.path.join(args.save_noise, f"{key}_{side}.npy"),
            np.asarray(noise, np.float32))


def ours_e2e(key, train, args):
  name, width = MODELS[key][:2]
  cfg = ours_config(name, width, args)
  with tempfile.TemporaryDirectory() as workdir:
    log = metrics.MetricLog(workdir)
    out = generate.run(cfg, train, workdir, log)
    rounds = metrics.read_log(log.path, "generate")
    _save_noise(args, key, "ours", np.load(out.pop("noise_path")))
  out["round_seconds"] = [r["seconds"] for r in rounds]
  out["round_accuracy"] = [r["train_accuracy"] for r in rounds]
  return out


def torch_e2e(key, train, args):
  name, width = MODELS[key][:2]
  torch.manual_seed(0)
  model = tr.get_model(name, in_channels=train.images.shape[-1],
                       num_classes=train.num_classes, width=width)
  cfg = tr.MinMinConfig(
      eps=args.e2e_eps / 255, step_size=args.e2e_step / 255,
      num_steps=args.e2e_num_steps, train_steps=args.e2e_train_steps,
      batch_size=args.e2e_batch, eval_batch_size=args.e2e_batch,
      stop_accuracy=args.e2e_stop, min_rounds=1,
      max_rounds=args.e2e_max_rounds)
  out = tr.generate(model, train.images, train.labels, cfg,
                    log=print if args.verbose else None)
  _save_noise(args, key, "torch", out.pop("noise"))
  return out


def end_to_end(key, train, args):
  name, width, _, _, _ = MODELS[key]
  runs_o, runs_t = [], []
  compile_s = None
  if "ours" in args.sides:
    compile_s = ours_compile_seconds(ours_config(name, width, args), train)
  for _ in range(args.e2e_repeats):
    if "ours" in args.sides:
      runs_o.append(ours_e2e(key, train, args))
    if "torch" in args.sides:
      runs_t.append(torch_e2e(key, train, args))

  def summary(runs, field):
    if not runs:
      return None
    if field == "generation_seconds":
      return statistics.median(r[field] for r in runs)
    return runs[-1][field]

  sec_o = summary(runs_o, "generation_seconds")
  sec_t = summary(runs_t, "generation_seconds")
  return {"model": key, "size": len(train), "seconds_ours": sec_o,
          "seconds_torch": sec_t, "ratio": _ratio(sec_t, sec_o),
          "compile_seconds_ours": compile_s,
          "seconds_ours_excl_compile": (
              None if sec_o is None else sec_o - compile_s),
          "ratio_excl_compile": _ratio(
              sec_t, None if sec_o is None else sec_o - compile_s),
          "rounds_ours": summary(runs_o, "rounds"),
          "rounds_torch": summary(runs_t, "rounds"),
          "acc_ours": summary(runs_o, "final_train_accuracy_on_release"),
          "acc_torch": summary(runs_t, "final_train_accuracy_on_release"),
          "stop_ours": summary(runs_o, "stop_reached"),
          "stop_torch": summary(runs_t, "stop_reached"),
          "runs_ours": runs_o, "runs_torch": runs_t}


# ---------------------------------------------------------------- report
def _f(value, spec=".1f"):
  """Formats a number, or '-' for a side that was not run."""
  if value is None:
    return "-"
  return format(value, spec) if isinstance(value, float) else str(value)


def markdown(results):
  """The results as Markdown tables."""
  lines = ["| model | input | batch | K | PGD ours | PGD torch | ours/torch "
           "| step ours | step torch | ours/torch |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in results["throughput"]:
    lines.append(
        f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['batch']} "
        f"| {r['pgd_steps']} | {_f(r['pgd_ours'])} | {_f(r['pgd_torch'])} "
        f"| {_f(r['pgd_ratio'], '.2f')} | {_f(r['step_ours'])} "
        f"| {_f(r['step_torch'])} | {_f(r['step_ratio'], '.2f')} |")
  lines.append("")
  lines.append("PGD in image*steps/s, model step in images/s "
               f"(median of {results['args']['repeats']}); ue_jax on "
               f"{results['env']['jax_devices']} XLA device(s), torch on "
               f"{results['env']['torch_threads']} threads.")
  if results["e2e"]:
    lines += ["", "| model | N | ours s | ours s excl. compile | torch s "
              "| torch/ours | torch/ours excl. compile | rounds ours "
              "| rounds torch | acc ours | acc torch | stop ours "
              "| stop torch |", "|---" * 13 + "|"]
    for r in results["e2e"]:
      lines.append(
          f"| {r['model']} | {r['size']} | {_f(r['seconds_ours'])} "
          f"| {_f(r['seconds_ours_excl_compile'])} "
          f"| {_f(r['seconds_torch'])} | {_f(r['ratio'], '.2f')} "
          f"| {_f(r['ratio_excl_compile'], '.2f')} "
          f"| {_f(r['rounds_ours'])} | {_f(r['rounds_torch'])} "
          f"| {_f(r['acc_ours'], '.4f')} | {_f(r['acc_torch'], '.4f')} "
          f"| {_f(r['stop_ours'])} | {_f(r['stop_torch'])} |")
    lines.append("")
    lines.append("End to end: sample-wise min-min to the stop rule, "
                 "generation wall seconds; ours includes XLA compilation, "
                 "which is also timed ahead of time with the same shapes and "
                 "subtracted in the 'excl. compile' columns; acc = final "
                 "accuracy on the released images.")
  if results["check"]:
    lines += ["", "| model | max logit diff, XLA padding (eval / train) "
              "| torch padding (eval / train) | max logit |",
              "|---|---|---|---|"]
    for key, c in results["check"].items():
      lines.append(
          f"| {key} | {c['xla_padding']['eval']:.2e} / "
          f"{c['xla_padding']['train']:.2e} | "
          f"{c['torch_padding']['eval']:.2e} / "
          f"{c['torch_padding']['train']:.2e} | {c['logit_scale']:.2f} |")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  distributed.use_cpu_cores(args.cpu_devices, batch_sizes=(
      args.batch, args.full_batch, args.e2e_batch))
  if args.verbose:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.INFO)
  torch.set_num_threads(args.threads)
  load = os.getloadavg()[0]
  if load > 0.5:
    print(f"WARNING: load average {load:.2f} before start: other work shares "
          "these cores, and torch's OpenMP threads slow down sharply (up to "
          "~30x at 2 threads) when a core is taken; the numbers will not be "
          "comparable. Run on an idle machine.", file=sys.stderr, flush=True)
  keys = selected_models(args)
  results = {"args": vars(args),
             "env": {"torch": torch.__version__, "jax": jax.__version__,
                     "jax_backend": jax.default_backend(),
                     "jax_devices": jax.device_count(),
                     "torch_threads": torch.get_num_threads(),
                     "cpu_count": os.cpu_count(),
                     "python": platform.python_version(),
                     "load_average": os.getloadavg()},
             "check": {}, "throughput": [], "e2e": []}
  for key in keys:
    if not args.skip_check:
      results["check"][key] = same_function(key)
    print(f"throughput {key} ...", flush=True)
    results["throughput"].append(throughput(key, args))
  e2e_keys = [k for k in keys if MODELS[k][4]]
  if not args.skip_e2e and e2e_keys:
    train, _ = data_lib.load("fashion_mnist", source="idx")
    train = data_lib.stratified_subset(train, args.e2e_size, seed=0)
    for key in e2e_keys:
      print(f"end to end {key} on {len(train)} images ...", flush=True)
      results["e2e"].append(end_to_end(key, train, args))
  results["env"]["load_average_end"] = os.getloadavg()
  table = markdown(results)
  print(table)
  results["markdown"] = table
  if os.path.dirname(args.out):
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
