"""Orbax checkpoints of the generation state, guarded against non-finite values.

DIR/checkpoints/<n>/ holds `state`, the whole `UEState` pytree (step, params,
batch_stats, opt_state, noise, rng), and `meta`, a JSON object that says where
in the min-min search the state was taken (search/resume.py defines it).
Checkpoints are numbered 1, 2, ... in the order they are written and the
latest one is resumed. Nothing is pickled: arrays go through tensorstore and
metadata through JSON. Orbax writes each checkpoint to a temporary folder and
renames it when complete, so a killed run leaves either a whole checkpoint or
a temporary folder that the next run deletes.
"""

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from ue_jax.runtime.errors import UEError
from ue_jax.core.state import UEState

GUARDED = ("params", "batch_stats", "opt_state", "noise")


@jax.jit
def _finite_by_field(state: UEState):
  def finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
  return {name: finite(getattr(state, name)) for name in GUARDED}


def nonfinite_fields(state: UEState) -> List[str]:
  """The names of the state's fields that hold a NaN or an infinity."""
  finite = jax.device_get(_finite_by_field(state))
  return [name for name in GUARDED if not finite[name]]


def abstract_state(state: UEState) -> UEState:
  """Shapes, dtypes and shardings of `state`, without its values."""
  shapes = jax.eval_shape(lambda s: s, state)
  return jax.tree.map(
      lambda a, x: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=x.sharding),
      shapes, state)


class _QuietOrbax(logging.Filter):
  """Drops Orbax's INFO lines (dozens per save); its warnings stay."""

  def filter(self, record):
    return (record.levelno >= logging.WARNING
            or f"{os.sep}orbax{os.sep}" not in record.pathname)


def _quiet_orbax():
  logger = absl_logging.get_absl_logger()
  if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
    logger.addFilter(_QuietOrbax())


def peek_latest(directory: str) -> Optional[Tuple[int, Dict[str, Any]]]:
  """(number, JSON metadata) of the latest finished checkpoint under
  `directory`, as the Checkpoints of a run would resume it, read without
  writing anything (for checks before a run claims its workdir); None when
  there is none or its metadata is unreadable (the restore then says why).

  It goes through Orbax's public API (a CheckpointManager that creates no
  folder, cleans nothing up and saves no root metadata, so it neither
  writes nor waits on other processes), never through Orbax's file layout.
  """
  if not os.path.isdir(directory):
    return None
  _quiet_orbax()
  manager = ocp.CheckpointManager(
      os.path.abspath(directory), options=ocp.CheckpointManagerOptions(
          create=False, cleanup_tmp_directories=False,
          save_root_metadata=False, max_to_keep=None,
          enable_async_checkpointing=False))
  try:
    number = manager.latest_step()
    if number is None:
      return None
    meta = manager.restore(number, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta
  except Exception:  # Orbax raises many types; all mean "unreadable".
    return None
  finally:
    manager.close()
  return (number, dict(meta)) if isinstance(meta, dict) else None


class Checkpoints:
  """A CheckpointManager for (state, meta) pairs in one directory.

  Saving is synchronous: the jitted steps donate the state's buffers, so an
  asynchronous save could read a buffer after the next step reused it.
  """

  def __init__(self, directory: str, *, max_to_keep: int):
    directory = os.path.abspath(directory)  # Orbax refuses relative paths
    self.directory = directory
    _quiet_orbax()
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            cleanup_tmp_directories=True, enable_async_checkpointing=False))

  def latest(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: UEState, meta: Dict[str, Any], *, where: str) -> int:
    """Saves the next checkpoint; refuses (UEError) a non-finite state."""
    bad = nonfinite_fields(state)
    if bad:
      self.refuse_nonfinite(f"values in {', '.join(bad)}", where)
    number = (self.latest() or 0) + 1
    self._manager.save(number, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    return number

  def refuse_nonfinite(self, what: str, where: str):
    """Stops the run (UEError) over a NaN/inf, naming the last good save."""
    latest = self.latest()
    kept = (f"checkpoint {latest} in {self.directory} is the last good one"
            if latest else "no checkpoint was saved before")
    raise UEError(f"non-finite {what} {where}; stopped without saving "
                  f"({kept}); lower generate.lr or noise.step_size and rerun "
                  "with --overwrite")

  def meta(self, number: int) -> Dict[str, Any]:
    """The JSON metadata of checkpoint `number`, without its arrays."""
    out = self._restore(number, "read", meta=ocp.args.JsonRestore())
    return dict(out.meta)

  def restore(self, state: UEState,
              number: Optional[int] = None) -> Tuple[UEState, Dict[str, Any]]:
    """The checkpoint `number` (default: the latest) shaped like `state`."""
    number = self.latest() if number is None else number
    out = self._restore(
        number, "restore",
        state=ocp.args.StandardRestore(abstract_state(state)),
        meta=ocp.args.JsonRestore())
    return out.state, dict(out.meta)

  def _restore(self, number: int, verb: str, **items):
    """Orbax's restore of `items`; any failure is one UEError line."""
    try:
      return self._manager.restore(number, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax raises many types; all mean "unusable".
      raise UEError(
          f"cannot {verb} checkpoint {number} in {self.directory} "
          f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); rerun "
          "with --overwrite to start afresh") from None

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
