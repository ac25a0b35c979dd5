"""Process start-up: CPU devices, XLA flags, `jax.distributed`, barriers.

What runs before the mesh exists (sharding.py builds it): splitting the CPU
into one XLA device per core (`use_cpu_cores`), with XLA:CPU's collective
timeouts lengthened in XLA_FLAGS (`COLLECTIVE_TIMEOUTS`), and
`jax.distributed.initialize` for multi-process runs (`initialize_distributed`);
`sync` waits for every process.
"""

import os
import re

import jax
from jax.experimental import multihost_utils

from ue_jax.runtime.errors import UEError


def cpu_cores() -> int:
  """The cores this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def cpu_device_count(cores: int, batch_sizes=()) -> int:
  """The most devices, at most one per core, that divide every batch size."""
  return next(d for d in range(max(cores, 1), 0, -1)
              if all(b % d == 0 for b in batch_sizes))


# XLA:CPU's in-process collectives (the all-reduces of a step on several CPU
# devices of one process) wait for every device at a rendezvous; a device
# that arrives late prints a warning after the first timeout and aborts the
# process after the second (XLA's defaults: 20 s, then 40 s more). Uneven
# progress of the devices' threads on a loaded machine could trip them, so
# several CPU devices get ten minutes before the abort instead. A program
# with two collectives that do not depend on each other (and that XLA does
# not combine) can deadlock there whatever the timeout: the devices may run
# them in different orders (docs/operations.md); such a run still ends,
# with XLA's message. Flag names of xla/debug_options_flags.cc
# (jaxlib >= 0.8); values in seconds.
COLLECTIVE_TIMEOUTS = (
    ("xla_cpu_collective_call_warn_stuck_timeout_seconds", 120),
    ("xla_cpu_collective_call_terminate_timeout_seconds", 600),
    ("xla_cpu_collective_timeout_seconds", 600),
)


def with_collective_timeouts(xla_flags: str) -> str:
  """`xla_flags` (an XLA_FLAGS value) with each of `COLLECTIVE_TIMEOUTS`
  appended that it does not set already (a value the user gave wins)."""
  given = set(re.findall(r"--(\w+)=", xla_flags))
  extra = [f"--{name}={value}" for name, value in COLLECTIVE_TIMEOUTS
           if name not in given]
  return " ".join([xla_flags.strip()] + extra).strip()


def forced_device_count(xla_flags: str) -> int:
  """The CPU device count fixed in an XLA_FLAGS value (0: none)."""
  found = re.findall(r"--xla_force_host_platform_device_count=(\d+)",
                     xla_flags)
  return int(found[-1]) if found else 0


def use_cpu_cores(count: int = -1, batch_sizes=()) -> int:
  """Splits the CPU into `count` XLA devices, so that the mesh spreads every
  batch over the cores. -1: one per core this process may run on, or the
  largest count below that divides every size in `batch_sizes`.

  XLA:CPU runs one device's convolutions on all cores with intra-op
  threads; one device per core, each with its share of the batch, is
  faster: on 2 cores 1.4x for the width-16 ResNet's PGD step and 1.2x for
  its model step (docs/operations.md). Results do not depend on the
  device count (sharding.py), but the sums run in another order, so a
  run on 2 devices is not bit-identical to one on 1. Must run before JAX
  starts its backends; it leaves a count fixed in XLA_FLAGS alone, and only
  affects the CPU backend (on a GPU or TPU host the accelerator stays the
  default). With more than one CPU device (set here or in XLA_FLAGS) it
  also lengthens XLA:CPU's collective timeouts (`COLLECTIVE_TIMEOUTS`) in
  XLA_FLAGS, keeping any of them the user set there.
  Returns the CPU device count it set (0: none).
  """
  if count < -1 or count == 0:
    raise UEError(f"--cpu_devices={count}: use -1 (one per core) or a "
                  "positive count")
  if count == -1:
    count = cpu_device_count(cpu_cores(), batch_sizes)
  xla_flags = os.environ.get("XLA_FLAGS", "")
  forced = forced_device_count(xla_flags)
  if (forced or count) > 1:
    os.environ["XLA_FLAGS"] = with_collective_timeouts(xla_flags)
  if count == 1 or "xla_force_host_platform_device_count" in xla_flags:
    return 0
  jax.config.update("jax_num_cpu_devices", count)
  return count


def initialize_distributed(*, coordinator_address: str = "",
                           num_processes: int = 0, process_id: int = -1,
                           auto: bool = False) -> bool:
  """`jax.distributed.initialize` from flags, or from the environment with
  `auto` (TPU pods and Slurm are detected by JAX). Returns whether it ran.
  CPU processes exchange data through gloo."""
  given = bool(coordinator_address) or num_processes > 1
  if not (given or auto):
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if given:
    if not coordinator_address or num_processes < 1 or process_id < 0:
      raise UEError("multi-process runs need all of --coordinator_address, "
                    "--num_processes and --process_id (or --distributed "
                    "alone on a TPU pod or under Slurm)")
    if process_id >= num_processes:
      raise UEError(f"--process_id={process_id} must be below "
                    f"--num_processes={num_processes}")
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kwargs)
  return True


def sync(name: str):
  """Waits until every process got here (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
