"""Runs the stages (generate, release, evaluate, battery) of one config into a workdir
and keeps DIR/results.json up to date after each stage.

Everything is validated before the workdir is touched (not even created): the
config, the workdir's own config record, the data, and the inputs of stages
that this run does not produce itself.

The data goes on the device mesh once (device_data.py: each process keeps its
block of the images) and every stage runs from there; the released images a
release stage leaves on the mesh are what a following evaluate stage trains on.
"""

import os
from typing import Optional
import time

import jax
from absl import logging

from ue_jax.config import checks
from ue_jax.io import data as data_lib
from ue_jax.parallel import device_data
from ue_jax.evaluation import evaluate
from ue_jax.search import generate
from ue_jax.search import resume
from ue_jax.io import metrics as metrics_lib
from ue_jax.evaluation import release
from ue_jax.parallel import distributed
from ue_jax.parallel import sharding
from ue_jax.runtime import interrupt
from ue_jax.io import workdir as workdir_lib

STAGES = ("generate", "release", "evaluate", "battery")


def _battery():
  """evaluation/battery.py (and with it the defenses and their steps),
  imported only by a run whose stages include the battery."""
  # pylint: disable-next=g-import-not-at-top
  from ue_jax.evaluation import battery
  return battery


def default_stages(cfg):
  """The stages of --stage=all: the battery only with battery.enabled."""
  return tuple(s for s in STAGES if s != "battery" or cfg.battery.enabled)


def load_data(cfg, placement=None):
  """(train, test) per the config: the source, checks, then seeded subsets.
  With a `placement` (sharding.Placement), on its mesh
  (device_data.DeviceData): each process keeps only its block of the
  images; else host Datasets."""
  d = cfg.data
  t0 = time.perf_counter()
  train, test = data_lib.load(d.name, source=d.source, data_dir=d.data_dir,
                              train_path=d.train_path, test_path=d.test_path,
                              download=d.download, path=d.path,
                              image_size=d.image_size,
                              cache_dir=d.cache_dir)
  checks.check_data(cfg, train, test)
  rows = (data_lib.stratified_rows(train, d.train_size, cfg.seed),
          data_lib.stratified_rows(test, d.test_size, cfg.seed + 1))
  if placement is None:
    train, test = (ds if r is None else ds.take(r)
                   for ds, r in zip((train, test), rows))
  else:
    train, test = (device_data.place(ds, placement, r, what=what)
                   for ds, r, what in zip((train, test), rows,
                                          ("train", "test")))
  logging.info("data %s: %d train / %d test images of shape %s, %d classes "
               "(%.1f s)", d.name, len(train), len(test), train.image_shape,
               train.num_classes, time.perf_counter() - t0)
  return train, test


def batch_sizes(cfg, stages):
  """{config field: size} of every batch the `stages` put on the mesh."""
  g, e = cfg.generate, cfg.evaluate
  sizes = {}
  if "generate" in stages:
    sizes.update({"generate.batch_size": g.batch_size,
                  "generate.eval_batch_size": g.eval_batch_size})
  if ("evaluate" in stages or "battery" in stages
      or ("generate" in stages and g.get("pretrain_epochs"))):
    sizes.update({"evaluate.batch_size": e.batch_size,
                  "evaluate.eval_batch_size": e.eval_batch_size})
  if "battery" in stages and cfg.battery.batch_size:
    sizes["battery.batch_size"] = cfg.battery.batch_size
  return sizes


def check_batch_sizes(cfg, placement, stages):
  """Refuses, before any data is read, a batch size of `stages` that the
  mesh cannot split evenly (each would otherwise be refused only when its
  stage starts, hours into a run)."""
  for field, size in batch_sizes(cfg, stages).items():
    placement.check_batch_size(field, size)


def check_inputs(cfg, train, workdir: str, stages, *, overwrite: bool):
  """Loads and checks what the first stage reads but this run does not
  write: the noise for release, the released images for evaluate and the
  battery. Returns them by stage, so no stage reads them a second time."""
  needs = []
  if "release" in stages and "generate" not in stages:
    needs.append(("release", release.noise_path(cfg, workdir),
                  lambda: release.load_noise(cfg, train, workdir)))
  if "evaluate" in stages and "release" not in stages:
    needs.append(("evaluate", release.release_path(workdir),
                  lambda: evaluate.load_release(train, workdir)))
  if "battery" in stages:
    battery = _battery()
    battery.plan(cfg)  # learner and defense names
    # W's own release: the release stage's, or the evaluate stage's load.
    if cfg.battery.release_path or not {"release", "evaluate"} & set(stages):
      needs.append(("battery", battery.release_file(cfg, workdir),
                    lambda: battery.load_release(cfg, train, workdir)))
  loaded = {}
  for stage, path, load in needs:
    if overwrite and workdir_lib.inside(path, workdir):
      checks.fail(f"--overwrite would delete {path}, which --stage={stage} "
                  "reads; run the earlier stages too or drop --overwrite")
    loaded[stage] = load()
  return loaded


