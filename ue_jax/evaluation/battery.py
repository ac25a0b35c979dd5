"""The protection battery: a release measured against many learners and
defenses (docs/method.md, "The protection battery").

For every (learner, defense) cell a fresh model trains on the released
images and, with the same learner, defense, seed and recipe, on the clean
images; clean test accuracy is recorded per epoch for both (the evaluation
stage's loop, evaluate.train_model, with the defense's step). Clean-trained
results do not depend on the release and are cached by a key of learner,
defense, recipe, compute dtype, seed and data, so a battery of another
release of the same data reuses them. Each finished cell is written
atomically as it completes (DIR/battery/cells/KEY.json); a rerun trains only
the cells that are missing.
"""

import functools
import hashlib
import json
import os
import time
from typing import Dict

import ml_collections
import numpy as np
from absl import logging

from ue_jax.core import defended_step
from ue_jax.core import defenses
from ue_jax.evaluation import battery_report
from ue_jax.evaluation import evaluate
from ue_jax.evaluation import release as release_lib
from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.models import MODELS
from ue_jax.parallel import device_data
from ue_jax.runtime.errors import UEError

FOLDER = "battery"
# Fields of the data block that say where or how the data is fetched, never
# what it is: left out of the data key, so editing them keeps the cache.
DATA_KEY_IGNORED = ("cache_dir", "download")


# ------------------------------------------------------------ the plan
def parse_learner(spec: str, default_width: int):
  """(name, width) of a learner spec "name" or "name:width"; a spec without
  a width takes `default_width` (the evaluation block's width)."""
  name, _, width = spec.partition(":")
  if name not in MODELS:
    raise UEError(f"unknown learner {name!r} (battery.learners); choose one "
                  f"of {', '.join(sorted(MODELS))}, optionally as name:width")
  if not width:
    return name, default_width
  if not width.isdigit() or not 1 <= int(width) <= 4096:
    raise UEError(f"learner {spec!r} (battery.learners): the width after ':' "
                  "must be an integer in [1, 4096]")
  return name, int(width)


def plan(cfg):
  """The cells, in order: [(name, width, defense)]. "cross": every learner
  with every defense; "star": every learner with the first defense, then
  the first learner with every other defense."""
  b = cfg.battery
  width = cfg.evaluate.width or cfg.model.width
  learners = [parse_learner(s, width) for s in b.learners]
  for d in b.defenses:
    if d not in defenses.NAMES:
      raise UEError(f"unknown defense {d!r} (battery.defenses); choose from "
                    f"{', '.join(defenses.NAMES)}")
  if not learners or not b.defenses:
    raise UEError("battery.learners and battery.defenses must not be empty")
  if len(set(learners)) != len(learners) or len(set(b.defenses)) != len(
      b.defenses):
    raise UEError("battery.learners / battery.defenses name a cell twice")
  if b.cells == "cross":
    cells = [(n, w, d) for n, w in learners for d in b.defenses]
  else:
    cells = [(n, w, b.defenses[0]) for n, w in learners]
    cells += [(*learners[0], d) for d in b.defenses[1:]]
  return cells


