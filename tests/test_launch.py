"""launch.sh and mlp_jax.launch: 1 device = 2 devices = 2 processes x 2 devices, bit for
bit; a failing process or a signal stops the whole launch, leaving no process behind;
initialize_distributed joins the clusters JAX detects."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, without_timing
from mlp_jax import environment
from mlp_jax import launch as launcher
from mlp_jax.errors import UsageError

LAUNCH = os.path.join(REPO, 'launch.sh')
PYTHON_LAUNCHER = [sys.executable, '-m', 'mlp_jax.launch']
SWEEP = ['--seeds=0-4', '--epochs=2']  # 5 seeds: padded to 6 and 8 rows on 2 and 4 devices
SEEDS = range(5)

# Variables that would change how the launchers or the modules run: each test sets its own.
_SCRUBBED = ('COORDINATOR_ADDRESS', 'NUM_PROCESSES', 'PROCESS_ID', 'MLP_JAX_DISTRIBUTED',
             'MLP_JAX_PORT', 'MLP_JAX_LAUNCH_GRACE', 'XLA_FLAGS', 'CUDA_VISIBLE_DEVICES',
             'XLA_PYTHON_CLIENT_PREALLOCATE', 'PYTHON', 'SLURM_JOB_ID', 'SLURM_NTASKS',
             'SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST',
             'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK',
             'OMPI_MCA_orte_hnp_uri', 'JAX_COORDINATOR_PORT')


def _env(cache_dir, **extra):
  env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
  env.update({'MLP_JAX_COMPILATION_CACHE': cache_dir, 'PYTHON': sys.executable, **extra})
  return env


def _session_processes(session):
  """Pids of the live processes in `session` (the launcher and everything it started);
  none where there is no /proc to ask."""
  pids = []
  for name in os.listdir('/proc') if os.path.isdir('/proc') else []:
    if name.isdigit():
      try:
        with open(f'/proc/{name}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:
        continue
      if int(fields[3]) == session and fields[0] != 'Z':
        pids.append(int(name))
  return pids


def _kill_session(session):
  for pid in _session_processes(session):
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass


class Launch:
  """`bash launch.sh ARGS` (or `command`) in a session of its own, so that nothing it
  starts can hide."""

  def __init__(self, *args, env, command=('bash', LAUNCH)):
    self.started = time.monotonic()
    self.proc = subprocess.Popen([*command, *args], cwd=REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
    self.stdout_lines, self.stderr = [], ''
    self.line_seen = threading.Condition()
    self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                     threading.Thread(target=self._read_stderr, daemon=True)]
    for reader in self._readers:
      reader.start()

  def _read_stdout(self):
    for line in self.proc.stdout:
      with self.line_seen:
        self.stdout_lines.append(line)
        self.line_seen.notify_all()

  def _read_stderr(self):
    self.stderr = self.proc.stderr.read()

  @property
  def stdout(self):
    return ''.join(self.stdout_lines)

  def wait_for_line(self, text, timeout):
    with self.line_seen:
      assert self.line_seen.wait_for(lambda: any(text in l for l in self.stdout_lines),
                                     timeout), f'no line with {text!r}:\n{self.stdout}'

  def wait(self, timeout):
    """Waits for the launcher; on timeout kills everything it started and fails."""
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      _kill_session(self.proc.pid)
      self.proc.wait()
      for reader in self._readers:
        reader.join(10)
      pytest.fail(f'launcher still running after {timeout}s\n{self.stdout}\n{self.stderr}')
    for reader in self._readers:
      reader.join(30)
    self.seconds = time.monotonic() - self.started
    left = _session_processes(self.proc.pid)
    _kill_session(self.proc.pid)
    assert not left, f'processes left behind by the launcher: {left}'
    return self.proc.returncode


def launch(*args, env, timeout=120, command=('bash', LAUNCH)):
  run = Launch(*args, env=env, command=command)
  run.wait(timeout)
  return run


def _read(path, mode='r'):
  with open(path, mode) as f:
    return f.read()


@pytest.fixture(scope='module')
def three_ways(tmp_path_factory, cache_dir):
  """The same sweep on 1 device, on 2 devices (launch.sh, one process) and on 2
  processes x 2 devices (launch.sh --local_processes=2, i.e. mlp_jax.launch). Not 4
  devices in one process: that process's XLA:CPU pool would have 4 threads, not
  environment.INTRA_OP_THREADS, and Eigen's matmuls other last bits."""
  root = tmp_path_factory.mktemp('launch')
  out = {name: str(root / name) for name in ('one', 'two', 'two_by_two')}
  # The single-process runs go side by side (compiling is mostly one thread).
  plain = subprocess.Popen([sys.executable, '-m', 'experiments.sweep', *SWEEP,
                            f'--workdir={out["one"]}'], cwd=REPO, env=_env(cache_dir),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    one_process = launch('experiments.sweep', *SWEEP, f'--workdir={out["two"]}',
                         env=_env(cache_dir, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
    _, plain_stderr = plain.communicate(timeout=120)
  finally:
    plain.kill()
  assert plain.returncode == 0, plain_stderr
  assert one_process.proc.returncode == 0, one_process.stderr
  out['one_process_run'] = one_process
  two = launch('--local_processes=2', 'experiments.sweep', *SWEEP,
               f'--workdir={out["two_by_two"]}',
               env=_env(cache_dir, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  assert two.proc.returncode == 0, two.stderr
  out['two_run'] = two
  return out


@pytest.mark.slow
@pytest.mark.parametrize('seed', SEEDS)
def test_one_device_two_devices_and_two_processes_agree_bit_for_bit(three_ways, seed):
  reference = os.path.join(three_ways['one'], f'seed_{seed}')
  history = without_timing(_read(os.path.join(reference, 'history.csv')))
  params = _read(os.path.join(reference, 'params.msgpack'), 'rb')
  assert len(history) == 3  # header + 2 epochs
  for way in ('two', 'two_by_two'):
    seed_dir = os.path.join(three_ways[way], f'seed_{seed}')
    assert without_timing(_read(os.path.join(seed_dir, 'history.csv'))) == history, way
    assert _read(os.path.join(seed_dir, 'params.msgpack'), 'rb') == params, way


@pytest.mark.slow
def test_environment_records_devices_and_processes(three_ways):
  env = {way: json.loads(_read(os.path.join(three_ways[way], 'environment.json')))
         for way in ('one', 'two', 'two_by_two')}
  assert [(env[w]['device_count'], env[w]['process_count']) for w in env] == \
      [(1, 1), (2, 1), (4, 2)]
  assert env['two_by_two']['local_device_count'] == 2


@pytest.mark.slow
def test_launch_reports_and_prefixes_output(three_ways):
  one_process, two = three_ways['one_process_run'], three_ways['two_run']
  # A single process is the module itself: its own output, nothing added.
  assert 'over 2 device(s) in 1 process(es)' in one_process.stdout
  assert 'mlp_jax.launch' not in one_process.stderr
  report = two.stderr.splitlines()[0]
  assert report.startswith('mlp_jax.launch: 2 local processes: COORDINATOR_ADDRESS=127.0.0.1:')
  assert 'NUM_PROCESSES=2 PROCESS_ID=0..1' in report
  assert '2 CPU device(s) per process (XLA_FLAGS)' in report
  lines = two.stdout.splitlines()
  assert lines and all(l.startswith(('[p0] ', '[p1] ')) for l in lines), two.stdout
  for p in ('[p0] ', '[p1] '):
    assert any(l.startswith(p + 'sweep: 5 seeds x 2 epochs') and 'in 2 process(es)' in l
               for l in lines), (p, two.stdout, two.stderr)
    assert any(l.startswith(p + 'epoch 2/2') for l in lines), (p, two.stdout, two.stderr)
  assert any(l.startswith('[p0] sweep: final test accuracy over 5 seed(s)') for l in lines)


# An entry point that a library interrupts: a line begun on C's stdout (as gloo writes
# its connection report, in pieces), the entry point's own line printed meanwhile
# without a flush, then the library's line ended.
_INTERRUPTED_LINE = """
import ctypes, os, sys, time
from mlp_jax import cli

def main(argv):
  libc = ctypes.CDLL(None)
  c_stdout = ctypes.c_void_p.in_dll(libc, 'stdout')
  libc.fputs(b'[lib] connected ', c_stdout)
  print('entry point line')
  release = os.environ['RELEASE']
  waited = time.monotonic()
  while not os.path.exists(release) and time.monotonic() - waited < 60:
    time.sleep(0.05)
  libc.fputs(b'to 1 peer\\n', c_stdout)
  libc.fflush(c_stdout)

cli.run(main)
"""


def test_lines_stay_whole_and_arrive_as_printed(tmp_path, cache_dir):
  """PYTHONUNBUFFERED (here set by the user) would unbuffer C's stdout too, and a
  library's line written in pieces would split the process's line (CI saw gloo's
  "[Gloo] Rank 0 is connected ..." do that); the launcher takes it out, and the entry
  point's stdout is line-buffered, so its line arrives before the process ends."""
  (tmp_path / 'interrupted_line.py').write_text(_INTERRUPTED_LINE)
  release = tmp_path / 'release'
  run = Launch('--processes=1', 'interrupted_line', command=PYTHON_LAUNCHER,
               env=_env(cache_dir, PYTHONPATH=str(tmp_path), PYTHONUNBUFFERED='1',
                        RELEASE=str(release)))
  try:
    run.wait_for_line('entry point line', timeout=30)
  finally:
    release.touch()
  assert run.wait(60) == 0, run.stderr
  assert run.stdout.splitlines() == ['[p0] entry point line', '[p0] [lib] connected to 1 peer']


def test_every_process_failing_fails_the_launch(tmp_path, cache_dir):
  run = launch('--processes=2', 'mlp_jax.main', '--epochs=-1', f'--workdir={tmp_path / "w"}',
               env=_env(cache_dir), timeout=60, command=PYTHON_LAUNCHER)
  assert run.proc.returncode == 2, run.stderr
  # The first to fail is named; the other may be stopped before it says the same.
  assert re.search(r'^\[p[01]\] error: --epochs must be at least 1, got -1$', run.stderr, re.M)
  assert re.search(r'^mlp_jax.launch: failed: process [01] exited with exit code 2 '
                   r'\(exit codes: p0=\d+ p1=\d+\)$', run.stderr, re.M), run.stderr


def _two_process_sweep_with(tmp_path, cache_dir, body, grace):
  """mlp_jax.launch --processes=2 of a 1-epoch sweep whose processes run `body` first,
  with MLP_JAX_LAUNCH_GRACE=`grace` seconds before SIGKILL."""
  (tmp_path / 'sweep_after_body.py').write_text(
      f'import os, runpy, socket, sys, time\n{body}\n'
      "runpy.run_module('experiments.sweep', run_name='__main__', alter_sys=True)\n")
  return launch('--processes=2', 'sweep_after_body', '--seeds=0-1', '--epochs=1',
                f'--workdir={tmp_path / "w"}', command=PYTHON_LAUNCHER,
                env=_env(cache_dir, PYTHONPATH=str(tmp_path), MLP_JAX_LAUNCH_GRACE=grace),
                timeout=60)


def test_one_process_failing_stops_the_one_waiting_for_it(tmp_path, cache_dir):
  """Process 1 fails once process 0 is inside jax.distributed.initialize waiting for it
  (its coordinator port answers). Alone, process 0 would wait there for 5 minutes."""
  run = _two_process_sweep_with(tmp_path, cache_dir, '''
if os.environ.get('PROCESS_ID') == '1':
  host, port = os.environ['COORDINATOR_ADDRESS'].rsplit(':', 1)
  deadline = time.time() + 60
  while time.time() < deadline:
    try:
      socket.create_connection((host, int(port)), timeout=1).close()
      break
    except OSError:
      time.sleep(0.1)
  print('process 1: failing on purpose while process 0 waits for it', file=sys.stderr)
  sys.exit(3)''', grace='2')
  assert run.proc.returncode == 3, run.stderr
  assert '[p1] process 1: failing on purpose' in run.stderr
  assert 'mlp_jax.launch: process 1 (pid ' in run.stderr
  assert 'failed with exit code 3; stopping the other 1 process(es)' in run.stderr
  # Process 0 was stopped: SIGTERM (143), or SIGKILL (137) after the grace period.
  assert re.search(r'mlp_jax.launch: failed: process 1 exited with exit code 3 '
                   r'\(exit codes: p0=1(43|37) p1=3\)', run.stderr), run.stderr
  assert run.seconds < 40


@pytest.mark.slow
def test_a_process_dying_after_joining_stops_the_rest(tmp_path, cache_dir):
  """Process 1 joins the distributed runtime and dies; process 0 is left at the first
  barrier, where JAX takes SIGTERM as a preemption notice: the launcher kills it."""
  run = _two_process_sweep_with(tmp_path, cache_dir, '''
if os.environ.get('PROCESS_ID') == '1':
  from mlp_jax import environment
  environment.initialize_distributed()
  print('process 1: joined, now dying', file=sys.stderr, flush=True)
  os._exit(4)''', grace='1')
  assert run.proc.returncode == 4, run.stderr
  assert '[p1] process 1: joined, now dying' in run.stderr
  assert 'failed with exit code 4; stopping the other 1 process(es)' in run.stderr
  assert 'mlp_jax.launch: failed: process 1 exited with exit code 4' in run.stderr
  assert run.seconds < 40


@pytest.mark.slow
def test_a_process_lost_in_training_is_one_line_and_the_survivor_stops_at_once(tmp_path,
                                                                              cache_dir):
  """Process 1 dies at its first epoch; process 0 meets the loss in its next collective:
  one line naming process 1, exit at once (not JAX's traceback, nor a wait at its
  shutdown barrier that ignores SIGTERM until the launcher's SIGKILL)."""
  run = _two_process_sweep_with(tmp_path, cache_dir, '''
if os.environ.get('PROCESS_ID') == '1':
  from mlp_jax import driver
  def begin(*args, **kwargs):  # as its first epoch starts
    print('process 1: dying in training', file=sys.stderr, flush=True)
    os._exit(4)
  driver.RecordSink.begin = begin''', grace='30')
  assert run.proc.returncode == 4, run.stderr
  assert re.search(r'^\[p0\] mlp_jax: process 0 of 2 lost process 1 of the job \(.*Connection '
                   r'closed by peer .*\); stopping now: run the same command again to resume '
                   r'from the last checkpoint$', run.stderr, re.M), run.stderr
  assert 'Traceback' not in run.stderr
  # Stopped within the launcher's grace period: never killed (p0=137 after 30 s).
  assert re.search(r'\(exit codes: p0=(1|143) p1=4\)', run.stderr), run.stderr
  assert 'still running' not in run.stderr


@pytest.mark.slow
def test_a_module_error_after_joining_stops_the_launch(tmp_path, cache_dir):
  """Process 1 cannot take its workdir lock (.lock.1 is a directory) and reports it."""
  workdir = tmp_path / 'w'
  (workdir / '.lock.1').mkdir(parents=True)
  run = launch('--local_processes=2', 'experiments.sweep', '--seeds=0-1', '--epochs=1',
               f'--workdir={workdir}', env=_env(cache_dir, MLP_JAX_LAUNCH_GRACE='1'), timeout=60)
  assert run.proc.returncode == 2, run.stderr
  assert '[p1] error: --workdir=' in run.stderr
  assert 'mlp_jax.launch: failed: process 1 exited with exit code 2' in run.stderr
  assert run.seconds < 40  # stopped, not left waiting for process 1 at a barrier


@pytest.mark.slow
def test_sigterm_is_forwarded_and_every_process_checkpoints(tmp_path, cache_dir):
  workdir = tmp_path / 'w'
  run = Launch('--processes=2', 'experiments.sweep', '--seeds=0-1', '--epochs=30',
               f'--workdir={workdir}', env=_env(cache_dir), command=PYTHON_LAUNCHER)
  try:
    run.wait_for_line('epoch  1/30', timeout=60)  # the processes are in their training loop
  except BaseException:
    _kill_session(run.proc.pid)
    raise
  run.proc.send_signal(signal.SIGTERM)
  assert run.wait(60) == 128 + signal.SIGTERM, run.stderr
  assert 'mlp_jax.launch: got SIGTERM; sending SIGTERM to the 2 running process(es)' in run.stderr
  for p in (0, 1):
    assert f'[p{p}] mlp_jax: stopped by SIGTERM after epoch' in run.stderr
  assert 'mlp_jax.launch: stopped by SIGTERM (exit codes: p0=143 p1=143)' in run.stderr
  assert os.listdir(workdir / 'checkpoints')
  assert not (workdir / 'seed_0' / 'params.msgpack').exists()


def test_help(cache_dir):
  result = subprocess.run(['bash', LAUNCH, '--help'], capture_output=True, text=True,
                          timeout=30, env=_env(cache_dir))
  assert result.returncode == 0 and result.stderr == ''
  assert result.stdout.startswith('Usage: ./launch.sh [--local_processes=N] MODULE')
  for text in ('--local_processes=N', 'mlp_jax.launch', '--xla_force_host_platform_device_count',
               'XLA_PYTHON_CLIENT_PREALLOCATE=false', 'jax.distributed.initialize()',
               'MLP_JAX_DISTRIBUTED=auto', 'SLURM', 'srun', 'mpirun', 'TPU VM',
               'COORDINATOR_ADDRESS'):
    assert text in result.stdout, text
  assert 'deterministic' not in result.stdout  # a Python-side default now, not a launch option
  result = subprocess.run([*PYTHON_LAUNCHER, '--help'], capture_output=True, text=True,
                          timeout=30, env=_env(cache_dir), cwd=REPO)
  assert result.returncode == 0 and 'python -m mlp_jax.launch --processes=N' in result.stdout
  assert 'MLP_JAX_LAUNCH_GRACE' in result.stdout


@pytest.mark.parametrize('args, message', [
    ([], 'no MODULE given'),
    (['--deterministic', 'mlp_jax.main'], "unknown option '--deterministic'"),
    (['--frobnicate', 'mlp_jax.main'], "unknown option '--frobnicate'"),
    (['--local_processes=0', 'mlp_jax.main'], "got '0'"),
    (['--local_processes=abc', 'mlp_jax.main'], "got 'abc'"),
    (['--local_processes=-2', 'mlp_jax.main'], "got '-2'"),
    (['--local_processes'], '--local_processes needs a value'),
    (['mlp_jax/main.py'], 'MODULE must be a Python module'),
])
def test_bad_usage_of_launch_sh_is_one_line_and_exit_2(args, message, cache_dir):
  result = subprocess.run(['bash', LAUNCH, *args], capture_output=True, text=True, timeout=30,
                          env=_env(cache_dir))
  assert result.returncode == 2 and result.stdout == ''
  assert len(result.stderr.splitlines()) == 1, result.stderr
  assert result.stderr.startswith('launch.sh: error: ') and message in result.stderr


@pytest.mark.parametrize('args, env, message', [
    ([], {}, 'no MODULE given'),
    (['mlp_jax.main'], {}, '--processes=N is required'),
    (['--processes=0', 'mlp_jax.main'], {}, "got '0'"),
    (['--processes', 'x', 'mlp_jax.main'], {}, "got 'x'"),
    (['--processes'], {}, '--processes needs a value'),
    (['--deterministic', 'mlp_jax.main'], {}, "unknown option '--deterministic'"),
    (['--processes=2', 'mlp_jax/main.py'], {}, 'MODULE must be a Python module'),
    (['--processes=2', 'mlp_jax.main'], {'MLP_JAX_LAUNCH_GRACE': 'soon'},
     "MLP_JAX_LAUNCH_GRACE must be seconds (>= 0), got 'soon'"),
    (['--processes=2', 'mlp_jax.main'], {'MLP_JAX_PORT': '70000'},
     "MLP_JAX_PORT must be a port number, got '70000'"),
    (['--processes=3', 'mlp_jax.main'], {'CUDA_VISIBLE_DEVICES': '0,1,2,3'},
     '--processes=3 does not divide the 4 GPU(s) (0,1,2,3) evenly'),
])
def test_bad_usage_of_the_launcher_is_one_line_and_exit_2(args, env, message, monkeypatch,
                                                          capsys):
  for name in _SCRUBBED:
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert launcher.main(args) == 2
  out, err = capsys.readouterr()
  assert out == '' and len(err.splitlines()) == 1, err
  assert err.startswith('error: ') and message in err


def test_the_launcher_splits_the_gpus_and_sets_each_process(monkeypatch, capsys):
  for name in _SCRUBBED:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1,2,3')
  monkeypatch.setenv('MLP_JAX_PORT', '23456')
  monkeypatch.setenv('MLP_JAX_DISTRIBUTED', 'auto')  # the launcher's variables win
  assert launcher.main(['--processes=2', '--dry_run', 'mlp_jax.main', '--epochs=1']) == 0
  out, err = capsys.readouterr()
  assert err.startswith('mlp_jax.launch: 2 local processes: COORDINATOR_ADDRESS=127.0.0.1:23456')
  assert 'CUDA_VISIBLE_DEVICES: 2 GPU(s) per process' in err
  lines = out.splitlines()
  assert len(lines) == 2
  for p, share in ((0, '0,1'), (1, '2,3')):
    assert lines[p] == (f'mlp_jax.launch: would run [p{p}]: COORDINATOR_ADDRESS=127.0.0.1:23456 '
                        f'NUM_PROCESSES=2 PROCESS_ID={p} CUDA_VISIBLE_DEVICES={share} '
                        f'{sys.executable} -m mlp_jax.main --epochs=1')
  envs, _ = launcher.plan(2)
  assert all('MLP_JAX_DISTRIBUTED' not in env and 'PYTHONUNBUFFERED' not in env for env in envs)


def test_launch_sh_runs_the_module_with_the_gpu_settings(tmp_path, cache_dir):
  """A single process is `python -m MODULE ARGS` with this checkout on PYTHONPATH; where
  nvidia-smi lists a GPU, JAX is told not to take 75% of its memory up front."""
  (tmp_path / 'show_env.py').write_text(
      'import os, sys\n'
      'print(sys.argv[1:], os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"), '
      'os.environ["PYTHONPATH"].split(os.pathsep)[0])\n')
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fake = bin_dir / 'nvidia-smi'
  fake.write_text('#!/bin/sh\necho "GPU 0: NVIDIA Fake (UUID: GPU-0)"\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  env = _env(cache_dir, PYTHONPATH=str(tmp_path), PATH=f'{bin_dir}:{os.environ["PATH"]}')
  result = subprocess.run(['bash', LAUNCH, 'show_env', '--a=1', 'b c'], capture_output=True,
                          text=True, timeout=30, env=env, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr
  assert result.stdout == f"['--a=1', 'b c'] false {REPO}\n"
  result = subprocess.run(['bash', LAUNCH, 'show_env'], capture_output=True, text=True,
                          timeout=30, env={**env, 'XLA_PYTHON_CLIENT_PREALLOCATE': 'true'},
                          cwd=str(tmp_path))
  assert result.stdout == f'[] true {REPO}\n'  # yours is kept


# ---------------------------------------------------------------- initialize_distributed

@pytest.fixture
def fake_initialize(monkeypatch):
  """jax.distributed.initialize replaced by a recorder: the calls initialize_distributed
  makes, each as its keyword arguments."""
  for name in _SCRUBBED:
    monkeypatch.delenv(name, raising=False)
  calls = []
  monkeypatch.setattr(environment.jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  monkeypatch.setattr(environment.jax.config, 'update', lambda name, value: None)
  return calls


@pytest.mark.parametrize('env, expected', [
    ({}, []),
    ({'COORDINATOR_ADDRESS': 'host0:1234', 'NUM_PROCESSES': '2', 'PROCESS_ID': '1'},
     [dict(coordinator_address='host0:1234', num_processes=2, process_id=1)]),
    # The clusters JAX detects itself: it is called without arguments.
    ({'SLURM_JOB_ID': '4242', 'SLURM_NTASKS': '4', 'SLURM_PROCID': '3'}, [{}]),
    ({'SLURM_JOB_ID': '4242', 'SLURM_NTASKS': '1', 'SLURM_PROCID': '0'}, []),  # one task
    ({'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_RANK': '0'}, [{}]),
    ({'MLP_JAX_DISTRIBUTED': 'auto'}, [{}]),
    ({'MLP_JAX_DISTRIBUTED': 'off', 'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '4'}, []),
    # Explicit variables win over a detected cluster (the launcher inside a SLURM job).
    ({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '4', 'COORDINATOR_ADDRESS': '127.0.0.1:9',
      'NUM_PROCESSES': '2', 'PROCESS_ID': '0'},
     [dict(coordinator_address='127.0.0.1:9', num_processes=2, process_id=0)]),
])
def test_initialize_distributed_joins_what_it_should(env, expected, fake_initialize,
                                                     monkeypatch):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  environment.initialize_distributed()
  assert fake_initialize == expected


def test_initialize_distributed_lets_jax_detect_a_tpu_vm(fake_initialize, monkeypatch):
  from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cloud_tpu_init, 'running_in_cloud_tpu_vm', True)
  environment.initialize_distributed()
  assert fake_initialize == [{}]


@pytest.mark.parametrize('env, message', [
    ({'NUM_PROCESSES': '2'}, 'set all of COORDINATOR_ADDRESS, NUM_PROCESSES and PROCESS_ID, '
     'or none (COORDINATOR_ADDRESS, PROCESS_ID missing)'),
    ({'COORDINATOR_ADDRESS': 'h:1', 'NUM_PROCESSES': '2', 'PROCESS_ID': '2'},
     "need 0 <= PROCESS_ID < NUM_PROCESSES, got PROCESS_ID='2' NUM_PROCESSES='2'"),
    ({'COORDINATOR_ADDRESS': 'h', 'NUM_PROCESSES': '2', 'PROCESS_ID': '0'},
     "COORDINATOR_ADDRESS must be host:port, got 'h'"),
    ({'MLP_JAX_DISTRIBUTED': 'yes'}, "MLP_JAX_DISTRIBUTED must be 'auto' or 'off', got 'yes'"),
])
def test_initialize_distributed_refuses_incomplete_settings(env, message, fake_initialize,
                                                            monkeypatch):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(UsageError) as error:
    environment.initialize_distributed()
  assert str(error.value) == message and not fake_initialize


def test_a_cluster_jax_cannot_read_is_one_line(monkeypatch):
  for name in _SCRUBBED:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(environment.jax.config, 'update', lambda name, value: None)

  def refuse():
    raise ValueError('coordinator_address should be defined.\nmore')
  monkeypatch.setattr(environment.jax.distributed, 'initialize', refuse)
  monkeypatch.setenv('SLURM_JOB_ID', '5')
  monkeypatch.setenv('SLURM_NTASKS', '2')
  with pytest.raises(UsageError, match=r'^a SLURM step of several tasks found, but '
                     r'jax.distributed.initialize\(\) could not set up from it: '
                     r'coordinator_address should be defined. \(start each task with srun'):
    environment.initialize_distributed()


@pytest.mark.slow
@pytest.mark.parametrize('cluster', ['slurm', 'openmpi'])
def test_jax_detects_the_cluster_and_the_processes_join(cluster, cache_dir):
  """Two real processes with the variables srun (or Open MPI's mpirun) sets, on this
  machine: JAX finds the coordinator, the count and each process's id."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  code = ('from mlp_jax import environment; environment.initialize_distributed(); '
          'import jax; print(jax.process_count(), jax.process_index(), jax.device_count())')
  procs = []
  for i in range(2):
    if cluster == 'slurm':
      variables = dict(SLURM_JOB_ID='77', SLURM_STEP_NODELIST='127.0.0.1', SLURM_NTASKS='2',
                       SLURM_PROCID=str(i), SLURM_LOCALID=str(i), JAX_COORDINATOR_PORT=str(port))
    else:
      variables = dict(OMPI_MCA_orte_hnp_uri=f'1531576320.0;tcp://127.0.0.1:{port}',
                       OMPI_COMM_WORLD_SIZE='2', OMPI_COMM_WORLD_RANK=str(i),
                       OMPI_COMM_WORLD_LOCAL_RANK=str(i))
    procs.append(subprocess.Popen([sys.executable, '-c', code], cwd=REPO, text=True,
                                  env=_env(cache_dir, **variables), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE))
  try:
    outputs = [proc.communicate(timeout=60) for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  assert [out for out, _ in outputs] == ['2 0 2\n', '2 1 2\n'], outputs


def test_a_process_whose_output_nobody_reads_is_not_blocked():
  """The launcher's own stdout fails (`| head -1`): each process's output is still read
  to its end, so no process blocks on a full pipe."""

  class Closed:
    def write(self, data):
      raise BrokenPipeError(32, 'Broken pipe')

    def flush(self):
      pass

  read_end, write_end = os.pipe()
  copier = threading.Thread(target=launcher._copy_lines, daemon=True, args=(
      os.fdopen(read_end, 'rb'), Closed(), b'[p0] ', threading.Lock()))
  copier.start()

  def write_lines():
    with os.fdopen(write_end, 'wb') as pipe:
      for _ in range(5000):  # 500 KB, several times what a pipe holds
        pipe.write(b'x' * 99 + b'\n')

  writer = threading.Thread(target=write_lines, daemon=True)
  writer.start()
  writer.join(30)
  assert not writer.is_alive(), 'the process would be blocked writing its output'
  copier.join(30)
