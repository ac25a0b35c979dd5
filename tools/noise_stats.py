"""How strong a release's shortcut is compared with the images' own content.

Reads a finished workdir (its config.json and release) and prints, for the
perturbation actually released (released - original, in [0,1] units) and for
the clean images:
- mean |perturbation| (in 1/255) and the fraction of pixels at the eps bound;
- nearest-class-mean accuracy (class means from even rows, tested on odd
  rows): near 1.0 means the perturbation alone names the class;
- the share of variance between classes;
- the norm of each class's mean deviation from the overall mean, for the
  perturbation and for the content: a linear learner picks up first the
  feature whose class means differ most;
- how visible it is (evaluation/quality.py): PSNR, SSIM and mean |change|
  of the released images against the originals, over the protected ones.

  python tools/noise_stats.py --workdir=runs/fmnist
"""

import json
import os
import sys

import ml_collections
import numpy as np
from absl import app
from absl import flags

from ue_jax import pipeline
from ue_jax.evaluation import quality

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "a finished ue_jax workdir",
                               required=True)


def class_stats(z: np.ndarray, labels: np.ndarray, classes: int):
  """(nearest-class-mean accuracy, between-class variance share,
  per-class norms of the class-mean deviation) of rows `z`."""
  even, odd = np.arange(0, len(z), 2), np.arange(1, len(z), 2)
  means = np.stack([z[even][labels[even] == c].mean(0) for c in range(classes)])
  dist = ((z[odd][:, None, :] - means[None]) ** 2).sum(-1)
  ncm = float((np.argmin(dist, 1) == labels[odd]).mean())
  mu = z.mean(0)
  dev = np.stack([z[labels == c].mean(0) - mu for c in range(classes)])
  counts = np.bincount(labels, minlength=classes)
  between = float((counts[:, None] * dev ** 2).sum() / ((z - mu) ** 2).sum())
  return ncm, between, np.linalg.norm(dev, axis=1)


def main(_):
  workdir = _WORKDIR.value
  with open(os.path.join(workdir, "config.json")) as f:
    stored = json.load(f)["config"]
  # Workdirs of older versions lack newer fields: start from the defaults.
  cfg = common.base()
  cfg.update(ml_collections.ConfigDict(stored))
  train, _ = pipeline.load_data(cfg)
  release = np.load(os.path.join(workdir, "release", "unlearnable_train.npz"))
  n, k = len(train), train.num_classes
  x = train.images.reshape(n, -1).astype(np.float32) / 255.0
  delta = release["images"].reshape(n, -1).astype(np.float32) / 255.0 - x
  bound = np.floor(cfg.noise.eps * 255 + 1e-6) / 255
  print(f"{workdir}: {n} images, eps {cfg.noise.eps * 255:.1f}/255")
  print(f"mean |perturbation| {np.abs(delta).mean() * 255:.2f}/255; at the "
        f"bound {np.mean(np.abs(delta) >= bound - 1e-6):.3f}; on zero pixels "
        f"{delta[x == 0].mean() * 255:+.2f}/255 on average")
  seen = quality.summary(train.images, release["images"],
                         release["protected"].astype(bool))
  print(f"visibility over the {seen['images']} protected images: PSNR "
        f"{seen['psnr_db']:.2f} dB, SSIM {seen['ssim']:.4f}, mean |change| "
        f"{seen['mean_abs_change_255']:.2f}/255")
  for name, z in (("perturbation", delta), ("content", x)):
    ncm, between, norms = class_stats(z, train.labels, k)
    print(f"{name:12s} nearest-class-mean accuracy {ncm:.3f}, between-class "
          f"variance share {between:.3f}, class-mean deviation norms "
          f"{[round(float(v), 2) for v in norms]}")


if __name__ == "__main__":
  app.run(main)
