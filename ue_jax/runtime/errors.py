"""The exception types that end a run with a one-line message."""


class UEError(Exception):
  """An error the user can fix; main.py prints it as one line and exits 2."""


class Interrupted(Exception):
  """Generation stopped on SIGINT/SIGTERM after saving a checkpoint.

  main.py prints the message (which says how to resume) and exits with
  `exit_code`, 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
  """

  def __init__(self, message: str, *, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


class Stopped(BaseException):
  """SIGINT/SIGTERM outside the generation loop (interrupt.RaiseOnSignal).

  A BaseException, as KeyboardInterrupt is, so that no `except Exception`
  takes it for an error; main.py prints the message (the stage, what it
  kept) and exits with `exit_code`, 128 + the signal number.
  """

  def __init__(self, message: str, *, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum
