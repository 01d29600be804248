"""Checkpoints of a chunk of seeds with orbax: everything needed to continue exactly.

A checkpoint of epoch e holds the chunk's whole RunState after e epochs (params,
optimizer state, epoch counter, data-order keys: the RNG state) and its metrics
log (every recorded number of epochs 1..e, from which a resume rewrites each
seed's history.csv), one global array per leaf with the seed axis split over the
devices, and the list of seeds it holds. Every process writes the rows of its
own devices (orbax's multi-host protocol).

Saves are asynchronous: `save` returns once the arrays are copied off the
device, and the next epochs train while orbax writes them. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash at
any instant leaves the previous checkpoints readable; a SIGKILL loses the
epochs since the last finished save.

How often (`SavePolicy`): every N epochs when asked (`--checkpoint_every=N`),
else ('auto') whenever the time since the last save has reached COST_FACTOR
times what saves cost here (guessed until one is timed, importing orbax included),
so checkpoints take at most ~1/COST_FACTOR of the run, at any number of seeds.

Failures: orbax raises a failed write (a full disk) from its background threads,
at the next call, as its own exception; `ChunkCheckpoints` turns every such
error into the OSError it stands for (ENOSPC ...), and keeps orbax's own logging
and its threads' leftover tracebacks off the console, so the entry point reports
one line. A resume verifies the newest checkpoint by restoring it, and falls back
to the newest intact one if it is damaged (deleting the damaged newer ones).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import sys
import time
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import jax

from mlp_jax.workdir import WorkdirError

# Auto policy: at least this many times a save's cost between two saves (2%).
COST_FACTOR = 50
# Until a save here has been timed, its cost is guessed from its size at this rate, a
# little below a measured one (docs/performance.md), so that it errs on saving less...
ASSUMED_BYTES_PER_SECOND = 150e6
# ... plus, in a process that has not imported orbax yet, what the first save costs
# before writing anything: importing orbax and opening the manager. A short run's
# first save then comes after some seconds of training, not after its first epoch,
# which it would delay by that much.
ASSUMED_OPEN_SECONDS = 0.5


def _orbax():
  # Imported on first use: keeps `import mlp_jax` and --checkpoint_every=0 light.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  quiet_orbax()
  return ocp


def _from_orbax(text: str) -> bool:
  return f'{os.sep}orbax{os.sep}' in text or 'tensorstore' in text


class _OrbaxLogFilter(logging.Filter):
  """Drops orbax's own log records: its errors reach us as exceptions (see _os_errors),
  and each failed write would otherwise print several tracebacks from its threads."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not _from_orbax(record.pathname)


