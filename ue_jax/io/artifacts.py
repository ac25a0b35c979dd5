"""Reading and writing artifacts: atomic writes, pickle-free reads.

In a multi-process run only process 0 writes: every writer here is a no-op
(returning the path) in the other processes, which read what process 0 wrote
once `distributed.sync` says it is there. Large arrays are written and read a
block of rows at a time: noise.npy through a memory map (NpyWriter, and
load_noise, which checks it chunk by chunk), the release .npz as a stream
(NpzWriter) and through a memory map of its images (load_release).
"""

import hashlib
import json
import os
import secrets

import jax
import numpy as np

from ue_jax.io import npz
from ue_jax.runtime.errors import UEError

CHECK_BYTES = 64 << 20  # noise bytes read at a time to check a noise file


def writes_files() -> bool:
  """Whether this process writes artifacts (only process 0 does)."""
  return jax.process_index() == 0


def _temp_beside(path: str) -> str:
  """A new empty temporary file in `path`'s folder (made if missing), with
  its suffix, to be renamed onto `path` when complete. Its mode is the one
  the umask gives any new file (0644 under umask 022), not mkstemp's 0600:
  the renamed file is the artifact, a release others may need to read."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  suffix = os.path.splitext(path)[1]
  while True:
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}{suffix}")
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
      continue
    os.close(fd)
    return tmp


def _atomic(path: str, write):
  if not writes_files():
    return path
  tmp = _temp_beside(path)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def save_npy(path: str, array) -> str:
  return _atomic(path, lambda tmp: np.save(tmp, np.asarray(array)))


class NpyWriter:
  """Writes a .npy of known shape block by block (through a memory map, so
  the whole array is never in memory), renamed into place when complete.
  A no-op outside process 0."""

  def __init__(self, path: str, shape, dtype):
    self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
    self.tmp, self.array = None, None

  def __enter__(self):
    if writes_files():
      self.tmp = _temp_beside(self.path)
      self.array = np.lib.format.open_memmap(self.tmp, mode="w+",
                                             dtype=self.dtype,
                                             shape=self.shape)
    return self

  def write(self, start: int, rows):
    if self.array is not None:
      self.array[start:start + len(rows)] = rows

  def __exit__(self, kind, value, traceback):
    if self.array is None:
      return
    self.array.flush()
    del self.array
    self.array = None
    if kind is None:
      os.replace(self.tmp, self.path)
    elif os.path.exists(self.tmp):
      os.remove(self.tmp)


def export_noise(noise, n: int, placement, path: str, *,
                 decode=None):
  """Writes the first `n` rows of a noise on the mesh (sharded by rows or
  replicated; `decode`d from its storage) to `path` as float32 .npy, chunk
  by chunk (`placement.host_chunks`, a sharding.Placement): every host holds
  at most one chunk (sharding.EXPORT_BYTES) of it, and only process 0
  writes. Returns (path, max |noise|)."""
  max_abs = 0.0
  chunks = (placement.host_chunks(noise, n) if decode is None
            else placement.host_chunks(noise, n, transform=decode))
  with NpyWriter(path, (n, *noise.shape[1:]), np.float32) as out:
    for start, rows in chunks:
      out.write(start, rows)
      max_abs = max(max_abs, float(np.abs(rows).max(initial=0.0)))
  return path, max_abs


class NpzWriter:
  """Writes an .npz member by member, an array's rows in chunks
  (npz.StreamWriter: the bytes np.savez writes), renamed into place when
  complete. A no-op outside process 0."""

  def __init__(self, path: str):
    self.path, self.tmp, self.file, self.writer = path, None, None, None

  def __enter__(self):
    if writes_files():
      self.tmp = _temp_beside(self.path)
      self.file = open(self.tmp, "wb")  # pylint: disable=consider-using-with
      self.writer = npz.StreamWriter(self.file).__enter__()
    return self

  def begin(self, key: str, shape, dtype):
    if self.writer is not None:
      self.writer.begin(key, shape, dtype)

  def write(self, rows):
    if self.writer is not None:
      self.writer.write(rows)

  def add(self, key: str, array):
    if self.writer is not None:
      self.writer.add(key, array)

  def __exit__(self, kind, value, traceback):
    if self.writer is None:
      return
    try:
      with self.file:
        self.writer.__exit__(kind, value, traceback)
      if kind is None:
        os.replace(self.tmp, self.path)
    finally:
      if os.path.exists(self.tmp):
        os.remove(self.tmp)


def save_text(path: str, text: str) -> str:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
  return _atomic(path, write)


def save_json(path: str, obj) -> str:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
  return _atomic(path, write)


def pyplot():
  """matplotlib's pyplot on the Agg backend (files only, no display): the one
  place that sets it up, for every figure of the package."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(path: str, fig) -> str:
  """Writes `fig` as a PNG (atomically), then closes it: pyplot keeps every
  open figure alive, and a battery or a test run makes dozens."""
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  try:
    return _atomic(path, lambda tmp: fig.savefig(tmp, dpi=120,
                                                 bbox_inches="tight",
                                                 format="png"))
  finally:
    plt.close(fig)


