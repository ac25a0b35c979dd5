"""Release: apply the noise to the uint8 images, write the unlearnable dataset
(.npz: images, labels, indices, protected), and draw the paper-style figure.

Class-wise noise is applied as noise[label]. With partial protection
(`partial.rate` < 1 or `partial.classes`) only the selected examples carry
noise and the others are released clean; `protected` records which.

The release is computed on the mesh, where the training images already are
(device_data.py): the sample-wise noise is read from noise.npy by each
process for its block of rows only (a memory map), sharded by rows like the
images; class-wise noise (one row per class) is replicated. The released
images stay on the mesh for the evaluate stage and go to the .npz in chunks
of rows gathered to the hosts (`Placement.host_chunks`), which process 0
streams into the archive (npz.StreamWriter, the bytes np.savez writes): no
host holds more than one chunk of them. The figure fetches its few rows only.
"""

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.parallel import device_data
from ue_jax.training import layouts
from ue_jax.core import noise as noise_lib
from ue_jax.runtime.errors import UEError


class Release(NamedTuple):
  """A released training set and which of its examples carry noise."""
  images: device_data.DeviceData
  protected: np.ndarray


def noise_path(cfg, workdir: str) -> str:
  return cfg.release.noise_path or os.path.join(workdir, "noise.npy")


def release_path(workdir: str) -> str:
  return os.path.join(workdir, "release", "unlearnable_train.npz")


def bound(cfg) -> float:
  """The L-inf bound the noise and the release are held to: noise.eps, or
  1 (any value) for the one-pixel release, which is held to L0 = 1."""
  return 1.0 if cfg.release.one_pixel else cfg.noise.eps


def load_noise(cfg, train, workdir: str):
  """The noise to release, checked against the data (shape, finite, eps;
  one-pixel: at most one changed pixel per image), as a memory map of the
  file (read in chunks to check it)."""
  path = noise_path(cfg, workdir)
  noise = artifacts.load_noise(
      path, shape=layouts.noise_shape(cfg.noise.layout, train),
      eps=bound(cfg))
  if cfg.release.one_pixel:
    for lo in range(0, len(noise), 4096):
      pixels = np.any(noise[lo:lo + 4096] != 0, axis=-1).sum(axis=(1, 2))
      if pixels.max(initial=0) > 1:
        raise UEError(f"noise file {path} changes {int(pixels.max())} pixels "
                      "of an image; release.one_pixel allows one")
  return noise


def select_protected(labels: np.ndarray, *, rate: float, classes=(),
                     seed: int) -> np.ndarray:
  """Which examples carry noise (bool [N]): every example of `classes` when
  given, else a seeded uniform random int(N * rate) of them (as the
  original's poison_rate, not class-stratified)."""
  n = len(labels)
  if classes:
    return np.isin(labels, np.asarray(classes, dtype=labels.dtype))
  protected = np.zeros(n, bool)
  rows = np.random.default_rng([seed, 3]).permutation(n)[:int(n * rate)]
  protected[rows] = True
  return protected


def protection(cfg, train) -> np.ndarray:
  """partial's selection; with noise.fit_classes (the other classes' noise
  is zero) and no partial selection, the examples of those classes."""
  p = cfg.partial
  classes = tuple(p.classes)
  if not classes and p.rate == 1.0:
    classes = tuple(cfg.noise.fit_classes)
  return select_protected(train.labels, rate=p.rate, classes=classes,
                          seed=cfg.seed)


@functools.partial(jax.jit, static_argnames=("eps", "paper_release"))
def _release(images, noise, protected, *, eps: float, paper_release: bool):
  """Released images (protected rows only), each row's summed |change| and
  the largest change: noise_lib.release_images on the mesh."""
  released = noise_lib.release_images(images, noise, eps=eps,
                                      paper_release=paper_release)
  released = jnp.where(protected[:, None, None, None], released, images)
  change = jnp.abs(released.astype(jnp.int32) - images.astype(jnp.int32))
  changed_pixels = jnp.sum(jnp.any(change > 0, axis=-1), axis=(1, 2))
  return (released, jnp.sum(change, axis=(1, 2, 3)), jnp.max(change),
          jnp.max(changed_pixels))


def place_noise(cfg, train: device_data.DeviceData, noise):
  """The noise of every example, on the mesh as the images are: sample-wise
  rows from this process's block of `noise` only; class-wise noise[label]
  from the replicated class noise."""
  placement, n = train.placement, len(train)
  if noise_lib.samplewise(cfg.noise.layout):
    return placement.put_rows(n, lambda lo, hi: noise[lo:hi],
                              noise.shape[1:], np.float32)
  labels = placement.put_rows(n, lambda lo, hi: train.labels[lo:hi], (),
                              np.int32)
  return _per_example(placement.replicate(np.asarray(noise, np.float32)),
                      labels)


