"""Runs N local processes of an entry point, joined by JAX's distributed runtime.

    python -m mlp_jax.launch --processes=N [--dry_run] MODULE [ARGS...]

starts N processes of `python -m MODULE ARGS` joined over 127.0.0.1 exactly as N hosts
would be: each gets COORDINATOR_ADDRESS (a free port, or $MLP_JAX_PORT), NUM_PROCESSES=N
and PROCESS_ID=i, which `mlp_jax.environment.initialize_distributed` reads. GPUs
($CUDA_VISIBLE_DEVICES, else those `nvidia-smi -L` lists) are split evenly between the
processes; on a CPU each process has one CPU device unless
XLA_FLAGS=--xla_force_host_platform_device_count=K gives it K.

Each process runs in a process group of its own and its output lines are prefixed with
`[p<i>] `, each line whole (PYTHONUNBUFFERED is taken out of their environment: it would
let a library's line written in pieces split the process's own lines). SIGTERM and
SIGINT are forwarded to every process (SIGHUP as SIGTERM): the entry points checkpoint
at the end of the epoch and exit; a third signal kills them.
When a process fails, the others are stopped (SIGTERM, then SIGKILL after
$MLP_JAX_LAUNCH_GRACE seconds, default 10), and the launcher exits with the first
failure's exit code, naming the process. Exit status: 0 when every process succeeded;
the first failure's code; 128 + N after signal N was forwarded; 2 for bad usage.

The launcher imports neither jax nor the module: it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, List, Optional, Sequence

from mlp_jax.errors import UsageError

PROG = 'mlp_jax.launch'
USAGE = f'usage: python -m {PROG} --processes=N [--dry_run] MODULE [ARGS...]'
DEFAULT_GRACE_SECONDS = 10.0
_MODULE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$')
# Variables shown by --dry_run, in this order, when set.
_SHOWN = ('COORDINATOR_ADDRESS', 'NUM_PROCESSES', 'PROCESS_ID', 'CUDA_VISIBLE_DEVICES')


# What a process of a job exits with when another process of it is gone.
LOST_PEER_EXIT_CODE = 1
# How a collective says that the process at the other end is gone (gloo on CPUs; the
# coordination service's heartbeats elsewhere).
_PEER_GONE = re.compile(r'Connection closed by peer|Connection reset by peer|Broken pipe|'
                        r'heartbeat timeout|stopped sending heartbeats|tasks have crashed')
_PEER_ADDRESS = re.compile(r'peer \[?([0-9A-Fa-f.:]+?)\]?:(\d+)')


def lost_peer_line(error: BaseException, process_index: int, process_count: int
                   ) -> Optional[str]:
  """The one line saying that another process of the job is gone, if `error` (raised by
  a collective in process `process_index` of `process_count`) says so; else None.

  The lost process is named when it can only be one (two processes), else by the
  address its connection came from."""
  text = str(error)
  if process_count < 2 or not _PEER_GONE.search(text):
    return None
  if process_count == 2:
    lost = f'process {1 - process_index}'
  else:
    address = _PEER_ADDRESS.search(text)
    lost = f'the process at {address.group(1)}:{address.group(2)}' if address else 'a process'
  first = next((l for l in text.splitlines() if _PEER_GONE.search(l)), text)
  reason = re.sub(r'\[[^\]]*\.(cc|h):\d+\]\s*', '', first).strip()
  reason = reason if len(reason) <= 160 else f'{reason[:157]}...'
  return (f'mlp_jax: process {process_index} of {process_count} lost {lost} of the job '
          f'({reason}); stopping now: run the same command again to resume from the last '
          'checkpoint')


@contextlib.contextmanager
def lost_peer_exits() -> Iterator[None]:
  """Around collectives over the processes of a job: when one fails because another
  process is gone, this process says so in one line (lost_peer_line) and exits at
  once with LOST_PEER_EXIT_CODE, without the traceback, the wait at JAX's shutdown
  barrier for the lost process (minutes) or the cleanups that would wait on it too.
  Its records are whole (every file is written atomically; an unfinished checkpoint
  is a temporary directory)."""
  try:
    yield
  except Exception as e:  # JAX raises ValueError, JaxRuntimeError, ... for gloo's errors
    import jax  # pylint: disable=g-import-not-at-top
    line = lost_peer_line(e, jax.process_index(), jax.process_count())
    if line is None:
      raise
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    os._exit(LOST_PEER_EXIT_CODE)  # pylint: disable=protected-access


def stops_on_lost_peer(fn):
  """Decorates a function that runs collectives: it runs inside lost_peer_exits."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with lost_peer_exits():
      return fn(*args, **kwargs)
  return wrapped


