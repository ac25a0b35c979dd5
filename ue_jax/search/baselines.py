"""The generators' side drivers (generate.py runs the search itself):

- `pretrain`: the error-max (and tap/sep surrogate) generator's training on
  clean images first, with the evaluation recipe, over the same mesh as the
  search (sharding.py).
- `random_noise`: the random-noise baseline, U(-eps, eps) (or +-eps) in the
  layout's shape, per pixel or per block of pixels, no model and no search.
"""

import functools
import os
import time

import jax
import jax.numpy as jnp
from absl import logging

from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.runtime import interrupt
from ue_jax.training import layouts
from ue_jax.io import metrics as metrics_lib
from ue_jax.core import noise as noise_lib
from ue_jax.parallel import sharding
from ue_jax.training import train as train_lib
from ue_jax.runtime.errors import Interrupted
from ue_jax.core.state import UEState

PRETRAIN = "generate_pretrain"  # stage name of the pretraining epochs' log


def pretrain(cfg, state, train: data_lib.Dataset, test: data_lib.Dataset,
             log: metrics_lib.MetricLog, signals: interrupt.StopSignals, *,
             placement: sharding.Placement, snapshot=None):
  """Trains the generator's model on the clean images for
  `generate.pretrain_epochs` with the evaluation recipe (batch size,
  optimizer, per-epoch cosine, augmentation), as the original's error-max
  baseline does first. Returns `state` with the trained params and batch
  statistics (its step, optimizer state, rng and noise untouched) and the
  last epoch's record. `snapshot(epoch, state)` sees every epoch's end
  (train.fit; SEP keeps some, targeted.py). A stop signal ends it after
  the current epoch, without a checkpoint (a rerun pretrains again)."""
  epochs = cfg.generate.pretrain_epochs

  def init(tx, params, batch_stats, rng):
    return UEState(step=jnp.zeros((), jnp.int32), params=params,
                   batch_stats=batch_stats, opt_state=tx.init(params),
                   noise=None, rng=jax.random.fold_in(rng, 2),
                   apply_fn=state.apply_fn, tx=tx)

  # With several processes the signal that stops them all is the one they
  # agree on in the steps (sharding.agree), which a process may not have
  # received itself.
  shared = jax.process_count() > 1

  def after_epoch(epoch, _, agreed):
    signum = int(agreed[1]) if shared else signals.signum or 0
    if signum:
      raise Interrupted(f"{interrupt.signal_name(signum)} received "
                        f"(pretraining, epoch {epoch}/{epochs}, not saved); "
                        "rerun the same command to start again",
                        signum=signum)

  # Copies (the steps donate their state), born replicated over the mesh.
  inputs = (*jax.tree.map(jnp.copy, (state.params, state.batch_stats)),
            state.rng)
  plain, history, _ = train_lib.recipe_fit(
      cfg.evaluate, placement, init, train, test, epochs=epochs,
      seed=cfg.seed, label=PRETRAIN, inputs=inputs, log=log,
      after_epoch=after_epoch, votes=signals.votes if shared else None,
      snapshot=snapshot)
  logging.info("pretrained the generator for %d epochs on clean images: "
               "test accuracy %.4f", epochs, history[-1]["test_accuracy"])
  return (state.replace(params=plain.params, batch_stats=plain.batch_stats),
          history[-1])


def random_noise(cfg, train, workdir: str, *,
                 placement: sharding.Placement):
  """The random-noise baseline in the layout's shape (noise.random_values,
  noise.random_patch), drawn on the mesh of `placement` (sample-wise: each
  device draws its rows of the noise, padded to a multiple of the device
  count; class-wise: replicated) and written to DIR/noise.npy chunk by
  chunk (artifacts.export_noise), so no host holds the whole noise. Its
  values do not depend on the device count: the counter-based generator
  gives row i the same bits in any shape and sharding. Returns the
  generation summary."""
  start = time.perf_counter()
  key = jax.random.fold_in(jax.random.key(cfg.seed), 2)
  n, *tail = layouts.noise_shape(cfg.noise.layout, train)
  samplewise = noise_lib.samplewise(cfg.noise.layout)
  draw = functools.partial(
      noise_lib.random_noise, shape=(placement.padded(n) if samplewise
                                     else n, *tail),
      eps=cfg.noise.eps, patch=cfg.noise.random_patch,
      values=cfg.noise.random_values)
  noise = jax.jit(draw, out_shardings=(placement.rows if samplewise
                                       else placement.replicated))(key)
  path, max_abs = artifacts.export_noise(
      noise, n, placement, os.path.join(workdir, "noise.npy"))
  return {"rounds": 0, "stop_reached": None,
          "generation_seconds": time.perf_counter() - start,
          "noise_max_abs": max_abs, "noise_path": path}