def recipe(cfg) -> ml_collections.ConfigDict:
  """A copy of `cfg` whose evaluate block carries the battery's recipe
  (battery.epochs / batch_size / lr / seed; 0 = the evaluate block's)."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  b, e = cfg.battery, out.evaluate
  e.epochs = b.epochs or e.epochs
  e.batch_size = b.batch_size or e.batch_size
  e.lr = b.lr or e.lr
  e.seed = b.seed or e.seed
  return out


def adv_eps(cfg) -> float:
  """The adversarial-training radius: battery.adv_eps, else the release's
  (the config's noise.eps)."""
  return cfg.battery.adv_eps or cfg.noise.eps


def _digest(obj) -> str:
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_key(cfg, name: str, width: int, defense: str) -> dict:
  """Everything a trained cell depends on besides its images."""
  e = recipe(cfg).evaluate
  key = {"learner": name, "width": width, "defense": defense,
         "compute_dtype": cfg.model.compute_dtype,
         "recipe": {k: e[k] for k in ("epochs", "batch_size",
                                      "eval_batch_size", "lr", "momentum",
                                      "weight_decay", "grad_clip", "seed")}}
  if defense == "adv_train":
    key["adv"] = {"eps": adv_eps(cfg), "steps": cfg.battery.adv_steps}
  if defense == "ueraser":
    key["copies"] = cfg.battery.ueraser_copies
  return key


def data_key(cfg, train, test) -> str:
  """The clean data's identity: the data block (less DATA_KEY_IGNORED),
  seed and every example's label and source index (train and test)."""
  block = {k: v for k, v in cfg.data.to_dict().items()
           if k not in DATA_KEY_IGNORED}
  h = hashlib.sha256(json.dumps(block, sort_keys=True).encode())
  h.update(str((cfg.seed, train.image_shape, train.num_classes)).encode())
  for ds in (train, test):
    h.update(np.ascontiguousarray(ds.labels, np.int64).tobytes())
    h.update(np.ascontiguousarray(ds.source_index, np.int64).tobytes())
  return h.hexdigest()[:16]


def release_file(cfg, workdir: str) -> str:
  return cfg.battery.release_path or release_lib.release_path(workdir)


def load_release(cfg, train, workdir: str):
  """The released images to measure, checked against `train` (labels and
  source indices), on `train`'s mesh (a DeviceData)."""
  return evaluate.released_on_mesh(train, release_file(cfg, workdir),
                                   mesh_data=cfg.mesh.data)[0]


def test_subset(cfg, test):
  """The test examples the curves are measured on: battery.test_size of
  them (a seeded class-stratified subset, the config's seed + 2), or all."""
  rows = data_lib.stratified_rows(test, cfg.battery.test_size, cfg.seed + 2)
  return test if rows is None else test.take(rows)


# ---------------------------------------------------------- one training
def data_level_set(ds, defense: str):
  """`ds` with every image passed through the data-level `defense` (JPEG,
  image shortcut squeezing, histogram equalization) on the host."""
  images = defenses.DATA_LEVEL[defense](ds.host_images())
  on_mesh = ds.placement.put_rows(len(ds), lambda lo, hi: images[lo:hi],
                                  ds.image_shape, np.uint8)
  return device_data.DeviceData(ds.placement, on_mesh, ds.labels,
                                ds.source_index, ds.num_classes, ds.name,
                                block=ds.placement.local_rows(
                                    ds.placement.padded(len(ds))))


def step_fn(cfg, defense: str, num_classes: int):
  """The pure training step of `defense`."""
  b = cfg.battery
  return functools.partial(
      defended_step.defended_step, transform=defenses.BATCH[defense],
      num_classes=num_classes,
      copies=b.ueraser_copies if defense == "ueraser" else 1,
      adv_eps=adv_eps(cfg) if defense == "adv_train" else 0.0,
      adv_steps=b.adv_steps if defense == "adv_train" else 0)


def train_curve(cfg, ds, test, *, name: str, width: int, defense: str,
                label: str, log=None) -> dict:
  """Trains one learner on `ds` under `defense`; its per-epoch curve. A
  defense that normalizes the learner's inputs normalizes `test` too
  (defenses.TEST_DATA_LEVEL on the host, defenses.TEST_BATCH as the test
  images are scored); the others score `test` as it is."""
  if defense in defenses.DATA_LEVEL:
    ds = data_level_set(ds, defense)
  if defense in defenses.TEST_DATA_LEVEL:
    test = data_level_set(test, defense)
  if log is not None:  # the epochs of an interrupted try of this training
    log.drop(lambda record: record["stage"] == label)
  t0 = time.perf_counter()
  history = evaluate.train_model(
      recipe(cfg), ds, test, label=label, log=log, learner=(name, width),
      step=step_fn(cfg, defense, ds.num_classes),
      test_transform=defenses.TEST_BATCH.get(defense))
  return {"curve": [r["test_accuracy"] for r in history],
          "train_curve": [r["train_accuracy"] for r in history],
          "confusion": history[-1]["confusion"],
          "seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------- the battery
def not_applicable(defense: str, image_shape) -> str:
  if defense in defenses.COLOUR_ONLY and image_shape[-1] != 3:
    return (f"{defense} needs colour images; these have "
            f"{image_shape[-1]} channel(s)")
  return ""


def best_epochs(curves) -> dict:
  """The best epoch of each curve (clean and unlearnable-trained; the first
  of equals) and its clean test accuracy: what a trainer who stops early
  at that epoch gets."""
  out = {}
  for side in ("clean", "unlearnable"):
    curve = curves[side]
    best = int(np.argmax(curve))
    out[f"best_{side}_test_accuracy"] = float(curve[best])
    out[f"best_{side}_epoch"] = best + 1
  return out


def class_accuracy(confusion, classes) -> Dict[str, float]:
  """Last-epoch test accuracy on the images of `classes` (the protected
  ones) and on the others, from a confusion matrix (rows: true class)."""
  m = np.asarray(confusion, np.float64)
  inside = np.isin(np.arange(len(m)), np.asarray(classes, np.int64))
  out = {}
  for group, rows in (("protected_classes", inside),
                      ("other_classes", ~inside)):
    if m[rows].sum():
      out[group] = float(np.trace(m * rows[:, None]) / m[rows].sum())
  return out


def summarize(name, width, defense, unl, clean, *, clean_cached: bool,
              classes=()):
  """One cell's record from its two curves; with `classes` (the protected
  classes of a release that protects whole classes), the accuracy on
  their test images and on the others' for both sides (None for a clean
  side cached before confusions were kept)."""
  u, c = unl["curve"], clean["curve"]
  groups = {}
  if classes:
    for side, result in (("clean", clean), ("unlearnable", unl)):
      found = (class_accuracy(result["confusion"], classes)
               if "confusion" in result else {})
      for group in ("protected_classes", "other_classes"):
        groups.setdefault(f"{group}_test_accuracy", {})[side] = found.get(
            group)
  return {**groups, "learner": name, "width": width, "defense": defense,
          "status": "done", "epochs": len(u),
          "seconds": unl["seconds"] + (0.0 if clean_cached
                                       else clean["seconds"]),
          "clean_test_accuracy": c[-1], "unlearnable_test_accuracy": u[-1],
          "gap": c[-1] - u[-1],
          **best_epochs({"clean": c, "unlearnable": u}),
          "clean_cached": clean_cached,
          "curves": {"clean": c, "unlearnable": u},
          "curves_train_accuracy": {"clean": clean["train_curve"],
                                    "unlearnable": unl["train_curve"]}}


def paths(cfg, workdir: str):
  out = os.path.join(workdir, FOLDER)
  cache = cfg.battery.clean_cache or os.path.join(out, "clean")
  return out, os.path.join(out, "cells"), cache


def run(cfg, train, test, workdir: str, log=None, *, released=None,
        trainer=train_curve) -> dict:
  """Runs every missing cell of the battery; writes DIR/battery/battery.json,
  battery.md and battery.png; returns a summary for results.json.
  `released`: the released set on the mesh (else loaded); `trainer` is
  train_curve (a test may wrap it)."""
  _, train, test = device_data.on_mesh(cfg.mesh.data, train, test)
  test = test_subset(cfg, test)
  released = released if released is not None else load_release(
      cfg, train, workdir)
  path = release_file(cfg, workdir)
  release_sha = artifacts.file_sha256(path) if os.path.exists(path) else ""
  out, cell_dir, cache = paths(cfg, workdir)
  dkey = data_key(cfg, train, test)
  cells = plan(cfg)
  trainings = sum(2 for n, w, d in cells
                  if not not_applicable(d, train.image_shape))
  progress = metrics_lib.Progress("battery", trainings, "trainings", every=0)
  records = []
  for i, (name, width, defense) in enumerate(cells):
    tag = f"{name}:{width}/{defense}"
    reason = not_applicable(defense, train.image_shape)
    if reason:
      records.append({"learner": name, "width": width, "defense": defense,
                      "status": "not_applicable", "reason": reason})
      logging.info("battery cell %d/%d %s: not applicable (%s)", i + 1,
                   len(cells), tag, reason)
      continue
    rkey = recipe_key(cfg, name, width, defense)
    cell_path = os.path.join(cell_dir, _digest(
        {**rkey, "release": release_sha, "data": dkey}) + ".json")
    done = artifacts.load_json(cell_path)
    if done is not None:  # (a cell written before best_clean_epoch: added)
      records.append({**done, **best_epochs(done["curves"])})
      progress.total -= 2
      logging.info("battery cell %d/%d %s: done before (%s)", i + 1,
                   len(cells), tag, cell_path)
      continue
    clean_path = os.path.join(cache, _digest({**rkey, "data": dkey}) + ".json")
    clean = artifacts.load_json(clean_path)
    cached = clean is not None
    if cached:
      progress.total -= 1
    else:
      clean = trainer(cfg, train, test, name=name, width=width,
                      defense=defense, label=f"battery_clean_{tag}", log=log)
      artifacts.save_json(clean_path, {**clean, "key": rkey, "data": dkey})
      progress.update(1)
    unl = trainer(cfg, released, test, name=name, width=width,
                  defense=defense, label=f"battery_unlearnable_{tag}",
                  log=log)
    progress.update(1)
    record = summarize(name, width, defense, unl, clean, clean_cached=cached,
                       classes=evaluate.protected_classes(cfg))
    record["release_sha256"] = release_sha
    artifacts.save_json(cell_path, record)
    records.append(record)
    logging.info("battery cell %d/%d %s: clean %.4f (best %.4f at epoch "
                 "%d), unlearnable %.4f (best %.4f at epoch %d)%s", i + 1,
                 len(cells), tag, record["clean_test_accuracy"],
                 record["best_clean_test_accuracy"],
                 record["best_clean_epoch"],
                 record["unlearnable_test_accuracy"],
                 record["best_unlearnable_test_accuracy"],
                 record["best_unlearnable_epoch"],
                 " (clean from cache)" if cached else "")
  summary = {"release_path": path, "release_sha256": release_sha,
             "epochs": recipe(cfg).evaluate.epochs, "test_size": len(test),
             "adv_eps": adv_eps(cfg), "adv_steps": cfg.battery.adv_steps,
             "ueraser_copies": cfg.battery.ueraser_copies,
             "cells": records}
  files = battery_report.write(out, summary)
  return {"battery_path": files["json"], "battery_cells": len(records),
          "battery_min_gap": min((r["gap"] for r in records
                                  if r["status"] == "done"), default=None)}
