"""Fault tolerance, in subprocesses as a user meets it: kill, stop, resume, refuse."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, mnist_subset, read, run_options, without_timing

EPOCHS = 3  # a kill after 2 rows lands in epoch 3: resumed from epoch 1 or 2


def _popen(module, args, cache_dir):
  env = {**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir}
  return subprocess.Popen([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(path, rows, process, timeout=300):
  """Waits until history.csv at `path` has `rows` data rows."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path) and len(open(path).read().splitlines()) - 1 >= rows:
      return
    assert process.poll() is None, process.communicate()
    time.sleep(0.02)
  raise AssertionError(f'{path} never reached {rows} rows')


@pytest.fixture(scope='module')
def reference(tmp_path_factory, cache_dir):
  """Uninterrupted runs: a single run of seed 3 and a sweep of seeds 0-2."""
  root = tmp_path_factory.mktemp('reference')
  processes = [_popen(module, [f'--epochs={EPOCHS}', *args], cache_dir) for module, args in (
      ('mlp_jax.main', ['--seed=3', f'--workdir={root / "single"}']),
      ('experiments.sweep', ['--seeds=0-2', f'--workdir={root / "sweep"}']))]  # side by side
  try:
    for process in processes:
      _, err = process.communicate(timeout=600)
      assert process.returncode == 0, err
  finally:
    for process in processes:
      process.kill()
  return root


def _kill_and_resume(module, args, watch, cache_dir, rows, sig):
  """Starts the command, sends `sig` once `watch` has `rows` rows, then re-runs it.

  Returns (the first process, the rows on disk after the kill, the resume's result).
  """
  process = _popen(module, args, cache_dir)
  _wait_for_rows(watch, rows, process)
  process.send_signal(sig)
  process.communicate(timeout=120)
  rows_after_kill = read(watch).splitlines()
  resumed = _popen(module, args, cache_dir)
  out, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err
  return process, rows_after_kill, out


def _resumed_epoch(stdout):
  line = next(l for l in stdout.splitlines() if 'resumed' in l)
  return int(line.rsplit('after epoch ', 1)[1])


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(reference, tmp_path, cache_dir):
  workdir = tmp_path / 'run'
  args = [f'--epochs={EPOCHS}', '--seed=3', '--checkpoint_every=1', f'--workdir={workdir}']
  process, rows_at_kill, out = _kill_and_resume('mlp_jax.main', args, workdir / 'history.csv',
                                                cache_dir, 2, signal.SIGKILL)
  assert process.returncode == -signal.SIGKILL
  resumed_from = _resumed_epoch(out)
  assert 1 <= resumed_from < EPOCHS
  final_rows = read(workdir / 'history.csv').splitlines()
  # Checkpointed epochs are not redone: those rows are untouched, timing cells included.
  assert final_rows[:1 + resumed_from] == rows_at_kill[:1 + resumed_from]
  assert f'epoch {resumed_from}/' not in out and f'epoch {resumed_from + 1}/' in out
  assert without_timing(read(workdir / 'history.csv')) == \
      without_timing(read(reference / 'single' / 'history.csv'))
  assert read(workdir / 'params.msgpack', 'rb') == \
      read(reference / 'single' / 'params.msgpack', 'rb')


