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


def sweep_seconds(step, state, batches):
  """Runs `state, _ = step(state, batch)` over `batches`; returns the final
  state and the wall time until it is ready."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  for batch in batches:
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  return state, time.perf_counter() - t0
