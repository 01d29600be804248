"""Errors that the entry points report as one line and a non-zero exit, without a traceback."""


class UsageError(Exception):
  """The user asked for something invalid: a flag value, a file, a directory."""


class DataError(UsageError):
  """A data file is missing, truncated, malformed or not the canonical content."""


class Interrupted(Exception):
  """Training stopped on a signal (SIGTERM, SIGINT) at an epoch boundary."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.exit_code = 128 + signal_number  # the shell's convention for death by a signal