def _say(message: str) -> None:
  try:
    print(f'{PROG}: {message}', file=sys.stderr, flush=True)
  except (OSError, ValueError):
    pass  # a closed or failing stderr: the processes go on, their records are the product


def parse_args(argv: Sequence[str]):
  """(processes, dry_run, module, module_args) from the launcher's arguments.

  Raises:
    UsageError: a missing or invalid --processes, an unknown option, no MODULE.
  """
  processes, dry_run, rest = None, False, list(argv)
  while rest and rest[0].startswith('-'):
    option = rest.pop(0)
    if option == '--':
      break
    if option in ('-h', '--help'):
      print(__doc__.strip())
      raise SystemExit(0)
    if option == '--dry_run':
      dry_run = True
    elif option == '--processes' or option.startswith('--processes='):
      if option == '--processes':
        if not rest:
          raise UsageError('--processes needs a value, e.g. --processes=2')
        option = '--processes=' + rest.pop(0)
      value = option.split('=', 1)[1]
      if not re.fullmatch(r'[1-9][0-9]{0,3}', value):
        raise UsageError(f"--processes must be a whole number from 1 to 9999, got '{value}'")
      processes = int(value)
    else:
      raise UsageError(f"unknown option '{option}' ({USAGE})")
  if not rest:
    raise UsageError(f'no MODULE given ({USAGE})')
  module = rest.pop(0)
  if not _MODULE.match(module):
    raise UsageError(f"MODULE must be a Python module like experiments.sweep, got '{module}'")
  if processes is None:
    raise UsageError(f'--processes=N is required ({USAGE})')
  return processes, dry_run, module, rest


def _grace_seconds() -> float:
  text = os.environ.get('MLP_JAX_LAUNCH_GRACE', '')
  if not text:
    return DEFAULT_GRACE_SECONDS
  try:
    grace = float(text)
  except ValueError:
    grace = -1.0
  if not grace >= 0:
    raise UsageError(f"MLP_JAX_LAUNCH_GRACE must be seconds (>= 0), got '{text}'")
  return grace


def _gpus() -> List[str]:
  """The GPUs to split: $CUDA_VISIBLE_DEVICES, else the indices `nvidia-smi -L` lists."""
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return [gpu for gpu in visible.split(',') if gpu.strip()]
  try:
    listing = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True,
                             timeout=20, check=True).stdout  # a hung driver must not hang us
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(k) for k in range(sum(line.startswith('GPU ') for line in listing.splitlines()))]


