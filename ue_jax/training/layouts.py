"""Noise layouts: what differs, on the host, between sample-wise and class-wise
noise. The generation loop (search/generate.py) and the jitted steps
(core/steps.py, `layout=` bound at the jit boundary) are shared.

- samplewise: noise [N,H,W,C], one row per training example (keyed by the
  example's index); fitted and stop-tested on the whole training set, its
  noise batches in dataset order every round (docs/method.md §2).
- classwise: noise [classes,H,W,C], one row per class (keyed by label);
  fitted and stop-tested on a seeded class-stratified subset of the training
  set (the original's 20 %), in a freshly shuffled order every round, while
  the model steps walk the whole training set (docs/method.md §3).
"""

from typing import Iterator, Sequence, Tuple

import numpy as np

from ue_jax.core import noise as noise_lib
from ue_jax.io import data as data_lib


def noise_shape(layout: str, train) -> Tuple[int, ...]:
  """For a Dataset or a device_data.DeviceData."""
  if noise_lib.samplewise(layout):
    return (len(train), *train.image_shape)
  return (train.num_classes, *train.image_shape)


def fit_set(layout: str, train, *, fraction: float, seed: int,
            classes: Sequence[int] = ()):
  """The examples the noise is fitted and stop-tested on. Class-wise: a
  class-stratified `fraction` of `train` (at least one example per class;
  all of it at 1.0); its `index` no longer matches `train`'s, which
  class-wise noise (keyed by label) never reads. A subset of a DeviceData
  is a view of its images. Sample-wise: all of `train`, or with `classes`
  (noise.fit_classes) the examples of those classes, keyed by their rows
  of `train` (FitRows). Class-wise with `classes`: the subset's examples of
  those classes (the other classes' noise is never fitted)."""
  labels = np.asarray(train.labels)
  if noise_lib.samplewise(layout):
    if not classes:
      return train
    return FitRows(train, np.flatnonzero(np.isin(labels, classes)))
  size = max(train.num_classes, int(round(fraction * len(train))))
  if not classes:
    return data_lib.stratified_subset(train, size, seed)
  rows = data_lib.stratified_rows(train, size, seed)  # None: all of train
  rows = np.arange(len(train)) if rows is None else rows
  return FitRows(train, rows[np.isin(labels[rows], classes)])


class FitRows:
  """The examples `rows` of `train` as a fit set for sample-wise noise:
  batch k of it is train's batch of those rows, so each example's `index`
  (its noise row) is its row of `train`; a padding slot becomes train's
  padding (row len(train): mask 0, index past the noise's rows)."""

  def __init__(self, train, rows: np.ndarray):
    self.train, self.rows = train, np.asarray(rows, np.int64)
    self.labels = np.asarray(train.labels)[self.rows]
    self.num_classes = train.num_classes

  def __len__(self):
    return len(self.rows)

  def batch(self, rows: np.ndarray) -> dict:
    rows = np.asarray(rows)
    inside = rows < len(self.rows)
    mapped = self.rows[np.minimum(rows, len(self.rows) - 1)]
    return self.train.batch(np.where(inside, mapped, len(self.train)))


def noise_batches(layout: str, n: int, batch_size: int, *, seed: int,
                  round_: int) -> Iterator[np.ndarray]:
  """One round's noise batches over 0..n-1, padded with n to batch_size.
  Sample-wise: in order (the original's unshuffled loader). Class-wise: in
  an order shuffled per round, seeded by (seed, round), so a resumed round
  sees the same batches; the last batch is padded, not dropped."""
  if noise_lib.samplewise(layout):
    yield from data_lib.batches(n, batch_size)
    return
  order = np.random.default_rng([seed, 7, round_]).permutation(n)
  for rows in data_lib.batches(n, batch_size):
    yield np.where(rows < n, order[np.minimum(rows, n - 1)], n).astype(
        np.int32)


def per_example(layout: str, noise: np.ndarray,
                labels: np.ndarray) -> np.ndarray:
  """The noise of every example: noise[label] for class-wise noise."""
  return noise if noise_lib.samplewise(layout) else noise[labels]
