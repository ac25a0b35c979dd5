"""Evaluation: train a fresh model on the released images and, with the same
recipe and initialisation, on the clean images; record clean test accuracy per
epoch for both (docs/method.md §6; the reported number is the last epoch's).

For a partially protected release it also trains on the clean remainder
alone (the unprotected examples only: the paper's comparison), and with
whole protected classes it reports test accuracy on those classes and on the
others separately.

Every set trains from images on the mesh (device_data.py): the clean and
test images as loaded, the released ones as the release stage left them in
this process, or, run alone, read from the release file by each process for
its block of rows only. The remainder and the class groups are views.
"""

import os

import numpy as np
from absl import logging

from ue_jax.io import artifacts
from ue_jax.parallel import device_data
from ue_jax.io import metrics as metrics_lib
from ue_jax.evaluation import release as release_lib
from ue_jax.training import train as train_lib
from ue_jax.runtime.errors import UEError
from ue_jax.models import get_model
from ue_jax.core.state import create_state


def train_model(cfg, train, test, *, label: str, log=None, groups=None,
                learner=None, step=None, test_transform=None):
  """Trains the evaluation model on `train` (a Dataset or DeviceData);
  returns the per-epoch history. `groups` ({name: test subset}) are scored
  after the last epoch, as history[-1]["<name>_test_accuracy"].

  `learner` ((name, width)) replaces the evaluation model and `step` (a
  pure `fn(state, batch) -> (state, metrics)`, e.g. a defense's step) the
  plain training step; the loop and the recipe stay those of cfg.evaluate.
  `test_transform` (a pure `fn(x) -> x` on float images) is applied to the
  test images the model scores (defenses.EvalInputs)."""
  e = cfg.evaluate
  name, width = learner or (e.model or cfg.model.name,
                            e.width or cfg.model.width)
  model = get_model(name, num_classes=train.num_classes, width=width,
                    dtype=cfg.model.compute_dtype)
  if test_transform is not None:  # a defense's: only then its module
    # pylint: disable-next=g-import-not-at-top
    from ue_jax.core import defenses
    model = defenses.EvalInputs(model, test_transform)
  placement, train, test = device_data.on_mesh(cfg.mesh.data, train, test)
  groups = {k: device_data.place(v, placement)
            for k, v in (groups or {}).items()}

  def init(tx):
    return create_state(model, tx, seed=e.seed, image_shape=train.image_shape)

  state, history, eval_fn = train_lib.recipe_fit(
      e, placement, init, train, test, epochs=e.epochs, seed=e.seed,
      label=label, log=log, step=step)
  for name, ds in groups.items():
    history[-1][f"{name}_test_accuracy"] = train_lib.sweep(
        eval_fn, state, ds, e.eval_batch_size)[0]
  logging.info("%s: final clean test accuracy %.4f", label,
               history[-1]["test_accuracy"])
  return history


def load_release(train, workdir: str, *,
                 mesh_data: int = 0) -> release_lib.Release:
  """The released images of DIR's release stage, checked against `train`,
  on the mesh of `train` (a DeviceData; a host Dataset goes on a mesh of
  `mesh_data` devices): each process reads only the image rows of its block
  from the file (a memory map of the stored .npz member)."""
  released, protected = released_on_mesh(
      train, release_lib.release_path(workdir), mesh_data=mesh_data)
  return release_lib.Release(released, protected)


def released_on_mesh(train, path: str, *, mesh_data: int = 0):
  """(`train` with the images of the release file `path`, the release's
  `protected` mask), checked against `train` (labels, source indices,
  shape), on `train`'s mesh; each process reads only its block of rows."""
  placement, train = device_data.on_mesh(mesh_data, train)
  release = artifacts.load_release(path, labels=train.labels,
                                   indices=train.source_index)
  images, n = release["images"], len(train)
  if images.shape != (n, *train.image_shape):
    raise UEError(f"released images {images.shape} in {path} do not match "
                  f"the configured training set {(n, *train.image_shape)}")
  on_mesh = placement.put_rows(n, lambda lo, hi: images[lo:hi],
                               train.image_shape, np.uint8)
  return train.replace_images(on_mesh), release["protected"]


