"""Command line: `python -m ue_jax.main --config=configs/NAME.py [--workdir=DIR]`.

Runs generate, release, evaluate and, with battery.enabled, the battery (or
one stage with --stage); a rerun in the same workdir resumes generation from
its latest checkpoint, a battery from its finished cells. All logic
lives in the library. Bad input, flags included, ends with one line
`error: ...` on stderr and exit code 2; SIGINT/SIGTERM exit with 130/143
and one `stopped:` line, after a checkpoint during generation (the other
stages keep what they finished). Without --workdir the run's folder is
runs/<config name> under the current directory.
"""

import os
import sys

from ue_jax.runtime import interrupt

if __name__ == "__main__":
  # First, before the imports that take seconds: from here on SIGINT and
  # SIGTERM end the command with one `stopped:` line and exit 130/143 (the
  # stages put their own handling in place inside).
  interrupt.ExitOnSignal("before the first stage; nothing was "
                         "written").install()

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ue_jax import pipeline
from ue_jax.parallel import distributed
from ue_jax.config import checks
from ue_jax.runtime import cli
from ue_jax.runtime.errors import Interrupted
from ue_jax.runtime.errors import Stopped
from ue_jax.runtime.errors import UEError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, f"Experiment config file. {cli.CONFIG_HELP}",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory; default runs/<the config's name> "
    "under the current directory (a rerun of the same command resumes it).")
_STAGE = flags.DEFINE_enum("stage", "all", ("all",) + pipeline.STAGES,
                           "Which stage to run.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Delete the workdir's checkpoints and outputs first "
    "and start afresh, even if another config made them.")
_TENSORBOARD = flags.DEFINE_bool(
    "tensorboard", True, "Also write the metrics as TensorBoard events in "
    "WORKDIR/tensorboard: by default where the tensorboardX package is "
    "installed; --tensorboard insists (an error without it), "
    "--notensorboard turns them off.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "Multi-process: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0,
                                      "Multi-process: how many processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1,
                                   "Multi-process: this process, 0-based.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-process with the settings JAX detects "
    "(TPU pod, Slurm); the three flags above override them.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 1, "On a CPU: how many XLA devices to split it into, the "
    "batch spread over them. 1, the default: JAX's single device, whose "
    "programs hold no collective and so cannot deadlock. -1: one per core "
    "(or the most that divide the config's batch sizes), 1.4x faster PGD on "
    "2 cores, for benchmarks and sharding tests: XLA:CPU's in-process "
    "collectives can then abort a run (docs/architecture.md). "
    "Single-process runs only.")
flags.mark_flags_as_required(["config"])


def _exit_with_error(message) -> None:
  cli.exit_with_error(message)


def parse_flags(argv):
  """absl's flag parsing, with each usage error as one line and exit 2."""
  return cli.parse_flags(argv, _CONFIG)


def main(argv):
  del argv  # checked by parse_flags
  try:
    # The config first: the device count below reads its batch sizes.
    checks.check_config(_CONFIG.value)
    if not (_COORDINATOR.value or _NUM_PROCESSES.value > 1
            or _DISTRIBUTED.value):
      distributed.use_cpu_cores(_CPU_DEVICES.value, batch_sizes=tuple(
          pipeline.batch_sizes(_CONFIG.value, pipeline.STAGES).values()))
    distributed.initialize_distributed(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
        auto=_DISTRIBUTED.value)
  except UEError as e:
    _exit_with_error(e)
  logging.info("JAX %s, process %d/%d, devices: %s", jax.__version__,
               jax.process_index(), jax.process_count(), jax.devices())
  stages = (pipeline.default_stages(_CONFIG.value) if _STAGE.value == "all"
            else (_STAGE.value,))
  workdir = _WORKDIR.value or os.path.join("runs", _CONFIG.value.name)
  if not _WORKDIR.value:
    logging.info("no --workdir given: the run's folder is %s",
                 os.path.abspath(workdir))
  try:
    pipeline.run(_CONFIG.value, workdir, stages,
                 overwrite=_OVERWRITE.value,
                 tensorboard=(_TENSORBOARD.value if _TENSORBOARD.present
                              else None))
  except UEError as e:
    _exit_with_error(e)
  except (Interrupted, Stopped) as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(e.exit_code)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
