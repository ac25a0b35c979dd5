"""Graceful stop: SIGINT and SIGTERM only raise a flag that the generation
loop reads after each batch, so it can save a checkpoint before exiting.
Outside that loop (the other stages, loading, compiling) they raise
`Stopped` at once (`RaiseOnSignal`): each stage writes its files atomically
(the battery cell by cell), so what it finished is kept.

With several processes a signal may reach one of them only, while saving
and stopping are collective: each process votes (`StopSignals.votes`) in
its rows of the next batch, and every process acts on the maximum that the
step returns (sharding.agree), at the same batch.

Before all that, an entry point run as a command installs `ExitOnSignal`
first thing, so that a signal while its modules import or its flags are
read also ends the command with one `stopped:` line. This module imports
nothing slow (numpy where it is used) so that it can be first.
"""

import os
import signal
import threading

from ue_jax.runtime.errors import Stopped

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Handlers:
  """Installs `self._handle` for SIGINT and SIGTERM inside a `with` block
  (main thread only; elsewhere it does nothing) and puts the previous
  handlers back on exit."""

  _previous: dict

  def _handle(self, signum, frame):
    raise NotImplementedError

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
    return False


class StopSignals(_Handlers):
  """Context manager that records the first SIGINT/SIGTERM it receives.

  Inside the block `signum` is None until a signal arrives. The previous
  handlers come back on exit. Outside the main thread (where Python cannot
  install handlers) it does nothing and `signum` stays None.
  """

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      self.signum = signum

  @property
  def name(self) -> str:
    return signal_name(self.signum)

  def votes(self, size: int, *, save: int = 0):
    """This process's votes for a batch of `size` rows (sharding.VOTES):
    [save, signal number] in every row, an int32 array; 0 is no vote."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    return np.tile(np.array([save, self.signum or 0], np.int32), (size, 1))


class RaiseOnSignal(_Handlers):
  """Context manager under which SIGINT/SIGTERM raise `Stopped`, its message
  naming the signal and `what` (where the run is and what it keeps; set it
  as the run moves on). The previous handlers come back on exit; a
  StopSignals block inside puts its own in place for its duration. Outside
  the main thread it does nothing."""

  def __init__(self, what: str):
    self.what = what
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    raise Stopped(stopped_message(signum, self.what), signum=signum)


class ExitOnSignal(_Handlers):
  """SIGINT/SIGTERM write one line `stopped: <signal> received (<what>);
  rerun ...` to stderr and end the process at once with 128 + the signal
  number. For an entry point's start (imports, flags, devices), where
  nothing is written yet: no exception is raised, which a C extension being
  imported could turn into another error with a traceback. `install()`
  keeps it for the rest of the process; RaiseOnSignal and StopSignals blocks
  put theirs in place inside. Outside the main thread it does nothing."""

  def __init__(self, what: str):
    self.what = what
    self._previous = {}

  def install(self) -> "ExitOnSignal":
    return self.__enter__()

  def _handle(self, signum, frame):
    del frame
    # os.write: the signal may have come in the middle of a write to
    # sys.stderr, which a second write through it would refuse.
    line = f"stopped: {stopped_message(signum, self.what)}\n"
    os.write(2, line.encode("utf-8", "replace"))
    os._exit(128 + signum)  # pylint: disable=protected-access


def stopped_message(signum: int, what: str) -> str:
  return (f"{signal_name(signum)} received ({what}); rerun the same command "
          "to continue")


def signal_name(signum: int | None) -> str:
  return signal.Signals(signum).name if signum else ""
