"""Drivers of the shortcut noise kinds (core/shortcuts.py): no model, no
search loop; each writes DIR/noise.npy (sample-wise, [N, H, W, C]) as the
random baseline does (baselines.random_noise) and returns the generation
summary, so the release and evaluate stages run unchanged.

- ar: per-class AR filters (found from the seed), a fresh sample of the
  class's process per image, scaled to `noise.ar_norm`.
- lsp: per-image points of class clusters, upsampled to
  `noise.lsp_patch`-pixel blocks, L2-scaled and clipped to eps.
- ops: the one-pixel shortcut; its noise is v - x at one pixel per image
  (not eps-bounded) and is released with `release.one_pixel`.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ue_jax.core import shortcuts
from ue_jax.io import artifacts

KINDS = ("ar", "lsp", "ops")
AR_MIN_RESPONSE = 10.0  # the AR paper's, for 3 channels; scaled by C / 3


def _host_images(train) -> np.ndarray:
  """All training images (uint8 [N, H, W, C]) on the host: a Dataset's, or
  a DeviceData's gathered in chunks."""
  if hasattr(train, "host_images"):
    return train.host_images()
  return np.asarray(train.images)


def ar_filters(cfg, train):
  """The config's per-class AR filters [K, 3, 3, C] (seeded)."""
  h, w, c = train.image_shape
  key = jax.random.fold_in(jax.random.key(cfg.seed), 11)
  return shortcuts.ar_filters(key, train.num_classes, c, height=h, width=w,
                              crop=cfg.noise.ar_crop,
                              min_response=AR_MIN_RESPONSE * c / 3)


def make_noise(cfg, train) -> tuple:
  """(noise [N, H, W, C] float32 numpy, extra summary fields)."""
  n = cfg.noise
  key = jax.random.fold_in(jax.random.key(cfg.seed), 12)
  labels = jnp.asarray(train.labels, jnp.int32)
  h, w, c = train.image_shape
  if n.kind == "ar":
    filters = ar_filters(cfg, train)
    noise = shortcuts.ar_noise(key, filters, labels, height=h, width=w,
                               eps=n.eps, crop=n.ar_crop, norm=n.ar_norm,
                               l2_eps=n.ar_l2_eps)
    extra = {"ar_filters": np.asarray(filters).tolist()}
  elif n.kind == "lsp":
    noise = shortcuts.lsp_noise(key, labels, train.num_classes, (h, w, c),
                                eps=n.eps, patch=n.lsp_patch,
                                l2_eps=n.lsp_l2_eps)
    extra = {}
  elif n.kind == "ops":
    images = jnp.asarray(_host_images(train), jnp.float32) / 255.0
    picks = shortcuts.ops_pick(np.asarray(shortcuts.ops_scores(
        images, labels, num_classes=train.num_classes)))
    noise = shortcuts.ops_noise(images, labels, jnp.asarray(picks))
    extra = {"ops_pixels": [[int(p) // w, int(p) % w, int(v)]
                            for p, v in picks]}
  else:
    raise ValueError(f"unknown shortcut kind {n.kind!r}")
  return np.asarray(jax.device_get(noise), np.float32), extra


def shortcut_noise(cfg, train, workdir: str):
  """Writes the config's shortcut noise to DIR/noise.npy (by process 0);
  returns the generation summary."""
  start = time.perf_counter()
  noise, extra = make_noise(cfg, train)
  path = artifacts.save_npy(os.path.join(workdir, "noise.npy"), noise)
  seconds = time.perf_counter() - start
  logging.info("%s noise for %d images in %.1f s, max |noise| %.4f",
               cfg.noise.kind, len(noise), seconds, float(np.abs(noise).max()))
  return {"rounds": 0, "stop_reached": None, "generation_seconds": seconds,
          "noise_max_abs": float(np.abs(noise).max()), "noise_path": path,
          **extra}
