"""Errors that the entry points report as one line and a non-zero exit, without a traceback."""


class UsageError(Exception):
  """The user asked for something invalid: a flag value, a file, a directory."""


class DataError(UsageError):
  """A data file is missing, truncated, malformed or not the canonical content."""
