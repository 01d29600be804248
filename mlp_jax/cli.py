"""Running an absl entry point so that bad input is one line on stderr, not a traceback."""

from __future__ import annotations

import errno
import functools
import gc
import importlib
import os
import signal
import sys
import threading
from typing import Any, Callable, NamedTuple, Optional, Sequence, TypeVar

from absl import app
from absl import flags
from absl import logging

from mlp_jax import flags as setting_flags
from mlp_jax.config import BUNDLED_DATASET, RunOptions, TrainConfig
from mlp_jax.data import Dataset, load_data
from mlp_jax.errors import Interrupted, UsageError
from mlp_jax.grid import Grid

USAGE_EXIT_CODE = 2

Result = TypeVar('Result')

# Young objects between two collections of Python's cyclic garbage collector, once
# the entry point's imports are done (Python's default: 700).
GC_THRESHOLD = 50_000


def in_background(fn: Callable[..., Result], *args: Any) -> Callable[[], Result]:
  """Starts fn(*args) on a thread; the returned function waits for it and returns
  its result, or raises its exception in the caller.

  An entry point reads and verifies its data this way while it imports JAX, Flax
  and optax: decompressing and hashing release the GIL, so on a machine with a
  second core the data costs no start-up time (docs/performance.md). The thread is
  a daemon: a usage error found meanwhile exits without waiting for it.
  """
  outcome = {}

  def target():
    try:
      outcome['result'] = fn(*args)
    except BaseException as e:  # pylint: disable=broad-except
      outcome['error'] = e

  thread = threading.Thread(target=target, name=f'background {fn.__name__}', daemon=True)
  thread.start()

  def result() -> Result:
    thread.join()
    if 'error' in outcome:
      raise outcome['error']
    return outcome['result']
  return result


def load_data_meanwhile(config: TrainConfig) -> Callable[[], Optional[Dataset]]:
  """The config's data, loaded in_background while the entry point imports JAX:
  the returned function gives the Dataset, or None for a TFDS dataset, which
  run.train then loads itself (tensorflow-datasets' lazy imports replace the
  interpreter's import function while they run, for every thread: JAX imported
  meanwhile came out broken)."""
  if config.dataset != BUNDLED_DATASET:
    return lambda: None
  return in_background(load_data, config)


def settle_garbage_collector() -> None:
  """Called by an entry point once its imports are done, having called gc.disable()
  before them.

  Importing jax, flax, optax (and later orbax) creates hundreds of thousands of
  objects, none of them garbage, which the collector would scan again and again for
  seconds (docs/performance.md). So: no collection while importing, then every
  object so far exempt from all later collections (gc.freeze), and collections of
  young objects every GC_THRESHOLD allocations instead of every 700 (a run makes
  little cyclic garbage: tracing once, a few objects an epoch).
  """
  gc.freeze()
  _, second, third = gc.get_threshold()
  gc.set_threshold(GC_THRESHOLD, second, third)
  gc.enable()


class Training(NamedTuple):
  """What an entry point that trains starts from (start_training)."""
  config: TrainConfig          # its settings (a grid's first point)
  grid: Grid                   # the swept settings (empty but in a sweep's grid)
  options: RunOptions          # how it runs, the program cache's directory set
  dataset: Optional[Dataset]   # the data, loaded (None: a TFDS dataset, run.train loads it)


def start_training(argv: Sequence[str], seed: int, grid: bool = False,
                   check: Optional[Callable[[TrainConfig, Grid], None]] = None) -> Training:
  """The preamble of every entry point that trains, once its flags are parsed.

  Checks the whole command line before anything is written (no stray arguments;
  every setting and, with `grid`, every point of the sweep's grid); loads the
  data while JAX, Flax and the training modules are imported; then settles the
  garbage collector (the entry point called gc.disable() before its imports) and
  prepares the process: GPU determinism, the compilation and program caches.
  `check(config, grid)`: the entry point's own checks of them, made before the
  grid's points are.
  """
  setting_flags.reject_extra_arguments(argv)
  config = setting_flags.config_from_flags(seed, grid=grid)
  swept = setting_flags.grid_from_flags() if grid else Grid()
  if check is not None:
    check(config, swept)
  swept.points(config)  # each point's settings checked (a bad one names its flag)
  options = setting_flags.run_options_from_flags()
  dataset = load_data_meanwhile(config)
  # Imported after the flags are parsed, so that the data loads meanwhile; the
  # environment first: it fixes XLA:CPU's thread pool before JAX's backend starts.
  from mlp_jax import environment  # pylint: disable=g-import-not-at-top
  importlib.import_module('mlp_jax.run')  # what trains: JAX, Flax, optax, orbax
  settle_garbage_collector()
  options = options.replace(program_cache_dir=environment.prepare_process(
      options.deterministic, options.compilation_cache_dir))
  return Training(config, swept, options, dataset())


