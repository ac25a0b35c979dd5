"""Run logging: a JSON-lines metric log in the workdir (and, on request, the
same scalars as TensorBoard events in DIR/tensorboard, through the
pure-Python tensorboardX package), and console progress with rate and ETA
(absl logging, throttled)."""

import json
import os
import socket
import time
from typing import Callable

import jax
from absl import logging

from ue_jax.io import artifacts
from ue_jax.runtime.errors import UEError

TENSORBOARD_DIR = "tensorboard"
# The field of a record that is its step on TensorBoard's x axis, by
# preference; a record with none of them takes its stage's record count.
STEP_FIELDS = ("round", "epoch", "step")


class MetricLog:
  """Appends one JSON object per line to DIR/metrics.jsonl (plot from it)."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl", *,
               tensorboard: bool = False):
    self.path = os.path.join(workdir, filename)
    self.enabled = artifacts.writes_files()  # process 0 only
    self.board = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        self.board = Board(os.path.join(workdir, TENSORBOARD_DIR))

  def write(self, stage: str, **scalars):
    record = {"stage": stage, "time": round(time.time(), 3)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    if not self.enabled:
      return record
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
    if self.board is not None:
      self.board.write(record)
    return record

  def drop(self, predicate: Callable[[dict], bool]) -> int:
    """Rewrites the log (atomically) without the records that match
    `predicate` and without lines a killed run left half-written, so work
    that a resumed run repeats is logged once. Returns how many went."""
    if not self.enabled or not os.path.exists(self.path):
      return 0
    with open(self.path, encoding="utf-8") as f:
      lines = [line for line in f if line.strip()]
    kept = [line for line in lines
            if (r := _parse(line)) is not None and not predicate(r)]
    if len(kept) < len(lines):
      artifacts.save_text(self.path, "".join(
          line if line.endswith("\n") else line + "\n" for line in kept))
    return len(lines) - len(kept)


def board_writer():
  """tensorboardX's synchronous event-file writer and protos (a
  SummaryWriter queues events on a thread and may not have written the last
  ones when a run is killed), or a UEError naming the install."""
  try:
    # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import event_pb2
    from tensorboardX.proto import summary_pb2
    from tensorboardX.record_writer import RecordWriter
  except ImportError:
    raise UEError("--tensorboard needs the tensorboardX package: pip install "
                  "tensorboardX (or pip install 'ue_jax[tensorboard]')"
                  ) from None
  return RecordWriter, event_pb2, summary_pb2


def board_available() -> bool:
  """Whether tensorboardX is installed (its events are then written by
  default)."""
  try:
    board_writer()
  except UEError:
    return False
  return True


class Board:
  """The scalars of each record as one TensorBoard event, written and
  flushed at once: tag `stage/field`, step the record's round, epoch or step
  (else its stage's count); lists, strings and booleans are left to
  metrics.jsonl. Each run opens a new event file; a rerun that redoes work
  writes its steps again (TensorBoard shows the latest)."""

  def __init__(self, logdir: str):
    writer, self.event_pb2, self.summary_pb2 = board_writer()
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{time.time():.6f}."
            f"{socket.gethostname()}.{os.getpid()}")
    self.writer = writer(os.path.join(logdir, name))
    self.counts = {}
    self._put(self.event_pb2.Event(wall_time=time.time(),
                                   file_version="brain.Event:2"))

  def _put(self, event) -> None:
    self.writer.write(event.SerializeToString())
    self.writer.flush()

  def write(self, record: dict) -> None:
    stage = record["stage"]
    self.counts[stage] = self.counts.get(stage, 0) + 1
    step = next((record[f] for f in STEP_FIELDS
                 if isinstance(record.get(f), int)), self.counts[stage])
    values = [self.summary_pb2.Summary.Value(tag=f"{stage}/{key}",
                                             simple_value=float(value))
              for key, value in record.items()
              if key not in ("stage", "time", *STEP_FIELDS)
              and isinstance(value, (int, float))
              and not isinstance(value, bool)]
    if values:
      self._put(self.event_pb2.Event(
          wall_time=record["time"], step=step,
          summary=self.summary_pb2.Summary(value=values)))


def _parse(line: str):
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) and "stage" in record else None


def read_log(path: str, stage=None):
  """The records of a metric log (of one stage), skipping a torn last line."""
  with open(path, encoding="utf-8") as f:
    records = [r for r in map(_parse, f) if r is not None]
  return [r for r in records if stage is None or r["stage"] == stage]


def _plain(v):
  if hasattr(v, "item"):
    return v.item()
  return v


def format_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
  """Logs `label done/total unit, rate, ETA` at most every `every` seconds."""

  def __init__(self, label: str, total: int, unit: str, every: float = 10.0,
               scale: int = 1):
    self.label, self.total, self.unit = label, total, unit
    self.every, self.scale = every, scale
    self.done = 0
    self.start = self.last = time.perf_counter()

  def update(self, n: int, pending=None):
    """Counts n more units of dispatched work, whose output is `pending`
    (arrays). Only when a line is due is `pending` waited for, so the line
    reports finished work while the host never waits for the devices
    between lines."""
    self.done += n
    if (time.perf_counter() - self.last >= self.every
        or self.done >= self.total):
      if pending is not None:
        jax.block_until_ready(pending)
      now = self.last = time.perf_counter()
      elapsed = now - self.start
      rate = self.done / max(elapsed, 1e-9)
      eta = (self.total - self.done) / max(rate, 1e-9)
      logging.info("%s: %d/%d %s, %.1f %s/s, elapsed %s, ETA %s", self.label,
                   self.done, self.total, self.unit, rate * self.scale,
                   self.unit if self.scale == 1 else self.unit + "·steps",
                   format_seconds(elapsed), format_seconds(eta))
