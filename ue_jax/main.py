"""Command line: `python -m ue_jax.main --config=configs/<name>.py --workdir=DIR`.

Runs generate, release and evaluate (or one stage with --stage). All logic
lives in the library; bad input ends with one line on stderr and exit code 2.
"""

import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ue_jax import pipeline
from ue_jax.errors import UEError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_STAGE = flags.DEFINE_enum("stage", "all", ("all",) + pipeline.STAGES,
                           "Which stage to run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.info("JAX %s, process %d/%d, devices: %s", jax.__version__,
               jax.process_index(), jax.process_count(), jax.devices())
  stages = pipeline.STAGES if _STAGE.value == "all" else (_STAGE.value,)
  try:
    pipeline.run(_CONFIG.value, _WORKDIR.value, stages)
  except UEError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
