"""launch.sh: 1 device = 4 devices = 2 processes x 2 devices, bit for bit; a failing
process or a signal stops the whole launch, leaving no process behind."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, without_timing

LAUNCH = os.path.join(REPO, 'launch.sh')
SWEEP = ['--seeds=0-4', '--epochs=2']  # 5 seeds: padded to 8 rows on 4 devices
SEEDS = range(5)

# Variables that would change how launch.sh or the modules run: each test sets its own.
_SCRUBBED = ('COORDINATOR_ADDRESS', 'NUM_PROCESSES', 'PROCESS_ID', 'MLP_JAX_DISTRIBUTED',
             'MLP_JAX_PORT', 'MLP_JAX_ACCELERATOR', 'MLP_JAX_LAUNCH_GRACE', 'XLA_FLAGS',
             'XLA_PYTHON_CLIENT_PREALLOCATE', 'PYTHON', 'SLURM_JOB_ID', 'SLURM_NTASKS',
             'SLURM_PROCID', 'SLURM_JOB_NODELIST', 'TPU_WORKER_ID', 'TPU_NAME', 'TPU_ACCELERATOR_TYPE', 'TPU_WORKER_HOSTNAMES')


def _env(cache_dir, **extra):
  env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
  env.update({'MLP_JAX_COMPILATION_CACHE': cache_dir, 'PYTHON': sys.executable, **extra})
  return env


def _session_processes(session):
  """Pids of the live processes in `session` (launch.sh and everything it started);
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
  """`bash launch.sh ARGS` in a session of its own, so that nothing it starts can hide."""

  def __init__(self, *args, env):
    self.started = time.monotonic()
    self.proc = subprocess.Popen(['bash', LAUNCH, *args], cwd=REPO, env=env, text=True,
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
    """Waits for launch.sh; on timeout kills everything it started and fails."""
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      _kill_session(self.proc.pid)
      self.proc.wait()
      for reader in self._readers:
        reader.join(10)
      pytest.fail(f'launch.sh still running after {timeout}s\n{self.stdout}\n{self.stderr}')
    for reader in self._readers:
      reader.join(30)
    self.seconds = time.monotonic() - self.started
    left = _session_processes(self.proc.pid)
    _kill_session(self.proc.pid)
    assert not left, f'processes left behind by launch.sh: {left}'
    return self.proc.returncode


def launch(*args, env, timeout=120):
  run = Launch(*args, env=env)
  run.wait(timeout)
  return run


def _read(path, mode='r'):
  with open(path, mode) as f:
    return f.read()


@pytest.fixture(scope='module')
def three_ways(tmp_path_factory, cache_dir):
  """The same sweep on 1 device, on 4 devices (launch.sh, one process, --deterministic)
  and on 2 processes x 2 devices (launch.sh --local_processes=2)."""
  root = tmp_path_factory.mktemp('launch')
  out = {name: str(root / name) for name in ('one', 'four', 'two_by_two')}
  # The single-process runs go side by side (compiling is mostly one thread).
  plain = subprocess.Popen([sys.executable, '-m', 'experiments.sweep', *SWEEP,
                            f'--workdir={out["one"]}'], cwd=REPO, env=_env(cache_dir),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    four = launch('--deterministic', 'experiments.sweep', *SWEEP, f'--workdir={out["four"]}',
                  env=_env(cache_dir, XLA_FLAGS='--xla_force_host_platform_device_count=4'))
    _, plain_stderr = plain.communicate(timeout=120)
  finally:
    plain.kill()
  assert plain.returncode == 0, plain_stderr
  assert four.proc.returncode == 0, four.stderr
  out['four_run'] = four
  two = launch('--local_processes=2', 'experiments.sweep', *SWEEP,
               f'--workdir={out["two_by_two"]}',
               env=_env(cache_dir, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  assert two.proc.returncode == 0, two.stderr
  out['two_run'] = two
  return out


@pytest.mark.parametrize('seed', SEEDS)
def test_one_device_four_devices_and_two_processes_agree_bit_for_bit(three_ways, seed):
  reference = os.path.join(three_ways['one'], f'seed_{seed}')
  history = without_timing(_read(os.path.join(reference, 'history.csv')))
  params = _read(os.path.join(reference, 'params.msgpack'), 'rb')
  assert len(history) == 3  # header + 2 epochs
  for way in ('four', 'two_by_two'):
    seed_dir = os.path.join(three_ways[way], f'seed_{seed}')
    assert without_timing(_read(os.path.join(seed_dir, 'history.csv'))) == history, way
    assert _read(os.path.join(seed_dir, 'params.msgpack'), 'rb') == params, way


def test_environment_records_devices_processes_and_flags(three_ways):
  env = {way: json.loads(_read(os.path.join(three_ways[way], 'environment.json')))
         for way in ('one', 'four', 'two_by_two')}
  assert [(env[w]['device_count'], env[w]['process_count']) for w in env] == \
      [(1, 1), (4, 1), (4, 2)]
  assert env['two_by_two']['local_device_count'] == 2
  assert '--xla_gpu_deterministic_ops=true' in env['four']['xla_flags']  # --deterministic
  assert 'deterministic' not in env['one']['xla_flags']


def test_launch_reports_and_prefixes_output(three_ways):
  four, two = three_ways['four_run'], three_ways['two_run']
  # One line on what was found and set; a single process is the module itself.
  assert four.stderr.startswith('launch.sh: found ')
  assert 'one process' in four.stderr
  assert 'XLA_FLAGS+=--xla_gpu_deterministic_ops=true (no effect on cpu, harmless)' in four.stderr
  assert 'over 4 device(s) in 1 process(es)' in four.stdout
  report = two.stderr.splitlines()[0]
  assert report.startswith('launch.sh: found ') and '2 local processes' in report
  assert 'COORDINATOR_ADDRESS=127.0.0.1:' in report and '2 CPU device(s) per process' in report
  assert 'compilation cache' in report and 'MLP_JAX_COMPILATION_CACHE' in report
  lines = two.stdout.splitlines()
  assert lines and all(l.startswith(('[p0] ', '[p1] ')) for l in lines), two.stdout
  for p in ('[p0] ', '[p1] '):
    assert any(l.startswith(p + 'sweep: 5 seeds x 2 epochs') and 'in 2 process(es)' in l
               for l in lines), p
    assert any(l.startswith(p + 'epoch 2/2') for l in lines), p
  assert any(l.startswith('[p0] sweep: final test accuracy over 5 seed(s)') for l in lines)


def test_every_process_failing_fails_the_launch(tmp_path, cache_dir):
  run = launch('--local_processes=2', 'mlp_jax.main', '--epochs=-1',
               f'--workdir={tmp_path / "w"}', env=_env(cache_dir), timeout=60)
  assert run.proc.returncode == 2, run.stderr
  # The first to fail is named; the other may be stopped before it says the same.
  assert re.search(r'^\[p[01]\] error: --epochs must be at least 1, got -1$', run.stderr, re.M)
  assert re.search(r'^launch.sh: failed: process [01] exited with exit code 2 '
                   r'\(exit codes: p0=\d+ p1=\d+\)$', run.stderr, re.M), run.stderr


def _wrapper(tmp_path, body):
  """An executable used as $PYTHON: `body` runs first, then the real interpreter."""
  path = tmp_path / 'python_wrapper'
  path.write_text(f'#!{sys.executable}\nimport os, socket, sys, time\n{body}\n'
                  'os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n')
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def _two_process_sweep_with(tmp_path, cache_dir, body, grace):
  """launch.sh --local_processes=2 of a 1-epoch sweep, each process started through
  _wrapper(body), with MLP_JAX_LAUNCH_GRACE=`grace` seconds before SIGKILL."""
  return launch('--local_processes=2', 'experiments.sweep', '--seeds=0-1', '--epochs=1',
                f'--workdir={tmp_path / "w"}',
                env=_env(cache_dir, PYTHON=_wrapper(tmp_path, body),
                         MLP_JAX_LAUNCH_GRACE=grace), timeout=60)


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
  assert 'launch.sh: process 1 (pid ' in run.stderr
  assert 'failed with exit code 3; stopping the other 1 process(es)' in run.stderr
  # Process 0 was stopped: SIGTERM (143), or SIGKILL (137) after the grace period.
  assert re.search(r'launch.sh: failed: process 1 exited with exit code 3 '
                   r'\(exit codes: p0=1(43|37) p1=3\)', run.stderr), run.stderr
  assert run.seconds < 40


def test_a_process_dying_after_joining_stops_the_rest(tmp_path, cache_dir):
  """Process 1 joins the distributed runtime and dies; process 0 is left at the first
  barrier, where JAX takes SIGTERM as a preemption notice: launch.sh kills it."""
  run = _two_process_sweep_with(tmp_path, cache_dir, '''
if os.environ.get('PROCESS_ID') == '1':
  sys.path.insert(0, os.getcwd())
  from mlp_jax import environment
  environment.initialize_distributed()
  print('process 1: joined, now dying', file=sys.stderr, flush=True)
  os._exit(4)''', grace='1')
  assert run.proc.returncode == 4, run.stderr
  assert '[p1] process 1: joined, now dying' in run.stderr
  assert 'failed with exit code 4; stopping the other 1 process(es)' in run.stderr
  assert 'launch.sh: failed: process 1 exited with exit code 4' in run.stderr
  assert run.seconds < 40


def test_a_module_error_after_joining_stops_the_launch(tmp_path, cache_dir):
  """Process 1 cannot take its workdir lock (.lock.1 is a directory) and reports it."""
  workdir = tmp_path / 'w'
  (workdir / '.lock.1').mkdir(parents=True)
  run = Launch('--local_processes=2', 'experiments.sweep', '--seeds=0-1', '--epochs=1',
               f'--workdir={workdir}', env=_env(cache_dir, MLP_JAX_LAUNCH_GRACE='1'))
  try:
    run.proc.wait(timeout=12)
  except subprocess.TimeoutExpired:
    pass
  run.wait(1)
  assert run.proc.returncode == 2, run.stderr
  assert '[p1] error: --workdir=' in run.stderr
  assert 'launch.sh: failed: process 1 exited with exit code 2' in run.stderr


def test_sigterm_is_forwarded_and_every_process_checkpoints(tmp_path, cache_dir):
  workdir = tmp_path / 'w'
  run = Launch('--local_processes=2', 'experiments.sweep', '--seeds=0-1', '--epochs=30',
               f'--workdir={workdir}', env=_env(cache_dir))
  try:
    run.wait_for_line('epoch  1/30', timeout=60)  # the processes are in their training loop
  except BaseException:
    _kill_session(run.proc.pid)
    raise
  run.proc.send_signal(signal.SIGTERM)
  assert run.wait(60) == 128 + signal.SIGTERM, run.stderr
  assert 'launch.sh: got SIGTERM; sending SIGTERM to the 2 running process(es)' in run.stderr
  for p in (0, 1):
    assert f'[p{p}] mlp_jax: stopped by SIGTERM after epoch' in run.stderr
  assert 'launch.sh: stopped by SIGTERM (exit codes: p0=143 p1=143)' in run.stderr
  assert os.listdir(workdir / 'checkpoints')
  assert not (workdir / 'seed_0' / 'params.msgpack').exists()


def test_help(cache_dir):
  result = subprocess.run(['bash', LAUNCH, '--help'], capture_output=True, text=True,
                          timeout=30, env=_env(cache_dir))
  assert result.returncode == 0 and result.stderr == ''
  assert result.stdout.startswith('Usage: ./launch.sh [--local_processes=N] [--deterministic]')
  for text in ('--local_processes=N', '--deterministic', '--xla_force_host_platform_device_count',
               'XLA_PYTHON_CLIENT_PREALLOCATE=false', 'MLP_JAX_COMPILATION_CACHE',
               'MLP_JAX_DISTRIBUTED=auto', 'SLURM_JOB_NODELIST', 'srun', '8-GPU', 'TPU VM'):
    assert text in result.stdout, text


@pytest.mark.parametrize('args, message', [
    ([], 'no MODULE given'),
    (['--deterministic'], 'no MODULE given'),
    (['--frobnicate', 'mlp_jax.main'], "unknown option '--frobnicate'"),
    (['--local_processes=0', 'mlp_jax.main'], "got '0'"),
    (['--local_processes=abc', 'mlp_jax.main'], "got 'abc'"),
    (['--local_processes=-2', 'mlp_jax.main'], "got '-2'"),
    (['--local_processes'], '--local_processes needs a value'),
    (['mlp_jax/main.py'], 'MODULE must be a Python module'),
])
def test_bad_usage_is_one_line_and_exit_2(args, message, cache_dir):
  result = subprocess.run(['bash', LAUNCH, *args], capture_output=True, text=True, timeout=30,
                          env=_env(cache_dir))
  assert result.returncode == 2 and result.stdout == ''
  assert len(result.stderr.splitlines()) == 1, result.stderr
  assert result.stderr.startswith('launch.sh: error: ') and message in result.stderr


def _dry_run(cache_dir, *args, **env):
  result = subprocess.run(['bash', LAUNCH, '--dry_run', *args], capture_output=True, text=True,
                          timeout=30, env=_env(cache_dir, **env))
  return result


def test_slurm_tasks_find_their_coordinator(cache_dir):
  slurm = dict(SLURM_JOB_ID='4242', SLURM_NTASKS='4', SLURM_PROCID='3',
               SLURM_JOB_NODELIST='gpu-[07-09,12],cpu1', PATH='/usr/bin:/bin')  # no scontrol
  result = _dry_run(cache_dir, 'experiments.sweep', '--seeds=0-7', **slurm)
  assert result.returncode == 0, result.stderr
  assert ('COORDINATOR_ADDRESS=gpu-07:12597 NUM_PROCESSES=4 PROCESS_ID=3 '
          in result.stdout), result.stdout
  assert result.stdout.rstrip().endswith('-m experiments.sweep --seeds=0-7')
  assert 'SLURM job 4242, task 3 of 4' in result.stderr
  result = _dry_run(cache_dir, 'mlp_jax.main', **{**slurm, 'MLP_JAX_PORT': '2222',
                                                  'SLURM_JOB_NODELIST': 'rack[1-2]-n[001-004]'})
  assert 'COORDINATOR_ADDRESS=rack1-n001:2222 ' in result.stdout, result.stderr


def test_cluster_variables_pass_through_or_are_refused(cache_dir):
  result = _dry_run(cache_dir, 'mlp_jax.main', COORDINATOR_ADDRESS='host0:1234',
                    NUM_PROCESSES='2', PROCESS_ID='1')
  assert result.returncode == 0
  assert 'COORDINATOR_ADDRESS=host0:1234 NUM_PROCESSES=2 PROCESS_ID=1 ' in result.stdout
  assert 'passed through' in result.stderr
  result = _dry_run(cache_dir, 'mlp_jax.main', NUM_PROCESSES='2')
  assert result.returncode == 2 and 'COORDINATOR_ADDRESS, PROCESS_ID missing' in result.stderr
  result = _dry_run(cache_dir, 'mlp_jax.main', COORDINATOR_ADDRESS='h:1', NUM_PROCESSES='2',
                    PROCESS_ID='2')
  assert result.returncode == 2 and 'PROCESS_ID < NUM_PROCESSES' in result.stderr


def test_accelerator_settings(cache_dir):
  tpu = _dry_run(cache_dir, 'mlp_jax.main', MLP_JAX_ACCELERATOR='tpu')
  assert tpu.returncode == 0 and 'MLP_JAX_DISTRIBUTED=auto ' in tpu.stdout
  gpu = _dry_run(cache_dir, '--deterministic', '--local_processes=2', 'mlp_jax.main',
                 MLP_JAX_ACCELERATOR='gpu', CUDA_VISIBLE_DEVICES='0,1,2,3')
  assert gpu.returncode == 0, gpu.stderr
  lines = gpu.stdout.splitlines()
  assert len(lines) == 2
  for p, share in ((0, '0,1'), (1, '2,3')):
    assert lines[p].startswith(f'launch.sh: would run [p{p}]: COORDINATOR_ADDRESS=127.0.0.1:')
    assert (f'NUM_PROCESSES=2 PROCESS_ID={p} CUDA_VISIBLE_DEVICES={share} '
            'XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_FLAGS=--xla_gpu_deterministic_ops=true '
            in lines[p]), lines[p]
  mine = _dry_run(cache_dir, 'mlp_jax.main', MLP_JAX_ACCELERATOR='gpu',
                  XLA_PYTHON_CLIENT_PREALLOCATE='true')
  assert 'XLA_PYTHON_CLIENT_PREALLOCATE=true ' in mine.stdout and 'kept (yours)' in mine.stderr
  odd = _dry_run(cache_dir, '--local_processes=3', 'mlp_jax.main', MLP_JAX_ACCELERATOR='gpu',
                 CUDA_VISIBLE_DEVICES='0,1,2,3')
  assert odd.returncode == 2 and 'does not divide the 4 GPU(s)' in odd.stderr
