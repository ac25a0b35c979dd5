"""The noise search: error-minimizing (min-min), error-maximizing and random
noise, sample-wise or class-wise (docs/method.md §2-§4).

`noise.kind`:
- error_min: each round, M model steps on clip(x + delta) over the whole
  training set (BatchNorm in train mode), then K-step sign-gradient descent
  on the noise of every example of the fit set (eval mode), then the stop
  test: accuracy of the frozen model on the fit set's images as they will be
  released (quantized). Stops at accuracy >= `stop_accuracy` (once at least
  `min_rounds` rounds ran) or after `max_rounds` (stop_reached=False).
- error_max: the same loop with sign-gradient *ascent*, after
  `pretrain_epochs` of training on the clean images with the evaluation
  recipe (the original trains with its full schedule first; for class-wise
  noise it pretrains on the 20 % subset only, docs/method.md §9.17, here always
  on the whole training set); its configs set M = 0 model steps, as the
  original. Stops at accuracy <=
  `error_max_stop_accuracy` (the original's stop error 0.9 sample-wise, 0.8
  class-wise).
- tap, sep: targeted adversarial poisons (targeted.py): the error_max loop
  with descent toward a wrong target class, against the frozen pretrained
  generator (tap) or an ensemble of its pretraining checkpoints (sep); M = 0
  model steps (checked); stops as error_max.
- random: delta ~ U(-eps, eps), no model and no search (baselines.py, as
  the error-max pretraining).
- ar, lsp, ops: shortcut noise, no model and no search (shortcuts.py).
`noise.layout` (training/layouts.py) picks the fit set and how noise is indexed:
sample-wise, every training example; class-wise, one noise per class, fitted
and stop-tested on a stratified `classwise_subset` of the training set.

The search resumes from its checkpoints to the same noise, bit for bit, as
a run never stopped, and stops on SIGINT/SIGTERM after the current batch
with a checkpoint (resume.py: the positions, when it saves).

Everything runs over one device mesh (sharding.py): sample-wise noise is
sharded by rows and padded to a multiple of the device count, class-wise
noise is replicated and not padded; `noise.storage` (noise.Codec) applies
to either. The training images are on the mesh too, sharded by rows like
the noise (device_data.py); the host feeds row numbers.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ue_jax.io import artifacts
from ue_jax.search import baselines
from ue_jax.io import checkpoint as checkpoint_lib
from ue_jax.io import data as data_lib
from ue_jax.parallel import device_data
from ue_jax.runtime import interrupt
from ue_jax.training import layouts
from ue_jax.search import resume as resume_lib
from ue_jax.search import shortcuts
from ue_jax.search import targeted
from ue_jax.parallel import memory
from ue_jax.io import metrics as metrics_lib
from ue_jax.core import noise as noise_lib
from ue_jax.core import optim
from ue_jax.parallel import sharding
from ue_jax.core import steps as steps_lib
from ue_jax.training import train as train_lib
from ue_jax.runtime.errors import UEError
from ue_jax.models import get_model
from ue_jax.core.state import create_state

def codec(cfg) -> noise_lib.Codec:
  return noise_lib.Codec(cfg.noise.storage, cfg.noise.eps)


def adversary(cfg):
  """REM's inner maximization (steps.Adversary), or None when
  noise.rem_radius is 0 (error-minimizing noise as the paper's)."""
  n = cfg.noise
  if not n.rem_radius:
    return None
  return steps_lib.Adversary(radius=n.rem_radius, steps=n.rem_steps,
                             step_size=n.rem_step_size)


def build(cfg, train, placement=None):
  """The generator's state, born sharded over the mesh (sharding.py), and
  its jitted steps (model, noise, stop test) for a config and dataset (a
  host Dataset or a DeviceData: only its shapes are read)."""
  placement = placement or sharding.Placement(
      sharding.make_mesh(cfg.mesh.data))
  g = cfg.generate
  for field in ("batch_size", "eval_batch_size"):
    placement.check_batch_size(f"generate.{field}", g[field])
  model = get_model(cfg.model.name, num_classes=train.num_classes,
                    width=cfg.model.width, dtype=cfg.model.compute_dtype)
  tx = optim.sgd(g.lr, momentum=g.momentum, weight_decay=g.weight_decay,
                 grad_clip=g.grad_clip)
  store = codec(cfg)
  samplewise = noise_lib.samplewise(cfg.noise.layout)
  shape = layouts.noise_shape(cfg.noise.layout, train)
  rows = shape[0] if samplewise else 0  # class-wise: no padding, no remap

  def make():
    state = create_state(model, tx, seed=cfg.seed,
                         image_shape=train.image_shape)
    noise = jnp.zeros(shape, jnp.float32)
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    if cfg.noise.init == "uniform":
      noise = noise_lib.random_noise(key, shape, eps=cfg.noise.eps)
    elif cfg.noise.init == "normal":  # TAP's start: N(0, eps^2), clipped
      noise = jnp.clip(cfg.noise.eps * jax.random.normal(key, shape),
                       -cfg.noise.eps, cfg.noise.eps)
    noise = jnp.pad(store.encode(noise), [(0, placement.padded(rows) - rows)]
                    + [(0, 0)] * (noise.ndim - 1))
    if cfg.noise.kind == "sep":
      state = targeted.with_member_slots(state, cfg.noise.sep_members)
    return state.replace(noise=noise)

  state, shardings = placement.create(make, samplewise=samplewise)
  model_fn, noise_fn, eval_fn = steps_lib.bound_steps(
      eps=cfg.noise.eps, step_size=cfg.noise.step_size,
      num_steps=cfg.noise.num_steps, augment=g.augment,
      paper_release=cfg.noise.paper_release,
      maximize=cfg.noise.kind == "error_max", layout=cfg.noise.layout,
      codec=store, eot_augment=cfg.noise.eot_augment,
      eot_samples=cfg.noise.eot_samples, adv=adversary(cfg),
      form=cfg.noise.form, form_block=cfg.noise.form_block)
  if cfg.noise.kind in targeted.KINDS:
    noise_fn = targeted.bound_noise_step(cfg, train.num_classes, store)
  fns = (placement.jit_step(model_fn, shardings, rows=rows,
                            full_batches=True),
         placement.jit_step(noise_fn, shardings, rows=rows),
         placement.jit_step(eval_fn, shardings, rows=rows,
                            returns_state=False))
  return state, fns


def stop_rule(cfg):
  """(reached(accuracy, round), words) for the config's kind of noise."""
  g = cfg.generate
  if cfg.noise.kind in ("error_max", *targeted.KINDS):
    target = g.error_max_stop_accuracy
    return (lambda acc, r: bool(acc <= target and r >= g.min_rounds),
            f"stop at <= {target:.2f}")
  return (lambda acc, r: bool(acc >= g.stop_accuracy and r >= g.min_rounds),
          f"stop at >= {g.stop_accuracy:.2f}")


def model_walk(cfg, train):
  """The model steps' order over `train` (data.walk_order), with a warning
  when a stored order puts few classes in each model batch."""
  g = cfg.generate
  order = data_lib.walk_order(len(train), kind=g.model_order, seed=cfg.seed)
  if g.train_steps and g.model_order == "stored":
    fewest = data_lib.classes_per_batch(train.labels, g.batch_size)
    if fewest < min(train.num_classes, g.batch_size) / 2:
      logging.warning(
          "generate.model_order=stored: a model batch holds only %d of %d "
          "classes (the data is stored class by class?); the search may "
          "never leave chance: use generate.model_order=shuffled", fewest,
          train.num_classes)
  return order


def over_time(max_seconds: float, clock: float, *,
              round_end: bool = False) -> bool:
  """Whether a search capped at `max_seconds` of generation (0: no cap)
  stops now, `clock` seconds in. With one process it is asked before every
  batch; with several, only at round ends (`round_end`), where process 0's
  answer is shared (each process reads its own clock, and a checkpoint is
  collective)."""
  if not max_seconds:
    return False
  if jax.process_count() == 1:
    return clock >= max_seconds
  if not round_end:
    return False
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(
      np.int32(clock >= max_seconds)))