def _coordinator_port() -> int:
  text = os.environ.get('MLP_JAX_PORT', '')
  if text:
    if not text.isdigit() or not 0 < int(text) < 65536:
      raise UsageError(f"MLP_JAX_PORT must be a port number, got '{text}'")
    return int(text)
  with socket.socket() as s:  # a free port now; process 0's coordinator takes it next
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def plan(processes: int) -> tuple[List[Dict[str, str]], str]:
  """Each process's environment (a full copy of ours plus its settings) and a one-line
  description of what was set."""
  port = _coordinator_port()
  common = {**os.environ, 'COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
            'NUM_PROCESSES': str(processes)}
  common.pop('MLP_JAX_DISTRIBUTED', None)
  # Not unbuffered: PYTHONUNBUFFERED also unbuffers C's stdout, and then a library
  # line written in pieces from a thread of its own (gloo's "[Gloo] Rank 0 is
  # connected to ..." is 5 writes) splits a line the process prints meanwhile.
  # Buffered, such a line leaves whole at its end; the entry points print theirs
  # line-buffered (cli.run).
  common.pop('PYTHONUNBUFFERED', None)
  described = [f'{processes} local processes: COORDINATOR_ADDRESS=127.0.0.1:{port} '
               f'NUM_PROCESSES={processes} PROCESS_ID=0..{processes - 1}']
  gpus = _gpus()
  shares: List[Optional[str]] = [None] * processes
  if gpus:
    if len(gpus) % processes:
      raise UsageError(f'--processes={processes} does not divide the {len(gpus)} GPU(s) '
                       f'({",".join(gpus)}) evenly')
    per = len(gpus) // processes
    shares = [','.join(gpus[i * per:(i + 1) * per]) for i in range(processes)]
    described.append(f'CUDA_VISIBLE_DEVICES: {per} GPU(s) per process')
  else:
    match = re.search(r'--xla_force_host_platform_device_count=(\d+)',
                      os.environ.get('XLA_FLAGS', ''))
    described.append(f'{match.group(1)} CPU device(s) per process (XLA_FLAGS)' if match else
                     '1 CPU device per process (XLA_FLAGS=--xla_force_host_platform_device_count'
                     '=K for K)')
  envs = []
  for i in range(processes):
    env = {**common, 'PROCESS_ID': str(i)}
    if shares[i] is not None:
      env['CUDA_VISIBLE_DEVICES'] = shares[i]
    envs.append(env)
  return envs, '; '.join(described)


def _exit_code(returncode: int) -> int:
  """Popen's returncode in the shell's convention (killed by signal N: 128 + N)."""
  return 128 - returncode if returncode < 0 else returncode


def _describe(code: int) -> str:
  if code > 128:
    try:
      return f'exit code {code} ({signal.Signals(code - 128).name})'
    except ValueError:
      pass
  return f'exit code {code}'


def _copy_lines(source, sink, prefix: bytes, lock: threading.Lock) -> None:
  """Copies `source` to `sink` line by line, each line prefixed (the last one ended).

  A `sink` that fails (a closed pipe, a full device) is given up, but `source` is
  still read to its end: a process whose output nobody reads would block on its
  next line once the pipe between them is full, and stop training."""
  failed = False
  for line in iter(source.readline, b''):
    if failed:
      continue
    if not line.endswith(b'\n'):
      line += b'\n'
    with lock:
      try:
        sink.write(prefix + line)
        sink.flush()
      except (OSError, ValueError):
        failed = True
  source.close()


