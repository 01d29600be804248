"""Running an absl entry point so that bad input is one line on stderr, not a traceback."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from mlp_jax.errors import Interrupted, UsageError

USAGE_EXIT_CODE = 2


def _exit(code: int) -> None:
  """sys.exit, except in a multi-process job: there, exit at once rather than wait
  for the other processes in JAX's shutdown barrier (launch.sh stops them)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """app.run(main), reporting a UsageError as `error: ...` and exit code 2, and a
  stop on a signal as its message and exit code 128 + signal number."""

  @functools.wraps(main)
  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:
      # JAX logs at INFO level that it found no TPU or GPU: noise on a CPU machine.
      logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except UsageError as e:
      print(f'error: {e}', file=sys.stderr)
      _exit(USAGE_EXIT_CODE)
    except Interrupted as e:
      print(str(e), file=sys.stderr)
      _exit(e.exit_code)

  app.run(guarded)
