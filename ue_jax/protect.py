"""Command line: protect a folder of your own images.

  python -m ue_jax.protect --input=DIR --output=DIR \\
      [--config=configs/protect.py] [--config.x=y ...] [--labels=FILE.csv] \\
      [--workdir=DIR] [--heldout=DIR] [--overwrite] \\
      [--reference=FOLDER_OR_TAR [--reference_size=N]]
  python -m ue_jax.protect --serve [--port=N] [--noopen_browser] \\
      [--config=...] [--config.x=y ...]

Writes every image of --input (labelled by class subfolders or --labels) to
the same relative path under --output as a protected PNG (protect_folder.py;
docs/protect.md). The workdir (default OUTPUT/.ue_jax) holds the search's
checkpoints, manifest.json and preview.png; a rerun resumes. With --heldout
(a folder with the same class subfolders) it also trains a fresh model on
the protected and on the original images and reports their accuracy on it.
With --reference (other classes' images: a class-folder tree, a tar of one,
or a dataset root with train/ and test/), --input may be one class (class
subfolders, or loose images: the folder is the class); the search trains
on both and only the input's copies are written. With --serve it serves a
local page at http://127.0.0.1:PORT/ instead (serve.py; the folders are
given on the page) and runs there until stopped.

Exit codes: 0 every image protected and checked; 1 some files could not be
read (named on stderr, the others protected); 2 bad input, nothing written;
130/143 stopped by SIGINT/SIGTERM (at any point, from the imports on: one
`stopped: ...` line on stderr), rerun to continue.
"""

import sys

from ue_jax.runtime import interrupt

if __name__ == "__main__":
  # First, before the imports that take seconds: from here on SIGINT and
  # SIGTERM end the command with one `stopped:` line and exit 130/143, not
  # with a traceback (or, for SIGTERM, silently).
  interrupt.ExitOnSignal("starting; nothing was written").install()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ue_jax.runtime import cli
from ue_jax.runtime.errors import Interrupted
from ue_jax.runtime.errors import Stopped
from ue_jax.runtime.errors import UEError
from ue_jax import protect_folder as protect
from ue_jax import serve
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, f"Config file. {cli.CONFIG_HELP} Default: the "
    "installed configs/protect.py.", lock_config=True)
_INPUT = flags.DEFINE_string("input", None, "Folder of images to protect.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the copies.")
_LABELS = flags.DEFINE_string(
    "labels", "", "CSV of `file,label` rows (paths relative to --input); "
    "default: one subfolder per class.")
_WORKDIR = flags.DEFINE_string(
    "workdir", "", "Checkpoints, manifest and preview (default: "
    f"OUTPUT/{protect.WORKDIR_NAME}).")
_HELDOUT = flags.DEFINE_string(
    "heldout", "", "Folder of held-out images (same class subfolders): train "
    "on the copies and on the originals, report accuracy on it.")
_REFERENCE = flags.DEFINE_string(
    "reference", "", "Images of other classes searched beside --input (a "
    "class tree, a tar of one, or a dataset root with train/); never "
    "written. Needed when --input holds a single class.")
_REFERENCE_SIZE = flags.DEFINE_integer(
    "reference_size", 5000, "At most this many --reference images (a "
    "seeded class-stratified subset; 0 = all).", lower_bound=0)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Search afresh, deleting the workdir's checkpoints "
    "and records (the copies are then rewritten).")
_SERVE = flags.DEFINE_bool(
    "serve", False, "Serve a local page (127.0.0.1 only) that asks for the "
    "folders and runs the protection, instead of --input/--output.")
_PORT = flags.DEFINE_integer("port", 0, "--serve: the port (0: a free one).",
                             lower_bound=0, upper_bound=65535)
_OPEN_BROWSER = flags.DEFINE_bool(
    "open_browser", True, "--serve: open the page in the web browser.")


def main(argv):
  del argv  # checked by parse_flags
  check_flags()
  logging.info("JAX %s, devices: %s", jax.__version__, jax.devices())
  try:
    if _SERVE.value:
      # The page's job runs in a thread, which takes no signals over: a
      # stop keeps its copies and its search's last timed checkpoint.
      with interrupt.RaiseOnSignal(
          "serving the protect page; the copies written and the search's "
          "last checkpoint are kept"):
        serve.serve(_CONFIG.value, port=_PORT.value,
                    open_browser=_OPEN_BROWSER.value)
      return
    # The search and the writing take the signals over (a checkpoint, then
    # Interrupted); elsewhere, to the end, they raise Stopped.
    with interrupt.RaiseOnSignal(
        f"protecting {_INPUT.value} into {_OUTPUT.value}; the copies written "
        "and the search's last checkpoint are kept"):
      results = protect.run(_CONFIG.value, _INPUT.value, _OUTPUT.value,
                            workdir=_WORKDIR.value, labels=_LABELS.value,
                            heldout=_HELDOUT.value,
                            overwrite=_OVERWRITE.value,
                            reference=_REFERENCE.value,
                            reference_size=_REFERENCE_SIZE.value)
      report(results)
  except UEError as e:
    cli.exit_with_error(e)
  except (Interrupted, Stopped) as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(e.exit_code)


def check_flags():
  """--input and --output, unless --serve (which takes none of the folder
  flags: the page asks for the folders); one line and exit 2 if not."""
  folders = [_INPUT, _OUTPUT, _LABELS, _WORKDIR, _HELDOUT, _REFERENCE]
  if _SERVE.value:
    given = [f"--{f.name}" for f in folders if f.value] + (
        ["--overwrite"] if _OVERWRITE.value else [])
    if given:
      cli.exit_with_error(f"--serve takes the folders on the page; leave "
                          f"out {', '.join(given)}")
    return
  missing = [f"--{f.name}" for f in (_INPUT, _OUTPUT) if not f.value]
  if missing:
    cli.exit_with_error(f"{' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} required "
                        "(or --serve, for the local page)")


def report(results):
  """Logs the summary; exit 1 with one line if some files failed."""
  logging.info("protected %d images into %s (%d written, %d already there "
               "and checked); manifest %s", results["protected"],
               _OUTPUT.value, results["written"], results["skipped_verified"],
               results["manifest_path"])
  for key in ("clean_test_accuracy", "unlearnable_test_accuracy"):
    if key in results:
      logging.info("%s = %.4f", key, results[key])
  print("\n".join(protect.summary_lines(results)), flush=True)
  if results["failed"]:
    cli.exit_with_error(protect.failures_line(results["failed"],
                                              results["protected"]), code=1)


def parse_flags(argv):
  """cli.parse_flags, with the installed configs/protect.py when --config is
  not given (named here, not as the flag's default, which ml_collections
  would load and override at import, outside the one-line error
  handling)."""
  if not any(a.split("=")[0] in ("--config", "-config") for a in argv[1:]):
    default = cli.shipped_config("protect")
    if not default:
      cli.exit_with_error("cannot load --config: configs/protect.py is not "
                          "installed with ue_jax; reinstall it (pip install "
                          ".) or give --config")
    argv = [argv[0], f"--config={default}", *argv[1:]]
  return cli.parse_flags(argv, _CONFIG)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
