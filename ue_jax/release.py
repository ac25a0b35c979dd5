"""Release: apply the noise to the uint8 images, write the unlearnable dataset
(.npz: images, labels, indices, protected), and draw the paper-style figure.

Class-wise noise is applied as noise[label]. With partial protection
(`partial.rate` < 1 or `partial.classes`) only the selected examples carry
noise and the others are released clean; `protected` records which.
"""

import os

import numpy as np

from ue_jax import artifacts
from ue_jax import data as data_lib
from ue_jax import layouts
from ue_jax import noise as noise_lib
from ue_jax.errors import UEError


def noise_path(cfg, workdir: str) -> str:
  return cfg.release.noise_path or os.path.join(workdir, "noise.npy")


def release_path(workdir: str) -> str:
  return os.path.join(workdir, "release", "unlearnable_train.npz")


def load_noise(cfg, train: data_lib.Dataset, workdir: str):
  """The noise to release, checked against the data (shape, finite, eps)."""
  return artifacts.load_noise(
      noise_path(cfg, workdir),
      shape=layouts.noise_shape(cfg.noise.layout, train), eps=cfg.noise.eps)


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


def protection(cfg, train: data_lib.Dataset) -> np.ndarray:
  p = cfg.partial
  return select_protected(train.labels, rate=p.rate,
                          classes=tuple(p.classes), seed=cfg.seed)


def run(cfg, train: data_lib.Dataset, workdir: str, *, noise=None):
  """Releases `noise` (loaded from the workdir or release.noise_path when
  None) on the protected examples; the others are released clean."""
  eps = cfg.noise.eps
  if noise is None:
    noise = load_noise(cfg, train, workdir)
  noise = layouts.per_example(cfg.noise.layout, noise, train.labels)
  protected = protection(cfg, train)
  released = noise_lib.release_images(train.images, noise, eps=eps,
                                      paper_release=cfg.noise.paper_release)
  released = np.where(protected[:, None, None, None], released, train.images)
  change = np.abs(released.astype(np.int16) - train.images.astype(np.int16))
  if change.max() > noise_lib.max_delta_u8(eps):
    raise UEError(f"released images leave the eps-ball ({change.max()} > "
                  f"{noise_lib.max_delta_u8(eps)}); this is a bug")
  path = artifacts.save_npz(
      release_path(workdir), images=released, labels=train.labels,
      indices=train.source_index, protected=protected)
  figure = artifacts.save_figure(
      os.path.join(workdir, "figure.png"),
      figure_rows(train, noise, released, eps=eps, protected=protected))
  count = int(protected.sum())
  return {"release_path": path, "figure_path": figure,
          "release_max_pixel_change": int(change.max()),
          "release_mean_abs_pixel_change": float(change.mean()),
          "poison_rate": count / len(train), "protected_count": count,
          "protection": {"rate": cfg.partial.rate,
                         "classes": [int(c) for c in cfg.partial.classes],
                         "seed": cfg.seed}}


def figure_rows(train: data_lib.Dataset, noise, released, *, eps: float,
                rows: int = 6, protected=None):
  """Rows of original | noise (rescaled from [-eps, eps] to [0, 1]) |
  unlearnable image, one row per class among the first classes (a protected
  example of it where there is one)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  if protected is None:
    protected = np.ones(len(train), bool)
  picks = []
  for c in np.unique(train.labels)[:rows]:
    members = train.labels == c
    chosen = np.flatnonzero(members & protected)
    picks.append(int((chosen if len(chosen) else np.flatnonzero(members))[0]))
  fig, axes = plt.subplots(len(picks), 3, figsize=(4.5, 1.5 * len(picks)),
                           squeeze=False)
  cmap = "gray" if train.images.shape[-1] == 1 else None
  for r, i in enumerate(picks):
    shown = (train.images[i], (noise[i] / eps + 1.0) / 2.0, released[i])
    for c, img in enumerate(shown):
      img = np.squeeze(img, -1) if img.shape[-1] == 1 else img
      vmax = 255 if img.dtype == np.uint8 else 1.0
      axes[r, c].imshow(img, cmap=cmap, vmin=0, vmax=vmax)
      axes[r, c].axis("off")
  for c, title in enumerate(("original", f"noise (±{eps * 255:.0f}/255, "
                             "amplified)", "unlearnable")):
    axes[0, c].set_title(title, fontsize=7)
  fig.tight_layout()
  return fig
