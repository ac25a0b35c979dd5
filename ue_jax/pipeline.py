"""Runs the stages (generate, release, evaluate) of one config into a workdir
and keeps DIR/results.json up to date after each stage."""

import os
import time

import jax
from absl import logging

from ue_jax import artifacts
from ue_jax import checks
from ue_jax import data as data_lib
from ue_jax import evaluate
from ue_jax import generate
from ue_jax import metrics as metrics_lib
from ue_jax import release

STAGES = ("generate", "release", "evaluate")


def load_data(cfg):
  """(train, test) per the config: the source, then seeded stratified subsets."""
  d = cfg.data
  t0 = time.perf_counter()
  train, test = data_lib.load(d.name, source=d.source, data_dir=d.data_dir,
                              train_path=d.train_path, test_path=d.test_path,
                              download=d.download)
  train = data_lib.stratified_subset(train, d.train_size, cfg.seed)
  test = data_lib.stratified_subset(test, d.test_size, cfg.seed + 1)
  checks.check_data(cfg, train, test)
  logging.info("data %s: %d train / %d test images of shape %s, %d classes "
               "(%.1f s)", d.name, len(train), len(test),
               train.images.shape[1:], train.num_classes,
               time.perf_counter() - t0)
  return train, test


def run(cfg, workdir: str, stages=STAGES):
  """Runs `stages` in order; returns the results dict (also DIR/results.json)."""
  checks.check_config(cfg)
  for stage in stages:
    if stage not in STAGES:
      checks.fail(f"unknown stage {stage!r}; choose all or one of {STAGES}")
  train, test = load_data(cfg)
  os.makedirs(workdir, exist_ok=True)
  log = metrics_lib.MetricLog(workdir)
  path = os.path.join(workdir, "results.json")
  results = artifacts.load_json(path, {})
  results.update({
      "config_name": cfg.name, "dataset": cfg.data.name,
      "model": cfg.model.name, "model_width": cfg.model.width,
      "epsilon": cfg.noise.eps, "epsilon_255": round(cfg.noise.eps * 255, 4),
      "train_size": len(train), "test_size": len(test),
      "devices": [str(d) for d in jax.devices()],
      "metrics_path": log.path, "config": cfg.to_dict()})
  for stage in stages:
    logging.info("=== stage: %s ===", stage)
    if stage == "generate":
      results.update(generate.run(cfg, train, workdir, log))
    elif stage == "release":
      results.update(release.run(cfg, train, workdir))
    else:
      results.update(evaluate.run(cfg, train, test, workdir, log))
    artifacts.save_json(path, results)
  for key in ("clean_test_accuracy", "unlearnable_test_accuracy"):
    if key in results:
      logging.info("%s = %.4f", key, results[key])
  return results
