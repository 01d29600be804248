"""Every class of fault, in-process on a tiny subset of MNIST: a full disk at every
write, a damaged copy of every file read back, entry points meeting in one
workdir, a signal in every phase, and a diverging run. Each must cost one line
(an exception whose message is one line; the entry points print it as
`error: ...`, exit 2) and no result: the same command then finishes the run to the
bits of one never disturbed."""

import builtins
import errno
import functools
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, crash_at_epoch, read, train_tiny, without_timing
from mlp_jax import checkpoints, driver, records, sink, workdir
from mlp_jax.config import TrainConfig
from mlp_jax.errors import Interrupted, UsageError
from mlp_jax.workdir import WorkdirError

CONFIG = TrainConfig(epochs=3, batch_size=128)

# Installed before pytest saves the unraisable-exception hook, as an entry point has it
# from its first checkpoint on: else orbax's leftovers are printed at exit.
checkpoints.quiet_orbax()


# run.train on the `tiny` data, this module's CONFIG unless given.
_train = functools.partial(train_tiny, config=CONFIG)


def _run_dirs(path, seeds, sweep):
  return [records.seed_dir(str(path), s) for s in seeds] if sweep else [str(path)]


def _results(path, seeds=(0,), sweep=False):
  """What must not depend on faults: each seed's history (timing aside) and params."""
  return [(without_timing(read(os.path.join(d, records.HISTORY_FILE))),
           read(os.path.join(d, records.PARAMS_FILE), 'rb')) for d in _run_dirs(path, seeds, sweep)]


@pytest.fixture(scope='module')
def reference(tiny, tmp_path_factory):
  """Undisturbed results: a single run of seed 0 and a sweep of seeds 0-1."""
  root = tmp_path_factory.mktemp('reference')
  _train(tiny, root / 'single', checkpoint_every=0)
  _train(tiny, root / 'sweep', [0, 1], sweep=True, checkpoint_every=0)
  return {False: _results(root / 'single'), True: _results(root / 'sweep', [0, 1], True),
          'single': root / 'single'}


def _copy(source, path):
  """A copy of a workdir made once for the module, for a test to damage or continue."""
  shutil.copytree(source, path)
  return path


def _one_line(error):
  text = str(error.value)
  assert '\n' not in text and len(text) < 300, text
  return text


# ----------------------------------------------------------------------------- full disk


def _full_disk_at(monkeypatch, name, nth=1):
  """The nth opening for writing of a file whose name starts with `name` (and every
  later one) fails with ENOSPC, as on a full disk."""
  real_open, count = builtins.open, [0]

  def full_open(file, mode='r', *args, **kwargs):
    if (isinstance(file, (str, os.PathLike)) and any(c in mode for c in 'wax+') and
        os.path.basename(os.fspath(file)).startswith(name)):
      count[0] += 1
      if count[0] >= nth:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr(builtins, 'open', full_open)


def _full_disk_in_lock(monkeypatch, name, nth=1):
  del name, nth

  def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(workdir.os, 'pwrite', full)


def _full_disk_in_checkpoint(monkeypatch, name, nth=1):
  """Orbax's save fails as it does on a full disk: its own error, naming errno 28."""
  del name
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step >= nth:
      raise ValueError('RESOURCE_EXHAUSTED: Error writing "state.params" in OCDBT database: '
                       "No space left on device [os_error_code='28']")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)


# (what fills up, the nth write that fails, a sweep?, TensorBoard on?)
WRITES = {
    'lock': (_full_disk_in_lock, '.lock', 1, False, False),
    'config': (_full_disk_at, records.CONFIG_FILE, 1, False, False),
    'environment': (_full_disk_at, records.ENVIRONMENT_FILE, 1, False, False),
    'history': (_full_disk_at, records.HISTORY_FILE, 2, False, False),
    'checkpoint': (_full_disk_in_checkpoint, '', 2, False, False),
    'params': (_full_disk_at, records.PARAMS_FILE, 1, False, False),
    'curves': (_full_disk_at, records.CURVES_FILE, 1, False, False),
    'tensorboard': (_full_disk_at, 'events', 1, False, True),
    'timing': (_full_disk_at, records.TIMING_FILE, 1, False, False),
    'sweep_settings': (_full_disk_at, records.SWEEP_FILE, 1, True, False),
    'seed_params': (_full_disk_at, records.PARAMS_FILE, 2, True, False),
    'summary': (_full_disk_at, records.SUMMARY_FILE, 1, True, False),
    'final': (_full_disk_at, records.FINAL_FILE, 1, True, False),
    'sweep_tensorboard': (_full_disk_at, 'events', 3, True, True),
}