@jax.jit
def _per_example(class_noise, labels):
  return layouts.per_example("classwise", class_noise, labels)


def release(cfg, train, workdir: str, *, noise=None):
  """Releases `noise` (loaded from the workdir or release.noise_path when
  None; else an array, whole) on the protected examples; the others are
  released clean. Returns (summary, Release with the images on the mesh)."""
  eps = bound(cfg)
  placement, train = device_data.on_mesh(cfg.mesh.data, train)
  if train.base_rows is not None:
    raise UEError(f"release the whole training set, not a subset of it "
                  f"({len(train)} of its rows were given)")
  if noise is None:
    noise = load_noise(cfg, train, workdir)
  n = len(train)
  protected = protection(cfg, train)
  noise = place_noise(cfg, train, noise)
  released, row_change, max_change, max_pixels = _release(
      train.images, noise,
      placement.put_rows(n, lambda lo, hi: protected[lo:hi], (), bool),
      eps=eps, paper_release=cfg.noise.paper_release)
  max_change = int(jax.device_get(max_change))
  if max_change > noise_lib.max_delta_u8(eps):
    raise UEError(f"released images leave the eps-ball ({max_change} > "
                  f"{noise_lib.max_delta_u8(eps)}); this is a bug")
  max_pixels = int(jax.device_get(max_pixels))
  if cfg.release.one_pixel and max_pixels > 1:
    raise UEError(f"the one-pixel release changes {max_pixels} pixels of an "
                  "image; this is a bug")
  change_sum = sum(int(rows.astype(np.int64).sum())
                   for _, rows in placement.host_chunks(row_change, n))
  path = release_path(workdir)
  with artifacts.NpzWriter(path) as out:
    out.begin("images", (n, *train.image_shape), np.uint8)
    for _, rows in placement.host_chunks(released, n):
      out.write(rows)
    out.add("labels", train.labels)
    out.add("indices", train.source_index)
    out.add("protected", protected)
  picks = figure_picks(train.labels, protected)
  shown = [placement.host_rows(a, picks) for a in (train.images, noise,
                                                released)]
  names = data_lib.class_names(train)
  figure = artifacts.save_figure(
      os.path.join(workdir, "figure.png"),
      figure_rows(*shown, eps=eps,
                  row_labels=[names[train.labels[p]] for p in picks]))
  count = int(protected.sum())
  summary = {"release_path": path, "figure_path": figure,
             "release_max_pixel_change": max_change,
             "release_mean_abs_pixel_change": change_sum / (
                 n * int(np.prod(train.image_shape))),
             "release_max_changed_pixels": max_pixels,
             "poison_rate": count / n, "protected_count": count,
             "protection": {"rate": cfg.partial.rate,
                            "classes": [int(c) for c in cfg.partial.classes],
                            "seed": cfg.seed}}
  return summary, Release(train.replace_images(released), protected)


def run(cfg, train, workdir: str, *, noise=None):
  """`release` without the released images: its summary."""
  return release(cfg, train, workdir, noise=noise)[0]


def figure_picks(labels: np.ndarray, protected: np.ndarray, rows: int = 6):
  """One example per class among the first `rows` classes: a protected one
  where the class has one."""
  picks = []
  for c in np.unique(labels)[:rows]:
    members = labels == c
    chosen = np.flatnonzero(members & protected)
    picks.append(int((chosen if len(chosen) else np.flatnonzero(members))[0]))
  return np.asarray(picks, np.int32)


def figure_rows(originals, noise, released, *, eps: float, row_labels=None):
  """Rows of original | noise (rescaled from [-eps, eps] to [0, 1]) |
  unlearnable image, one row per picked example (figure_picks), each row
  labelled on its left by `row_labels` (its class name) when given."""
  plt = artifacts.pyplot()

  fig, axes = plt.subplots(len(originals), 3,
                           figsize=(4.5, 1.5 * len(originals)), squeeze=False)
  cmap = "gray" if originals.shape[-1] == 1 else None
  for r in range(len(originals)):
    shown = (originals[r], (noise[r] / eps + 1.0) / 2.0, released[r])
    for c, img in enumerate(shown):
      img = np.squeeze(img, -1) if img.shape[-1] == 1 else img
      vmax = 255 if img.dtype == np.uint8 else 1.0
      axes[r, c].imshow(img, cmap=cmap, vmin=0, vmax=vmax)
      axes[r, c].axis("off")
    if row_labels is not None:  # a y label needs the axis on, frame hidden
      axes[r, 0].axis("on")
      axes[r, 0].set_xticks([])
      axes[r, 0].set_yticks([])
      for spine in axes[r, 0].spines.values():
        spine.set_visible(False)
      axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
  for c, title in enumerate(("original", f"noise (±{eps * 255:.0f}/255, "
                             "amplified)", "unlearnable")):
    axes[0, c].set_title(title, fontsize=7)
  fig.tight_layout()
  return fig
