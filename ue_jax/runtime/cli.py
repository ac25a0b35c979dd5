"""Command-line plumbing shared by the entry points (main.py, protect.py):
absl flag parsing where every usage error is one `error: ...` line on
stderr and exit code 2, and --config paths resolved against the configs
installed with ue_jax."""

import importlib.util
import os
import sys

from absl import flags

CONFIG_HELP = ("configs/NAME.py is that file where it exists relative to the "
               "current directory, else the config NAME installed with "
               "ue_jax, so the shipped configs run from any directory.")


def exit_with_error(message, code: int = 2) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


def shipped_configs() -> str:
  """The folder of the `configs` package installed with ue_jax (the one
  `from configs import common` in a config file reads), or "" if none."""
  spec = importlib.util.find_spec("configs")
  folders = list(spec.submodule_search_locations or ()) if spec else []
  return folders[0] if folders else ""


def shipped_config(name: str) -> str:
  """The path of the installed configs/NAME.py ("" if not installed)."""
  folder = shipped_configs()
  path = os.path.join(folder, f"{name}.py") if folder else ""
  return path if path and os.path.isfile(path) else ""


def resolve_config(value: str) -> str:
  """A --config value with its path (before an optional `:arg`) taken as
  the installed config of that name when it is `configs/NAME.py` and no
  such file exists relative to the current directory."""
  path, sep, arg = value.partition(":")
  folder, name = os.path.split(os.path.normpath(path))
  if (os.path.exists(path) or folder != "configs"
      or not name.endswith(".py")):
    return value
  shipped = shipped_config(name[:-3])
  return f"{shipped}{sep}{arg}" if shipped else value


def resolve_config_flag(argv):
  """argv with the value of --config (`--config=V` or `--config V`)
  through `resolve_config`."""
  out = list(argv)
  for i in range(1, len(out)):
    flag, eq, value = out[i].partition("=")
    if flag not in ("--config", "-config"):
      continue
    if eq:
      out[i] = f"{flag}={resolve_config(value)}"
    elif i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1])
  return out


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
    rest = flags.FLAGS(resolve_config_flag(argv))
    config.value.to_dict()  # config_flags may defer a loading error
  except flags.Error as e:
    if "Error whilst parsing config file" in str(e):
      # config_flags re-raises get_config's TypeError/ValueError with its
      # traceback in the message; its last line is the error itself.
      exit_with_error("cannot load --config: "
                      + str(e).strip().splitlines()[-1])
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