@pytest.mark.slow
@pytest.mark.parametrize('site', sorted(WRITES))
def test_a_full_disk_at_any_write_is_one_line_and_the_same_command_finishes(
    site, tiny, reference, tmp_path, monkeypatch):
  fill, name, nth, sweep, tensorboard = WRITES[site]
  seeds = [0, 1] if sweep else [0]
  fill(monkeypatch, name, nth)
  with pytest.raises(WorkdirError) as error:
    _train(tiny, tmp_path / 'w', seeds, sweep, tensorboard=tensorboard)
  assert _one_line(error).endswith('cannot write (disk full)')
  monkeypatch.undo()
  for run_dir in _run_dirs(tmp_path / 'w', seeds, sweep):  # what was written is whole
    if os.path.exists(os.path.join(run_dir, records.CONFIG_FILE)):
      assert records.load_config(run_dir).seed in seeds
    if os.path.exists(os.path.join(run_dir, records.HISTORY_FILE)):
      records.read_history(os.path.join(run_dir, records.HISTORY_FILE))
  assert not [n for _, _, names in os.walk(tmp_path) for n in names if '.tmp' in n]
  _train(tiny, tmp_path / 'w', seeds, sweep, tensorboard=tensorboard)
  assert _results(tmp_path / 'w', seeds, sweep) == reference[sweep]
  for name in ([records.SUMMARY_FILE, records.FINAL_FILE, records.CURVES_FILE] if sweep
               else [records.CURVES_FILE, records.TIMING_FILE, records.ENVIRONMENT_FILE]):
    assert os.path.getsize(tmp_path / 'w' / name) > 0, name


def _mount_tmpfs(path, size):
  path.mkdir()
  if os.geteuid() != 0:
    pytest.skip('mounting a small tmpfs needs root')
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                          capture_output=True, text=True)
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')


@pytest.mark.slow
def test_a_really_full_disk_is_one_line_without_orbax_tracebacks(tiny, reference, tmp_path,
                                                                  capfd):
  """A 1 MB tmpfs: the seed model's checkpoints (1.4 MB) do not fit; then a 100%
  full one, where even the lock cannot be written; then room again."""
  disk = tmp_path / 'disk'
  _mount_tmpfs(disk, '1m')
  try:
    with pytest.raises(WorkdirError) as error:
      _train(tiny, disk / 'run')
    assert _one_line(error).endswith('cannot write (disk full)')
    err = capfd.readouterr().err
    assert 'Traceback' not in err and 'RESOURCE_EXHAUSTED' not in err, err[-2000:]
    try:  # every last block
      with open(disk / 'filler', 'wb') as f:
        while True:
          f.write(b'\0' * 4096)
          f.flush()
    except OSError:
      pass
    with pytest.raises(WorkdirError, match=r'cannot write \(disk full\)'):
      _train(tiny, disk / 'other')
    os.remove(disk / 'filler')
    subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)], check=True)
    _train(tiny, disk / 'run')
    assert records.is_complete(str(disk / 'run'))
  finally:
    subprocess.run(['umount', '-l', str(disk)], check=False)


# ----------------------------------------------------------------------------- damaged files


@pytest.fixture(scope='module')
def interrupted(tiny, tmp_path_factory):
  """A run of seed 0 that crashed after checkpointing epochs 1 and 2 (copy it: _copy)."""
  path = tmp_path_factory.mktemp('interrupted') / 'run'
  with pytest.MonkeyPatch.context() as monkeypatch:
    crash_at_epoch(monkeypatch, 3)
    with pytest.raises(RuntimeError, match='crash'):
      _train(tiny, path)
  assert sorted(os.listdir(path / records.CHECKPOINT_DIR)) == ['1', '2']
  return path


