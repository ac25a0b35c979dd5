"""Host-side datasets: uint8 arrays where every example carries its index.

Sources: gzip (or plain) IDX files (MNIST / Fashion-MNIST, e.g. Debian's
`dataset-fashion-mnist`), `.npz` files, image-folder trees or tar archives of
them (folder_source.py, cached decoded by folder_cache.py), and TFDS catalog
datasets through the optional `data` extra (imported lazily; never downloads
unless asked). The
images of an .npz are memory-mapped where np.savez stored them uncompressed
(npz.py), so only the rows a process uses are read (device_data.py); the
others are read into memory whole.

`Dataset.index` is the row of an example in the working set (what sample-wise
noise is keyed by, 0..n-1); `Dataset.source_index` is its row in the original
split, so a stratified subset can always be traced back.
"""

import dataclasses
import gzip
import os
from typing import Optional, Tuple

import numpy as np

from ue_jax.io import npz
from ue_jax.runtime.errors import UEError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
DATA_DIR_ENV = "UE_JAX_DATA_DIR"
SOURCES = ("auto", "idx", "npz", "tfds", "folder")
TFDS_NAMES = ("cifar10", "cifar100", "svhn_cropped", "mnist", "fashion_mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TFDS_BATCH = 10_000  # examples per read of a TFDS split, in stored order
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn_cropped": 10,
               "mnist": 10, "fashion_mnist": 10}
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog",
                "frog", "horse", "ship", "truck"),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """uint8 images [N,H,W,C], int32 labels [N], int64 index and source_index;
  `class_names` as the source gives them (a folder's), else empty."""
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  source_index: np.ndarray
  name: str = ""
  class_names: Tuple[str, ...] = ()

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise UEError(f"dataset {self.name!r}: images must be uint8 [N,H,W,C], "
                    f"got {self.images.dtype} {self.images.shape}")
    n = len(self.images)
    if self.labels.shape != (n,) or self.source_index.shape != (n,):
      raise UEError(f"dataset {self.name!r}: {n} images but labels "
                    f"{self.labels.shape} and indices {self.source_index.shape}")
    if self.class_names and len(self.class_names) != self.num_classes:
      raise UEError(f"dataset {self.name!r}: {len(self.class_names)} class "
                    f"names for {self.num_classes} classes")
    if n and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
      raise UEError(f"dataset {self.name!r}: labels must lie in "
                    f"[0, {self.num_classes}), got [{self.labels.min()}, "
                    f"{self.labels.max()}]")

  def __len__(self):
    return len(self.images)

  @property
  def index(self) -> np.ndarray:
    return np.arange(len(self), dtype=np.int32)

  @property
  def image_shape(self):
    return tuple(self.images.shape[1:])

  def take(self, rows: np.ndarray) -> "Dataset":
    return Dataset(self.images[rows], self.labels[rows], self.num_classes,
                   self.source_index[rows], self.name, self.class_names)

  def batch(self, rows: np.ndarray) -> dict:
    """The batch of padded `rows` (`gather`); as DeviceData.batch."""
    return gather(self, rows)

  def replace_images(self, images: np.ndarray) -> "Dataset":
    return dataclasses.replace(self, images=images)


def make_dataset(images, labels, num_classes, name="",
                 class_names=()) -> Dataset:
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  labels = np.asarray(labels).astype(np.int32).reshape(-1)
  return Dataset(images, labels, int(num_classes),
                 np.arange(len(images), dtype=np.int64), name,
                 tuple(class_names))


def class_names(ds) -> Tuple[str, ...]:
  """A name per class of `ds` (a Dataset or DeviceData): its own (a
  folder's), else the known ones of its dataset name, else "0", "1", ..."""
  own = tuple(getattr(ds, "class_names", ()) or ())
  if len(own) == ds.num_classes:
    return own
  known = CLASS_NAMES.get(ds.name, ())
  if len(known) == ds.num_classes:
    return known
  return tuple(str(c) for c in range(ds.num_classes))


def stratified_subset(ds: Dataset, size: int, seed: int) -> Dataset:
  """`size` examples with class proportions kept, chosen by `seed`, in order."""
  rows = stratified_rows(ds, size, seed)
  return ds if rows is None else ds.take(rows)


def stratified_rows(ds: Dataset, size: int, seed: int) -> Optional[np.ndarray]:
  """The sorted rows of `stratified_subset`; None when it is all of `ds`."""
  if not size or size >= len(ds):
    return None
  rng = np.random.default_rng(seed)
  classes, counts = np.unique(ds.labels, return_counts=True)
  quota = np.floor(counts / len(ds) * size).astype(int)
  # Hand out the remainder to the classes with the largest fractional parts.
  frac = counts / len(ds) * size - quota
  quota[np.argsort(-frac)[:size - quota.sum()]] += 1
  rows = [rng.choice(np.flatnonzero(ds.labels == c), q, replace=False)
          for c, q in zip(classes, quota)]
  return np.sort(np.concatenate(rows))


