"""The one exception type for user-facing errors (bad config, missing data)."""


class UEError(Exception):
  """An error the user can fix; main.py prints it as one line and exits 2."""