def quiet_orbax() -> None:
  """Installs (once) the log filter and an unraisable-exception hook that drops what
  orbax's threads leave behind after a failed write (asyncio's "Event loop is
  closed", coroutines never awaited); anything else goes to the previous hook."""
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _OrbaxLogFilter) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxLogFilter())
  if getattr(sys.unraisablehook, 'mlp_jax_quiet_orbax', False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    where = ''.join(
        f'{frame.f_code.co_filename}\n' for frame, _ in _walk(unraisable.exc_traceback))
    if (_from_orbax(where) or _from_orbax(repr(unraisable.object)) or
        'Event loop is closed' in str(unraisable.exc_value)):
      return
    previous(unraisable)

  hook.mlp_jax_quiet_orbax = True
  sys.unraisablehook = hook


def _walk(tb):
  while tb is not None:
    yield tb.tb_frame, tb.tb_lineno
    tb = tb.tb_next


def os_error_of(error: BaseException) -> Optional[OSError]:
  """The OSError an orbax/TensorStore error stands for (its errno from the message:
  "... No space left on device [os_error_code='28']"), or None if it is none."""
  if isinstance(error, OSError):
    return error
  text = str(error)
  code = re.search(r"os_error_code='?(\d+)", text)
  if code:
    number = int(code.group(1))
  elif 'No space left' in text or 'RESOURCE_EXHAUSTED' in text:
    number = errno.ENOSPC
  elif 'PERMISSION_DENIED' in text or 'Permission denied' in text:
    number = errno.EACCES
  else:
    return None
  return OSError(number, os.strerror(number))


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
  """Re-raises an orbax write failure as the OSError it stands for, without its
  chain (whose traceback is orbax's threads', not the user's)."""
  try:
    yield
  except Exception as e:  # orbax raises ValueError, RuntimeError, ... for I/O failures
    os_error = os_error_of(e)
    if os_error is None or os_error is e:
      raise
    raise os_error from None


def _first_line(error: BaseException, limit: int = 120) -> str:
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  return text if len(text) <= limit else f'{text[:limit - 3]}...'


RowKey = Union[int, str]


def row_keys(values: Sequence[Any]) -> List[RowKey]:
  """A chunk's row keys as stored in JSON: a seed (int) per row, or a grid member's
  name (str). The JSON item holding them is named `seeds` (as written by earlier
  versions, whose checkpoints still resume)."""
  return [v if isinstance(v, str) else int(v) for v in values]


def checkpointed_seeds(directory: str) -> Optional[Tuple[List[RowKey], int]]:
  """(the row keys, the newest epoch) of the chunk checkpointed in `directory`, or
  None if it holds no readable checkpoint; reads only the small seeds item."""
  if not os.path.isdir(directory):
    return None
  ocp = _orbax()
  manager = ocp.CheckpointManager(os.path.abspath(directory),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        seeds = manager.restore(step, args=ocp.args.Composite(seeds=ocp.args.JsonRestore()))
        return row_keys(seeds['seeds']), step
      except Exception:  # pylint: disable=broad-except
        continue  # a damaged step: an older one may still name the seeds
    return None
  finally:
    manager.close()


@dataclasses.dataclass
class SavePolicy:
  """When a chunk saves: every `every` epochs, or (every=None) by cost.

  Attributes:
    every: save after every `every` epochs and after the last; None: auto.
    save_seconds: what the last save took from its start until orbax had
      written it (measured), or the size-based guess before any.
  """
  every: Optional[int]
  save_seconds: float = 0.0
  _since: float = dataclasses.field(default_factory=time.perf_counter)

  def wants(self, epoch: int, last_epoch: int) -> bool:
    """Whether a save is due after `epoch` (the stop on a signal is the caller's)."""
    if self.every is not None:
      return epoch == last_epoch or epoch % self.every == 0
    # The last epoch needs none: the run's records are written from the states in
    # memory, and a crash before they are complete resumes from the previous save.
    return (epoch < last_epoch and
            time.perf_counter() - self._since >= COST_FACTOR * self.save_seconds)

  def started(self) -> None:
    self._since = time.perf_counter()

  def finished(self) -> None:
    self.save_seconds = time.perf_counter() - self._since


class ChunkCheckpoints:
  """The checkpoints of one chunk of seeds, in `<directory>/<epoch>/`.

  Args:
    directory: where this chunk's checkpoints live.
    seeds: the chunk's row keys (seeds, or grid members' names), in row order
      (padding rows included); a directory holding checkpoints of other rows is not
      restored from.
    keep: how many of the newest checkpoints to keep.
    policy: when to save.
    nbytes: the size of what one save writes (for the auto policy's first guess).
  """

  def __init__(self, directory: str, seeds: Sequence[RowKey], keep: int, policy: SavePolicy,
               nbytes: int):
    self.seeds = row_keys(seeds)
    self.policy = policy
    if policy.every is None:
      policy.save_seconds = nbytes / ASSUMED_BYTES_PER_SECOND + (
          0.0 if 'orbax.checkpoint' in sys.modules else ASSUMED_OPEN_SECONDS)
    self.directory = directory
    self.blocking_seconds = 0.0  # the time saves held up training
    self._keep = keep
    self._manager = None  # opened when first needed: see _opened
    self._in_flight = False
    self._failed = False  # a save failed: close() then only tidies up

  def _opened(self):
    """orbax's manager of the directory, made (and the directory created) on first use:
    a new run imports orbax at its first save, not before its first epoch."""
    if self._manager is None:
      ocp = _orbax()
      with _os_errors():
        self._manager = ocp.CheckpointManager(
            os.path.abspath(self.directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                                 enable_async_checkpointing=True))
    return self._manager

  def restore_latest(self, like: Any) -> Tuple[int, Any, List[str]]:
    """(epoch, tree, notes): the newest intact checkpoint of this chunk's seeds,
    restored like `restore`; (0, None, notes) if there is none to resume from.

    Restoring verifies: a damaged newer checkpoint (truncated or garbled files) is
    skipped, noted ('checkpoint of epoch 5 in DIR is damaged (...)') and deleted,
    so that this epoch can be saved again.

    Raises:
      WorkdirError: checkpoints exist but none is intact (naming the directory).
    """
    if not os.path.isdir(self.directory):
      return 0, None, []  # nothing saved yet (orbax is not needed to know that)
    ocp = _orbax()
    steps = sorted(self._opened().all_steps(), reverse=True)
    damaged: List[Tuple[int, str]] = []
    for step in steps:
      try:
        stored = self._manager.restore(step, args=ocp.args.Composite(
            seeds=ocp.args.JsonRestore()))
        if row_keys(stored['seeds']) != self.seeds:
          return 0, None, []  # another chunk's checkpoints: not ours to resume
        tree = self.restore(step, like)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax and TensorStore raise many types for unreadable files.
        damaged.append((step, _first_line(e)))
        continue
      notes = [f'mlp_jax: the checkpoint of epoch {d} in {self.directory} is damaged '
               f'({reason}); resuming from the one of epoch {step}' for d, reason in damaged]
      with _os_errors():
        for d, _ in damaged:
          self._manager.delete(d)
      return step, tree, notes
    if damaged:
      step, reason = damaged[0]
      raise WorkdirError(f'{self.directory}: no intact checkpoint (the newest, of epoch '
                         f'{step}: {reason}); use --overwrite to start over')
    return 0, None, []

  def wants(self, epoch: int, last_epoch: int) -> bool:
    self._note_finished()
    if self._in_flight and self.policy.every is None:
      return False  # auto: never queue a save behind another
    return self.policy.wants(epoch, last_epoch)

  def save(self, epoch: int, tree: Any) -> None:
    """Starts saving `tree` (global arrays with a seed axis) as the checkpoint of
    `epoch`; returns once the arrays are off the device."""
    ocp = _orbax()
    tick = time.perf_counter()
    self._wait()  # one save at a time
    self.policy.started()
    with self._failing():
      self._opened().save(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardSave(tree), seeds=ocp.args.JsonSave(self.seeds)), force=True)
    self._in_flight = True
    self.blocking_seconds += time.perf_counter() - tick

  def restore(self, epoch: int, like: Any) -> Any:
    """The tree saved after `epoch`, placed and typed as the arrays of `like`."""
    ocp = _orbax()
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
    restored = self._opened().restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    # Orbax hands back plain containers; put the leaves back into `like`'s structure.
    return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored['state']))

  def close(self) -> None:
    """Waits for a save in flight (its time counts as blocking), then closes; after a
    failed save, only tidies up (the failure was raised already)."""
    if self._manager is None:
      return
    tick = time.perf_counter()
    try:
      self._wait()
      with self._failing():
        self._manager.close()
    except Exception:  # pylint: disable=broad-except
      if not self._failed:
        raise
    finally:
      self.blocking_seconds += time.perf_counter() - tick

  @contextlib.contextmanager
  def _failing(self) -> Iterator[None]:
    """_os_errors, remembering that a save failed."""
    try:
      with _os_errors():
        yield
    except Exception:
      self._failed = True
      raise

  def _note_finished(self) -> None:
    if self._in_flight and not self._manager.is_saving_in_progress():
      self._in_flight = False
      with self._failing():
        self._manager.check_for_errors()
      self.policy.finished()

  def _wait(self) -> None:
    if self._in_flight:
      self._in_flight = False
      with self._failing():
        self._manager.wait_until_finished()
      self.policy.finished()


class NoCheckpoints:
  """Checkpoints off (--checkpoint_every=0): the same interface, saving nothing."""

  seeds: Tuple[int, ...] = ()
  blocking_seconds = 0.0

  def restore_latest(self, like: Any) -> Tuple[int, Any, List[str]]:
    del like
    return 0, None, []

  def wants(self, epoch: int, last_epoch: int) -> bool:
    del epoch, last_epoch
    return False

  def save(self, epoch: int, tree: Any) -> None:
    del epoch, tree

  def restore(self, epoch: int, like: Any) -> Any:
    raise AssertionError('NoCheckpoints holds no checkpoint')

  def close(self) -> None:
    pass