# ----------------------------------------------------------------- IDX files
def read_idx(path: str) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise UEError(f"{path} is not an unsigned-byte IDX file")
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big")
                for i in range(ndim))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise UEError(f"{path}: header says {shape} but holds {data.size} bytes")
  return data.reshape(shape)


def _find(folder: str, stem: str) -> str:
  for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
    if os.path.exists(os.path.join(folder, name)):
      return os.path.join(folder, name)
  raise UEError(f"missing {stem}(.gz) in {folder}")


def load_idx(folder: str, split: str, num_classes: int, name: str) -> Dataset:
  images, labels = (read_idx(_find(folder, f)) for f in IDX_FILES[split])
  return make_dataset(images, labels, num_classes, name)


# ----------------------------------------------------------------- npz files
def load_npz(path: str, num_classes: Optional[int], name: str) -> Dataset:
  """images (uint8 [N,H,W] or [N,H,W,C]) and integer labels from an .npz,
  read without pickle; `num_classes` None means max(label) + 1."""
  if not os.path.exists(path):
    raise UEError(f"no such .npz file: {path}")
  try:
    archive = np.load(path, allow_pickle=False)
    if isinstance(archive, np.ndarray):
      raise UEError(f"{path} is a single array; expected an .npz with "
                    "'images' and 'labels'")
    with archive as f:
      keys = set(f.files)
      ik = next((k for k in ("images", "x", "data") if k in keys), None)
      lk = next((k for k in ("labels", "y", "targets") if k in keys), None)
      if ik is None or lk is None:
        raise UEError(f"{path} needs arrays 'images' and 'labels', has "
                      f"{sorted(keys)}")
      labels = f[lk]
      images = npz.member(path, ik)  # mapped: rows are read when used
      images = f[ik] if images is None else images
  except ValueError as e:
    raise UEError(f"{path}: cannot read without pickle ({e})") from None
  except (OSError, EOFError) as e:
    raise UEError(f"{path} is not a readable .npz file "
                  f"({type(e).__name__})") from None
  if images.dtype != np.uint8:
    raise UEError(f"{path}: images must be uint8 (0..255), got "
                  f"{images.dtype}; scale to 0..255 and cast to uint8")
  if images.ndim not in (3, 4):
    raise UEError(f"{path}: images must be [N,H,W] or [N,H,W,C], got shape "
                  f"{images.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise UEError(f"{path}: labels must be integers, got {labels.dtype}")
  if labels.shape != (len(images),):
    raise UEError(f"{path}: {len(images)} images but labels of shape "
                  f"{labels.shape}")
  if num_classes is None or num_classes <= 0:
    num_classes = int(labels.max(initial=0)) + 1
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise UEError(f"{path}: labels must lie in [0, {num_classes}), got "
                  f"[{labels.min()}, {labels.max()}]")
  return make_dataset(images, labels, num_classes, name)


# ---------------------------------------------------------------------- TFDS
def load_tfds(name: str, split: str, data_dir: Optional[str],
              download: bool) -> Dataset:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UEError(
        f"dataset {name!r} is read through TensorFlow Datasets, which is not "
        "installed: pip install -e '.[data]' (or give data.source=npz with a "
        "local file)") from None
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir, as_supervised=True,
                   download=download)
    parts = list(tfds.as_numpy(ds.batch(TFDS_BATCH)))
  except Exception as e:  # TFDS raises many types; all mean "not there".
    hint = ("run once with --config.data.download=True on a machine with "
            "internet" if not download else "check the network and data_dir")
    raise UEError(f"TFDS could not load {name}:{split} from data_dir="
                  f"{data_dir or '~/tensorflow_datasets'} "
                  f"({type(e).__name__}); {hint}") from None
  images = np.concatenate([x for x, _ in parts])
  labels = np.concatenate([y for _, y in parts])
  return make_dataset(images, labels, NUM_CLASSES[name], name)


# ------------------------------------------------------------ image folders
def load_folder(name: str, *, path: str = "", train_path: str = "",
                test_path: str = "", image_size: int = 0,
                cache_dir: str = "") -> Tuple[Dataset, Dataset]:
  """(train, test) of an image-folder source (folder_source.load); the
  class count and names are the folder's."""
  # Imported here: only a folder source reads image folders.
  from ue_jax.io import folder_source  # pylint: disable=g-import-not-at-top
  arrays = folder_source.load(path=path, train_path=train_path,
                              test_path=test_path, image_size=image_size,
                              cache_dir=cache_dir)
  names = tuple(str(n) for n in arrays["class_names"])
  return tuple(make_dataset(arrays[f"{s}_images"], arrays[f"{s}_labels"],
                            len(names), name, names)
               for s in ("train", "test"))