class Supervisor:
  """The N processes, the signals forwarded to them, and the stop when one fails."""

  def __init__(self, grace: float):
    self.grace = grace
    self.codes: List[Optional[int]] = []
    self.failed: Optional[int] = None  # the first process that failed
    self.signal_name: Optional[str] = None  # the first signal that stopped the launch
    self.signals = 0
    self.kill_at: Optional[float] = None
    self.procs: List[subprocess.Popen] = []
    self.copiers: List[threading.Thread] = []

  def start(self, command: List[str], envs: List[Dict[str, str]]) -> None:
    """Starts the processes, each in a process group of its own (signalled and killed as
    a whole); none more once a signal has come."""
    lock = threading.Lock()
    try:
      for i, env in enumerate(envs):
        if self.signal_name is not None:
          break
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                process_group=0)
        self.procs.append(proc)
        self.codes.append(None)
        for source, sink in ((proc.stdout, sys.stdout.buffer), (proc.stderr, sys.stderr.buffer)):
          copier = threading.Thread(target=_copy_lines, daemon=True,
                                    args=(source, sink, f'[p{i}] '.encode(), lock))
          copier.start()
          self.copiers.append(copier)
    except BaseException:
      self._signal_all(signal.SIGKILL, group=True)
      raise

  def running(self) -> List[int]:
    return [i for i, code in enumerate(self.codes) if code is None]

  def _signal_all(self, signum: int, group: bool = False) -> None:
    for i in self.running():
      try:
        if group:
          os.killpg(self.procs[i].pid, signum)
        else:
          self.procs[i].send_signal(signum)
      except (ProcessLookupError, PermissionError):
        pass

  def on_signal(self, signum: int, _frame=None) -> None:
    name = signal.Signals(signum).name
    running = len(self.running())
    if not running:
      _say(f'got {name} after every process had finished')
      return
    self.signals += 1
    if self.signal_name is None:
      self.signal_name = name
    if self.signals >= 3:
      _say(f'{name} again: killing the {running} running process(es)')
      self._signal_all(signal.SIGKILL, group=True)
      return
    # The entry points stop cleanly on SIGTERM and SIGINT, not on SIGHUP.
    forwarded = signal.SIGTERM if signum == signal.SIGHUP else signum
    _say(f'got {name}; sending {signal.Signals(forwarded).name} to the {running} running '
         'process(es) (they checkpoint and stop after this epoch; a third signal kills them)')
    self._signal_all(forwarded)

  def watch(self) -> None:
    """Waits for every process, stopping the rest after a failure."""
    while self.running():
      newly = []
      for i in self.running():
        returncode = self.procs[i].poll()
        if returncode is not None:
          self.codes[i] = _exit_code(returncode)
          newly.append(i)
      for i in newly:
        if self.codes[i] and self.failed is None and self.signal_name is None:
          self.failed = i
          others = len(self.running())
          if others:
            _say(f'process {i} (pid {self.procs[i].pid}) failed with '
                 f'{_describe(self.codes[i])}; stopping the other {others} process(es)')
            self._signal_all(signal.SIGTERM, group=True)
      # After a failure, or once a process has exited after a signal, the rest get
      # `grace` seconds.
      if (self.running() and self.kill_at is None and
          (self.failed is not None or (self.signal_name and newly))):
        self.kill_at = time.monotonic() + self.grace
      if self.running() and self.kill_at is not None and time.monotonic() >= self.kill_at:
        _say(f'killing the {len(self.running())} process(es) still running {self.grace:g}s '
             'later (MLP_JAX_LAUNCH_GRACE)')
        self._signal_all(signal.SIGKILL, group=True)
        self.kill_at = float('inf')
      if not newly:
        time.sleep(0.1)

  def finish(self) -> None:
    """No process outlives the launcher (not even one a process left behind), and every
    line they printed is passed on."""
    self._signal_all(signal.SIGKILL, group=True)
    for proc in self.procs:
      proc.wait()
      try:
        os.killpg(proc.pid, signal.SIGKILL)  # what a process left running in its group
      except (ProcessLookupError, PermissionError):
        pass
    for copier in self.copiers:
      copier.join(10)

  def exit_code(self) -> int:
    summary = ' '.join(f'p{i}={code}' for i, code in enumerate(self.codes))
    if self.failed is not None:
      _say(f'failed: process {self.failed} exited with {_describe(self.codes[self.failed])} '
           f'(exit codes: {summary})')
      return self.codes[self.failed]
    if self.signal_name is not None:
      _say(f'stopped by {self.signal_name} (exit codes: {summary}); run the same command '
           'again to resume')
      return 128 + signal.Signals[self.signal_name].value
    return 0


def launch(processes: int, module: str, args: Sequence[str], dry_run: bool = False) -> int:
  """Runs `processes` processes of `python -m module args`; returns the exit status."""
  grace = _grace_seconds()
  envs, described = plan(processes)
  _say(described)
  command = [sys.executable, '-m', module, *args]
  if dry_run:
    for i, env in enumerate(envs):
      shown = ' '.join(f'{name}={shlex.quote(env[name])}' for name in _SHOWN if name in env)
      print(f'{PROG}: would run [p{i}]: {shown} {shlex.join(command)}', flush=True)
    return 0
  supervisor = Supervisor(grace)
  previous = {}
  try:
    # Handlers first: a signal while the processes start reaches those already running.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
      previous[signum] = signal.signal(signum, supervisor.on_signal)
    supervisor.start(command, envs)
    supervisor.watch()
  finally:
    supervisor.finish()
    for signum, old in previous.items():
      signal.signal(signum, old)
  return supervisor.exit_code()


def main(argv: Sequence[str]) -> int:
  """The command line: bad usage is one line `error: ...` and exit 2."""
  try:
    processes, dry_run, module, args = parse_args(argv)
    return launch(processes, module, args, dry_run)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