@pytest.mark.slow
def test_sigkill_then_resume_a_sweep(reference, tmp_path, cache_dir):
  workdir = tmp_path / 'sweep'
  args = [f'--epochs={EPOCHS}', '--seeds=0-2', '--chunk_size=2', '--checkpoint_every=1',
          f'--workdir={workdir}']
  process, _, out = _kill_and_resume('experiments.sweep', args, workdir / 'seed_1' / 'history.csv',
                                     cache_dir, 2, signal.SIGKILL)
  assert process.returncode == -signal.SIGKILL and 'resumed' in out
  for seed in range(3):
    for name in ('history.csv',):
      assert without_timing(read(workdir / f'seed_{seed}' / name)) == \
          without_timing(read(reference / 'sweep' / f'seed_{seed}' / name))
    assert read(workdir / f'seed_{seed}' / 'params.msgpack', 'rb') == \
        read(reference / 'sweep' / f'seed_{seed}' / 'params.msgpack', 'rb')
  assert read(workdir / 'final.csv') == read(reference / 'sweep' / 'final.csv')


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_resumes(sig, reference, tmp_path, cache_dir):
  workdir = tmp_path / 'run'
  args = [f'--epochs={EPOCHS}', '--seed=3', f'--workdir={workdir}']
  process = _popen('mlp_jax.main', args, cache_dir)
  _wait_for_rows(workdir / 'history.csv', 1, process)
  process.send_signal(sig)
  out, err = process.communicate(timeout=120)
  assert process.returncode == 128 + sig, err
  assert f'stopped by {sig.name}' in err and 'run the same command again to resume' in err
  assert 'Traceback' not in err
  stopped_at = int(err.split('after epoch ')[1].split(';')[0])
  assert len(read(workdir / 'history.csv').splitlines()) == 1 + stopped_at
  assert not [n for n in os.listdir(workdir) if '.tmp' in n]  # no partial files
  resumed = _popen('mlp_jax.main', args, cache_dir)
  out, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err
  assert _resumed_epoch(out) == stopped_at
  assert without_timing(read(workdir / 'history.csv')) == \
      without_timing(read(reference / 'single' / 'history.csv'))


@pytest.mark.slow
def test_concurrent_use_is_refused(tmp_path, cache_dir):
  workdir = tmp_path / 'run'
  first = _popen('mlp_jax.main', ['--epochs=200', f'--workdir={workdir}'], cache_dir)
  try:
    _wait_for_rows(workdir / 'history.csv', 1, first)
    second = _popen('mlp_jax.main', ['--epochs=200', f'--workdir={workdir}'], cache_dir)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and 'in use by process' in err and str(first.pid) in err
    assert 'Traceback' not in err
  finally:
    first.kill()
    first.communicate()


@pytest.mark.slow
def test_unwritable_workdir(tmp_path, run_module):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  result = run_module('mlp_jax.main', '--epochs=1', f'--workdir={blocker / "run"}')
  assert result.returncode == 2 and 'cannot write' in result.stderr
  assert 'Traceback' not in result.stderr and blocker.read_text() == 'not a directory'


@pytest.mark.slow
def test_full_disk_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch, mnist):
  """A write failing with ENOSPC mid-run: clear error, earlier records readable, resumable
  (train_and_evaluate in-process, on the first 8,192 training and 2,000 test images)."""
  from mlp_jax import checkpoints, records, run  # pylint: disable=g-import-not-at-top
  from mlp_jax.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from mlp_jax.run import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from mlp_jax.workdir import WorkdirError  # pylint: disable=g-import-not-at-top

  real_save = checkpoints.ChunkCheckpoints.save

  def save_until_full(self, epoch, states):
    if epoch >= 2:
      raise OSError(errno.ENOSPC, 'No space left on device')
    real_save(self, epoch, states)

  monkeypatch.setattr(run, 'load_data', lambda config: mnist_subset(mnist, 8192, 2000))
  monkeypatch.setattr(checkpoints.ChunkCheckpoints, 'save', save_until_full)
  config = TrainConfig(epochs=3, batch_size=512)
  workdir = str(tmp_path / 'run')
  with pytest.raises(WorkdirError, match='disk full'):
    train_and_evaluate(config, workdir, run_options(checkpoint_every=1))
  assert records.load_config(workdir) == config
  assert len(records.read_history(os.path.join(workdir, 'history.csv')).rows) == 2
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1']
  monkeypatch.setattr(checkpoints.ChunkCheckpoints, 'save', real_save)
  result = train_and_evaluate(config, workdir, run_options(checkpoint_every=1))
  assert len(records.read_history(os.path.join(workdir, 'history.csv')).rows) == 3
  assert result['test_accuracy'] > 0.8