def _truncate_largest(directory):
  files = [os.path.join(d, n) for d, _, names in os.walk(directory) for n in names]
  largest = max(files, key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 2)


def _garble_metadata(directory):
  for d, _, names in os.walk(directory):
    for n in names:
      if 'metadata' in n.lower():
        with open(os.path.join(d, n), 'w') as f:
          f.write('{garbage')


@pytest.mark.slow
@pytest.mark.parametrize('damage', [_truncate_largest, _garble_metadata])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(
    damage, tiny, reference, interrupted, tmp_path, capfd):
  path = _copy(interrupted, tmp_path / 'run')
  damage(str(path / records.CHECKPOINT_DIR / '2'))
  capfd.readouterr()
  _train(tiny, path)
  out = capfd.readouterr().out
  assert 'the checkpoint of epoch 2' in out and 'is damaged' in out, out
  assert 'resumed 1 seed(s) from their checkpoint after epoch 1' in out
  assert _results(path) == reference[False]


def test_no_intact_checkpoint_is_one_line_naming_the_directory(tiny, interrupted, tmp_path):
  path = _copy(interrupted, tmp_path / 'run')
  for step in ('1', '2'):
    _truncate_largest(str(path / records.CHECKPOINT_DIR / step))
  with pytest.raises(WorkdirError) as error:
    _train(tiny, path)
  text = _one_line(error)
  assert str(path / records.CHECKPOINT_DIR) in text and '--overwrite' in text
  _train(tiny, path, overwrite=True)
  assert records.is_complete(str(path))


@pytest.mark.slow
def test_a_damaged_params_file_is_finished_again_from_the_checkpoint(tiny, reference, tmp_path,
                                                                     capfd):
  from mlp_jax.inference import load_trained  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'run'
  _train(tiny, path)
  params = path / records.PARAMS_FILE
  data = read(params, 'rb')
  with open(params, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(UsageError) as error:
    load_trained(str(path))
  assert str(params) in _one_line(error)
  assert not records.is_complete(str(path))
  capfd.readouterr()
  _train(tiny, path)
  assert 'after epoch 3' in capfd.readouterr().out  # the checkpoint after the last epoch
  assert _results(path) == reference[False]


@pytest.mark.parametrize('name,damage', [
    (records.CONFIG_FILE, '{"epochs": 3,'),
    (records.CONFIG_FILE, '[]'),
    (records.HISTORY_FILE, 'epoch,train_loss\n1,GARBAGE\n'),
    (records.HISTORY_FILE, ''),
])
def test_a_damaged_record_of_a_finished_run_is_one_line_naming_it(name, damage, tiny, reference,
                                                                  tmp_path):
  path = _copy(reference['single'], tmp_path / 'run')  # finished, without checkpoints
  with open(path / name, 'w') as f:
    f.write(damage)
  with pytest.raises(UsageError) as error:
    _train(tiny, path, checkpoint_every=0)
  assert str(path / name) in _one_line(error)


@pytest.fixture(scope='module')
def one_epoch_sweep(tiny, tmp_path_factory):
  """A finished 1-epoch sweep of seeds 0-1 without checkpoints (copy it: _copy)."""
  path = tmp_path_factory.mktemp('one_epoch') / 'sweep'
  _train(tiny, path, [0, 1], sweep=True, checkpoint_every=0, config=CONFIG.replace(epochs=1))
  return path


def test_damaged_sweep_settings_are_one_line_naming_the_file(tiny, one_epoch_sweep, tmp_path):
  path = _copy(one_epoch_sweep, tmp_path / 'sweep')
  with open(path / records.SWEEP_FILE, 'w') as f:
    f.write('{"seeds": [0, 1], "config": ')
  with pytest.raises(UsageError) as error:
    _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1))
  assert str(path / records.SWEEP_FILE) in _one_line(error)


# ----------------------------------------------------------------------------- finishing


