"""What is done with a protected folder: the preview figure, and the
measurement of its protection against a held-out folder.

`compare` trains the evaluation recipe (cfg.evaluate, evaluate.train_model)
twice from the same initialisation: on the protected copies and on the
original files, both read back from disk and squeezed to the working
resolution as the search saw them, and scores both on the held-out images
(never in either training set). The protected model's clean accuracy is the
`unlearnable_test_accuracy`, the other the `clean_test_accuracy`.
"""

import os

import numpy as np

from ue_jax.core import noise as noise_lib
from ue_jax.evaluation import evaluate
from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.io import image_folder as folder_lib


def _rows(kept, records) -> np.ndarray:
  """The rows (in `kept`, the search's order) of the recorded copies."""
  where = {e.path: i for i, e in enumerate(kept)}
  return np.asarray([where[r["input"]] for r in records], np.int64)


def read_copies(records, output_dir: str, *, size: int, channels: int):
  """The protected copies at the working resolution, uint8 [n, s, s, c]."""
  out = np.zeros((len(records), size, size, channels), np.uint8)
  for i, r in enumerate(records):
    picture = folder_lib.read(os.path.join(output_dir, r["output"]))
    out[i] = folder_lib.to_working(picture, size=size, channels=channels)
  return out


def compare(cfg, train: data_lib.Dataset, kept, records, test, output_dir: str,
            workdir: str, log) -> dict:
  """Clean held-out accuracy of a model trained on the protected copies
  and of the same model trained on the originals (`train`: the working
  copies of `kept`, then any reference rows, which both trainings hold
  as they are)."""
  rows = _rows(kept, records)
  original = train.take(rows)
  size, channels = train.image_shape[0], train.image_shape[-1]
  protected = original.replace_images(
      read_copies(records, output_dir, size=size, channels=channels))
  change = np.abs(protected.images.astype(np.int16)
                  - original.images.astype(np.int16))
  if len(train) > len(kept):  # the reference set beside the copies
    rest = np.arange(len(kept), len(train))
    both = np.concatenate([rows, rest])
    original = train.take(both)
    protected = original.replace_images(np.concatenate(
        [protected.images, train.images[rest]]))
  log.drop(lambda r: r["stage"].startswith("evaluate_"))
  curves = {}
  for name, ds in (("unlearnable", protected), ("clean", original)):
    curves[name] = evaluate.train_model(cfg, ds, test,
                                        label=f"evaluate_{name}", log=log)
  figure = artifacts.save_figure(
      os.path.join(workdir, "curves.png"),
      evaluate.plot_curves(curves, test.num_classes))
  out = {"heldout_size": len(test), "curves_path": figure,
         "curves": {k: [r["test_accuracy"] for r in v]
                    for k, v in curves.items()},
         "working_max_abs_delta": int(change.max(initial=0)),
         "working_mean_abs_delta": float(change.mean())}
  for name, history in curves.items():
    out[f"{name}_test_accuracy"] = history[-1]["test_accuracy"]
    out[f"{name}_train_accuracy"] = history[-1]["train_accuracy"]
  return out


def preview(listing, kept, records, noise, output_dir: str, *, eps: float,
            layout: str, method: str, rows: int):
  """Rows of original | noise (at the file's size, rescaled from [-eps, eps]
  to [0, 1]) | protected copy (read back from disk), for the first file of
  each class, then further files, `rows` in all; color channels only."""
  plt = artifacts.pyplot()

  where = {e.path: i for i, e in enumerate(kept)}
  firsts, rest, seen = [], [], set()
  for r in records:
    (rest if r["label"] in seen else firsts).append(r)
    seen.add(r["label"])
  picks = (firsts + rest)[:rows]
  fig, axes = plt.subplots(len(picks), 3, figsize=(4.5, 1.6 * len(picks)),
                           squeeze=False)
  for r, record in enumerate(picks):
    row = where[record["input"]]
    entry = kept[row]
    original = folder_lib.read(os.path.join(listing.root, entry.path))
    copy = folder_lib.read(os.path.join(output_dir, record["output"]))
    width, height = original.size
    delta = folder_lib.to_native(
        noise[noise_lib.noise_row(layout, row, entry.label)], width=width,
        height=height, channels=original.color.shape[-1], eps=eps,
        method=method)
    shown = (original.color, (delta / eps + 1.0) / 2.0, copy.color)
    for c, img in enumerate(shown):
      img = np.squeeze(img, -1) if img.shape[-1] == 1 else img
      vmax = 255 if img.dtype == np.uint8 else 1.0
      axes[r, c].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0,
                        vmax=vmax)
      axes[r, c].axis("off")
    axes[r, 0].set_title(f"{entry.path}\n{width}x{height} {original.mode}",
                         fontsize=5)
  for c, title in enumerate(("", f"noise (±{eps * 255:.0f}/255, amplified)",
                             "protected copy")):
    if title:
      axes[0, c].set_title(title, fontsize=6)
  fig.tight_layout()
  return fig