def kept(stage: str, cfg, workdir: str) -> str:
  """Where a run is in `stage` and what a stop signal there leaves, for the
  `stopped:` line (interrupt.RaiseOnSignal)."""
  if stage == "generate":
    return ("in the generate stage; its last checkpoint is kept in "
            f"{os.path.join(workdir, resume.CHECKPOINTS)}")
  if stage == "release":
    return "in the release stage; nothing of it was written"
  if stage == "evaluate":
    return "in the evaluate stage; its trainings start afresh on a rerun"
  return ("in the battery stage; its finished cells are kept in "
          f"{_battery().paths(cfg, workdir)[1]}")


def run(cfg, workdir: str, stages=None, *, overwrite: bool = False,
        tensorboard: Optional[bool] = None):
  """Runs `stages` (default: `default_stages`) in order; returns the results
  dict (also DIR/results.json).

  The metrics are also written as TensorBoard events (DIR/tensorboard,
  metrics.Board) with `tensorboard` True (a UEError when tensorboardX is
  missing) or None where tensorboardX is installed. With `overwrite` the workdir's earlier
  checkpoints and outputs are deleted first; without it a workdir made by another config is refused. An eps a
  hair off k/255 is taken as k/255 (checks.snapped). SIGINT/SIGTERM raise
  errors.Stopped (the generation loop: errors.Interrupted, after a
  checkpoint).
  """
  if tensorboard is None:
    tensorboard = metrics_lib.board_available()
  elif tensorboard:
    metrics_lib.board_writer()  # installed? (before anything is written)
  with interrupt.RaiseOnSignal("before the first stage; nothing was "
                               "written") as stop:
    return _run(cfg, workdir, stages, overwrite=overwrite, stop=stop,
                tensorboard=tensorboard)


def _run(cfg, workdir: str, stages, *, overwrite: bool,
         stop: interrupt.RaiseOnSignal, tensorboard: bool = False):
  checks.check_config(cfg)
  cfg = checks.snapped(cfg)
  stages = default_stages(cfg) if stages is None else stages
  for stage in stages:
    if stage not in STAGES:
      checks.fail(f"unknown stage {stage!r}; choose all or one of {STAGES}")
  workdir_lib.verify(cfg, workdir, overwrite=overwrite, stages=stages)
  placement = sharding.Placement(sharding.make_mesh(cfg.mesh.data))
  check_batch_sizes(cfg, placement, stages)
  train, test = load_data(cfg, placement)
  inputs = check_inputs(cfg, train, workdir, stages, overwrite=overwrite)
  if "generate" in stages and not overwrite:
    resume.check_resume(workdir, devices=placement.size,
                        processes=jax.process_count(),
                        max_rounds=cfg.generate.max_rounds)
  # Nothing was written up to here; from here on the workdir is ours.
  config_path = workdir_lib.claim(
      cfg, workdir, overwrite=overwrite,
      run={"devices": placement.size, "processes": jax.process_count()})
  distributed.sync("claimed")  # the other processes wait for process 0
  log = metrics_lib.MetricLog(workdir, tensorboard=tensorboard)
  results = workdir_lib.Results(workdir, {
      "config_name": cfg.name, "dataset": cfg.data.name,
      "model": cfg.model.name, "model_width": cfg.model.width,
      "noise_kind": cfg.noise.kind, "noise_layout": cfg.noise.layout,
      "num_classes": train.num_classes,
      "class_names": list(data_lib.class_names(train)),
      "epsilon": cfg.noise.eps, "epsilon_255": round(cfg.noise.eps * 255, 4),
      "train_size": len(train), "test_size": len(test),
      "devices": [str(d) for d in jax.devices()],
      "processes": jax.process_count(),
      "metrics_path": log.path, "config_path": config_path,
      "config_sha256": workdir_lib.config_hash(workdir_lib.canonical(cfg)),
      "config": cfg.to_dict()})
  union, ran = results.union(), {}
  for stage in stages:
    logging.info("=== stage: %s ===", stage)
    stop.what = kept(stage, cfg, workdir)
    results.start(stage)  # its and its dependents' old results go
    if stage == "generate":
      summary = generate.run(cfg, train, workdir, log, test=test)
    elif stage == "release":
      # The released images stay on the mesh for the evaluate stage.
      summary, inputs["evaluate"] = release.release(
          cfg, train, workdir, noise=inputs.get("release"))
    elif stage == "evaluate":
      summary = evaluate.run(cfg, train, test, workdir, log,
                             unlearnable=inputs.get("evaluate"))
    else:
      released = inputs.get("battery")
      if released is None:  # W's release, made or loaded by this run
        released = inputs["evaluate"][0]
      summary = _battery().run(cfg, train, test, workdir, log,
                               released=released)
    union = results.record(stage, summary)
    ran.update(summary)
    workdir_lib.record_stage(cfg, workdir, stage)
    distributed.sync(f"stage {stage}")  # its files are there for all
    stop.what = f"after the {stage} stage; its outputs are kept"
  for key in ("clean_test_accuracy", "unlearnable_test_accuracy",
              "clean_remainder_test_accuracy"):  # this run's, not older
    if key in ran:
      logging.info("%s = %.4f", key, ran[key])
  return union