def _search(cfg, train: device_data.DeviceData, fit, state, fns,
            log: metrics_lib.MetricLog, saver: resume_lib.Saver,
            at: resume_lib.Position):
  """Runs rounds from position `at` until the stop rule, `max_rounds` or
  `generate.max_seconds` of generation; model steps walk `train`, noise
  steps and the stop test the fit set `fit`. Returns (state, at, capped):
  `capped` when the time cap ended it, after a checkpoint of the position
  it stopped at (a rerun with a larger cap resumes from there)."""
  g, n, n_fit = cfg.generate, len(train), len(fit)
  model_step, noise_step, eval_step = fns
  reached, stop_words = stop_rule(cfg)
  nb = at.noise_batches
  order = model_walk(cfg, train)

  def capped(round_end=False):
    if not over_time(g.max_seconds, saver.clock(), round_end=round_end):
      return False
    if saver.dirty or saver.last_number is None:
      saver.save(state, at)
    logging.warning("generate.max_seconds=%g reached (%s, %.1f s of "
                    "generation); checkpoint %s in %s", g.max_seconds,
                    at.describe(), saver.clock(), saver.last_number,
                    saver.ckpt.directory)
    return True

  while not at.finished(g.max_rounds):
    if capped(round_end=at.pos == nb + 1):
      return state, at, True
    if at.pos == nb + 1:
      at = resume_lib.Position(
          round=at.round + 1, noise_batches=nb, round_started=saver.clock(),
          pretrain=at.pretrain, devices=at.devices, processes=at.processes)
    if at.pos == 0:
      step = int(jax.device_get(state.step))
      if not (at.round - 1) * g.train_steps <= step <= at.round * g.train_steps:
        raise UEError(f"checkpoint at step {step} does not fit round "
                      f"{at.round} of {g.train_steps} model steps; rerun "
                      "with --overwrite to start afresh")
      model_rows = train_lib.cycle_batches(n, g.batch_size, start=step,
                                           order=order)
      for _ in range(at.round * g.train_steps - step):
        if capped():
          return state, at, True
        state, m = model_step(state, saver.add_votes(
            train.batch(next(model_rows))))
        at.model_loss = m["loss"]
        saver.after_batch(state, at, m, noise_batch=False)
      saver.flush(state, at)
      if at.model_loss is not None:
        at.model_loss = float(at.model_loss)
        if not np.isfinite(at.model_loss):
          saver.ckpt.refuse_nonfinite("model loss", f"({at.describe()})")
    progress = metrics_lib.Progress(
        f"generate round {at.round}/{g.max_rounds} noise",
        n_fit - min(n_fit, at.pos * g.batch_size), "img",
        scale=cfg.noise.num_steps)
    for k, rows in enumerate(layouts.noise_batches(
        cfg.noise.layout, n_fit, g.batch_size, seed=cfg.seed,
        round_=at.round)):
      if k < at.pos:
        continue
      if capped():
        return state, at, True
      state, m = noise_step(state, saver.add_votes(fit.batch(rows)))
      at.pos = k + 1
      progress.update(int(np.sum(rows < n_fit)), state.noise)
      saver.after_batch(state, at, m, noise_batch=True)
    saver.flush(state, at)
    acc, loss = train_lib.sweep(eval_step, state, fit, g.eval_batch_size)
    if not np.isfinite(loss):
      saver.ckpt.refuse_nonfinite("loss in the stop test",
                                  f"(round {at.round})")
    at.pos = nb + 1
    at.stop = {"accuracy": acc, "loss": loss,
               "reached": reached(acc, at.round)}
    now = saver.clock()
    # Logged before the round's checkpoint: a run killed in between redoes
    # the stop test, and the resume drops this record first.
    log.write("generate", round=at.round, train_accuracy=acc, train_loss=loss,
              model_loss=at.model_loss, seconds=now - at.round_started,
              total_seconds=now)
    logging.info("generate round %d: accuracy on released train images %.4f "
                 "(%s), loss %.4f, %.1f s", at.round, acc, stop_words, loss,
                 now - at.round_started)
    saver.save(state, at)  # the end of every round is saved
    saver.flush(state, at)
  return state, at, False