@pytest.mark.slow
def test_a_sweep_seed_missing_its_params_is_finished_from_its_chunk_whatever_the_chunking(
    tiny, reference, tmp_path, capfd):
  """Seeds 0-1 in one chunk; seed 1's params.msgpack lost (a kill among the final
  writes): a rerun with chunks of 1 resumes seed 1 from the chunk's checkpoint, and
  leaves seed 0's records and the checkpoint directories as they were."""
  _train(tiny, tmp_path, [0, 1], sweep=True, chunk_size=2)
  seed_0 = records.seed_dir(str(tmp_path), 0)
  before = read(os.path.join(seed_0, records.HISTORY_FILE))
  chunk_dirs = sorted(os.listdir(tmp_path / records.CHECKPOINT_DIR))
  os.remove(os.path.join(records.seed_dir(str(tmp_path), 1), records.PARAMS_FILE))
  capfd.readouterr()
  _train(tiny, tmp_path, [0, 1], sweep=True, chunk_size=1)
  assert 'resumed 1 seed(s) from their checkpoint after epoch 3' in capfd.readouterr().out
  assert _results(tmp_path, [0, 1], True) == reference[True]
  assert read(os.path.join(seed_0, records.HISTORY_FILE)) == before  # timing cells too
  assert sorted(os.listdir(tmp_path / records.CHECKPOINT_DIR)) == chunk_dirs


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_its_chunks_under_another_chunk_size(
    tiny, reference, tmp_path, monkeypatch, capfd):
  crash_at_epoch(monkeypatch, 3)
  with pytest.raises(RuntimeError, match='crash'):
    _train(tiny, tmp_path, [0, 1], sweep=True, chunk_size=1)
  monkeypatch.undo()
  capfd.readouterr()
  _train(tiny, tmp_path, [0, 1], sweep=True, chunk_size=2)
  assert 'resumed 1 seed(s) from their checkpoint after epoch 2' in capfd.readouterr().out
  assert _results(tmp_path, [0, 1], True) == reference[True]
  assert len(os.listdir(tmp_path / records.CHECKPOINT_DIR)) == 2  # no third, orphaned


# ----------------------------------------------------------------------------- entry points


def test_entry_points_meeting_in_one_workdir(tiny, one_epoch_sweep, tmp_path):
  from mlp_jax.inference import load_trained  # pylint: disable=g-import-not-at-top
  run, sweep = tmp_path / 'run', tmp_path / 'sweep'
  with workdir.lock(str(run)):  # a live run holds the workdir
    with pytest.raises(WorkdirError) as error:
      _train(tiny, run)
    assert 'is in use by process' in _one_line(error)
  with pytest.raises(UsageError, match='not a run directory'):
    load_trained(str(run))
  _copy(one_epoch_sweep, sweep)
  with pytest.raises(UsageError, match='holds a sweep'):
    _train(tiny, sweep, config=CONFIG.replace(epochs=1))
  with pytest.raises(UsageError, match='not a run directory'):
    load_trained(str(sweep))
  assert load_trained(records.seed_dir(str(sweep), 1))(tiny.test_images[:4]).shape == (4,)
  with pytest.raises(WorkdirError) as error:  # the same sweep, other settings
    _train(tiny, sweep, [0, 1], sweep=True, config=CONFIG.replace(epochs=1, learning_rate=0.002))
  assert 'config.learning_rate 0.001 -> 0.002' in _one_line(error)


def test_a_settings_conflict_names_only_the_differences():
  with pytest.raises(WorkdirError) as error:
    workdir.refuse_other_settings(
        'w', {'seeds': [0, 1], 'config': {'learning_rate': 0.001, 'epochs': 3, 'model': 'mlp'}},
        {'seeds': [0, 1], 'config': {'learning_rate': 0.002, 'epochs': 3, 'model': 'cnn'}})
  assert _one_line(error) == (
      "--workdir=w holds a run with other settings (config.learning_rate 0.001 -> 0.002, "
      "config.model 'mlp' -> 'cnn'); use --overwrite to start over, or choose another workdir")


@pytest.mark.parametrize('argument,message', [('--epochs=abc', "flag --epochs=abc"),
                                              ('--no_such_flag=1', 'no_such_flag')])
def test_a_flag_that_does_not_parse_is_one_line_and_exit_2(argument, message, cache_dir):
  result = subprocess.run([sys.executable, '-m', 'mlp_jax.main', argument], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir})
  assert result.returncode == 2
  assert result.stderr.startswith('error: ') and message in result.stderr
  assert len(result.stderr.splitlines()) == 1, result.stderr


