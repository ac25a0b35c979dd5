"""The paper's sample-wise CIFAR-10 run at full scale on one GPU, in stages
that fit a fixed wall-clock budget (benchmarks/gpu_paper.sh wraps it).

Stages, each written to OUT/gpu_paper.json as soon as it ends (a run cut
off by its time limit still returns what finished); the per-round and
per-epoch records go to OUT/metrics.jsonl as they happen:

- throughput: PGD image*steps/s and model-step images/s of the paper's
  ResNet-18 (width 64) at 32x32x3, batch 512, K = 20, in float32 and
  bfloat16 compute (gpu_check.jax_throughput); the training recipe's step
  (batch 128, crop + flip) as a host loop of jitted steps against one
  jitted lax.scan over the same batches (what a jitted epoch would save);
  the PyTorch twin (torch_reference.py) in float32 and bfloat16 autocast.
- generate: all 50000 CIFAR-10 training images read from the JPEG tar by
  ue_jax's folder source, the settings of configs/cifar10_samplewise.py
  (eps 8/255, step 0.8/255, K = 20, M = 10, batch 512, ResNet-18 width 64,
  stop at 99 % on the release) until the stop rule or generate.max_seconds
  (a share of the budget left), then the release. The memory plan
  (parallel/memory.py) against the device's peak bytes in use.
- evaluate: a ResNet-18 trained on the release with the config's recipe
  (batch 128, SGD 0.1 cosine, crop + flip) for as many epochs as the budget
  left allows (estimated from the measured training step), at most 30, the
  clean test accuracy logged per epoch.

  python benchmarks/gpu_paper.py --out=OUT --data=cifar10-jpeg.tar.gz
  python benchmarks/gpu_paper.py --smoke --out=/tmp/smoke   # CPU, tiny
"""

import argparse
import functools
import json
import os
import sys
import tarfile
import tempfile
import time

import jax
import numpy as np
from absl import logging

START = time.perf_counter()

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import gpu_check
from benchmarks import timing
from configs import cifar10_samplewise
from ue_jax import pipeline
from ue_jax.core import optim
from ue_jax.core import steps as steps_lib
from ue_jax.core.state import create_state
from ue_jax.evaluation import evaluate
from ue_jax.evaluation import release as release_lib
from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.models import get_model
from ue_jax.parallel import memory
from ue_jax.parallel import sharding
from ue_jax.config import checks

SIZES = {
    # width, noise batch, PGD steps, repeats; the training step's batch and
    # the batches one scan walks; the evaluation's epoch cap.
    "full": dict(width=64, batch=512, steps=20, repeats=3, train_batch=128,
                 scan_batches=20, max_epochs=30, eval_batch=512),
    "smoke": dict(width=4, batch=16, steps=2, repeats=2, train_batch=16,
                  scan_batches=3, max_epochs=2, eval_batch=16),
}
SMOKE_IMAGES = {"train": 8, "test": 4}  # per class, 10 classes
# Shares of the budget: the throughput stage starts no part once the first
# share of the whole is spent; the search's cap (generate.max_seconds) is
# the second share of what is left once the data is loaded.
THROUGHPUT_SHARE = 0.3
GENERATE_SHARE = 0.5


class Report:
  """The JSON report, rewritten (atomically) after every stage."""

  def __init__(self, out: str, **head):
    self.path = os.path.join(out, "gpu_paper.json")
    self.data = dict(head, stages={})

  def stage(self, name: str, result: dict):
    self.data["stages"][name] = result
    self.data["wall_seconds"] = time.perf_counter() - START
    artifacts.save_text(self.path, json.dumps(self.data, indent=1,
                                              default=_plain) + "\n")
    logging.info("stage %s: %s", name, json.dumps(result, default=_plain))


