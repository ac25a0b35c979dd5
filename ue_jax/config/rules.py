"""The rules a config field's value is checked by, and `fail`.

A rule is a function (field name, value) -> None when the value is allowed,
else one sentence that names the field and what it may be. `number`, `choice`
and `text` build rules; `boolean`, `int_tuple`, `learner_specs` and
`defense_names` are rules. config/checks.py maps every field to one of them.
"""

from typing import Callable, Optional

import numpy as np

from ue_jax.core.defense_names import NAMES as DEFENSES
from ue_jax.models import MODELS
from ue_jax.runtime.errors import UEError

Rule = Callable[[str, object], Optional[str]]  # (field, value) -> problem
BIG = 1 << 40


def fail(message: str):
  raise UEError(message)


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def number(lo, hi, *, lo_open: bool = False, integer: bool = False) -> Rule:
  """A number in [lo, hi] ((lo, hi] with lo_open); an int with `integer`."""
  span = f"{'(' if lo_open else '['}{lo}, {hi}]"

  def rule(name, value):
    if integer and not _is_int(value):
      return f"{name} must be an integer in {span}, got {value!r}"
    if not (_is_int(value) or isinstance(value, (float, np.floating))):
      return f"{name} must be a number in {span}, got {value!r}"
    if not np.isfinite(value) or value < lo or value > hi or (
        lo_open and value == lo):
      return f"{name} must lie in {span}, got {value!r}"
    return None
  return rule


def choice(*options, noun: str = "") -> Rule:
  """One of `options`; `noun` words the error as `unknown <noun> ...`."""
  listed = ", ".join(map(repr, options))

  def rule(name, value):
    if isinstance(value, str) and value in options:
      return None
    if noun:
      return f"unknown {noun} {value!r} ({name}); choose one of {listed}"
    return f"{name} must be one of {listed}, got {value!r}"
  return rule


def text(*, empty: bool = True) -> Rule:
  def rule(name, value):
    if not isinstance(value, str) or (not empty and not value):
      return (f"{name} must be a{'' if empty else ' non-empty'} string, "
              f"got {value!r}")
    return None
  return rule


def boolean(name, value):
  if not isinstance(value, bool):
    return f"{name} must be True or False, got {value!r}"
  return None


def int_tuple(name, value):
  if not isinstance(value, (tuple, list)) or not all(
      _is_int(v) and 0 <= v < BIG for v in value):
    return (f"{name} must be a tuple of class numbers, e.g. (0, 1), got "
            f"{value!r}")
  if len(set(value)) != len(value):
    return f"{name} lists a class twice: {tuple(value)!r}"
  return None


def learner_specs(name, value):
  """A non-empty tuple of distinct "model" or "model:width" strings."""
  if not isinstance(value, (tuple, list)) or not value or not all(
      isinstance(v, str) for v in value):
    return (f"{name} must be a non-empty tuple of learner names such as "
            f"('resnet18', 'vgg11:16'), got {value!r}")
  for spec in value:
    model, sep, width = spec.partition(":")
    if model not in MODELS:
      return (f"unknown learner {model!r} ({name}); choose one of "
              f"{', '.join(sorted(MODELS))}, optionally as name:width")
    if sep and not (width.isdigit() and 1 <= int(width) <= 4096):
      return (f"learner {spec!r} ({name}): the width after ':' must be an "
              "integer in [1, 4096]")
  if len(set(value)) != len(value):
    return f"{name} names a learner twice: {tuple(value)!r}"
  return None


def defense_names(name, value):
  """A non-empty tuple of distinct defense names (core/defense_names.py)."""
  if not isinstance(value, (tuple, list)) or not value or not all(
      isinstance(v, str) for v in value):
    return (f"{name} must be a non-empty tuple of defense names, got "
            f"{value!r}")
  for d in value:
    if d not in DEFENSES:
      return (f"unknown defense {d!r} ({name}); choose from "
              f"{', '.join(DEFENSES)}")
  if len(set(value)) != len(value):
    return f"{name} names a defense twice: {tuple(value)!r}"
  return None
