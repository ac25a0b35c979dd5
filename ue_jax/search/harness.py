"""What the noise search does besides the algorithm (generate._search holds
the algorithm): the batches it is fed, where a resumed run picks up, the
checkpoints and their votes (resume.Saver), the time cap, the step-count
audit, progress, the metric log and the refusals of non-finite losses.

The loop calls, each round: `start_round` (the time cap at a round's end,
the next round's position), iterates `model_batches` and `noise_batches`
(each asks the time cap before every batch and skips what a resumed run
already did), calls `after_model_step` / `after_noise_step` after each
step, and `end_round` with the stop test's result. A cap that is reached
raises `Capped` after a checkpoint of the position the search stopped at.
"""

import jax
import numpy as np
from absl import logging

from ue_jax import search
from ue_jax.io import data as data_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.search import resume as resume_lib
from ue_jax.training import layouts
from ue_jax.training import train as train_lib
from ue_jax.runtime.errors import UEError


class Capped(Exception):
  """generate.max_seconds was reached; the position is checkpointed."""


def stop_rule(cfg):
  """(reached(accuracy, round), words) for the config's kind of noise."""
  g = cfg.generate
  if cfg.noise.kind == "error_max" or search.is_targeted(cfg.noise.kind):
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


class Harness:
  """See the module docstring. `state` is the latest state the loop
  reported (what a cap checkpoints)."""

  def __init__(self, cfg, train, fit, state, log: metrics_lib.MetricLog,
               saver: resume_lib.Saver, noise_batches: int):
    self.cfg, self.train, self.fit, self.state = cfg, train, fit, state
    self.log, self.saver, self.nb = log, saver, noise_batches
    self.order = model_walk(cfg, train)
    self.reached, self.stop_words = stop_rule(cfg)
    self._rows, self._k, self._progress = None, 0, None

  # ------------------------------------------------------------ time cap
  def _cap(self, at, *, round_end: bool = False):
    g = self.cfg.generate
    if not over_time(g.max_seconds, self.saver.clock(), round_end=round_end):
      return
    if self.saver.dirty or self.saver.last_number is None:
      self.saver.save(self.state, at)
    logging.warning("generate.max_seconds=%g reached (%s, %.1f s of "
                    "generation); checkpoint %s in %s", g.max_seconds,
                    at.describe(), self.saver.clock(), self.saver.last_number,
                    self.saver.ckpt.directory)
    raise Capped()

  # ------------------------------------------------------------ a round
  def start_round(self, state, at: resume_lib.Position):
    """The position to run from: the next round's start after a finished
    round, else `at` (a fresh or resumed round)."""
    self.state = state
    ended = at.pos == self.nb + 1
    self._cap(at, round_end=ended)
    if not ended:
      return at
    return resume_lib.Position(
        round=at.round + 1, noise_batches=self.nb,
        round_started=self.saver.clock(), pretrain=at.pretrain,
        devices=at.devices, processes=at.processes)

  def model_batches(self, state, at: resume_lib.Position):
    """The round's model batches not yet taken (none once its noise steps
    began): the walk continues from the state's step count."""
    if at.pos != 0:
      return
    g = self.cfg.generate
    step = int(jax.device_get(state.step))
    if not (at.round - 1) * g.train_steps <= step <= at.round * g.train_steps:
      raise UEError(f"checkpoint at step {step} does not fit round "
                    f"{at.round} of {g.train_steps} model steps; rerun "
                    "with --overwrite to start afresh")
    rows = train_lib.cycle_batches(len(self.train), g.batch_size, start=step,
                                   order=self.order)
    for _ in range(at.round * g.train_steps - step):
      self._cap(at)
      yield self.saver.add_votes(self.train.batch(next(rows)))
    self.saver.flush(self.state, at)
    if at.model_loss is not None:
      at.model_loss = float(at.model_loss)
      if not np.isfinite(at.model_loss):
        self.saver.ckpt.refuse_nonfinite("model loss", f"({at.describe()})")

  def after_model_step(self, state, at: resume_lib.Position, metrics):
    self.state = state
    at.model_loss = metrics["loss"]
    self.saver.after_batch(state, at, metrics, noise_batch=False)

  def noise_batches(self, state, at: resume_lib.Position):
    """The round's noise batches over the fit set not yet taken."""
    del state  # the loop reports it after each step
    g, n_fit = self.cfg.generate, len(self.fit)
    self._progress = metrics_lib.Progress(
        f"generate round {at.round}/{g.max_rounds} noise",
        n_fit - min(n_fit, at.pos * g.batch_size), "img",
        scale=self.cfg.noise.num_steps)
    for k, rows in enumerate(layouts.noise_batches(
        self.cfg.noise.layout, n_fit, g.batch_size, seed=self.cfg.seed,
        round_=at.round)):
      if k < at.pos:
        continue
      self._cap(at)
      self._k, self._rows = k, rows
      yield self.saver.add_votes(self.fit.batch(rows))
    self.saver.flush(self.state, at)

  def after_noise_step(self, state, at: resume_lib.Position, metrics):
    self.state = state
    at.pos = self._k + 1
    self._progress.update(int(np.sum(self._rows < len(self.fit))),
                          state.noise)
    self.saver.after_batch(state, at, metrics, noise_batch=True)

  def end_round(self, state, at: resume_lib.Position, accuracy: float,
                loss: float):
    """Records the stop test, logs the round and checkpoints its end."""
    self.state = state
    if not np.isfinite(loss):
      self.saver.ckpt.refuse_nonfinite("loss in the stop test",
                                       f"(round {at.round})")
    at.pos = self.nb + 1
    at.stop = {"accuracy": accuracy, "loss": loss,
               "reached": self.reached(accuracy, at.round)}
    now = self.saver.clock()
    # Logged before the round's checkpoint: a run killed in between redoes
    # the stop test, and the resume drops this record first.
    self.log.write("generate", round=at.round, train_accuracy=accuracy,
                   train_loss=loss, model_loss=at.model_loss,
                   seconds=now - at.round_started, total_seconds=now)
    logging.info("generate round %d: accuracy on released train images %.4f "
                 "(%s), loss %.4f, %.1f s", at.round, accuracy,
                 self.stop_words, loss, now - at.round_started)
    self.saver.save(state, at)  # the end of every round is saved
    self.saver.flush(state, at)
