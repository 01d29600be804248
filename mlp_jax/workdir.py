"""Safe workdirs: one live owner at a time, no silent mixing of settings, clean stops.

- `lock(workdir)`: an exclusive `fcntl.flock` on `<workdir>/.lock`. The kernel
  drops it when the owner dies, however it dies, so a killed run never blocks
  the next one; a live owner makes the next one fail with its pid.
- `check_settings(...)`: a workdir that holds a run with other settings is
  refused, naming each difference; `--overwrite` starts over on purpose.
- `claim(path, kind)`: a folder is written to only if it is new, empty, or
  provably mlp_jax's: it holds the marker a run or sweep writes first
  (records.MARKER_FILE), or settings files in mlp_jax's own format. Anything else
  is refused, with or without --overwrite, which deletes only a run's own records.
  A lost config.json or sweep.json is restored from the marker, never from the
  command line.
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
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from mlp_jax import records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError

LOCK_FILE = '.lock'
RUN, SWEEP = 'run', 'sweep'
# What the marker says made the folder.
MARKER_PROJECT = 'mlp_jax'


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
  refuse_a_file(workdir, flag)
  created = not os.path.exists(workdir)
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
  except BaseException:
    if created and not _contents(workdir):  # refused before writing: leave no trace
      try:
        os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)
      except OSError:
        pass  # another process's lock file, or a record after all: the folder stays
    raise
  finally:
    os.close(fd)  # closing releases the lock


def refuse_a_file(path: str, flag: str = '--workdir') -> None:
  """WorkdirError if `path` exists and is not a directory (it is not ours to replace);
  `flag`: the flag that named it ('' for a folder within one)."""
  if os.path.lexists(path) and not os.path.isdir(path):
    where = f'{flag}={path}' if flag else path
    raise WorkdirError(f'{where} is a file, not a directory; choose a directory')


def _settings_file(kind: str) -> str:
  return records.SWEEP_FILE if kind == SWEEP else records.CONFIG_FILE


def read_marker(path: str) -> Optional[Dict[str, Any]]:
  """The marker mlp_jax wrote into the folder `path`, or None if it has none (or a
  file of that name that is not one)."""
  try:
    with open(os.path.join(path, records.MARKER_FILE)) as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(marker, dict) or marker.get('project') != MARKER_PROJECT:
    return None
  return marker


def write_marker(path: str, kind: str, settings: Mapping[str, Any]) -> None:
  """Marks `path` as a folder of mlp_jax's, holding a `kind` made for `settings`
  (what its config.json or sweep.json holds: what restores a lost one)."""
  from mlp_jax import __version__  # pylint: disable=g-import-not-at-top
  records.write_json(os.path.join(path, records.MARKER_FILE), {
      'project': MARKER_PROJECT, 'version': __version__, 'kind': kind,
      'settings_file': _settings_file(kind), 'settings': dict(settings),
      'entries': list(records.SWEEP_ENTRIES if kind == SWEEP else records.RUN_ENTRIES)})


def _written_by_us(path: str, check) -> bool:
  """Whether the JSON file `path` is exactly what records.write_json makes of an
  object that passes `check`: how folders written before the marker existed are
  recognised."""
  try:
    with open(path) as f:
      text = f.read()
    obj = json.loads(text)
  except (OSError, ValueError):
    return False
  if not isinstance(obj, dict) or text != json.dumps(obj, indent=2, sort_keys=True) + '\n':
    return False
  try:
    return bool(check(obj))
  except (TypeError, ValueError, UsageError):
    return False


def _is_config(obj: Dict[str, Any]) -> bool:
  # Settings added since are filled in by from_dict; unknown ones raise.
  TrainConfig.from_dict(obj)
  return 'seed' in obj and 'epochs' in obj


def _is_sweep_settings(obj: Dict[str, Any]) -> bool:
  return (isinstance(obj.get('seeds'), list) and isinstance(obj.get('config'), dict) and
          set(obj) <= {'seeds', 'config', 'grid'})


def _is_environment(obj: Dict[str, Any]) -> bool:
  return {'versions', 'backend', 'device_kind', 'platform'} <= set(obj)


def _written_before_markers(path: str, kind: str) -> bool:
  """A folder of an earlier version of mlp_jax (no marker): its settings file and
  environment.json (if there is one yet) are in the form mlp_jax writes."""
  check = _is_sweep_settings if kind == SWEEP else _is_config
  environment = os.path.join(path, records.ENVIRONMENT_FILE)
  return (_written_by_us(os.path.join(path, _settings_file(kind)), check) and
          (not os.path.exists(environment) or _written_by_us(environment, _is_environment)))


def _in_progress(name: str) -> bool:
  """Whether `name` is the temporary file of an atomic write of one of the files a
  folder is prepared with (records.write_bytes_atomic): in a multi-process job,
  process 0 writes them while the others check the folder."""
  return records.being_written(name) in (records.MARKER_FILE, records.CONFIG_FILE,
                                         records.SWEEP_FILE, records.ENVIRONMENT_FILE)


def _contents(path: str) -> List[str]:
  """The entries of the folder `path` but the lock files (which any run may leave) and
  the settings files being written (_in_progress)."""
  if not os.path.isdir(path):
    return []
  return sorted(n for n in os.listdir(path)
                if n != LOCK_FILE and not n.startswith(LOCK_FILE + '.') and not _in_progress(n))


def is_ours(path: str, kind: str) -> bool:
  """Whether the folder `path` provably holds a `kind` of mlp_jax's (its marker, or
  settings written by an earlier version); never raises."""
  if not os.path.isdir(path):
    return False
  marker = read_marker(path)
  return marker.get('kind') == kind if marker else _written_before_markers(path, kind)


def claim(path: str, kind: str, flag: str = '--workdir', write: bool = True) -> bool:
  """Checks that mlp_jax may write a `kind` (RUN or SWEEP) into the folder `path`
  (named by `flag`, '' for a folder within a workdir); True if it holds one
  already, False if it is new or empty.

  Ours: a folder with mlp_jax's marker of this kind, or one written by an earlier
  version (its settings in mlp_jax's form; the marker is then added if `write`).
  A lost settings file is restored from the marker (if `write`, saying so), never
  made from today's flags.

  Raises:
    WorkdirError: `path` is a file, holds files mlp_jax did not write, holds the
      other kind, or lost its settings file without a marker to restore it from.
  """
  refuse_a_file(path, flag)
  where = f'{flag}={path}' if flag else path
  entries = _contents(path)
  if not entries or entries == [records.MARKER_FILE]:
    return False  # new, or marked by a run stopped before it wrote anything
  settings_path = os.path.join(path, _settings_file(kind))
  marker = read_marker(path)
  if marker is None:
    if _written_before_markers(path, RUN if kind == SWEEP else SWEEP):
      return True  # the caller names the other layout (layout.Layout.refuse_the_other_layout)
    if not _written_before_markers(path, kind):
      shown = ', '.join(entries[:4]) + (f' and {len(entries) - 4} more' if len(entries) > 4
                                        else '')
      raise WorkdirError(f'{where} holds files mlp_jax did not write ({shown}); choose a new '
                         "or empty directory (--overwrite deletes only mlp_jax's own records)")
    if write:
      write_marker(path, kind, records.read_json_object(settings_path))
    return True
  if marker.get('kind') != kind:  # said here too: its settings file may be the lost one
    held, needs = ('a sweep', 'a single run') if kind == RUN else ('a single run', 'a sweep')
    raise WorkdirError(f'{where} holds {held}; {needs} needs its own workdir')
  if not os.path.exists(settings_path):
    settings = marker.get('settings')
    if not isinstance(settings, dict):
      raise WorkdirError(f'{where}: {_settings_file(kind)} is missing and '
                         f'{records.MARKER_FILE} does not record the settings; use '
                         '--overwrite to start over, or choose another directory')
    if write:
      records.write_json(settings_path, settings)
      print(f'mlp_jax: {settings_path} was missing; restored from '
            f'{os.path.join(path, records.MARKER_FILE)}, written when the {kind} started',
            flush=True)
  return True


def free_space(path: str) -> Tuple[int, int, int]:
  """(free bytes, free inodes, block size) of the filesystem `path` is or will be on
  (its nearest existing ancestor)."""
  probe = os.path.abspath(path)
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  stats = os.statvfs(probe)
  return stats.f_bavail * stats.f_frsize, stats.f_favail, stats.f_frsize or 4096


def size_text(n: float) -> str:
  """Bytes as '480 KiB', '12 MiB', '18.9 GiB'."""
  for unit, size in (('GiB', 2**30), ('MiB', 2**20)):
    if n >= size:
      return f'{n / size:.1f} {unit}' if unit == 'GiB' else f'{n / size:.0f} {unit}'
  return f'{n / 1024:.0f} KiB'


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
  """Context manager: SIGTERM/SIGINT set `requested` instead of killing the process.

  Nested uses share the outermost one (`with StopRequests() as stop` inside another
  gives the same object), so a signal that arrives in an inner phase (the driver's
  last writes) is still seen by the outer one (the final writes that follow)."""

  _active: Optional['StopRequests'] = None

  def __init__(self):
    self.requested: Optional[signal.Signals] = None
    self._previous: Dict[int, Any] = {}
    self._outer: Optional['StopRequests'] = None

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # a second signal: stop now
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      os.kill(os.getpid(), signum)
      return
    self.requested = signal.Signals(signum)

  def __enter__(self) -> 'StopRequests':
    if StopRequests._active is not None:
      self._outer = StopRequests._active
      return self._outer
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handle)
    StopRequests._active = self
    return self

  def __exit__(self, *exc_info) -> None:
    if self._outer is not None:
      self._outer = None
      return
    StopRequests._active = None
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
