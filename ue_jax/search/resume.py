"""The search's resume protocol: where it is (`Position`, the checkpoint's
JSON metadata), when it saves and stops (`Saver`), and what it resumes from
(`resume`, `check_resume`).

The whole state is checkpointed (io/checkpoint.py) with a `Position`, and a
run started again in the same workdir continues from the latest checkpoint to
the same noise, bit for bit, as a run never stopped. Inside round r, position
`pos` means:
  0       in the model steps; state.step - (r - 1) * M of them are done, and
          the next model batch follows from state.step (train.cycle_batches);
  k       k of the round's nb noise batches are done (1 <= k <= nb);
  nb + 1  the stop test is done; its result is in `Position.stop`.
SIGINT and SIGTERM stop the search after the current batch, with a checkpoint.
"""

import dataclasses
import os
import time
from typing import Optional

import jax
import numpy as np
from absl import logging

from ue_jax.io import checkpoint as checkpoint_lib
from ue_jax.parallel import sharding
from ue_jax.runtime import interrupt
from ue_jax.runtime.errors import Interrupted
from ue_jax.runtime.errors import UEError

CHECKPOINTS = "checkpoints"  # the checkpoints' folder in a workdir


@dataclasses.dataclass
class Position:
  """Where the search is; saved as the checkpoint's JSON metadata."""
  round: int = 1
  pos: int = 0
  noise_batches: int = 0          # nb, to refuse a checkpoint of other data
  model_loss: Optional[float] = None  # last model step's loss in this round
  stop: Optional[dict] = None     # accuracy, loss, reached (pos = nb + 1)
  elapsed: float = 0.0            # generation seconds, over all processes
  round_started: float = 0.0      # `elapsed` when this round began
  pretrain: Optional[dict] = None  # last pretraining epoch (error_max)
  # The mesh it ran on (0: not recorded): the sums run in its order, so a
  # search resumes bit-identically only on the same counts.
  devices: int = 0
  processes: int = 0

  def completed_rounds(self) -> int:
    return self.round if self.pos == self.noise_batches + 1 else self.round - 1

  def finished(self, max_rounds: int) -> bool:
    return (self.pos == self.noise_batches + 1
            and (self.stop["reached"] or self.round >= max_rounds))

  def describe(self) -> str:
    if self.pos == 0:
      return f"round {self.round}, model steps"
    if self.pos <= self.noise_batches:
      return (f"round {self.round}, after {self.pos}/{self.noise_batches} "
              "noise batches")
    return f"round {self.round}, after the stop test"


class Saver:
  """Checkpoints on the configured cadence and turns a stop signal into
  `Interrupted` once the position it stopped at is saved.

  A save is collective. With one process the clock and the signal flag
  decide after each batch. With several, each process would read its own
  clock and only some may get a signal, so the decision is shared: before
  each batch every process casts its votes into the batch (`add_votes`:
  a timed save, from process 0's clock only, numbered so that a vote cast
  before a save does not ask for another; a signal, from any process), and
  the step returns their maximum (sharding.agree), the same in every
  process. A step's votes are read after the next step is dispatched (the
  host waits for no step it has not already queued another behind), and at
  the end of each pass (`flush`), where the host waits anyway; every
  process then saves, or stops, at the same batch.
  """

  def __init__(self, ckpt: checkpoint_lib.Checkpoints, ck_cfg,
               signals: interrupt.StopSignals, elapsed: float):
    self.ckpt, self.signals = ckpt, signals
    self.every_batches = ck_cfg.every_batches
    self.every_seconds = ck_cfg.every_seconds
    self.start, self.base = time.perf_counter(), elapsed
    self.last_time, self.last_number, self.dirty = self.start, None, False
    self.shared = jax.process_count() > 1
    self.saves, self.pending = 0, None  # saves so far; unread step votes

  def clock(self) -> float:
    """Generation seconds so far, including earlier processes."""
    return self.base + time.perf_counter() - self.start

  def save(self, state, at: Position):
    at.elapsed = self.clock()
    meta = dataclasses.asdict(at)
    if at.model_loss is not None:
      meta["model_loss"] = float(at.model_loss)
    self.last_number = self.ckpt.save(state, meta, where=f"({at.describe()})")
    self.last_time, self.dirty = time.perf_counter(), False
    self.saves += 1

  def timed(self) -> bool:
    return (self.every_seconds > 0
            and time.perf_counter() - self.last_time >= self.every_seconds)

  def add_votes(self, batch: dict) -> dict:
    """The batch with this process's votes when the decision is shared."""
    if not self.shared:
      return batch
    save = self.saves + 1 if jax.process_index() == 0 and self.timed() else 0
    return {**batch, sharding.VOTES: self.signals.votes(
        len(batch["index"]), save=save)}

  def _agreed(self, votes):
    """(timed save due, signal number) from a step's agreed votes."""
    if votes is None:
      return False, 0
    save, signum = (int(v) for v in np.asarray(votes))
    return save > self.saves, signum

  def after_batch(self, state, at: Position, metrics, *, noise_batch: bool):
    """After a step whose output metrics are `metrics`: saves when due,
    and stops (Interrupted) on a signal."""
    self.dirty = True
    if self.shared:
      votes, self.pending = self.pending, metrics.get(sharding.VOTES)
      timed, signum = self._agreed(votes)
    else:
      timed, signum = self.timed(), self.signals.signum or 0
    due = timed or (noise_batch and self.every_batches > 0
                    and at.pos % self.every_batches == 0)
    if due and not signum:
      self.save(state, at)
    self.stop(state, at, signum)

  def flush(self, state, at: Position):
    """Acts on the last step's votes, at the end of a pass."""
    if self.shared:
      timed, signum = self._agreed(self.pending)
      self.pending = None
      if timed and not signum:
        self.save(state, at)
      self.stop(state, at, signum)
    else:
      self.stop(state, at, self.signals.signum or 0)

  def stop(self, state, at: Position, signum: int):
    """On a signal: saves the position (unless just saved) and raises
    Interrupted."""
    if not signum:
      return
    if self.dirty or self.last_number is None:
      self.save(state, at)
    raise Interrupted(
        f"{interrupt.signal_name(signum)} received ({at.describe()}); "
        f"checkpoint {self.last_number} saved in {self.ckpt.directory}; "
        "rerun the same command to resume", signum=signum)