# ----------------------------------------------------------------------------- signals


def _sigterm_at(monkeypatch, owner, name, call=1):
  """SIGTERM to this process at the `call`th call of owner.name (then it goes on)."""
  real, count = getattr(owner, name), [0]

  def patched(*args, **kwargs):
    count[0] += 1
    if count[0] == call:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)

  monkeypatch.setattr(owner, name, patched)


PHASES = {  # where SIGTERM arrives; where the run stops (after an epoch, or in the final writes)
    'compile': (driver.ChunkPrograms, 'get', 1, 'after epoch 1'),
    'epoch': (sink.RecordSink, 'write', 2, 'after epoch 2'),
    'save': (checkpoints.ChunkCheckpoints, 'save', 1, 'after epoch 2'),
    'finish': (sink.RecordSink, 'finish', 1, 'during the final writes (none of them written'),
    'curves': (sink, '_render_one', 1, 'during the final writes (some curves.png drawn'),
}


@pytest.mark.slow
@pytest.mark.parametrize('phase', sorted(PHASES))
def test_a_signal_in_any_phase_stops_cleanly_and_the_run_resumes(phase, tiny, reference,
                                                                 tmp_path, monkeypatch):
  owner, name, call, stops = PHASES[phase]
  _sigterm_at(monkeypatch, owner, name, call)
  with pytest.raises(Interrupted) as error:
    _train(tiny, tmp_path)
  assert f'stopped by SIGTERM {stops}' in _one_line(error)
  assert error.value.exit_code == 128 + signal.SIGTERM
  if 'final writes' in stops:  # trained: what follows is written by the same command
    assert records.is_complete(str(tmp_path))
    assert not os.path.exists(tmp_path / records.TIMING_FILE)
  else:
    assert not records.is_complete(str(tmp_path))
  monkeypatch.undo()
  _train(tiny, tmp_path)
  assert _results(tmp_path) == reference[False]
  assert os.path.exists(tmp_path / records.TIMING_FILE)
  assert os.path.exists(tmp_path / records.CURVES_FILE)


@pytest.mark.slow
def test_ctrl_c_at_start_up_loses_nothing(tiny, reference, tmp_path, monkeypatch):
  """SIGINT before training (Python's KeyboardInterrupt; the entry points print one
  line and exit 130) leaves whole records that the same command continues."""
  from mlp_jax import run  # pylint: disable=g-import-not-at-top
  real = run.prepare_run_dirs

  def interrupted(*args, **kwargs):
    real(*args, **kwargs)
    raise KeyboardInterrupt

  monkeypatch.setattr(run, 'prepare_run_dirs', interrupted)
  with pytest.raises(KeyboardInterrupt):
    _train(tiny, tmp_path)
  monkeypatch.undo()
  _train(tiny, tmp_path)
  assert _results(tmp_path) == reference[False]


# ----------------------------------------------------------------------------- divergence


def test_a_diverged_run_says_so_once_and_records_it(tiny, tmp_path, capfd):
  config = CONFIG.replace(learning_rate=1e30)
  outcome = _train(tiny, tmp_path / 'sweep', [0, 1], sweep=True, config=config,
                   checkpoint_every=0)
  out = capfd.readouterr().out
  for seed in (0, 1):
    assert out.count(f'seed {seed} diverged at epoch 1') == 1, out
  assert np.isnan(outcome.final_test_accuracy).sum() == 0  # accuracies stay numbers
  final = read(tmp_path / 'sweep' / records.FINAL_FILE).splitlines()
  assert final[0].endswith(records.DIVERGED_COLUMN) and final[1].endswith(',1')


def test_stop_on_divergence_stops_with_one_line_and_keeps_the_records(tiny, tmp_path):
  with pytest.raises(driver.Diverged) as error:
    _train(tiny, tmp_path, config=CONFIG.replace(learning_rate=1e30), stop_on_divergence=True)
  assert 'seed 0 at epoch 1 diverged' in _one_line(error)
  assert sorted(records.read_history(str(tmp_path / records.HISTORY_FILE)).rows) == [1]
  assert not records.is_complete(str(tmp_path))
