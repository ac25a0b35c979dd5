"""Run logging: a JSON-lines metric log in the workdir, and console progress
with rate and ETA (absl logging, throttled)."""

import json
import os
import time
from typing import Callable

import jax
from absl import logging

from ue_jax.io import artifacts


class MetricLog:
  """Appends one JSON object per line to DIR/metrics.jsonl (plot from it)."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.path = os.path.join(workdir, filename)
    self.enabled = artifacts.writes_files()  # process 0 only
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)

  def write(self, stage: str, **scalars):
    record = {"stage": stage, "time": round(time.time(), 3)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    if not self.enabled:
      return record
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
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
