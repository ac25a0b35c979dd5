"""Graceful stop: SIGINT and SIGTERM only raise a flag that the generation
loop reads after each batch, so it can save a checkpoint before exiting."""

import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
  """Context manager that records the first SIGINT/SIGTERM it receives.

  Inside the block `signum` is None until a signal arrives. The previous
  handlers come back on exit. Outside the main thread (where Python cannot
  install handlers) it does nothing and `signum` stays None.
  """

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      self.signum = signum

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else ""

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
