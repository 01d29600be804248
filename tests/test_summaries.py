"""mlp_jax.summaries: the console lines of a training and the grid's ranking table
(the summary files are tested on real sweeps in test_sweep and test_validation)."""

import os

import numpy as np

from mlp_jax import records, stats, summaries
from mlp_jax.config import RunOptions, TrainConfig
from mlp_jax.driver import EpochReport, Member


def _report(configs, **metrics):
  return EpochReport(configs, 2, {k: np.asarray(v, np.float64) for k, v in metrics.items()},
                     epoch_seconds=1.234, eval_seconds=0.5)


def test_the_epoch_line_of_a_single_run():
  report = _report([TrainConfig(epochs=10)], train_loss=[0.25], train_accuracy=[0.9],
                   test_loss=[0.125], test_accuracy=[0.95])
  assert summaries.epoch_line(report) == (
      'epoch  2/10  train loss 0.2500 acc 0.9000  test loss 0.1250 acc 0.9500  1.23s + eval 0.50s')
  report.metrics.update(validation_loss=np.array([0.5]), validation_accuracy=np.array([0.875]))
  assert 'acc 0.9500  val loss 0.5000 acc 0.8750  1.23s' in summaries.epoch_line(report)


def test_the_sweep_line_gives_the_seeds_spread_or_the_grid_points():
  configs = [TrainConfig(epochs=3, seed=s) for s in (4, 5, 6)]
  report = _report(configs, test_accuracy=[0.9, 0.92, 0.94], train_loss=[0.1, 0.2, 0.3])
  assert summaries.sweep_line(report) == (
      'epoch 2/3  3 seed(s) 4..6  test acc mean 0.9200 ± 0.0200 [0.9000, 0.9400]  '
      'train loss mean 0.2000  1.23s + eval 0.50s')
  one = _report(configs[:1], test_accuracy=[0.9], train_loss=[0.1])
  assert '1 seed(s) 4..4  test acc mean 0.9000  train loss' in summaries.sweep_line(one)
  grid = [TrainConfig(epochs=3, seed=s, learning_rate=lr) for lr in (1e-3, 2e-3) for s in (0, 1)]
  report = _report(grid, test_accuracy=[0.9] * 4, train_loss=[0.1] * 4)
  assert '  4 members of 2 grid points  ' in summaries.sweep_line(report)


def test_the_sweep_shape_and_selection_note():
  assert summaries.sweep_shape(1, 10, 10, 3) == '10 seeds x 3 epochs'
  assert summaries.sweep_shape(3, 10, 30, 3) == (
      '3 grid points x 10 seeds: 30 members of this program x 3 epochs')
  assert 'chosen on validation accuracy' in summaries.selection_note({'selected_on': 'validation'})
  assert summaries.selection_note({}).endswith(summaries.SPLIT_ADVICE)


def _point(rank, lr, mean, difference, p, tied):
  return {'rank': rank, 'learning_rate': lr, 'n': '3', 'mean': mean, 'std': '0.01',
          'ci95_low': '0.9', 'ci95_high': '0.99', 'ensemble_test_accuracy': '',
          'difference_to_best': difference, 'holm_p_value': p, 'tied_with_best': tied,
          'selected_on': 'test'}


def test_the_points_table_ranks_and_names_the_ties():
  rows = [_point('1', '0.001', '0.95', '', '', 'true'),  # the best is tied with itself
          _point('2', '0.01', '0.94', '-0.01', '0.2', 'true'),
          _point('3', '0.1', '0.5', '-0.45', '0.0001', 'false')]
  lines = summaries.points_table(rows, ['learning_rate']).splitlines()
  assert lines[0].startswith('grid: ranked on mean final TEST accuracy')
  assert lines[1].split() == ['rank', 'learning_rate', 'seeds', 'final', 'test', 'acc', '95%',
                              'CI', 'ensemble', 'vs', 'best', 'Holm', 'p', 'tied']
  assert lines[3].split() == ['2', '0.01', '3', '0.9400', '±', '0.0100', '[0.9000,', '0.9900]',
                              '-', '-0.0100', '0.2', 'yes']
  assert lines[2].split()[-3:] == ['-', '-', 'yes'] and lines[4].split()[-2:] == ['0.0001', 'no']
  assert lines[-1] == 'grid: tied with the best (Holm p > 0.05): rank(s) 1, 2'
  untied = [rows[0], {**rows[2], 'rank': '2'}]
  assert summaries.points_table(untied, ['learning_rate']).splitlines()[-1] == (
      'grid: no point is tied with the best (every Holm p <= 0.05)')
  alone = [{**rows[0], 'tied_with_best': 'true'}, {**rows[1], 'tied_with_best': ''}]
  assert summaries.points_table(alone, ['learning_rate']).splitlines()[-1] == (
      'grid: ties need at least 2 seeds per point')


def test_planning_lines_from_the_final_accuracies(tmp_path):
  finals = ['0.91', '0.93', '0.95', '0.92']
  members = []
  for seed, accuracy in enumerate(finals):
    run_dir = records.seed_dir(str(tmp_path), seed)
    os.makedirs(run_dir)
    records.write_history(os.path.join(run_dir, records.HISTORY_FILE), [
        {'epoch': '1', 'train_loss': '0.5', 'test_loss': '0.5', 'test_accuracy': '0.5'},
        {'epoch': '2', 'train_loss': '0.4', 'test_loss': '0.4', 'test_accuracy': accuracy}])
    members.append(Member(TrainConfig(seed=seed), run_dir))
  std = float(np.std([float(a) for a in finals], ddof=1))
  lines = summaries.planning_lines(members, 1, RunOptions(target_difference=0.001))
  detectable = stats.detectable_difference(4, std, paired=False)
  needed = stats.seeds_needed(0.001, std, paired=False)
  assert needed > 4
  assert lines == [
      f'4 seeds detect a difference of {detectable:.4f} in final test accuracy (80% power, '
      f'alpha 0.05; unpaired, against another sweep of as many seeds, std {std:.4f} of each)',
      f'--target_difference=0.001 needs {needed} seeds per sweep at that spread '
      f'(--seeds=0-{needed - 1})']
  assert summaries.planning_lines(members[:1], 1, RunOptions()) == []
