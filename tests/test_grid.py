"""Grids of settings x seeds in one sweep, in-process on a subset of MNIST: parsing,
members equal to the runs their settings make, statistics per point, ensembles."""

import dataclasses
import os

from absl import flags
import numpy as np
import pytest

import mlp_jax
from conftest import read, run_options, started_on_cpu_devices, without_timing
from mlp_jax import records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.flags import config_from_flags, define_training_flags, grid_from_flags
from mlp_jax.grid import Grid
from mlp_jax.run import Layout, epoch_line, sweep_line, train

OPTIONS = run_options(checkpoint_every=0, tensorboard=False)
# Two shapes (two programs) x two learning rates (traced: shared by a program), with
# dropout on, so that both traced settings are exercised.
GRID = Grid((('learning_rate', (1e-3, 3e-3)), ('hidden_sizes', ((32,), (16, 16)))))
CONFIG = TrainConfig(epochs=2, dropout=0.1)


@pytest.fixture(scope='module')
def grid_sweep(subset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('grid'))
  train(CONFIG, [0, 1], Layout(workdir, sweep=True), OPTIONS, sweep_line, 0.0, subset,
        grid=GRID)
  return workdir


def _parsed(*argv):
  flag_values = flags.FlagValues()
  define_training_flags(flag_values)
  flag_values(['sweep', *argv])
  return flag_values


def _record(run_dir):
  return (without_timing(read(os.path.join(run_dir, records.HISTORY_FILE))),
          read(os.path.join(run_dir, records.PARAMS_FILE), 'rb'))


def test_lists_make_the_product_of_their_values():
  parsed = _parsed('--learning_rate=1e-4,3e-4', '--hidden_sizes=16,16/32', '--dropout=0.1')
  config, grid = config_from_flags(0, parsed, grid=True), grid_from_flags(parsed)
  assert grid.axes == (('learning_rate', (1e-4, 3e-4)), ('hidden_sizes', ((16, 16), (32,))))
  points = grid.points(config)
  assert [p.name for p in points] == [
      'learning_rate=0.0001/hidden_sizes=16,16', 'learning_rate=0.0001/hidden_sizes=32',
      'learning_rate=0.0003/hidden_sizes=16,16', 'learning_rate=0.0003/hidden_sizes=32']
  assert points[3].config == config.replace(learning_rate=3e-4, hidden_sizes=(32,))
  assert config.dropout == 0.1 and not grid_from_flags(_parsed('--learning_rate=0.01'))


@pytest.mark.parametrize('flag, message', [
    ('--learning_rate=1e-3,0.001', '--learning_rate=1e-3,0.001: 0.001 is listed twice'),
    ('--learning_rate=1e-3,', 'an empty value'),
    ('--learning_rate=1e-3,-1', '--learning_rate must be positive, got -1.0'),
    ('--batch_size=64,many', '--batch_size: \'many\' is not a whole number'),
    ('--model=mlp,rnn', '--model must be one of mlp, cnn, got \'rnn\''),
    ('--hidden_sizes=8/0', '--hidden_sizes must be a comma-separated list'),
])
def test_a_bad_list_is_one_line_naming_the_flag(flag, message):
  parsed = _parsed(flag)
  with pytest.raises(UsageError, match=message):
    grid_from_flags(parsed).points(config_from_flags(0, parsed, grid=True))


def test_lists_only_for_sweepable_flags_and_only_in_a_sweep():
  with pytest.raises(flags.IllegalFlagValueError, match='one value only: lists .* work for '
                     '--learning_rate, --dropout'):
    _parsed('--epochs=1,2')
  with pytest.raises(UsageError, match='one value only; a list of values makes a grid, in '
                     'python -m experiments.sweep'):
    config_from_flags(0, _parsed('--learning_rate=1e-3,3e-3'))


def test_the_sweep_refuses_a_bad_grid_before_writing_anything(run_module, tmp_path):
  workdir = tmp_path / 'never'
  result = run_module('experiments.sweep', '--learning_rate=1e-3,1e-3', '--epochs=1',
                      f'--workdir={workdir}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: --learning_rate=1e-3,1e-3: 0.001 is listed twice']
  assert not workdir.exists()


@pytest.mark.slow
def test_each_member_is_the_run_its_settings_make(grid_sweep, subset, tmp_path):
  """Members of both programs, at both learning rates, equal single runs bit for bit."""
  for rate, sizes, seed in ((3e-3, (16, 16), 1), (1e-3, (32,), 0)):
    config = CONFIG.replace(learning_rate=rate, hidden_sizes=sizes, seed=seed)
    single = str(tmp_path / f'{rate}-{len(sizes)}')
    train(config, [seed], Layout(single, sweep=False), OPTIONS, epoch_line, 0.0, subset)
    member = os.path.join(grid_sweep, f'learning_rate={rate!r}',
                          f'hidden_sizes={",".join(map(str, sizes))}', f'seed_{seed}')
    assert records.load_config(member) == records.load_config(single)
    assert _record(member) == _record(single), member


@pytest.mark.slow
def test_members_of_several_points_vectorise_together(subset, tmp_path):
  """At vmap width 2 the two learning rates of seed 0 share one group; each member
  is still the single run of width 2."""
  grid = Grid((('learning_rate', (1e-3, 3e-3)),))
  train(CONFIG, [0], Layout(str(tmp_path / 'grid'), sweep=True),
        dataclasses.replace(OPTIONS, vmap_width=2), sweep_line, 0.0, subset, grid=grid)
  single = str(tmp_path / 'single')
  train(CONFIG.replace(learning_rate=3e-3), [0], Layout(single, sweep=False),
        dataclasses.replace(OPTIONS, vmap_width=2), epoch_line, 0.0, subset)
  member = str(tmp_path / 'grid' / 'learning_rate=0.003' / 'seed_0')
  assert records.load_config(member).vmap_width == 2
  assert _record(member) == _record(single)


@pytest.mark.slow
def test_statistics_per_grid_point(grid_sweep):
  summary = records.read_csv(os.path.join(grid_sweep, records.SUMMARY_FILE))
  assert list(summary[0])[:3] == ['learning_rate', 'hidden_sizes', 'epoch']
  assert len(summary) == 4 * 2 * len(records.METRIC_COLUMNS)  # points x epochs x metrics
  final = records.read_csv(os.path.join(grid_sweep, records.FINAL_FILE))
  assert [(r['learning_rate'], r['hidden_sizes'], r['seed']) for r in final[:3]] == [
      ('0.001', '32', '0'), ('0.001', '32', '1'), ('0.001', '16,16', '0')]
  for row in final:
    run_dir = os.path.join(grid_sweep, f'learning_rate={row["learning_rate"]}',
                           f'hidden_sizes={row["hidden_sizes"]}', f'seed_{row["seed"]}')
    assert row['final_test_accuracy'] == records.final_row(run_dir)['test_accuracy']
  points = records.read_csv(os.path.join(grid_sweep, records.POINTS_FILE))
  means = [float(p['mean']) for p in points]
  assert means == sorted(means, reverse=True) and [p['rank'] for p in points] == list('1234')
  assert points[0]['welch_p_value'] == '' and all(0 <= float(p['welch_p_value']) <= 1
                                                  for p in points[1:])
  for p in points:
    seeds = [float(r['final_test_accuracy']) for r in final
             if (r['learning_rate'], r['hidden_sizes']) == (p['learning_rate'],
                                                            p['hidden_sizes'])]
    assert float(p['mean']) == pytest.approx(np.mean(seeds), abs=1e-15) and p['n'] == '2'
  assert os.path.getsize(os.path.join(grid_sweep, records.CURVES_FILE)) > 10_000


@pytest.mark.slow
def test_the_ensemble_is_recomputed_from_load_trained(grid_sweep, subset):
  points = records.read_csv(os.path.join(grid_sweep, records.POINTS_FILE))
  for p in points[:2]:
    point_dir = os.path.join(grid_sweep, f'learning_rate={p["learning_rate"]}',
                             f'hidden_sizes={p["hidden_sizes"]}')
    probabilities = [mlp_jax.load_trained(os.path.join(point_dir, f'seed_{s}'),
                                          output='probabilities')(subset.test_images)
                     for s in (0, 1)]
    assert all(q.dtype == np.float32 and q.shape == (1000, 10) for q in probabilities)
    np.testing.assert_allclose(probabilities[0].sum(axis=1), 1.0, rtol=1e-5)
    labels = mlp_jax.load_trained(os.path.join(point_dir, 'seed_0'))(subset.test_images)
    assert np.array_equal(labels, np.argmax(probabilities[0], axis=1))
    ensemble = np.argmax(probabilities[0].astype(np.float64) + probabilities[1], axis=1)
    assert p['ensemble_test_accuracy'] == str(np.mean(ensemble == subset.test_labels))


@pytest.mark.slow
def test_a_grid_resumes_where_it_stopped(grid_sweep, subset, tmp_path, monkeypatch):
  """A crash after epoch 1's checkpoint; the same command finishes every member with
  the bits of the uninterrupted grid."""
  from mlp_jax import sink  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'grid')
  real_write = sink.RecordSink.write

  def crash_at_epoch_2(self, epoch, metrics):
    if epoch == 2:
      raise RuntimeError('crash')
    real_write(self, epoch, metrics)

  options = dataclasses.replace(OPTIONS, checkpoint_every=1)
  monkeypatch.setattr(sink.RecordSink, 'write', crash_at_epoch_2)
  with pytest.raises(RuntimeError, match='crash'):
    train(CONFIG, [0, 1], Layout(workdir, sweep=True), options, sweep_line, 0.0, subset,
          grid=GRID)
  monkeypatch.setattr(sink.RecordSink, 'write', real_write)
  train(CONFIG, [0, 1], Layout(workdir, sweep=True), options, sweep_line, 0.0, subset,
        grid=GRID)
  for member in ('learning_rate=0.001/hidden_sizes=32/seed_0',
                 'learning_rate=0.003/hidden_sizes=16,16/seed_1'):
    assert _record(os.path.join(workdir, member)) == _record(os.path.join(grid_sweep, member))
  # --overwrite with a smaller grid deletes the members it no longer has.
  smaller = Grid((('learning_rate', (1e-3, 3e-3)),))
  train(CONFIG.replace(hidden_sizes=(32,)), [0], Layout(workdir, sweep=True),
        dataclasses.replace(options, overwrite=True), sweep_line, 0.0, subset, grid=smaller)
  for rate in ('0.001', '0.003'):
    assert os.listdir(os.path.join(workdir, f'learning_rate={rate}')) == ['seed_0']
  assert records.read_json_object(os.path.join(workdir, records.SWEEP_FILE))['grid'] == [
      ['learning_rate', [0.001, 0.003]]]


@pytest.mark.slow
def test_compare_points_from_a_grid_to_its_members(grid_sweep):
  from mlp_jax import compare  # pylint: disable=g-import-not-at-top
  with pytest.raises(UsageError, match=r'a grid sweep \(its points are compared in its '
                     r'points.csv\); .* e.g. .*learning_rate=0.001/hidden_sizes=32/seed_0'):
    compare.load_side(grid_sweep)


_TWO_DEVICES = """
from mlp_jax.grid import Grid
grid = Grid((('learning_rate', (1e-3, 3e-3)), ('hidden_sizes', ((32,), (16, 16)))))
train(TrainConfig(epochs=2, dropout=0.1), [0, 1], Layout(os.path.join(root, 'grid'), sweep=True),
      RunOptions(checkpoint_every=0, tensorboard=False), sweep_line, 0.0, subset, grid=grid)
"""


@pytest.mark.slow
@started_on_cpu_devices(2, _TWO_DEVICES)
def test_a_grid_over_two_devices_is_the_grid_on_one(grid_sweep, started_early):
  """Members split over two devices (one chunk of 4 per program, 2 per device) have
  the bits of the one-device grid."""
  assert GRID.axes[0][1] == (1e-3, 3e-3) and CONFIG == TrainConfig(epochs=2, dropout=0.1)
  returncode, printed = started_early.result(timeout=600)
  assert returncode == 0, printed[-3000:]
  for member in records.sweep_run_dirs(records.read_json_object(
      os.path.join(grid_sweep, records.SWEEP_FILE))):
    assert _record(os.path.join(started_early.directory, 'grid', member)) == \
        _record(os.path.join(grid_sweep, member))
