"""The reference set of the folder tool: other people's classes, searched
beside a data owner's own photos (one class, or a few) and never written.

The error-minimizing search needs examples of other classes to minimize the
loss against; a person's photos are often one class. `load` reads a
class-folder tree or tar (`<class>/<image>`), or a dataset root with
`train/<class>/...` and `test/<class>/...` (its train split; e.g. the
CIFAR-10 copy), through folder_source.py. Classes named as one of the
owner's are left out (their images are the owner's to protect, not a
reference). At most `limit` images are kept, a seeded class-stratified
subset, each decoded upright and squeezed to the working size as the
owner's copies are (image_folder.to_working).
"""

import dataclasses
import hashlib
from typing import Sequence, Tuple

import numpy as np
from absl import logging

from ue_jax.io import data as data_lib
from ue_jax.io import folder_source
from ue_jax.io import image_folder as folder_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.runtime.errors import UEError


@dataclasses.dataclass(frozen=True)
class Reference:
  """uint8 images [n, s, s, c], int labels [n] (into `classes`), the class
  names, and a digest of the images, labels and names (a workdir's record)."""
  images: np.ndarray
  labels: np.ndarray
  classes: Tuple[str, ...]
  digest: str


def split_of(path: str) -> folder_source.Split:
  """The labelled files of a reference: the train split of a dataset root,
  else the class tree itself."""
  try:
    return folder_source.splits_of_root(path)[0]
  except UEError:
    return folder_source.split_of_tree(path, "--reference")


def stratified_names(split: folder_source.Split, keep: np.ndarray,
                     limit: int, seed: int) -> np.ndarray:
  """Rows of `split` among `keep` (a mask): all when `limit` is 0 or not
  smaller, else a seeded subset with the classes as even as they allow."""
  rows = np.flatnonzero(keep)
  if not limit or limit >= len(rows):
    return rows
  rng = np.random.default_rng([seed, 11])
  by_class = [rng.permutation(rows[split.labels[rows] == c])
              for c in np.unique(split.labels[rows])]
  picked, k = [], 0
  while len(picked) < limit:  # round robin over the shuffled classes
    for members in by_class:
      if k < len(members) and len(picked) < limit:
        picked.append(members[k])
    k += 1
  return np.sort(np.asarray(picked, np.int64))


def load(path: str, *, size: int, channels: int, exclude: Sequence[str] = (),
         limit: int = 0, seed: int = 0) -> Reference:
  """The reference images at the working size (see the module docstring);
  raises UEError with one line when the path holds no usable classes."""
  folder_source.check_exists(path, "--reference")
  split = split_of(path)
  dropped = sorted(set(split.classes) & set(exclude))
  if dropped:
    logging.info("--reference: class(es) %s share a name with the input's "
                 "and are left out", ", ".join(dropped))
  classes = tuple(c for c in split.classes if c not in dropped)
  if not classes:
    raise UEError(f"--reference {path} has no class other than the input's "
                  f"({', '.join(dropped)}); give images of other classes")
  keep = np.isin(np.asarray(split.classes)[split.labels], classes)
  rows = stratified_names(split, keep, limit, seed)
  new_label = {split.classes.index(c): i for i, c in enumerate(classes)}
  images = np.zeros((len(rows), size, size, channels), np.uint8)
  labels = np.zeros(len(rows), np.int64)
  progress = metrics_lib.Progress("protect: read reference", len(rows), "img")
  for i, row in enumerate(rows):
    name = split.names[row]
    try:
      picture = folder_lib.from_bytes(split.tree.read(name), name=name)
    except (folder_lib.BadFile, OSError) as e:
      raise UEError(f"--reference {path}: {name} is unusable: {e}") from None
    images[i] = folder_lib.to_working(picture, size=size, channels=channels)
    labels[i] = new_label[int(split.labels[row])]
    progress.update(1)
  digest = hashlib.sha256(images.tobytes() + labels.tobytes()
                          + "\n".join(classes).encode()).hexdigest()
  return Reference(images, labels, classes, digest)


def joined(images: np.ndarray, labels: Sequence[int], classes: Sequence[str],
           ref: Reference, name: str = "folder"):
  """The owner's working copies (rows 0..n-1, as the noise rows the copies
  are written with) followed by the reference's, as one Dataset whose
  classes are the owner's then the reference's."""
  if ref.images.shape[1:] != images.shape[1:]:
    raise UEError(f"the reference images are {ref.images.shape[1:]}, the "
                  f"input's {images.shape[1:]}; this is a bug")
  k = len(classes)
  return data_lib.make_dataset(
      np.concatenate([images, ref.images]),
      np.concatenate([np.asarray(labels, np.int64), ref.labels + k]),
      k + len(ref.classes), name, tuple(classes) + ref.classes)
