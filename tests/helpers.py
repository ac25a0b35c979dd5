"""Shared test fixtures: tiny synthetic datasets and a tiny model state."""

import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ue_jax.io import data as data_lib
from ue_jax.core import noise as noise_lib
from ue_jax.core import optim
from ue_jax.models import get_model
from ue_jax.core.state import create_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic(n=64, size=12, channels=1, classes=4, seed=0):
  """Images whose mean brightness encodes the class, so they are learnable."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % classes
  base = rng.random((n, size, size, channels)) * 80
  images = (base + (labels * 40)[:, None, None, None]).astype(np.uint8)
  return data_lib.make_dataset(images, labels, classes, "synthetic")


def write_npz(folder, n_train=96, n_test=64, **kw):
  paths = []
  for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
    ds = synthetic(n, seed=seed, **kw)
    path = os.path.join(folder, f"{split}.npz")
    np.savez(path, images=ds.images, labels=ds.labels)
    paths.append(path)
  return paths


def tiny_state(ds, *, noise=True, seed=0, width=4):
  model = get_model("small_cnn_avg", num_classes=ds.num_classes, width=width)
  tx = optim.sgd(0.1, momentum=0.9, weight_decay=5e-4, grad_clip=5.0)
  return create_state(model, tx, seed=seed, image_shape=ds.images.shape[1:],
                      noise_shape=ds.images.shape if noise else None)


def mean_loss(state, batch, noise) -> float:
  """Mean cross-entropy of the frozen model (eval mode) on
  clip(x + noise), `noise` given per batch row."""
  x = jnp.clip(noise_lib.to_float(batch["image"]) + noise, 0.0, 1.0)
  logits = state.apply_fn(state.variables, x, train=False)
  return float(optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["label"]).mean())


def counting_jax():
  """(a stand-in for the `jax` module of io/metrics.py that counts its
  waits for the devices, the list of those waits)."""
  calls = []

  def block_until_ready(x):
    calls.append(1)
    return jax.block_until_ready(x)

  return types.SimpleNamespace(block_until_ready=block_until_ready), calls


def main_command(workdir, *overrides, stage="all",
                 config="configs/test_tiny.py"):
  """The argv of `python -m ue_jax.main` (run it with cwd=REPO)."""
  return [sys.executable, "-m", "ue_jax.main", f"--config={config}",
          f"--workdir={workdir}", f"--stage={stage}", *overrides]


def run_main(workdir, *overrides, stage="all", config="configs/test_tiny.py",
             env=None, timeout=600) -> subprocess.CompletedProcess:
  """Runs `main_command` to its end; its output is captured as text."""
  return subprocess.run(main_command(workdir, *overrides, stage=stage,
                                     config=config),
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def cli_env(cache_dir=None):
  """The environment for CLI subprocesses; with `cache_dir`, a persistent
  XLA compilation cache that later subprocesses reuse (seconds each)."""
  env = dict(os.environ)
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def write_image_tree(root, *, classes=("cat", "dog"), per_class=3,
                     size=(8, 6), mode="RGB", splits=("train", "test"),
                     ext=".png", seed=0):
  """Writes `root`/<split>/<class>/<k><ext> images of seeded random pixels
  (`size` is (width, height); splits=("",) writes a bare class tree);
  returns {relative path: uint8 pixels [H, W, C]} of what was written."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  channels = {"L": 1, "RGB": 3}[mode]
  written = {}
  for split in splits:
    for cls in classes:
      for k in range(per_class):
        rel = "/".join(p for p in (split, cls, f"{k:02d}{ext}") if p)
        pixels = rng.integers(0, 256, (size[1], size[0], channels), np.uint8)
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels,
                        mode).save(path)
        written[rel] = pixels
  return written


def tar_tree(root, out, *, top=""):
  """Packs the contents of `root` into the tar `out` (gzip when it ends in
  gz), inside the folder `top` when given; returns `out`."""
  import tarfile  # pylint: disable=g-import-not-at-top
  with tarfile.open(out, "w:gz" if out.endswith("gz") else "w") as tar:
    for name in sorted(os.listdir(root)):
      tar.add(os.path.join(root, name),
              arcname=f"{top}/{name}" if top else name)
  return out
