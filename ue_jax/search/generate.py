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
The modules of these kinds (and baselines.py's pretraining) are imported
when a run needs them (search/__init__.py: MAKERS).
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
from absl import logging

from ue_jax import search
from ue_jax.io import artifacts
from ue_jax.search import harness as harness_lib
from ue_jax.io import checkpoint as checkpoint_lib
from ue_jax.parallel import device_data
from ue_jax.runtime import interrupt
from ue_jax.training import layouts
from ue_jax.search import resume as resume_lib
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


def exported(cfg):
  """The noise as written to noise.npy from its storage: decoded, and with
  noise.at_bound moved to the bound, eps * sign, of its projection onto its
  form (noise.form: the channel mean for luma, so the three channels get
  one sign; zeros stay zero)."""
  decode, eps = codec(cfg).decode, cfg.noise.eps
  if not cfg.noise.at_bound:
    return decode
  subspace = noise_lib.form_projection(cfg.noise.form, cfg.noise.form_block)
  subspace = subspace or (lambda a: a)
  return lambda stored: jnp.sign(subspace(decode(stored))) * jnp.float32(eps)


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
      state = search.maker("sep").with_member_slots(state,
                                                    cfg.noise.sep_members)
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
  if search.is_targeted(cfg.noise.kind):
    noise_fn = search.maker(cfg.noise.kind).bound_noise_step(
        cfg, train.num_classes, store)
  fns = (placement.jit_step(model_fn, shardings, rows=rows,
                            full_batches=True),
         placement.jit_step(noise_fn, shardings, rows=rows),
         placement.jit_step(eval_fn, shardings, rows=rows,
                            returns_state=False))
  return state, fns


# The names the rest of the package and the tests use.
stop_rule, model_walk, over_time = (harness_lib.stop_rule,
                                    harness_lib.model_walk,
                                    harness_lib.over_time)


def _restate_stop(cfg, at, nb: int):
  """A resumed search that ended a round is judged by the stop rule as
  configured now: a raised generate.min_rounds (or stop_accuracy) continues
  a search that had stopped, from the noise and model it stopped with."""
  if at.stop is None or at.pos != nb + 1:
    return
  reached = stop_rule(cfg)[0](at.stop["accuracy"], at.round)
  if reached != at.stop["reached"]:
    logging.info("round %d (accuracy %.4f): the stop rule as configured now "
                 "says %s; the search %s", at.round, at.stop["accuracy"],
                 "stop" if reached else "go on",
                 "stops here" if reached else "continues")
  at.stop["reached"] = reached


def _search(cfg, train, fit, state, fns, h: harness_lib.Harness, at):
  """The min-min loop (docs/method.md §2), from position `at`: each round,
  M model steps on the perturbed training set `train`, a K-step PGD on the
  noise of each batch of the fit set `fit`, then the stop test on `fit`'s
  released images; until the stop rule or generate.max_rounds. `h` does the
  rest (harness.py: batches, resume, checkpoints, time cap, logs). Returns
  (state, at, capped): `capped` when generate.max_seconds ended it."""
  model_step, noise_step, eval_step = fns
  try:
    while not at.finished(cfg.generate.max_rounds):
      at = h.start_round(state, at)
      for batch in h.model_batches(state, at):
        state, metrics = model_step(state, batch)
        h.after_model_step(state, at, metrics)
      for batch in h.noise_batches(state, at):
        state, metrics = noise_step(state, batch)
        h.after_noise_step(state, at, metrics)
      accuracy, loss = train_lib.sweep(eval_step, state, fit,
                                       cfg.generate.eval_batch_size)
      h.end_round(state, at, accuracy, loss)
  except harness_lib.Capped:
    return state, at, True
  return state, at, False


def run(cfg, train, workdir: str, log: metrics_lib.MetricLog, *, test=None):
  """Runs (or resumes) the search; writes DIR/noise.npy; returns a summary
  dict. `train` and `test` are Datasets or DeviceData (device_data.py);
  `test` only scores the pretraining epochs (default: `train`)."""
  g = cfg.generate
  placement, train, test = device_data.on_mesh(cfg.mesh.data, train, test)
  made_by = search.MAKERS.get(cfg.noise.kind)  # None: the loop below
  if made_by == "baselines":  # random
    return search.maker(cfg.noise.kind).random_noise(cfg, train, workdir,
                                                     placement=placement)
  if made_by == "shortcuts":
    return search.maker(cfg.noise.kind).shortcut_noise(cfg, train, workdir)
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
      _restate_stop(cfg, at, nb)
      completed = at.completed_rounds()
      log.drop(lambda r: r["stage"] == "generate" and r["round"] > completed)
      saver = resume_lib.Saver(ckpt, cfg.checkpoint, signals, at.elapsed)
      if fresh and g.pretrain_epochs:
        baselines = search.module("baselines")
        log.drop(lambda r: r["stage"] == baselines.PRETRAIN)
        keep = None  # sep: the pretraining checkpoints of its ensemble
        if cfg.noise.kind == "sep":
          keep = search.maker("sep").Snapshots(
              g.pretrain_epochs, cfg.noise.sep_members, placement.replicated)
        state, at.pretrain = baselines.pretrain(
            cfg, state, train, train if test is None else test, log, signals,
            placement=placement, snapshot=keep)
        if keep is not None:
          state = keep.install(state)
        saver.save(state, at)  # a resumed run starts after the pretraining
      state, at, capped = _search(
          cfg, train, fit, state, fns,
          harness_lib.Harness(cfg, train, fit, state, log, saver, nb), at)
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
      os.path.join(workdir, "noise.npy"), decode=exported(cfg))
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