# ------------------------------------------------------------------- loading
def resolve_source(name: str, source: str, data_dir: str) -> str:
  """What `auto` means: IDX files for (Fashion-)MNIST when a folder is known
  (Fashion-MNIST: Debian's by default), else TFDS."""
  if source != "auto":
    return source
  if name in ("fashion_mnist", "mnist") and (
      data_dir or os.environ.get(DATA_DIR_ENV) or name == "fashion_mnist"):
    return "idx"
  return "tfds"


def load(name: str, *, source: str = "auto", data_dir: str = "",
         train_path: str = "", test_path: str = "", download: bool = False,
         path: str = "", image_size: int = 0, cache_dir: str = ""
         ) -> Tuple[Dataset, Dataset]:
  """Returns (train, test) for a dataset name and source; fails fast.
  `path`, `image_size` and `cache_dir` are the folder source's."""
  known = set(TFDS_NAMES)
  if source not in SOURCES:
    raise UEError(f"unknown data.source {source!r}; choose one of "
                  f"{', '.join(SOURCES)}")
  source = resolve_source(name, source, data_dir)
  if source == "folder":
    return load_folder(name, path=path, train_path=train_path,
                       test_path=test_path, image_size=image_size,
                       cache_dir=cache_dir)
  if source != "npz" and name not in known:
    raise UEError(f"unknown dataset {name!r}; choose one of {sorted(known)} "
                  "or data.source=npz with data.train_path/test_path (or "
                  "data.source=folder with data.path)")
  if source == "npz":
    if not train_path or not test_path:
      raise UEError("data.source=npz needs data.train_path and data.test_path")
    train = load_npz(train_path, NUM_CLASSES.get(name), name)
    return train, load_npz(test_path, train.num_classes, name)
  if source == "idx":
    folder = data_dir or os.environ.get(DATA_DIR_ENV) or DEBIAN_FASHION_MNIST
    if not os.path.isdir(folder):
      raise UEError(
          f"data folder {folder} does not exist; for Fashion-MNIST run "
          "`sudo apt-get install dataset-fashion-mnist`, or point "
          f"--config.data.data_dir (or ${DATA_DIR_ENV}) at a folder holding "
          "the IDX files")
    classes = NUM_CLASSES.get(name, 10)
    return (load_idx(folder, "train", classes, name),
            load_idx(folder, "test", classes, name))
  return (load_tfds(name, "train", data_dir or None, download),
          load_tfds(name, "test", data_dir or None, download))


MODEL_ORDERS = ("shuffled", "stored")


def walk_order(n: int, *, kind: str, seed: int):
  """The order the generator's model steps walk the training set in.

  "stored": rows 0..n-1 as stored (None), the original's unshuffled loader,
  which is only sound when the stored order is already mixed (CIFAR-10's
  binary files, the IDX files). "shuffled": one seeded permutation, fixed for
  the whole search (so a resumed run walks the same batches); on data stored
  class by class, as an image-folder tree is, "stored" would give every
  model step one or two classes and the search never leaves chance.
  """
  if kind == "stored":
    return None
  if kind != "shuffled":
    raise ValueError(f"unknown model order {kind!r}")
  return np.random.default_rng([seed, 0x3A1C]).permutation(n).astype(np.int32)


def classes_per_batch(labels: np.ndarray, batch_size: int, *, order=None,
                      batches: int = 4) -> int:
  """The fewest classes among the walk's first `batches` model batches (a
  class-sorted stored order gives 1 or 2)."""
  n = len(labels)
  rows = np.arange(batches * batch_size) % n
  if order is not None:
    rows = order[rows]
  return min(len(np.unique(chunk))
             for chunk in np.split(labels[rows], batches))


def batches(n: int, batch_size: int):
  """Yields index arrays covering 0..n-1 in order, each padded to batch_size
  with the out-of-range value n (so every batch has one shape)."""
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    yield np.where(rows < n, rows, n).astype(np.int32)


def gather(ds: Dataset, rows: np.ndarray) -> dict:
  """A batch dict for padded `rows` (value len(ds) marks padding)."""
  valid = rows < len(ds)
  safe = np.where(valid, rows, 0)
  return {"image": ds.images[safe], "label": ds.labels[safe],
          "index": rows.astype(np.int32), "mask": valid.astype(np.float32)}
