"""Crossed designs: every init seed with every data seed, and where the variance comes from."""

import contextlib
import csv
import io
import json
import os

import numpy as np
import pytest

from conftest import read, run_options, without_timing
from mlp_jax import crossed, records, stats
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.grid import Grid
from mlp_jax.run import train_and_evaluate

CONFIG = TrainConfig(epochs=2)
OPTIONS = run_options(tensorboard=False, checkpoint_every=0)


def _quietly(fn, *args, **kwargs):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = fn(*args, **kwargs)
  return result, out.getvalue()


@pytest.fixture(scope='module')
def design(subset, tmp_path_factory):
  """A 2 x 3 crossed design (init seeds 3, 5; data seeds 0, 2, 4) and its stdout."""
  workdir = str(tmp_path_factory.mktemp('crossed') / 'design')
  components, out = _quietly(crossed.train_crossed, CONFIG, [3, 5], [0, 2, 4], workdir,
                             OPTIONS, 0.0, subset)
  return workdir, components, out


@pytest.mark.slow
def test_member_equals_its_single_run_bit_for_bit(subset, design, tmp_path):
  workdir, _, _ = design
  init_seed, seed = 5, 2  # neither the first init seed nor the first data seed
  single = str(tmp_path / 'single')
  _quietly(train_and_evaluate, CONFIG.replace(seed=seed, init_seed=init_seed), single,
           OPTIONS, 0.0, subset)
  member = os.path.join(workdir, f'init_seed={init_seed}', f'seed_{seed}')
  assert read(os.path.join(member, 'params.msgpack'), 'rb') == read(
      os.path.join(single, 'params.msgpack'), 'rb')
  assert without_timing(read(os.path.join(member, 'history.csv'))) == without_timing(
      read(os.path.join(single, 'history.csv')))
  assert json.loads(read(os.path.join(member, 'config.json'))) == json.loads(
      read(os.path.join(single, 'config.json')))


@pytest.mark.slow
def test_one_program_and_both_seeds_matter(design):
  workdir, _, out = design
  # One compiled program for the six members (the seeds are its inputs).
  assert out.count('sweep: 2 grid points x 3 seeds: 6 members of this program') == 1
  params = lambda i, j: read(os.path.join(workdir, f'init_seed={i}', f'seed_{j}',
                                          'params.msgpack'), 'rb')
  assert params(3, 0) != params(5, 0) and params(3, 0) != params(3, 2)
  assert json.loads(read(os.path.join(workdir, 'sweep.json')))['grid'] == [['init_seed', [3, 5]]]


@pytest.mark.slow
def test_variance_components_written_and_printed(design):
  workdir, components, out = design
  accuracy = np.array([[float(records.final_row(os.path.join(workdir, f'init_seed={i}',
                                                             f'seed_{j}'))['test_accuracy'])
                        for j in (0, 2, 4)] for i in (3, 5)])
  expected = stats.variance_components(accuracy)
  assert components == expected
  rows = list(csv.DictReader(open(os.path.join(workdir, 'variance.csv'))))
  assert [r['component'] for r in rows] == ['initialisation', 'data_order', 'residual']
  for row in rows:
    c = expected[row['component']]
    assert float(row['variance']) == c['estimate']
    assert (float(row['ci95_low']), float(row['ci95_high'])) == (c['ci95_low'], c['ci95_high'])
    assert float(row['std_ci95_high']) == np.sqrt(c['ci95_high'])
    assert row['metric'] == 'final_test_accuracy' and (row['inits'], row['datas']) == ('2', '3')
    assert float(row['mean']) == accuracy.mean()
  assert 'crossed: final test accuracy over 2 init seeds x 3 data seeds' in out
  for label in ('initialisation', 'data order and dropout', 'residual'):
    assert f'  {label}' in out
  # final.csv and points.csv are a grid's, with the init seed as the point's column.
  final = list(csv.DictReader(open(os.path.join(workdir, 'final.csv'))))
  assert [(r['init_seed'], r['seed']) for r in final] == [
      (i, j) for i in ('3', '5') for j in ('0', '2', '4')]


@pytest.mark.slow
def test_more_data_seeds_extend_the_design(subset, design, tmp_path):
  """A finished design gains data seeds like any sweep: the old members stay, the
  variance is redone over all of them."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'design')
  shutil.copytree(design[0], workdir)
  old = os.path.join(workdir, 'init_seed=3', 'seed_0', 'params.msgpack')
  before = read(old, 'rb')
  components, out = _quietly(crossed.train_crossed, CONFIG, [3, 5], [0, 2, 4, 6], workdir,
                             OPTIONS, 0.0, subset)
  assert 'by 1 seed(s) (6) at each grid point; its 3 finished seed(s)' in out
  assert read(old, 'rb') == before
  assert components['datas'] == 4
  assert [r['datas'] for r in csv.DictReader(open(os.path.join(workdir, 'variance.csv')))
          ] == ['4'] * 3


@pytest.mark.parametrize('init_seeds, data_seeds, config, grid, message', [
    ([0], [0, 1], CONFIG, Grid(), '--init_seeds: a crossed design needs at least 2'),
    ([0, 1], [4], CONFIG, Grid(), '--data_seeds: a crossed design needs at least 2'),
    ([0, 1], [0, 1], CONFIG.replace(init_seed=3), Grid(), '--init_seed=3 holds one seed'),
    ([0, 1], [0, 1], CONFIG.replace(data_seed=3), Grid(), '--data_seed=3 holds one seed'),
    ([0, 1], [0, 1], CONFIG, Grid((('dropout', (0.0, 0.1)),)), 'got a list for --dropout'),
])
def test_bad_designs(init_seeds, data_seeds, config, grid, message):
  with pytest.raises(UsageError, match=message):
    crossed.check_design(init_seeds, data_seeds, config, grid)


@pytest.mark.parametrize('args, expected', [
    (['--init_seeds=0-1'], '--init_seeds makes a crossed design together with --data_seeds'),
    (['--init_seeds=0-1', '--data_seeds=0-1', '--seeds=0-3'], '--seeds: a crossed design'),
    (['--init_seeds=0-1', '--data_seeds=0-1', '--learning_rate=1e-3,1e-2'],
     'got a list for --learning_rate'),
    (['--init_seeds=1-0', '--data_seeds=0-1'], "--init_seeds: range '1-0' runs backwards"),
    (['--init_seeds=0-1', '--data_seeds=0-1', '--init_seed=2'], '--init_seed=2 holds one'),
])
def test_bad_flags_are_one_line(args, expected, tmp_path, run_module):
  result = run_module('experiments.sweep', f'--workdir={tmp_path / "w"}', *args)
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith('error: ') and 'Traceback' not in result.stderr
  assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'w').exists()