def _plain(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def left(deadline: float) -> float:
  return deadline - time.perf_counter()


def peak_bytes():
  """(peak bytes in use, bytes limit) on device 0; None where the backend
  does not say (XLA:CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use"), stats.get("bytes_limit")


# ------------------------------------------------------------- throughput
def loop_vs_scan(size, dtype: str):
  """The recipe's training step (crop + flip) over `scan_batches` batches:
  a host loop of one jitted step each, against one jitted lax.scan over
  the stacked batches (the same steps, one dispatch). Images/s of each."""
  b, s = size["train_batch"], size["scan_batches"]
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (s * b, 32, 32, 3), dtype=np.uint8)
  ds = data_lib.make_dataset(images, rng.integers(0, 10, s * b), 10)
  model = get_model("resnet18", num_classes=10, width=size["width"],
                    dtype=dtype)
  tx = optim.sgd(0.1, momentum=0.9, weight_decay=5e-4, grad_clip=5.0)
  state = create_state(model, tx, seed=0, image_shape=(32, 32, 3))
  batches = [jax.device_put(data_lib.gather(ds, np.arange(i * b, (i + 1) * b)))
             for i in range(s)]
  stacked = jax.tree.map(lambda *x: jax.numpy.stack(x), *batches)
  step = jax.jit(functools.partial(steps_lib.model_step, augment="crop_flip"))

  def loop(state):
    for batch in batches:
      state, _ = step(state, batch)
    return state

  @jax.jit
  def scan(state, stacked):
    return jax.lax.scan(lambda st, bt: step(st, bt), state, stacked)[0]

  t0 = time.perf_counter()
  jax.block_until_ready(step(state, batches[0]))
  compile_s = time.perf_counter() - t0
  t_loop = timing.median_seconds(loop, state, repeats=size["repeats"])
  t_scan = timing.median_seconds(scan, state, stacked,
                                 repeats=size["repeats"])
  return {"dtype": dtype, "width": size["width"], "batch": b,
          "batches": s, "augment": "crop_flip",
          "first_call_seconds": compile_s,
          "loop_images_per_s": s * b / t_loop,
          "scan_images_per_s": s * b / t_scan,
          "scan_speedup": t_loop / t_scan}


def _part(fn, *args, **kwargs) -> dict:
  """fn's result, or the error it raised (the next parts still run)."""
  try:
    return fn(*args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("throughput part %s failed", fn.__name__)
    return {"error": f"{type(e).__name__}: {e}"[:2000]}


def throughput(size, dtype: str, deadline: float):
  """Stage (a); a part that would start past the deadline is recorded as
  skipped, one that fails with its error."""
  out = {"jax": [], "torch": []}
  late = {"skipped": "past the stage's share"}
  for d in ("float32", "bfloat16"):
    out["jax"].append(
        dict(late, dtype=d) if left(deadline) <= 0 else
        {"dtype": d, **_part(gpu_check.jax_throughput, size,
                             getattr(jax.numpy, d))})
  for d in ("float32", "bfloat16"):
    out["torch"].append(
        dict(late, dtype=d) if left(deadline) <= 0 else
        {"dtype": d, **_part(gpu_check.torch_throughput, size, d, cpu=True)})
  out["train_step"] = (dict(late) if left(deadline) <= 0 else
                       _part(loop_vs_scan, size, dtype))
  return out


# ------------------------------------------------------------------ data
def smoke_tar(folder: str) -> str:
  """A tiny CIFAR-shaped JPEG tree (train/<class>/*, test/<class>/*) as a
  .tar.gz, in the layout of cifar10-jpeg.tar.gz."""
  from PIL import Image
  rng = np.random.default_rng(3)
  root = os.path.join(folder, "cifar10")
  for split, per_class in SMOKE_IMAGES.items():
    for c in range(10):
      d = os.path.join(root, split, f"class{c}")
      os.makedirs(d)
      for i in range(per_class):
        pixels = rng.integers(0, 256, (32, 32, 3)) // 2 + 12 * c
        Image.fromarray(pixels.astype(np.uint8)).save(
            os.path.join(d, f"{i}.jpg"), quality=95)
  path = os.path.join(folder, "smoke.tar.gz")
  with tarfile.open(path, "w:gz") as tar:
    tar.add(root, arcname="cifar10")
  return path


def paper_config(size, *, data: str, dtype: str, smoke: bool):
  """configs/cifar10_samplewise.py on the folder source (smoke: tiny)."""
  cfg = cifar10_samplewise.get_config()
  cfg.data.source, cfg.data.path, cfg.data.cache_dir = "folder", data, "none"
  cfg.model.compute_dtype = dtype
  cfg.evaluate.train_clean = False
  cfg.checkpoint.every_seconds = 60.0
  if smoke:
    cfg.model.width = size["width"]
    cfg.noise.num_steps = size["steps"]
    cfg.generate.batch_size = cfg.generate.eval_batch_size = size["batch"]
    cfg.generate.train_steps = 2
    cfg.generate.max_rounds = 2
    cfg.evaluate.batch_size = size["train_batch"]
    cfg.evaluate.eval_batch_size = size["eval_batch"]
  return cfg


# ----------------------------------------------------------------- stages
def generate_stage(cfg, workdir: str, log, deadline: float, report: Report):
  """Stage (b): data, memory plan, the capped search and the release.
  Returns (released DeviceData, test DeviceData)."""
  from ue_jax.search import generate  # pylint: disable=g-import-not-at-top
  checks.check_config(cfg)
  cfg = checks.snapped(cfg)
  placement = sharding.Placement(sharding.make_mesh(cfg.mesh.data))
  t0 = time.perf_counter()
  train, test = pipeline.load_data(cfg, placement)
  data_s = time.perf_counter() - t0
  cap = max(1.0, GENERATE_SHARE * left(deadline))
  cfg.generate.max_seconds = round(cap, 1)
  plan = memory.plan_for_config(cfg, train, devices=placement.size)
  logging.info("generate: cap %.0f s; memory plan:\n%s", cap,
               memory.format_plan(plan))
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  summary = generate.run(cfg, train, workdir, log, test=test)
  gen_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  released_summary, (released, _) = release_lib.release(cfg, train, workdir)
  peak, limit = peak_bytes()
  rounds = metrics_lib.read_log(log.path, "generate")
  result = {
      "train_images": len(train), "test_images": len(test),
      "data_seconds": data_s, "max_seconds": cfg.generate.max_seconds,
      "compute_dtype": cfg.model.compute_dtype,
      "settings": {"eps_255": round(cfg.noise.eps * 255, 3),
                   "step_size_255": round(cfg.noise.step_size * 255, 3),
                   "pgd_steps": cfg.noise.num_steps,
                   "model_steps": cfg.generate.train_steps,
                   "batch": cfg.generate.batch_size,
                   "width": cfg.model.width,
                   "stop_accuracy": cfg.generate.stop_accuracy},
      "seconds": gen_s, "release_seconds": time.perf_counter() - t0,
      "round_accuracies": [r["train_accuracy"] for r in rounds],
      "round_seconds": [r["seconds"] for r in rounds],
      # Rounds after the first (which compiles), when there are any.
      "pgd_image_steps_per_s": _search_rate(rounds, len(train),
                                            cfg.noise.num_steps),
      "memory": {"plan_device_bytes": plan["device_total"],
                 "plan": {k: plan[k] for k in ("data", "noise", "params",
                                               "opt_state", "batch_stats",
                                               "batch")},
                 "peak_bytes_in_use": peak, "bytes_limit": limit,
                 "activations_and_temporaries": (
                     None if peak is None else peak - plan["device_total"])},
      **{k: summary[k] for k in (
          "rounds", "completed_rounds", "capped", "stop_reached",
          "generation_seconds", "final_train_accuracy_on_release",
          "generator_clean_train_accuracy", "noise_max_abs")},
      "release": {k: v for k, v in released_summary.items()
                  if isinstance(v, (int, float, str, bool))},
  }
  report.stage("generate", result)
  return cfg, released, test


def _search_rate(rounds, n: int, num_steps: int):
  """PGD image*steps/s of the search's rounds (each: M model steps, K PGD
  steps on every image, the stop test), the first left out when others
  ran; None before any round."""
  timed = rounds[1:] or rounds
  if not timed:
    return None
  return len(timed) * n * num_steps / max(sum(r["seconds"] for r in timed),
                                          1e-9)


def plan_epochs(seconds_left: float, *, train_images: int,
                test_images: int, images_per_s, first_call_s: float,
                max_epochs: int, margin: float = 1.25, reserve: float = 15.0):
  """(epochs, estimated seconds per epoch) that fit `seconds_left`: each
  epoch trains `train_images` at `images_per_s` and sweeps `test_images`
  (a forward pass: about a third of a training step's cost), both steps
  compile once (`first_call_s` each), `reserve` seconds are kept for the
  report and the exit, and every epoch is taken `margin` times longer.
  At least 1 and at most `max_epochs`; 1 when nothing was measured."""
  if not images_per_s:
    return 1, None
  epoch_s = (train_images + test_images / 3) / images_per_s
  fit = (seconds_left - reserve - 2 * first_call_s) / (margin * epoch_s)
  return int(max(1, min(max_epochs, fit))), epoch_s


def evaluate_stage(cfg, released, test, log, deadline: float, size,
                   rates: dict, report: Report):
  """Stage (c): ResNet-18 on the release, epochs from the budget left."""
  e = cfg.evaluate
  train_step, rates_jax = rates.get("train_step", {}), rates.get("jax", [])
  steps = len(released) // e.batch_size
  ips, first_s = (train_step.get("loop_images_per_s"),
                  train_step.get("first_call_seconds"))
  estimate = "the recipe's step, measured"
  if not ips:  # not measured: half the batch-512 model step's rate
    rows = [r for r in rates_jax if r.get("dtype") == cfg.model.compute_dtype
            and r.get("model_step_images_per_s")]
    ips = rows[0]["model_step_images_per_s"] / 2 if rows else None
    first_s, estimate = 30.0, "half the batch-512 model step's rate"
  epochs, epoch_s = plan_epochs(
      left(deadline), train_images=steps * e.batch_size,
      test_images=len(test), images_per_s=ips, first_call_s=first_s,
      max_epochs=size["max_epochs"])
  if epoch_s is None:
    estimate = "none: nothing was measured"
  e.epochs = epochs
  logging.info("evaluate: %d epoch(s) (estimated %s s each, %.0f s left)",
               epochs, None if epoch_s is None else round(epoch_s, 1),
               left(deadline))
  t0 = time.perf_counter()
  history = evaluate.train_model(cfg, released, test,
                                 label="evaluate_unlearnable", log=log)
  report.stage("evaluate", {
      "epochs": epochs, "max_epochs": size["max_epochs"],
      "estimated_epoch_seconds": epoch_s, "estimated_from": estimate,
      "seconds": time.perf_counter() - t0,
      "batch": e.batch_size, "augment": e.augment,
      "compute_dtype": cfg.model.compute_dtype,
      "test_accuracy": [r["test_accuracy"] for r in history],
      "train_accuracy": [r["train_accuracy"] for r in history],
      "final_test_accuracy": history[-1]["test_accuracy"]})


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true",
                 help="tiny sizes and a made-up JPEG tar, on a CPU")
  p.add_argument("--out", required=True, help="folder for the results")
  p.add_argument("--data", default="",
                 help="cifar10-jpeg.tar.gz (full mode: required)")
  p.add_argument("--budget_s", type=float, default=440.0,
                 help="wall-clock seconds for all stages")
  p.add_argument("--dtype", default="bfloat16",
                 choices=("float32", "bfloat16"),
                 help="compute dtype of the search and the evaluation")
  a = p.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  logging.use_absl_handler()
  deadline = START + a.budget_s
  mode = "smoke" if a.smoke else "full"
  size = SIZES[mode]
  os.makedirs(a.out, exist_ok=True)
  report = Report(a.out, mode=mode, jax=jax.__version__,
                  backend=jax.default_backend(),
                  devices=[str(d) for d in jax.devices()],
                  budget_s=a.budget_s, compute_dtype=a.dtype)
  log = metrics_lib.MetricLog(a.out)
  with tempfile.TemporaryDirectory(prefix="gpu_paper_") as tmp:
    data = a.data or (smoke_tar(tmp) if a.smoke else "")
    if not data or not os.path.exists(data):
      report.stage("setup", {"error": f"no CIFAR-10 tar at {data!r}: pass "
                             "--data or set UE_JAX_CIFAR10"})
      return 2
    report.data["data"] = data
    # The smoke run runs every part (its budget is there to be checked).
    share = 1.0 if a.smoke else THROUGHPUT_SHARE
    rates = throughput(size, a.dtype, START + share * a.budget_s)
    report.stage("throughput", rates)
    cfg = paper_config(size, data=data, dtype=a.dtype, smoke=a.smoke)
    cfg, released, test = generate_stage(cfg, os.path.join(tmp, "run"), log,
                                         deadline, report)
    evaluate_stage(cfg, released, test, log, deadline, size, rates, report)
  return 0


if __name__ == "__main__":
  sys.exit(main())
