"""Reading and writing artifacts: atomic writes, pickle-free reads."""

import json
import os
import tempfile

import numpy as np

from ue_jax.errors import UEError


def _atomic(path: str, write):
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-",
                             suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def save_npy(path: str, array) -> str:
  return _atomic(path, lambda tmp: np.save(tmp, np.asarray(array)))


def save_npz(path: str, **arrays) -> str:
  return _atomic(path, lambda tmp: np.savez(tmp, **arrays))


def save_json(path: str, obj) -> str:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
  return _atomic(path, write)


def save_figure(path: str, fig) -> str:
  return _atomic(path, lambda tmp: fig.savefig(tmp, dpi=120,
                                               bbox_inches="tight",
                                               format="png"))


def load_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_noise(path: str, *, shape, eps: float) -> np.ndarray:
  """Loads a float noise .npy (no pickle) and checks it against the data."""
  if not os.path.exists(path):
    raise UEError(f"no noise file at {path}; run the generate stage first "
                  "(--stage=generate) or set --config.release.noise_path")
  try:
    noise = np.load(path, allow_pickle=False)
  except ValueError as e:
    raise UEError(f"{path}: not a plain .npy array ({e})") from None
  if tuple(noise.shape) != tuple(shape):
    raise UEError(f"noise file {path} has shape {tuple(noise.shape)} but the "
                  f"dataset needs {tuple(shape)}")
  if not np.issubdtype(noise.dtype, np.floating):
    raise UEError(f"noise file {path} has dtype {noise.dtype}; expected float")
  if not np.all(np.isfinite(noise)):
    raise UEError(f"noise file {path} holds non-finite values")
  if np.abs(noise).max(initial=0.0) > eps + 1e-6:
    raise UEError(f"noise file {path} exceeds epsilon: max |noise| = "
                  f"{np.abs(noise).max():.6f} > {eps:.6f}")
  return noise.astype(np.float32)


def load_release(path: str):
  if not os.path.exists(path):
    raise UEError(f"no released dataset at {path}; run --stage=release first")
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}