def _check_mesh(at: Position, number: int, directory: str, *, devices: int,
                processes: int, max_rounds: int):
  """Refuses to resume an unfinished search on another device or process
  count (a checkpoint that does not record them is taken as it is). A
  finished search has no step left whose sums could run in another order:
  its later stages run on any count."""
  if not at.devices or (at.devices, at.processes) == (devices, processes):
    return
  if at.finished(max_rounds):
    logging.info("the search in %s finished on %d device(s) in %d "
                 "process(es); its later stages run on %d in %d", directory,
                 at.devices, at.processes, devices, processes)
    return
  raise UEError(
      f"checkpoint {number} in {directory} was made on {at.devices} "
      f"device(s) in {at.processes} process(es), this run has {devices} in "
      f"{processes}; a search resumes bit-identically only on the same "
      f"counts: rerun with --cpu_devices={at.devices} (one CPU process; "
      f"elsewhere --config.mesh.data={at.devices} or {at.processes} "
      "process(es)), or pass --overwrite to start afresh")


def check_resume(workdir: str, *, devices: int, processes: int,
                 max_rounds: int):
  """Before the workdir is claimed: refuses (UEError) a workdir whose latest
  checkpoint, of a search that has not finished (`max_rounds`: the
  config's cap), was made on other device or process counts."""
  directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS))
  found = checkpoint_lib.peek_latest(directory)
  if found is None:
    return
  number, meta = found
  try:
    at = Position(**meta)
  except TypeError:
    return  # refused by resume, with the metadata named
  _check_mesh(at, number, directory, devices=devices, processes=processes,
              max_rounds=max_rounds)


def resume(ckpt: checkpoint_lib.Checkpoints, state, nb: int, *,
           devices: int, processes: int, max_rounds: int):
  """The latest checkpoint's state and position, or the fresh ones, for a
  search on `devices` devices in `processes` processes, capped at
  `max_rounds` rounds."""
  if ckpt.latest() is None:
    return state, Position(noise_batches=nb, devices=devices,
                           processes=processes)
  number = ckpt.latest()
  meta = ckpt.meta(number)
  try:
    at = Position(**meta)
  except TypeError:
    raise UEError(f"checkpoint {number} in {ckpt.directory} has unknown "
                  f"metadata {sorted(meta)}; rerun with --overwrite to start "
                  "afresh") from None
  _check_mesh(at, number, ckpt.directory, devices=devices,
              processes=processes, max_rounds=max_rounds)
  at.devices, at.processes = devices, processes
  state, _ = ckpt.restore(state, number)
  if at.noise_batches != nb:
    raise UEError(f"checkpoint {number} in {ckpt.directory} was made with "
                  f"{at.noise_batches} noise batches per round, this run has "
                  f"{nb}; rerun with --overwrite to start afresh")
  logging.info("resuming from checkpoint %d in %s (%s, %.1f s of generation "
               "so far)", number, ckpt.directory, at.describe(), at.elapsed)
  return state, at
