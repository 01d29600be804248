"""The command line as a user runs it: python -m mlp_jax.main ..."""

import csv
import json
import os

import numpy as np
import pytest

import mlp_jax
from conftest import mnist_subset, run_options, without_timing
from mlp_jax import records


@pytest.fixture(scope='module')
def two_epoch_runs(tmp_path_factory, cache_dir):
  """The same 2-epoch command run twice, each in its own workdir (side by side:
  much of a run is its single-threaded start-up)."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  runs = []
  for name in ('a', 'b'):
    workdir = str(tmp_path_factory.mktemp('run') / name)
    runs.append((workdir, subprocess.Popen(
        [sys.executable, '-m', 'mlp_jax.main', '--epochs=2', '--seed=1', f'--workdir={workdir}'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir})))
  dirs = []
  try:
    for workdir, process in runs:
      stdout, stderr = process.communicate(timeout=600)
      assert process.returncode == 0, stderr
      dirs.append((workdir, subprocess.CompletedProcess(process.args, 0, stdout, stderr)))
  finally:
    for _, process in runs:
      process.kill()
  return dirs


@pytest.mark.slow
def test_run_writes_every_record_and_learns(two_epoch_runs):
  workdir, result = two_epoch_runs[0]
  for name in ('config.json', 'environment.json', 'history.csv', 'params.msgpack',
               'timing.json', 'curves.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, 'history.csv')) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['epoch', 'train_loss', 'train_accuracy', 'test_loss',
                           'test_accuracy', 'epoch_seconds', 'eval_seconds']
  assert [r['epoch'] for r in rows] == ['1', '2']
  assert float(rows[-1]['test_accuracy']) >= 0.95
  assert float(rows[1]['train_loss']) < float(rows[0]['train_loss'])
  # The console shows one line per epoch and the final accuracy.
  assert result.stdout.count('epoch ') == 2 and 'final test accuracy' in result.stdout
  config = json.load(open(os.path.join(workdir, 'config.json')))
  assert config['epochs'] == 2 and config['seed'] == 1 and config['hidden_sizes'] == [128, 128]
  env = json.load(open(os.path.join(workdir, 'environment.json')))
  assert env['backend'] == 'cpu' and env['device_count'] >= 1 and env['process_count'] == 1
  assert env['versions']['jax'] and env['versions']['flax'] and env['versions']['optax']
  assert env['data']['sha256']['train-images-idx3-ubyte'].startswith('ba891046')


@pytest.mark.slow
def test_same_command_twice_is_bit_identical(two_epoch_runs):
  (a, _), (b, _) = two_epoch_runs
  history = [open(os.path.join(d, 'history.csv')).read() for d in (a, b)]
  assert without_timing(history[0]) == without_timing(history[1])
  params = [open(os.path.join(d, 'params.msgpack'), 'rb').read() for d in (a, b)]
  assert params[0] == params[1]


@pytest.mark.slow
def test_load_trained_predicts_what_the_run_measured(two_epoch_runs, mnist):
  workdir, _ = two_epoch_runs[0]
  predict = mlp_jax.load_trained(workdir)
  labels = predict(mnist.test_images)
  assert labels.shape == (10000,) and labels.dtype == np.int32
  final = records.final_row(workdir)
  assert np.mean(labels == mnist.test_labels) == float(final['test_accuracy'])
  with pytest.raises(ValueError, match='uint8 images of shape'):
    predict(mnist.test_images.astype(np.float32))


def _bad_data_dir(tmp_path, kind):
  import gzip, shutil  # pylint: disable=g-import-not-at-top,multiple-imports
  from mlp_jax import data  # pylint: disable=g-import-not-at-top
  if kind == 'missing':
    return str(tmp_path / 'does-not-exist')
  for name in data.CANONICAL_SHA256:
    shutil.copy(os.path.join(data.BUNDLED_DIR, name + '.gz'), tmp_path)
  if kind == 'empty':
    for name in os.listdir(tmp_path):
      os.remove(tmp_path / name)
  elif kind == 'truncated':
    path = tmp_path / 't10k-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:5000])
  elif kind == 'checksum':
    path = tmp_path / 't10k-labels-idx1-ubyte.gz'
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    path.write_bytes(gzip.compress(bytes(content)))
  return str(tmp_path)


@pytest.mark.parametrize('args, expected', [
    (['--epochs=-1'], '--epochs'),
    (['--epochs=abc'], '--epochs'),
    (['--batch_size=0'], '--batch_size'),
    (['--batch_size=60001'], 'larger than the training set'),
    (['--learning_rate=-0.1'], '--learning_rate'),
    (['--hidden_sizes=0'], '--hidden_sizes'),
    (['--hidden_sizes=abc'], '--hidden_sizes'),
    (['--no_such_flag=1'], 'no_such_flag'),
    (['stray_argument'], 'unexpected arguments'),
    (['--model=xyz'], '--model'),
    (['--dropout=1.5'], '--dropout'),
    (['--lr_schedule=bogus'], '--lr_schedule'),
    (['--dataset=no_such_dataset'], "TFDS dataset 'no_such_dataset' is unknown"),
    ('data_dir:missing', 'no such directory'),
    ('data_dir:empty', 'holds none of the four'),
    ('data_dir:truncated', 't10k-images-idx3-ubyte.gz: truncated'),
    ('data_dir:checksum', 't10k-labels-idx1-ubyte.gz: content checksum mismatch'),
])
@pytest.mark.slow
def test_bad_input_is_one_clear_line_and_writes_nothing(args, expected, tmp_path, run_module):
  if isinstance(args, str):
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    args = [f'--data_dir={_bad_data_dir(data_dir, args.split(":")[1])}']
  workdir = tmp_path / 'run'
  result = run_module('mlp_jax.main', '--epochs=1', f'--workdir={workdir}', *args)
  assert result.returncode != 0
  assert expected in result.stderr
  assert 'Traceback' not in result.stderr
  assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # message (+ absl's help hint)
  assert not workdir.exists()


def _tree_bytes(workdir):
  return {os.path.join(d, n): open(os.path.join(d, n), 'rb').read()
          for d, _, names in os.walk(workdir) for n in names if n != '.lock'}


@pytest.mark.slow
def test_run_with_other_settings_is_refused_and_left_intact(two_epoch_runs, run_module):
  workdir, _ = two_epoch_runs[1]
  before = _tree_bytes(workdir)
  result = run_module('mlp_jax.main', '--epochs=3', '--learning_rate=0.01', '--seed=1',
                      f'--workdir={workdir}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'epochs 2 -> 3' in result.stderr and 'learning_rate 0.001 -> 0.01' in result.stderr
  assert _tree_bytes(workdir) == before


@pytest.mark.slow
def test_finished_run_rerun_says_complete(two_epoch_runs, run_module):
  workdir, _ = two_epoch_runs[1]
  before = _tree_bytes(workdir)
  result = run_module('mlp_jax.main', '--epochs=2', '--seed=1', f'--workdir={workdir}')
  assert result.returncode == 0 and 'complete run' in result.stdout
  assert 'epoch 1/2' not in result.stdout
  assert _tree_bytes(workdir) == before


@pytest.mark.slow
def test_short_cnn_run_learns_and_loads(tmp_path, mnist):
  """One epoch of the CNN with batch norm and dropout, in-process on the first 8,192
  training images (64 steps): >= 94% on the first 2,000 test images (about 96%
  measured; the full data's epoch gives >= 97% but costs a few minutes on a CPU),
  and the loaded model (batch statistics in, dropout off) predicts what the run
  measured."""
  from mlp_jax.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from mlp_jax.run import Layout, epoch_line, train  # pylint: disable=g-import-not-at-top
  subset = mnist_subset(mnist, 8192, 2000)
  workdir = str(tmp_path / 'cnn')
  config = TrainConfig(model='cnn', batch_norm=True, dropout=0.25, epochs=1)
  train(config, [0], Layout(workdir, sweep=False),
        run_options(checkpoint_every=0, tensorboard=False), epoch_line, 0.0, subset)
  final = records.final_row(workdir)
  assert float(final['test_accuracy']) >= 0.94
  predict = mlp_jax.load_trained(workdir)
  labels = predict(subset.test_images)
  assert np.mean(labels == subset.test_labels) == float(final['test_accuracy'])


def test_gpu_determinism_is_the_default_and_the_users_flags_win(monkeypatch):
  from mlp_jax import environment  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert environment.apply_determinism() == (
      '--xla_force_host_platform_device_count=2 --xla_gpu_deterministic_ops=true '
      '--xla_gpu_autotune_level=0')
  monkeypatch.setenv('XLA_FLAGS', '--xla_gpu_deterministic_ops=false')
  assert environment.apply_determinism() == (
      '--xla_gpu_deterministic_ops=false --xla_gpu_autotune_level=0')
  monkeypatch.setenv('XLA_FLAGS', '')
  assert environment.apply_determinism(deterministic=False) == ''


@pytest.mark.slow
def test_entry_points_record_the_determinism_flags(two_epoch_runs):
  workdir, _ = two_epoch_runs[0]
  flags = records.read_json_object(os.path.join(workdir, 'environment.json'))['xla_flags']
  assert '--xla_gpu_deterministic_ops=true' in flags and '--xla_gpu_autotune_level=0' in flags


def test_the_entry_points_load_the_data_while_they_import_jax():
  """mlp_jax.main and experiments.sweep import no JAX until their flags are parsed
  (cli.in_background then loads the data meanwhile)."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  for module in ('mlp_jax.main', 'mlp_jax.sweep', 'experiments.sweep'):
    imported = subprocess.run(
        [sys.executable, '-c', f'import sys, {module}; print("jax" in sys.modules)'],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert imported == 'False', module


def test_the_entry_points_import_with_the_garbage_collector_off():
  """Both training entry points keep the collector off while importing, until
  cli.start_training settles it (one preamble: the sweep had drifted from it)."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  for module in ('mlp_jax.main', 'mlp_jax.sweep', 'experiments.sweep'):
    enabled = subprocess.run(
        [sys.executable, '-c', f'import gc, {module}; print(gc.isenabled())'],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert enabled == 'False', module


def test_only_mlp_jax_is_installed_and_its_commands_run_from_anywhere(tmp_path):
  """pip install puts one package, mlp_jax, into site-packages (no generic top-level
  `experiments` to collide with another project's), and the sweep and compare commands
  run from any directory as python -m mlp_jax.sweep / mlp_jax.compare."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  found = subprocess.run(
      [sys.executable, '-c', 'import importlib.util as u; print(u.find_spec("experiments"))'],
      cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
  assert found == 'None'
  for module, flag in (('mlp_jax.sweep', '--seeds'), ('mlp_jax.compare', '--require_identical')):
    result = subprocess.run([sys.executable, '-m', module, '--helpshort'], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert flag in result.stdout, (module, result.stderr)  # absl's help exits 1