def run(cfg, train, workdir: str, log: metrics_lib.MetricLog, *, test=None):
  """Runs (or resumes) the search; writes DIR/noise.npy; returns a summary
  dict. `train` and `test` are Datasets or DeviceData (device_data.py);
  `test` only scores the pretraining epochs (default: `train`)."""
  g = cfg.generate
  placement, train, test = device_data.on_mesh(cfg.mesh.data, train, test)
  if cfg.noise.kind == "random":
    return baselines.random_noise(cfg, train, workdir, placement=placement)
  if cfg.noise.kind in shortcuts.KINDS:
    return shortcuts.shortcut_noise(cfg, train, workdir)
  fit = layouts.fit_set(cfg.noise.layout, train, fraction=g.classwise_subset,
                        seed=cfg.seed + 2, classes=tuple(cfg.noise.fit_classes))
  if not len(fit):
    raise UEError(f"noise.fit_classes={tuple(cfg.noise.fit_classes)!r}: no "
                  "training example of these classes")
  nb = len(range(0, len(fit), g.batch_size))
  sharding.log_placement(placement)
  logging.info("memory plan:\n%s", memory.format_plan(memory.plan_for_config(
      cfg, train, devices=placement.size)))
  # A signal that arrives while compiling or restoring is acted on at the
  # first batches; only the final sweep and the noise export run unguarded.
  with interrupt.StopSignals() as signals:
    state, fns = build(cfg, train, placement)
    ckpt = checkpoint_lib.Checkpoints(
        os.path.join(workdir, resume_lib.CHECKPOINTS),
        max_to_keep=cfg.checkpoint.max_to_keep)
    try:
      fresh = ckpt.latest() is None
      state, at = resume_lib.resume(ckpt, state, nb, devices=placement.size,
                                    processes=jax.process_count(),
                                    max_rounds=g.max_rounds)
      completed = at.completed_rounds()
      log.drop(lambda r: r["stage"] == "generate" and r["round"] > completed)
      saver = resume_lib.Saver(ckpt, cfg.checkpoint, signals, at.elapsed)
      if fresh and g.pretrain_epochs:
        log.drop(lambda r: r["stage"] == baselines.PRETRAIN)
        keep = (targeted.Snapshots(g.pretrain_epochs, cfg.noise.sep_members,
                                   placement.replicated)
                if cfg.noise.kind == "sep" else None)
        state, at.pretrain = baselines.pretrain(
            cfg, state, train, train if test is None else test, log, signals,
            placement=placement, snapshot=keep)
        if keep is not None:
          state = keep.install(state)
        saver.save(state, at)  # a resumed run starts after the pretraining
      state, at, capped = _search(cfg, train, fit, state, fns, log, saver,
                                  at)
      if capped and at.pos != nb + 1:  # mid-round: score the noise as it is
        acc, loss = train_lib.sweep(fns[2], state, fit, g.eval_batch_size)
        at = dataclasses.replace(at, stop={"accuracy": acc, "loss": loss,
                                           "reached": False})
    finally:
      ckpt.close()
  if capped:
    logging.warning("generation capped by generate.max_seconds=%g after %d "
                    "complete round(s) (accuracy %.4f on the released fit "
                    "set, %s); the noise is released as it is",
                    g.max_seconds, at.completed_rounds(),
                    at.stop["accuracy"], stop_rule(cfg)[1])
  elif not at.stop["reached"]:
    logging.warning("stop rule not reached after %d rounds (accuracy %.4f, "
                    "%s); the noise is released anyway", at.round,
                    at.stop["accuracy"], stop_rule(cfg)[1])
  clean_eval = placement.jit_step(
      steps_lib.eval_step, placement.state_shardings(
          state, samplewise=noise_lib.samplewise(cfg.noise.layout)),
      returns_state=False)
  clean_acc, _ = train_lib.sweep(clean_eval, state, train, g.eval_batch_size)
  path, max_abs = artifacts.export_noise(
      state.noise, layouts.noise_shape(cfg.noise.layout, train)[0], placement,
      os.path.join(workdir, "noise.npy"), decode=codec(cfg).decode)
  summary = {"rounds": at.round, "stop_reached": at.stop["reached"],
             "completed_rounds": at.completed_rounds(), "capped": capped,
             "generation_seconds": at.elapsed,
             "final_train_accuracy_on_release": at.stop["accuracy"],
             "generator_clean_train_accuracy": clean_acc,
             "noise_fit_size": len(fit),
             "noise_max_abs": max_abs, "noise_path": path}
  if at.pretrain is not None:
    summary["pretrain_test_accuracy"] = at.pretrain["test_accuracy"]
    summary["pretrain_train_accuracy"] = at.pretrain["train_accuracy"]
  return summary