def load_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UEError(f"{path} is not readable JSON ({type(e).__name__})") from None


def _load_array_file(path: str, what: str, mmap_mode=None):
  """np.load without pickle; any file that is not a plain .npy/.npz (an
  object array, a pickle, a torn or foreign file) is a UEError."""
  try:
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
  except ValueError as e:  # numpy's answer to anything that needs pickle
    raise UEError(f"{what} {path} cannot be read without pickle, which is "
                  f"refused ({' '.join(str(e).split())})") from None
  except (OSError, EOFError) as e:
    raise UEError(f"{what} {path} is not a readable .npy/.npz file "
                  f"({type(e).__name__})") from None


def _row_chunks(array, budget: int = CHECK_BYTES):
  """Consecutive blocks of rows of `array` of about `budget` bytes each."""
  row = max(1, array[:1].nbytes)
  step = max(1, budget // row)
  for start in range(0, len(array), step):
    yield np.asarray(array[start:start + step])


def load_noise(path: str, *, shape, eps: float) -> np.ndarray:
  """Maps a float noise .npy (no pickle) and checks it against the data,
  reading it in chunks (no host holds it whole); returns the memory map."""
  if not os.path.exists(path):
    raise UEError(f"no noise file at {path}; run the generate stage first "
                  "(--stage=generate) or set --config.release.noise_path")
  noise = _load_array_file(path, "noise file", mmap_mode="r")
  if not isinstance(noise, np.ndarray):
    noise.close()
    raise UEError(f"noise file {path} is an .npz archive; expected one .npy "
                  "array")
  if tuple(noise.shape) != tuple(shape):
    raise UEError(f"noise file {path} has shape {tuple(noise.shape)} but the "
                  f"dataset needs {tuple(shape)}")
  if not np.issubdtype(noise.dtype, np.floating):
    raise UEError(f"noise file {path} has dtype {noise.dtype}; expected float")
  max_abs = 0.0
  for rows in _row_chunks(noise):
    if not np.all(np.isfinite(rows)):
      raise UEError(f"noise file {path} holds non-finite values")
    max_abs = max(max_abs, float(np.abs(rows).max(initial=0.0)))
  if max_abs > eps + 1e-6:
    raise UEError(f"noise file {path} exceeds epsilon: max |noise| = "
                  f"{max_abs:.6f} > {eps:.6f}")
  return noise


def load_release(path: str, *, labels: np.ndarray, indices: np.ndarray):
  """Loads a released .npz (no pickle) made from the configured training
  set: uint8 images with the same labels and source indices, and `protected`
  (bool [N]; all True for a release written before partial protection).
  The images are memory-mapped (npz.member) where the archive stores them
  uncompressed, as ue_jax writes it: rows are read when used."""
  if not os.path.exists(path):
    raise UEError(f"no released dataset at {path}; run --stage=release first")
  archive = _load_array_file(path, "released dataset")
  if isinstance(archive, np.ndarray):
    raise UEError(f"released dataset {path} is a single array; expected an "
                  ".npz with images, labels and indices")
  with archive as f:
    missing = {"images", "labels", "indices"} - set(f.files)
    if missing:
      raise UEError(f"released dataset {path} lacks {sorted(missing)}")
    try:
      release = {k: f[k] for k in ("labels", "indices")}
      images = npz.member(path, "images")
      release["images"] = f["images"] if images is None else images
      release["protected"] = (f["protected"] if "protected" in f.files
                              else np.ones(len(release["labels"]), bool))
    except ValueError as e:
      raise UEError(f"released dataset {path} cannot be read without pickle, "
                    f"which is refused ({' '.join(str(e).split())})") from None
  images = release["images"]
  if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
    raise UEError(f"released images in {path} are {images.dtype} "
                  f"{images.shape}; the configured training set needs uint8 "
                  f"[{len(labels)},H,W,C]")
  if (not np.array_equal(release["labels"], labels)
      or not np.array_equal(release["indices"], indices)):
    raise UEError(f"released dataset {path} holds other examples (labels or "
                  "indices differ) than the configured training set")
  if (release["protected"].dtype != bool
      or release["protected"].shape != (len(labels),)):
    raise UEError(f"released dataset {path}: `protected` must be bool "
                  f"[{len(labels)}], got {release['protected'].dtype} "
                  f"{release['protected'].shape}")
  return release


def file_sha256(path: str) -> str:
  """The sha256 of a file, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()
