"""Datasets on the mesh: images on the devices, sharded by rows, fed by index.

A `DeviceData` holds a dataset's uint8 images as one global array
[N_pad, H, W, C] sharded by rows exactly like the sample-wise noise
(sharding.py: N_pad = ceil(N / D) * D, the padding rows zero and never
read). Each process builds it from its own contiguous block of rows only
(`Placement.put_rows`, `jax.make_array_from_process_local_data`), so after
loading no host holds more of the images than its block, and each device
holds N_pad / D rows.

What stays whole on every host is the small per-example metadata: labels,
source indices (and, in release.py, the protected mask), a few bytes an
example. Every shuffle and batch order is therefore computed on the host
from global row numbers exactly as before, and results do not depend on
the device or process count.

A batch is fed as row numbers: `batch(rows)` gives the labels, indices and
mask as host arrays (each process puts its share of the batch rows on the
mesh in `Placement.put_batch`) and the images as the dataset's device array
and the batch's rows of it, which every jitted step turns into the {image,
label, index, mask} batch the step functions take, with the same values as
`data.gather` on the whole set, inside its own program
(`sharding.gather_images`). Subsets (the class-wise fit set, the clean
remainder, test groups) are views of the same device images through a map of
rows: taking one copies no image.

Reading, per source: an .npz written by np.savez (stored, not compressed)
is memory-mapped, so a process reads only the image rows of its block; IDX
files (gzip) and TFDS splits are read whole into each process's memory (their
formats stream the whole file), and only the block is kept once the data is
on the mesh.
"""

from typing import Optional, Union

import jax
import numpy as np
from absl import logging

from ue_jax.io import data as data_lib
from ue_jax.parallel import sharding


class DeviceData:
  """A dataset whose images live on the mesh (see the module docstring).

  `images`: the global uint8 array [N_pad, H, W, C] (of the base set, for a
  view); `base_rows`: the base rows of this set's examples (None: 0..n-1);
  `block`: the rows [lo, hi) of N_pad this process supplied;
  `class_names`: as the Dataset it came from."""

  def __init__(self, placement: sharding.Placement, images: jax.Array,
               labels: np.ndarray, source_index: np.ndarray,
               num_classes: int, name: str = "", *,
               base_rows: Optional[np.ndarray] = None, block=(0, 0),
               class_names=()):
    self.placement, self.images = placement, images
    self.labels, self.source_index = labels, source_index
    self.num_classes, self.name = num_classes, name
    self.class_names = tuple(class_names)
    self.base_rows, self.block = base_rows, tuple(block)

  def __len__(self):
    return len(self.labels)

  @property
  def image_shape(self):
    return tuple(self.images.shape[1:])

  @property
  def index(self) -> np.ndarray:
    return np.arange(len(self), dtype=np.int32)

  def take(self, rows: np.ndarray) -> "DeviceData":
    """The examples `rows` of this set, as a view (no image is copied)."""
    rows = np.asarray(rows, np.int64)
    base = rows if self.base_rows is None else self.base_rows[rows]
    return DeviceData(self.placement, self.images, self.labels[rows],
                      self.source_index[rows], self.num_classes, self.name,
                      base_rows=base, block=self.block,
                      class_names=self.class_names)

  def replace_images(self, images: jax.Array) -> "DeviceData":
    """The same examples with other images (rows as `self.images`)."""
    if images.shape != self.images.shape:
      raise ValueError(f"images {images.shape}, expected "
                       f"{self.images.shape}")
    return DeviceData(self.placement, images, self.labels, self.source_index,
                      self.num_classes, self.name, base_rows=self.base_rows,
                      block=self.block, class_names=self.class_names)

  def host_images(self) -> np.ndarray:
    """All of this set's images as one numpy array on every process,
    gathered in chunks (for host-side work on the whole set: JPEG, the
    shortcut noises' statistics)."""
    full = np.concatenate([rows for _, rows in self.placement.host_chunks(
        self.images, self.images.shape[0])])
    return full[:len(self)] if self.base_rows is None else full[self.base_rows]

  def batch(self, rows: np.ndarray) -> dict:
    """The batch of padded `rows` (value len(self) marks padding) for a
    jitted step (sharding.gather_images makes its `image`), as `data.gather`
    gives it: padding rows repeat example 0, with mask 0."""
    rows = np.asarray(rows)
    valid = rows < len(self)
    safe = np.where(valid, rows, 0)
    base = safe if self.base_rows is None else self.base_rows[safe]
    return {sharding.IMAGES: self.images,
            sharding.ROWS: base.astype(np.int32),
            "label": self.labels[safe], "index": rows.astype(np.int32),
            "mask": valid.astype(np.float32)}


def place(ds: Union[data_lib.Dataset, DeviceData],
          placement: sharding.Placement, rows: Optional[np.ndarray] = None,
          *, what: str = "") -> DeviceData:
  """`ds` (or its examples `rows`, in that order) on the mesh of `placement`;
  this process reads only the image rows of its block (from a memory-mapped
  source, nothing else). A DeviceData is returned as it is."""
  if isinstance(ds, DeviceData):
    return ds if rows is None else ds.take(rows)
  labels, source_index = ds.labels, ds.source_index
  if rows is not None:
    labels, source_index = labels[rows], source_index[rows]

  def read(lo, hi):
    return ds.images[lo:hi] if rows is None else ds.images[rows[lo:hi]]

  n = len(labels)
  images = placement.put_rows(n, read, ds.images.shape[1:], np.uint8)
  block = placement.local_rows(placement.padded(n))
  if what:
    logging.info("%s: process %d holds image rows [%d, %d) of %d (%d rows "
                 "per device)", what, jax.process_index(), *block,
                 placement.padded(n), placement.padded(n) // placement.size)
  return DeviceData(placement, images, labels, source_index, ds.num_classes,
                    ds.name, block=block,
                    class_names=getattr(ds, "class_names", ()))


def on_mesh(mesh_data: int, *sets):
  """(placement, *sets): the placement of the first DeviceData among `sets`,
  else one over `mesh_data` devices (0 = all), and each set on it. A host
  Dataset (a library caller's or a test's) is placed from this process's
  memory; None stays None."""
  placement = next((s.placement for s in sets if isinstance(s, DeviceData)),
                   None)
  placement = placement or sharding.Placement(sharding.make_mesh(mesh_data))
  return (placement,
          *(None if s is None else place(s, placement) for s in sets))