def class_groups(test, classes) -> dict:
  """Test subsets of the protected classes and of the others (non-empty)."""
  if not classes:
    return {}
  inside = np.isin(test.labels, np.asarray(classes))
  groups = {"protected_classes": np.flatnonzero(inside),
            "other_classes": np.flatnonzero(~inside)}
  return {k: test.take(v) for k, v in groups.items() if len(v)}


def run(cfg, train, test, workdir: str, log: metrics_lib.MetricLog, *,
        unlearnable=None):
  """Trains on the release (`unlearnable`, a Release, else DIR's release
  file) and the clean sets; `train` and `test` are Datasets or DeviceData."""
  e = cfg.evaluate
  _, train, test = device_data.on_mesh(cfg.mesh.data, train, test)
  released, protected = (load_release(train, workdir) if unlearnable is None
                         else unlearnable)
  # A rerun trains from scratch: forget the epochs of an interrupted one.
  log.drop(lambda record: record["stage"].startswith("evaluate_"))
  sets = [("unlearnable", released)]
  if e.train_clean:
    sets.append(("clean", train))
  remainder = train.take(np.flatnonzero(~protected))
  if protected.any() and not protected.all():
    if len(remainder) >= e.batch_size:
      sets.append(("clean_remainder", remainder))
    else:
      logging.warning("clean remainder: %d examples, fewer than a batch of "
                      "%d; not trained", len(remainder), e.batch_size)
  groups = class_groups(test, protected_classes(cfg))
  curves = {}
  for name, ds in sets:
    curves[name] = train_model(cfg, ds, test, label=f"evaluate_{name}",
                               log=log, groups=groups)
  if not protected.any():  # nothing protected: the release is the clean set
    curves["clean_remainder"] = curves["unlearnable"]
  figure = artifacts.save_figure(os.path.join(workdir, "curves.png"),
                                 plot_curves(curves, test.num_classes))
  out = {"curves": {k: [r["test_accuracy"] for r in v]
                    for k, v in curves.items()},
         "curves_train_accuracy": {k: [r["train_accuracy"] for r in v]
                                   for k, v in curves.items()},
         "curves_path": figure, "clean_remainder_size": len(remainder)}
  out["confusion"] = {k: v[-1]["confusion"] for k, v in curves.items()}
  out["per_class_test_accuracy"] = {k: per_class(v[-1]["confusion"])
                                    for k, v in curves.items()}
  for name, history in curves.items():
    out[f"{name}_test_accuracy"] = history[-1]["test_accuracy"]
  for group in groups:
    out[f"{group}_test_accuracy"] = {
        name: history[-1][f"{group}_test_accuracy"]
        for name, history in curves.items()}
  return out


def protected_classes(cfg) -> tuple:
  """The classes a release protects whole: partial.classes, else the
  classes the noise was searched for (noise.fit_classes; the others'
  noise is zero); () when it protects examples of every class."""
  return tuple(cfg.partial.classes) or tuple(cfg.noise.fit_classes)


def per_class(confusion) -> list:
  """Each class's test accuracy from a confusion matrix (rows: true class);
  None for a class absent from the test set."""
  m = np.asarray(confusion)
  rows = m.sum(1)
  return [float(m[c, c] / rows[c]) if rows[c] else None for c in range(len(m))]


def plot_curves(curves, num_classes: int):
  plt = artifacts.pyplot()

  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, history in curves.items():
    ax.plot([r["epoch"] for r in history],
            [r["test_accuracy"] for r in history], marker="o", ms=3,
            label=f"trained on {name} data")
  ax.axhline(1.0 / num_classes, color="gray", ls="--", lw=1, label="chance")
  ax.set_xlabel("epoch")
  ax.set_ylabel("clean test accuracy")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig
