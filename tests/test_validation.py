"""The validation split (--validation_size): which images are held out, that they are
the same everywhere, that a grid member with a split is the single run with it bit for
bit, and that a grid with a split selects on validation without reading a test column."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, read, run_options, side_by_side, without_timing
from mlp_jax import data, records, stats
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.grid import Grid
from mlp_jax.run import (Layout, epoch_line, planning_lines, points_table,
                         sweep_line, train, write_summaries)

OPTIONS = run_options(checkpoint_every=0, tensorboard=False)
HELD_OUT = 500
CONFIG = TrainConfig(epochs=2, validation_size=HELD_OUT)
GRID = Grid((('learning_rate', (1e-3, 4e-3)),))
SEEDS = [0, 1, 2]
# SHA-256 of the 5,000 indices held out of MNIST's 60,000 training images: the split
# never changes (numpy's RandomState stream is frozen), whatever the version or machine.
MNIST_5000_SHA256 = '8041ef545a7588aeea1a7e72c831af43e0d25cafae3f83aa9b5aa9bb5649e08b'


@pytest.fixture(scope='module')
def split_grid(subset, tmp_path_factory):
  """A 2-point grid x 3 seeds x 2 epochs with 500 of the subset's 2,048 images held out."""
  workdir = str(tmp_path_factory.mktemp('split_grid'))
  train(CONFIG, SEEDS, Layout(workdir, sweep=True), OPTIONS, sweep_line, 0.0, subset,
        grid=GRID)
  return workdir


def _members(workdir):
  layout = Layout(workdir, sweep=True)
  return [layout.member(p.config.replace(seed=s), p) for p in GRID.points(CONFIG)
          for s in SEEDS]


def test_held_out_images_are_disjoint_from_the_trained_ones(subset):
  split = data.hold_out(subset, HELD_OUT)
  held = data.validation_indices(len(subset.train_labels), HELD_OUT)
  kept = np.setdiff1d(np.arange(len(subset.train_labels)), held)
  assert len(held) == HELD_OUT == len(set(held.tolist()))
  assert not set(held.tolist()) & set(kept.tolist())
  assert np.array_equal(split.validation_images, subset.train_images[held])
  assert np.array_equal(split.validation_labels, subset.train_labels[held])
  assert np.array_equal(split.train_images, subset.train_images[kept])
  assert np.array_equal(split.train_labels, subset.train_labels[kept])
  assert split.full_train_size == len(subset.train_labels)
  assert split.validation_sha256 == data.validation_checksum(held)
  assert data.hold_out(split, HELD_OUT) is split  # already split: kept as it is
  assert data.hold_out(subset, 0) is subset


@pytest.mark.slow
def test_the_split_is_the_same_in_every_process_and_on_any_device_count(mnist):
  """Two fresh interpreters (one with two host devices, another hash seed) hold out the
  same 5,000 images as this process does."""
  code = ('import jax; from mlp_jax import data; d = data.hold_out(data.load_mnist(), 5000); '
          'print(jax.device_count(), d.validation_sha256)')
  def interpreter(**env):
    return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu',
                                                       **env})

  outputs = []
  for result in side_by_side(
      functools.partial(interpreter, XLA_FLAGS='--xla_force_host_platform_device_count=2',
                        PYTHONHASHSEED='1'),
      functools.partial(interpreter, PYTHONHASHSEED='2')):
    assert result.returncode == 0, result.stderr
    outputs.append(result.stdout.split())
  assert [o[0] for o in outputs] == ['2', '1']
  here = data.hold_out(mnist, 5000).validation_sha256
  assert outputs[0][1] == outputs[1][1] == here == MNIST_5000_SHA256


@pytest.mark.slow
def test_every_member_records_the_same_held_out_indices(split_grid, subset):
  expected = data.validation_checksum(data.validation_indices(len(subset.train_labels),
                                                              HELD_OUT))
  for member in _members(split_grid):
    stored = json.loads(read(os.path.join(member.run_dir, records.CONFIG_FILE)))
    assert (stored['validation_size'], stored['validation_sha256']) == (HELD_OUT, expected)


def test_history_gains_the_validation_columns(split_grid):
  history = records.read_history(os.path.join(_members(split_grid)[0].run_dir,
                                              records.HISTORY_FILE))
  assert history.columns == ('epoch', 'train_loss', 'train_accuracy', 'test_loss',
                             'test_accuracy', 'validation_loss', 'validation_accuracy',
                             'epoch_seconds', 'eval_seconds')
  accuracy = history.column('validation_accuracy')
  # Exact fractions of the 500 held-out images.
  assert all(float(a * HELD_OUT).is_integer() for a in accuracy)


@pytest.mark.slow
def test_a_member_equals_the_single_run_with_the_split(split_grid, subset, tmp_path):
  """history.csv (all but the timing) and params.msgpack byte for byte, config.json equal."""
  member = _members(split_grid)[len(SEEDS) + 1]  # learning rate 4e-3, seed 1
  single = str(tmp_path / 'single')
  train(member.config, [member.config.seed], Layout(single, sweep=False), OPTIONS,
        epoch_line, 0.0, subset)
  assert records.load_config(single) == records.load_config(member.run_dir)
  history, params = ([read(os.path.join(d, name), mode) for d in (single, member.run_dir)]
                     for name, mode in ((records.HISTORY_FILE, 'r'), (records.PARAMS_FILE, 'rb')))
  assert without_timing(history[0]) == without_timing(history[1])
  assert params[0] == params[1]


def _selection(workdir):
  points = records.read_csv(os.path.join(workdir, records.POINTS_FILE))
  final = records.read_csv(os.path.join(workdir, records.FINAL_FILE))
  chosen = ('learning_rate', 'rank', 'difference_to_best', 'welch_p_value', 'paired_difference',
            'paired_ci95_low', 'paired_ci95_high', 'paired_p_value', 'holm_p_value',
            'tied_with_best', 'probability_of_improvement', 'selected_on', 'validation_mean')
  return ([{k: p[k] for k in chosen} for p in points],
          [(f['learning_rate'], f['seed'], f['best_epoch']) for f in final],
          [p['mean'] for p in points])


def test_the_ranking_and_ties_never_read_a_test_column(split_grid, subset, tmp_path):
  """Every member's test accuracies rewritten (the worse point's made the best on the
  test set): points.csv's ranking, comparisons and ties and final.csv's best epochs are
  unchanged; only the reported test figures move."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'grid')
  shutil.copytree(split_grid, workdir)
  before = _selection(workdir)
  assert before[0][0]['selected_on'] == 'validation'
  members = _members(workdir)
  loser = before[0][-1]['learning_rate']
  for i, member in enumerate(members):
    path = os.path.join(member.run_dir, records.HISTORY_FILE)
    history = records.read_history(path)
    rows = [dict(history.rows[e]) for e in sorted(history.rows)]
    boost = 0.5 if repr(member.config.learning_rate) == loser else 0.0
    for epoch, row in enumerate(rows):
      # The last epoch best on the test set, reversing any test-based pick of epochs.
      row['test_accuracy'] = repr(0.1 + boost + 0.01 * (i + epoch * 3))
    records.write_history(path, rows)
  write_summaries(workdir, GRID.points(CONFIG), members, False, subset)
  after = _selection(workdir)
  assert after[:2] == before[:2]
  assert after[2] != before[2]
  # The same rows by the test set alone would have ranked the other way round.
  means = {p['learning_rate']: float(p['mean'])
           for p in records.read_csv(os.path.join(workdir, records.POINTS_FILE))}
  assert means[loser] == max(means.values())


def test_the_console_ranking_says_what_it_selected_on(split_grid, subset):
  points = records.read_csv(os.path.join(split_grid, records.POINTS_FILE))
  table = points_table(points, ['learning_rate'])
  title, header = table.splitlines()[:2]
  assert 'validation' in title and 'TEST' not in title
  assert header.split()[:4] == ['rank', 'learning_rate', 'seeds', 'val']
  assert 'Holm p' in header and 'tied' in header
  assert table.splitlines()[-1].startswith('grid: ')
  # Without a split the same table says it chose on the test set, and what to do.
  test_rows = stats.point_rows([{'learning_rate': '0.001'}, {'learning_rate': '0.004'}],
                               [[0.9, 0.91, 0.92], [0.8, 0.82, 0.81]], ['0.9', '0.8'])
  title = points_table(test_rows, ['learning_rate']).splitlines()[0]
  assert 'selected on the test set' in title and '--validation_size=' in title


def test_seed_planning_lines(split_grid):
  members = _members(split_grid)
  lines = planning_lines(members, 2, OPTIONS.replace(target_difference=0.01))
  finals = [records.read_curves([m.run_dir for m in members[i * 3:(i + 1) * 3]])
            ['validation_accuracy'][:, -1] for i in range(2)]
  best, second = sorted(finals, key=lambda f: -f.mean())
  std = float(np.std(second - best, ddof=1))
  assert lines[0].startswith(f'3 seeds detect a difference of '
                             f'{stats.detectable_difference(3, std):.4f} in final validation')
  assert 'paired' in lines[0]
  needed = stats.seeds_needed(0.01, std) if std > 0 else 2
  assert lines[1].startswith(f'--target_difference=0.01 needs {needed} seeds')
  assert planning_lines(members, 2, OPTIONS)[1:] == []


def test_a_config_without_the_split_reads_and_writes_as_before():
  old = TrainConfig().to_dict()
  assert 'validation_size' not in old and 'validation_sha256' not in old
  assert TrainConfig.from_dict(old) == TrainConfig()
  assert TrainConfig.from_dict(old).validation_size == 0
  split = TrainConfig(validation_size=10, validation_sha256='ab')
  assert TrainConfig.from_dict(split.to_dict()) == split


@pytest.mark.parametrize('size, message', [
    (-1, '--validation_size must be at least 0, got -1'),
    (2048, '--validation_size=2048 must be smaller than the training set of --dataset=mnist '
           '(2048 images)'),
    (2000, '--validation_size=2000 leaves 48 of the 2048 training images of --dataset=mnist, '
           'fewer than one batch (--batch_size=128)'),
])
def test_bad_sizes_are_refused(size, message):
  with pytest.raises(UsageError) as raised:
    TrainConfig(validation_size=size).validate(train_size=2048)
  assert str(raised.value) == message


def test_a_tfds_set_without_enough_images_is_refused(monkeypatch, subset):
  from mlp_jax import tfds_data  # pylint: disable=g-import-not-at-top
  small = dataclasses.replace(subset, source='tfds:kmnist')
  monkeypatch.setattr(tfds_data, 'load_tfds', lambda name, data_dir: small)
  with pytest.raises(UsageError, match=r'^--validation_size=3000 must be smaller than the '
                     r'training set of --dataset=kmnist \(2048 images\)$'):
    data.load_data(TrainConfig(dataset='kmnist', validation_size=3000))


@pytest.mark.parametrize('module, flag', [
    ('mlp_jax.main', '--validation_size=-5'),
    ('mlp_jax.main', '--validation_size=60000'),
    ('experiments.sweep', '--validation_size=60000'),
    ('experiments.sweep', '--target_difference=0'),
    ('experiments.sweep', '--target_difference=-0.01'),
])
def test_bad_flags_are_one_line_and_exit_2(run_module, tmp_path, module, flag):
  workdir = tmp_path / 'run'
  result = run_module(module, flag, f'--workdir={workdir}', '--epochs=1')
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1 and result.stderr.startswith('error: --'), result.stderr
  assert flag.split('=')[0] in result.stderr
  assert not workdir.exists()