def _exit(code: int, every_process_stops: bool = False) -> None:
  """sys.exit, except in a multi-process job where the other processes may go on:
  there, exit at once rather than wait for them in JAX's shutdown barrier
  (launch.sh stops them).

  `every_process_stops`: all processes exit here together (a stop on a signal is
  agreed by all), so they leave through that barrier. Exiting alone would take the
  coordination service (process 0) away from processes still shutting down, and
  those abort.
  """
  # A process that never imported JAX never joined a job: importing it just to ask
  # would add a second to every usage error found before training starts.
  jax = sys.modules.get('jax')
  if jax is not None and jax.distributed.is_initialized() and not every_process_stops:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


class ConsoleStream:
  """A console stream (stdout, stderr) whose failures never stop the process.

  Records are the product, the console is not: a reader that went away (`| head -1`,
  EPIPE), a full or failing device (/dev/full, ENOSPC, EIO) or a closed stream makes
  every later write to it vanish instead of raising, so the failure is never
  reported as the workdir's, nor costs a record. On the first failure the stream's
  file descriptor is pointed at os.devnull, so that what is still buffered, the
  interpreter's final flush and C code writing to the descriptor (gloo) fail no more.
  """

  def __init__(self, stream):
    self._stream = stream
    self.failed: Optional[OSError] = None

  def write(self, text: str) -> int:
    if self.failed is None:
      try:
        return self._stream.write(text)
      except (OSError, ValueError) as e:  # ValueError: the stream was closed
        self._fail(e)
    return len(text)

  def writelines(self, lines) -> None:
    for line in lines:
      self.write(line)

  def flush(self) -> None:
    if self.failed is None:
      try:
        self._stream.flush()
      except (OSError, ValueError) as e:
        self._fail(e)

  def isatty(self) -> bool:
    try:
      return self.failed is None and self._stream.isatty()
    except (OSError, ValueError):
      return False

  def _fail(self, error: Exception) -> None:
    self.failed = error if isinstance(error, OSError) else OSError(errno.EBADF, str(error))
    try:
      devnull = os.open(os.devnull, os.O_WRONLY)
      try:
        os.dup2(devnull, self._stream.fileno())
      finally:
        os.close(devnull)
      self._stream.flush()  # what was buffered goes to os.devnull now
    except (OSError, ValueError, AttributeError):
      pass  # no descriptor of its own (a test's buffer): the writes vanish here anyway

  def __getattr__(self, name: str) -> Any:
    return getattr(self._stream, name)


def guard_console() -> None:
  """sys.stdout and sys.stderr as ConsoleStreams (once), line-buffered stdout."""
  if not isinstance(sys.stdout, ConsoleStream):
    # Each line leaves as it is printed, whole, also into a pipe (launch.sh, tee),
    # without making C's stdout unbuffered as PYTHONUNBUFFERED would (see launch.plan).
    try:
      sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, OSError, ValueError):
      pass
    sys.stdout = ConsoleStream(sys.stdout)
  if not isinstance(sys.stderr, ConsoleStream):
    sys.stderr = ConsoleStream(sys.stderr)


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
  code 128 + signal number; a failing console never stops it (ConsoleStream)."""
  guard_console()

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

  try:
    app.run(guarded, flags_parser=parse_flags)
  finally:
    # The interpreter's shutdown collects garbage over every object of the process,
    # seconds with jax loaded (docs/performance.md). Every record is written and
    # closed by now: exempt every object. atexit handlers and thread joins still run.
    gc.freeze()
