"""The noise search. generate.py runs the min-min loop (error_min, and
error_max, tap and sep on the same loop); the kinds it does not make
itself come from another module of search/, imported by name when a run
asks for that kind (`maker`), so a default run does not load them.
"""

import importlib

# noise.kind -> the module of search/ that makes it (random: baselines.py;
# ar, lsp, ops: shortcuts.py) or gives the loop its targeted noise step and
# surrogates (tap, sep: targeted.py).
MAKERS = {"random": "baselines", "ar": "shortcuts", "lsp": "shortcuts",
          "ops": "shortcuts", "tap": "targeted", "sep": "targeted"}


def module(name: str):
  """The module search/<name>.py, imported now."""
  return importlib.import_module(f"{__name__}.{name}")


def maker(kind: str):
  """The module MAKERS[kind] of noise.kind `kind`, imported now; None for
  error_min and error_max (generate.py's own)."""
  return module(MAKERS[kind]) if kind in MAKERS else None


def is_targeted(kind: str) -> bool:
  """Whether noise.kind `kind` is a targeted adversarial poison (tap, sep):
  the loop's noise step and stop rule are those of targeted.py."""
  return MAKERS.get(kind) == "targeted"
