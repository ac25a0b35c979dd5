"""An accelerator check in one short run: step throughput of the paper's
ResNet-18 at 32x32x3 (float32 and bfloat16 compute), one CIFAR-shaped
generation round on synthetic data with its peak device memory, and the
PyTorch twin's throughput on the same device where torch (with CUDA) imports.

  python benchmarks/gpu_check.py --out=runs/gpu_check.json
  python benchmarks/gpu_check.py --smoke --out=/tmp/smoke.json   # CPU, seconds

benchmarks/gpu_check.sh wraps it. Every figure goes into one JSON file (and a
short summary on stdout); a part that cannot run (no torch, no CUDA) is
recorded with the reason, not skipped silently.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import throughput
from benchmarks import timing
from configs import cifar10_samplewise
from ue_jax import pipeline

SIZES = {  # width, batch, PGD steps, round images, repeats
    "full": dict(width=64, batch=512, steps=20, images=10240, repeats=5),
    "smoke": dict(width=4, batch=16, steps=2, images=64, repeats=2),
}


def peak_bytes():
  """Peak bytes in use on device 0, or None where the backend does not say
  (XLA:CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def jax_throughput(size, dtype):
  """PGD image*steps/s and model-step images/s of ResNet-18 at 32x32x3,
  computing in `dtype` (benchmarks/throughput.py's row: the steps as a run
  builds them, timed with benchmarks/timing.py)."""
  spec = throughput.Spec("resnet18", size["width"], (32, 32, 3),
                         size["batch"], size["steps"],
                         dtype=jnp.dtype(dtype).name)
  return throughput.measure(spec, parts=("pgd", "model_step"),
                            repeats=size["repeats"])


def one_round(size, folder):
  """One round of the CIFAR-10 sample-wise config on synthetic data."""
  rng = np.random.default_rng(1)
  paths = {}
  for split, n in (("train", size["images"]), ("test", size["batch"])):
    paths[split] = os.path.join(folder, f"{split}.npz")
    np.savez(paths[split],
             images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(n) % 10)
  cfg = cifar10_samplewise.get_config()
  cfg.data.name, cfg.data.source = "synthetic", "npz"
  cfg.data.train_path, cfg.data.test_path = paths["train"], paths["test"]
  cfg.model.width = size["width"]
  cfg.noise.num_steps = size["steps"]
  for block in (cfg.generate, cfg.evaluate):
    block.batch_size = block.eval_batch_size = size["batch"]
  cfg.generate.min_rounds = cfg.generate.max_rounds = 1
  t0 = time.perf_counter()
  results = pipeline.run(cfg, os.path.join(folder, "run"), ("generate",))
  return {"images": size["images"], "width": size["width"],
          "batch": size["batch"], "pgd_steps": size["steps"],
          "seconds": time.perf_counter() - t0,
          "generation_seconds": results.get("generation_seconds"),
          "peak_bytes_in_use": peak_bytes()}


def torch_throughput(size, dtype="float32", *, cpu=False):
  """The PyTorch twin's PGD and model step on CUDA (on the CPU with `cpu`
  where CUDA is absent), computing in `dtype` (bfloat16: under autocast,
  float32 weights), each timed to the device's end; or why not."""
  try:
    import torch
    from benchmarks import torch_reference as ref
  except ImportError as e:
    return {"skipped": f"torch not importable: {e}"}
  if torch.cuda.is_available():
    dev = torch.device("cuda")
  elif cpu:
    dev = torch.device("cpu")
  else:
    return {"skipped": "torch has no CUDA device here"}
  torch.manual_seed(0)
  model = ref.get_model("resnet18", in_channels=3, num_classes=10,
                        width=size["width"]).to(dev)
  opt = ref.make_optimizer(model)
  x = torch.rand(size["batch"], 3, 32, 32, device=dev)
  y = torch.randint(0, 10, (size["batch"],), device=dev)

  def sync():
    if dev.type == "cuda":
      torch.cuda.synchronize()

  def compute():
    if dtype == "bfloat16":
      return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

  def pgd():
    with compute(), ref.frozen(model):
      ref.min_min_pgd(model, x, y, torch.zeros_like(x), eps=8 / 255,
                      step_size=0.8 / 255, num_steps=size["steps"])
    sync()

  def step():
    with compute():
      ref.model_step(model, opt, x, y)
    sync()
  t_pgd = timing.median_seconds(pgd, repeats=size["repeats"])
  t_step = timing.median_seconds(step, repeats=size["repeats"])
  return {"torch": torch.__version__, "dtype": dtype,
          "device": (torch.cuda.get_device_name() if dev.type == "cuda"
                     else "cpu"),
          "width": size["width"], "batch": size["batch"],
          "pgd_steps": size["steps"],
          "pgd_image_steps_per_s": size["batch"] * size["steps"] / t_pgd,
          "model_step_images_per_s": size["batch"] / t_step}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true",
                 help="tiny sizes, to check the script itself on a CPU")
  p.add_argument("--out", required=True, help="JSON file to write")
  a = p.parse_args()
  size = SIZES["smoke" if a.smoke else "full"]
  report = {"jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "mode": "smoke" if a.smoke else "full"}
  report["throughput"] = [jax_throughput(size, d)
                          for d in (jnp.float32, jnp.bfloat16)]
  with tempfile.TemporaryDirectory() as folder:
    report["round"] = one_round(size, folder)
  report["torch"] = torch_throughput(size)
  with open(a.out, "w") as f:
    json.dump(report, f, indent=1)
  for row in report["throughput"]:
    print(f"ue_jax {row['dtype']:>8}: PGD {row['pgd_image_steps_per_s']:10.1f}"
          f" image*steps/s, model step {row['model_step_images_per_s']:9.1f}"
          " images/s")
  r = report["round"]
  print(f"one round, {r['images']} images: {r['seconds']:.1f} s, peak "
        f"{r['peak_bytes_in_use']} bytes")
  print(f"torch: {report['torch']}")


if __name__ == "__main__":
  main()
