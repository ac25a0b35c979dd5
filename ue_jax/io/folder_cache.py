"""The decoded-array cache of image-folder sources (`data.cache_dir`).

Decoding tens of thousands of image files takes seconds to minutes; the
arrays it gives depend only on the source's content and `data.image_size`.
So they are kept in one uncompressed .npz per (source, image_size) in the
cache folder, named by a sha256 key over:

- a tar archive: the sha256 of its bytes;
- a folder: every non-hidden file's relative path, size and mtime in
  nanoseconds, in sorted order (a touched or rewritten file changes it);
- the image size, and `VERSION` (bumped when decoding changes).

A cache file is written under a temporary name in the cache folder and
renamed, so a reader sees a whole file or none. One that cannot be read
back (truncated, bit rot: the zip CRC fails, members missing or
inconsistent) is ignored with a warning and written again. A cache folder
that cannot be written only costs the next run a decode.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Dict, Optional

import numpy as np
from absl import logging

VERSION = 1
NONE = "none"  # data.cache_dir value that turns the cache off
KEYS = ("train_images", "train_labels", "test_images", "test_labels",
        "class_names")


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "ue_jax")


def resolve_dir(cache_dir: str) -> Optional[str]:
  """The cache folder of a `data.cache_dir` value; None when off."""
  if cache_dir == NONE:
    return None
  return os.path.expanduser(cache_dir) if cache_dir else default_dir()


def key(fingerprints: Dict[str, str], image_size: int) -> str:
  """The cache key of {role: source fingerprint} (role: path, train or
  test; folder_source.fingerprint) and the image size."""
  record = {"version": VERSION, "image_size": int(image_size),
            "sources": dict(sorted(fingerprints.items()))}
  return hashlib.sha256(json.dumps(record, sort_keys=True).encode()
                        ).hexdigest()


def file_for(cache_dir: Optional[str], cache_key: str) -> Optional[str]:
  if cache_dir is None:
    return None
  return os.path.join(cache_dir, f"folder-{cache_key[:40]}.npz")


def _consistent(arrays) -> bool:
  names = arrays["class_names"]
  if names.ndim != 1 or names.dtype.kind != "U" or len(names) < 1:
    return False
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if (images.dtype != np.uint8 or images.ndim != 4
        or labels.shape != (len(images),) or labels.dtype != np.int32):
      return False
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
      return False
  return (arrays["train_images"].shape[1:]
          == arrays["test_images"].shape[1:])


def load(path: Optional[str]) -> Optional[Dict[str, np.ndarray]]:
  """The cached arrays at `path`, or None (absent, off, or unusable)."""
  if path is None or not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in KEYS}
    if _consistent(arrays):
      return arrays
    problem = "inconsistent arrays"
  except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
    problem = f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"
  logging.warning("folder cache %s is unusable (%s); decoding again and "
                  "rewriting it", path, problem)
  return None


def save(path: Optional[str], arrays: Dict[str, np.ndarray]) -> bool:
  """Writes `arrays` (KEYS) to `path` atomically; False when it could not
  (logged), True when written."""
  if path is None:
    return False
  folder = os.path.dirname(path)
  tmp = None
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **{k: arrays[k] for k in KEYS})
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    tmp = None
    return True
  except OSError as e:
    logging.warning("cannot write the folder cache %s (%s); the next run "
                    "decodes again", path, e.strerror or type(e).__name__)
    return False
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)
