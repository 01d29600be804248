"""Running an absl entry point so that bad input is one line on stderr, not a traceback."""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from mlp_jax.errors import Interrupted, UsageError

USAGE_EXIT_CODE = 2


def _exit(code: int, every_process_stops: bool = False) -> None:
  """sys.exit, except in a multi-process job where the other processes may go on:
  there, exit at once rather than wait for them in JAX's shutdown barrier
  (launch.sh stops them).

  `every_process_stops`: all processes exit here together (a stop on a signal is
  agreed by all), so they leave through that barrier. Exiting alone would take the
  coordination service (process 0) away from processes still shutting down, and
  those abort.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized() and not every_process_stops:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def parse_flags(argv: Sequence[str]) -> Sequence[str]:
  """absl's flag parsing, with an unparsable command line (an unknown flag, a value
  of the wrong type) reported like every other bad input: one line, exit code 2."""
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    message = ' '.join(str(e).split())  # absl's messages may span lines
    print(f'error: {message} (--helpshort lists the flags)', file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """app.run(main), reporting a flag that does not parse or a UsageError as
  `error: ...` and exit code 2, and a stop on a signal as its message and exit
  code 128 + signal number."""

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
      _exit(e.exit_code, every_process_stops=True)
    except KeyboardInterrupt:
      # Ctrl-C outside the training loop (start-up, final writes): every record is
      # whole (written atomically), so the same command picks up from there.
      print('mlp_jax: stopped by SIGINT; run the same command again to resume',
            file=sys.stderr)
      _exit(128 + signal.SIGINT)

  app.run(guarded, flags_parser=parse_flags)
