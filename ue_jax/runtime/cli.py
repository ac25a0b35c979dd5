"""Command-line plumbing shared by the entry points (main.py, protect.py):
absl flag parsing where every usage error is one `error: ...` line on
stderr and exit code 2."""

import sys

from absl import flags


def exit_with_error(message, code: int = 2) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


def unknown_field(argv, error) -> str:
  """One line for ml_collections' KeyError on an override of no field."""
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  key, *hint = str(error.args[0] if error.args else error).splitlines()
  flag = next((a.split("=")[0] for a in argv if a.startswith("--config.")
               and key.strip("'\"") in a.split("=")[0].split(".")), key)
  return f"{flag}: no such config field{'; ' if hint else ''}{' '.join(hint)}"


def parse_flags(argv, config):
  """absl's flag parsing (`config`: the config_flags holder), with each
  usage error as one line and exit 2."""
  try:
    rest = flags.FLAGS(argv)
    config.value.to_dict()  # config_flags may defer a loading error
  except flags.Error as e:
    exit_with_error(e)
  except (AttributeError, KeyError) as e:  # ml_collections: no such field
    exit_with_error(unknown_field(argv, e))
  except Exception as e:  # pylint: disable=broad-except
    # The config file is user code: whatever it raises is a usage error.
    last = (str(e).strip().splitlines() or [""])[-1]
    exit_with_error(f"cannot load --config: {type(e).__name__}: {last}")
  if len(rest) > 1:
    exit_with_error(f"unexpected arguments: {' '.join(rest[1:])}")
  return rest
