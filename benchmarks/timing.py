"""Timing helpers shared by the benchmark scripts. jax is imported inside
each function, so a script can import this before it fixes its CPU device
count."""

import statistics
import time


def call_seconds(fn, *args, repeats: int) -> list:
  """Wall times of `repeats` calls of `fn(*args)`, after one untimed call
  (compilation)."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return times


def median_seconds(fn, *args, repeats: int) -> float:
  """The median of `call_seconds`."""
  return statistics.median(call_seconds(fn, *args, repeats=repeats))


def sweep_seconds(step, state, batches, *, returns_state: bool = True):
  """Calls `step(state, batch)` for each of `batches` (threading the state
  through `state, _ = step(...)` when the step returns it); returns the
  final state and the wall time until the last output is ready."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  out = None
  for batch in batches:
    out = step(state, batch)
    if returns_state:
      state = out[0]
  jax.block_until_ready(out)
  return state, time.perf_counter() - t0


def sweeps_seconds(step, state, batches, *, repeats: int,
                   returns_state: bool = True):
  """Wall times of `repeats` sweeps (`sweep_seconds`), after one untimed
  sweep (compilation); returns the final state and the times."""
  times = []
  for r in range(repeats + 1):
    state, seconds = sweep_seconds(step, state, batches,
                                   returns_state=returns_state)
    if r:
      times.append(seconds)
  return state, times
