"""Sample-wise error-minimizing noise: the min-min driver (algorithm.md §2).

Each round: M model steps on clip(x + delta) (BatchNorm in train mode), then
K-step sign-gradient descent on the noise of every training example (eval
mode), then the stop test: accuracy of the frozen model on the images that
will be released (quantized). Stops at `stop_accuracy` (once at least
`min_rounds` rounds ran) or after `max_rounds` (reported as
stop_reached=False).
"""

import os
import time

import jax
import numpy as np
from absl import logging

from ue_jax import artifacts
from ue_jax import data as data_lib
from ue_jax import metrics as metrics_lib
from ue_jax import optim
from ue_jax import steps as steps_lib
from ue_jax import train as train_lib
from ue_jax.errors import UEError
from ue_jax.models import get_model
from ue_jax.state import create_state


def build(cfg, train: data_lib.Dataset):
  """The generator's state and jitted steps for a config and dataset."""
  model = get_model(cfg.model.name, num_classes=train.num_classes,
                    width=cfg.model.width)
  g = cfg.generate
  tx = optim.sgd(g.lr, momentum=g.momentum, weight_decay=g.weight_decay,
                 grad_clip=g.grad_clip)
  state = create_state(model, tx, seed=cfg.seed,
                       image_shape=train.images.shape[1:],
                       noise_shape=train.images.shape)
  if cfg.noise.init == "uniform":
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    state = state.replace(noise=jax.random.uniform(
        key, state.noise.shape, minval=-cfg.noise.eps, maxval=cfg.noise.eps))
  fns = steps_lib.jit_steps(eps=cfg.noise.eps, step_size=cfg.noise.step_size,
                            num_steps=cfg.noise.num_steps,
                            paper_release=cfg.noise.paper_release)
  return state, fns


def run(cfg, train: data_lib.Dataset, workdir: str, log: metrics_lib.MetricLog):
  """Runs the min-min search; writes DIR/noise.npy; returns a summary dict."""
  g = cfg.generate
  state, (model_step, noise_step, eval_step) = build(cfg, train)
  n, batch = len(train), g.batch_size
  model_batches = train_lib.cycle_batches(n, batch)
  start = time.perf_counter()
  reached, acc, rnd, model_loss = False, 0.0, 0, float("nan")
  for rnd in range(1, g.max_rounds + 1):
    t0 = time.perf_counter()
    for _ in range(g.train_steps):
      state, m = model_step(state, data_lib.gather(train, next(model_batches)))
      model_loss = m["loss"]
    progress = metrics_lib.Progress(
        f"generate round {rnd}/{g.max_rounds} noise", n, "img",
        scale=cfg.noise.num_steps)
    for rows in data_lib.batches(n, batch):
      state, _ = noise_step(state, data_lib.gather(train, rows))
      progress.update(int(min(len(rows), n - rows[0])), state.noise)
    acc, loss = train_lib.sweep(eval_step, state, train, g.eval_batch_size)
    if not np.isfinite(loss):
      raise UEError(f"non-finite loss in generation round {rnd}; lower "
                    "generate.lr or check the data")
    reached = acc >= g.stop_accuracy and rnd >= g.min_rounds
    record = log.write("generate", round=rnd, train_accuracy=acc,
                       train_loss=loss, model_loss=float(model_loss),
                       seconds=time.perf_counter() - t0,
                       total_seconds=time.perf_counter() - start)
    logging.info("generate round %d: accuracy on released train images %.4f "
                 "(stop at %.2f), loss %.4f, %.1f s", rnd, acc,
                 g.stop_accuracy, loss, record["seconds"])
    if reached:
      break
  seconds = time.perf_counter() - start
  if not reached:
    logging.warning("stop rule not reached after %d rounds (accuracy %.4f < "
                    "%.2f); the noise is released anyway", rnd, acc,
                    g.stop_accuracy)
  clean_acc, _ = train_lib.sweep(steps_lib.jit_eval(), state, train, g.eval_batch_size)
  noise = np.asarray(jax.device_get(state.noise))
  path = artifacts.save_npy(os.path.join(workdir, "noise.npy"), noise)
  return {"rounds": rnd, "stop_reached": bool(reached),
          "generation_seconds": seconds,
          "final_train_accuracy_on_release": acc,
          "generator_clean_train_accuracy": clean_acc,
          "noise_max_abs": float(np.abs(noise).max()),
          "noise_path": path}
