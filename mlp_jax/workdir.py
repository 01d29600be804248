"""Safe workdirs: one live owner at a time, no silent mixing of settings, clean stops.

- `lock(workdir)`: an exclusive `fcntl.flock` on `<workdir>/.lock`. The kernel
  drops it when the owner dies, however it dies, so a killed run never blocks
  the next one; a live owner makes the next one fail with its pid.
- `check_settings(...)`: a workdir that holds a run with other settings is
  refused, naming each difference; `--overwrite` starts over on purpose.
- `StopRequests`: SIGTERM and SIGINT ask the training loop to stop at the next
  epoch boundary, after a checkpoint; a second signal stops at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional

from mlp_jax.errors import UsageError

LOCK_FILE = '.lock'


class WorkdirError(UsageError):
  """The workdir cannot be used: taken, other settings, not writable, disk full."""


def describe_os_error(workdir: str, error: OSError) -> str:
  reason = 'disk full' if error.errno == errno.ENOSPC else (error.strerror or str(error))
  return f'--workdir={workdir}: cannot write ({reason})'


@contextlib.contextmanager
def lock(workdir: str, process_index: int = 0, flag: str = '--workdir') -> Iterator[None]:
  """Holds the workdir's lock for the duration; WorkdirError if another process has it.

  The processes of one multi-process job each take their own lock file
  (`.lock`, `.lock.1`, ...), so they share the workdir while a second job is refused.
  """
  name = LOCK_FILE if process_index == 0 else f'{LOCK_FILE}.{process_index}'
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, name), os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(describe_os_error(workdir, e).replace('--workdir', flag, 1)) from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'another process'
      raise WorkdirError(f'{flag}={workdir} is in use by {owner}; wait for it to finish '
                         'or choose another workdir') from None
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f'process {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
    except OSError as e:  # a full disk: the lock is held, naming its owner is not
      raise WorkdirError(describe_os_error(workdir, e).replace('--workdir', flag, 1)) from None
    yield
  finally:
    os.close(fd)  # closing releases the lock


# A settings-conflict message names at most this many differences (then "and N more").
MAX_LISTED_DIFFERENCES = 6


def _flatten(settings: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
  """{'config': {'learning_rate': 0.1}} -> {'config.learning_rate': 0.1}."""
  flat: Dict[str, Any] = {}
  for name, value in settings.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{name}.'))
    else:
      flat[f'{prefix}{name}'] = value
  return flat


def setting_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> Dict[str, Any]:
  """{name: (stored, requested)} for every setting that differs, nested settings
  named by their path ('config.learning_rate')."""
  stored, requested = _flatten(stored), _flatten(requested)
  names = sorted(set(stored) | set(requested))
  return {n: (stored.get(n), requested.get(n)) for n in names
          if stored.get(n) != requested.get(n)}


def _short(value: Any) -> str:
  text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
  return text if len(text) <= 40 else f'{text[:37]}...'


def refuse_other_settings(workdir: str, stored: Mapping[str, Any],
                          requested: Mapping[str, Any], flag: str = '--workdir') -> None:
  differences = setting_differences(stored, requested)
  if differences:
    listed = ', '.join(f'{n} {_short(a)} -> {_short(b)}'
                       for n, (a, b) in list(differences.items())[:MAX_LISTED_DIFFERENCES])
    if len(differences) > MAX_LISTED_DIFFERENCES:
      listed += f' and {len(differences) - MAX_LISTED_DIFFERENCES} more'
    raise WorkdirError(f'{flag}={workdir} holds a run with other settings ({listed}); '
                       'use --overwrite to start over, or choose another workdir')


def remove_entries(workdir: str, names: Iterable[str]) -> None:
  """Deletes the named files or directories of a previous run (and nothing else)."""
  for name in names:
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    elif os.path.lexists(path):
      os.remove(path)


class StopRequests:
  """Context manager: SIGTERM/SIGINT set `requested` instead of killing the process."""

  def __init__(self):
    self.requested: Optional[signal.Signals] = None
    self._previous: Dict[int, Any] = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # a second signal: stop now
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      os.kill(os.getpid(), signum)
      return
    self.requested = signal.Signals(signum)

  def __enter__(self) -> 'StopRequests':
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
