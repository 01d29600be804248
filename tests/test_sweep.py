"""Seed sweeps: seed parsing, the bitwise guarantee, summaries, key derivation."""

import csv
import json
import os

import numpy as np
import pytest

from conftest import read, without_timing
from experiments.sweep import parse_seeds
from mlp_jax import stats
from mlp_jax.errors import UsageError

EPOCHS = '--epochs=2'


@pytest.mark.parametrize('text, seeds', [
    ('0-7', list(range(8))), ('0,3,9', [0, 3, 9]), ('0-3,10-12', [0, 1, 2, 3, 10, 11, 12]),
    ('5', [5]), (' 2 , 4-5 ', [2, 4, 5]), ('7,1', [7, 1]),
])
def test_parse_seeds(text, seeds):
  assert parse_seeds(text) == seeds


@pytest.mark.parametrize('text', ['', 'a', '1-', '-1', '5-3', '1,1', '0-2,2', '1.5', '0-4294967296'])
def test_parse_seeds_rejects(text):
  with pytest.raises(UsageError, match='--seeds'):
    parse_seeds(text)


@pytest.fixture(scope='module')
def runs(tmp_path_factory, cache_dir):
  """Single runs of seeds 1 and 2, and three sweeps holding them in other company."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('sweeps')
  env = {**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir}

  def run(module, *args):
    result = subprocess.run([sys.executable, '-m', module, EPOCHS, *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result

  out = {}
  for seed in (1, 2):
    out[f'single{seed}'] = str(root / f'single{seed}')
    run('mlp_jax.main', f'--seed={seed}', f'--workdir={out[f"single{seed}"]}')
  for name, args in {'all4': ['--seeds=0-3'], 'reversed_chunk1': ['--seeds=2,1', '--chunk_size=1'],
                     'mixed_chunk2': ['--seeds=5,1,2', '--chunk_size=2']}.items():
    out[name] = str(root / name)
    out[name + '_stdout'] = run('experiments.sweep', *args, f'--workdir={out[name]}').stdout
  return out


@pytest.mark.parametrize('sweep', ['all4', 'reversed_chunk1', 'mixed_chunk2'])
@pytest.mark.parametrize('seed', [1, 2])
def test_seed_in_any_sweep_equals_its_single_run_bit_for_bit(runs, sweep, seed):
  single, inside = runs[f'single{seed}'], os.path.join(runs[sweep], f'seed_{seed}')
  assert without_timing(read(os.path.join(inside, 'history.csv'))) == \
      without_timing(read(os.path.join(single, 'history.csv')))
  assert read(os.path.join(inside, 'params.msgpack'), 'rb') == \
      read(os.path.join(single, 'params.msgpack'), 'rb')
  assert json.loads(read(os.path.join(inside, 'config.json'))) == \
      json.loads(read(os.path.join(single, 'config.json')))


def test_sweep_writes_its_summaries(runs):
  workdir = runs['all4']
  for name in ('sweep.json', 'environment.json', 'summary.csv', 'final.csv', 'curves.png',
               'timing.json'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  sweep = json.loads(read(os.path.join(workdir, 'sweep.json')))
  assert sweep['seeds'] == [0, 1, 2, 3] and 'seed' not in sweep['config']
  histories = {s: list(csv.DictReader(open(os.path.join(workdir, f'seed_{s}', 'history.csv'))))
               for s in range(4)}
  final = list(csv.DictReader(open(os.path.join(workdir, 'final.csv'))))
  assert [int(r['seed']) for r in final] == [0, 1, 2, 3]
  for row in final:
    accuracies = [float(h['test_accuracy']) for h in histories[int(row['seed'])]]
    assert float(row['final_test_accuracy']) == accuracies[-1]
    assert float(row['best_test_accuracy']) == max(accuracies)
  summary = {(r['epoch'], r['metric']): r for r in csv.DictReader(
      open(os.path.join(workdir, 'summary.csv')))}
  final_accuracy = np.array([float(histories[s][-1]['test_accuracy']) for s in range(4)])
  row = summary[('2', 'test_accuracy')]
  assert int(row['n']) == 4
  assert float(row['mean']) == pytest.approx(final_accuracy.mean(), rel=1e-12)
  assert float(row['std']) == pytest.approx(final_accuracy.std(ddof=1), rel=1e-12)
  half_width = 3.182446305284263 * final_accuracy.std(ddof=1) / 2  # t(0.975, 3) s / sqrt(4)
  assert float(row['ci95_high']) == pytest.approx(final_accuracy.mean() + half_width, rel=1e-9)
  assert stats.summarize(final_accuracy).n == 4
  assert 'test acc mean' in runs['all4_stdout']


def test_fixing_init_and_data_seeds(tmp_path, run_module):
  """--init_seed and --data_seed hold one source of randomness fixed across seeds."""
  both = tmp_path / 'both_fixed'
  data_only = tmp_path / 'data_fixed'
  for workdir, extra in ((both, ['--init_seed=7', '--data_seed=7']), (data_only, ['--data_seed=7'])):
    result = run_module('experiments.sweep', '--seeds=0,1', '--epochs=1', f'--workdir={workdir}',
                        *extra)
    assert result.returncode == 0, result.stderr
  history = lambda d, s: without_timing(read(d / f'seed_{s}' / 'history.csv'))
  assert history(both, 0) == history(both, 1)            # nothing random left to differ
  assert history(data_only, 0) != history(data_only, 1)  # initialisation still varies


def test_vmap_width_runs_and_records_its_setting(tmp_path, run_module):
  workdir = tmp_path / 'vmapped'
  result = run_module('experiments.sweep', '--seeds=0-3', '--epochs=1', '--vmap_width=2',
                      f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  assert json.loads(read(workdir / 'sweep.json'))['config']['vmap_width'] == 2
  assert json.loads(read(workdir / 'seed_3' / 'config.json'))['vmap_width'] == 2
  accuracy = float(list(csv.DictReader(open(workdir / 'seed_3' / 'history.csv')))[0]['test_accuracy'])
  assert accuracy > 0.9


@pytest.mark.parametrize('args, expected', [
    (['--seeds=3-1'], 'runs backwards'), (['--seeds=x'], '--seeds'),
    (['--chunk_size=0'], '--chunk_size'), (['--vmap_width=0'], '--vmap_width'),
    (['--epochs=0'], '--epochs'),
])
def test_sweep_bad_input(args, expected, tmp_path, run_module):
  result = run_module('experiments.sweep', f'--workdir={tmp_path / "w"}', *args)
  assert result.returncode == 2 and expected in result.stderr
  assert 'Traceback' not in result.stderr and not (tmp_path / 'w').exists()


def test_overwrite_with_other_seeds_leaves_no_stale_seed(tmp_path, run_module):
  workdir = tmp_path / 'sweep'
  first = run_module('experiments.sweep', '--seeds=0,1', '--epochs=1', f'--workdir={workdir}')
  assert first.returncode == 0, first.stderr
  again = ['--seeds=1,2', '--epochs=1', f'--workdir={workdir}']
  refused = run_module('experiments.sweep', *again)
  assert refused.returncode == 2 and 'seeds' in refused.stderr
  result = run_module('experiments.sweep', *again, '--overwrite')
  assert result.returncode == 0, result.stderr
  assert sorted(p for p in os.listdir(workdir) if p.startswith('seed_')) == ['seed_1', 'seed_2']
  assert [r['seed'] for r in csv.DictReader(open(workdir / 'final.csv'))] == ['1', '2']
  # Re-running the finished sweep trains nothing and prints the same final summary.
  rerun = run_module('experiments.sweep', *again)
  assert rerun.returncode == 0 and 'holds a complete sweep' in rerun.stdout
  final_line = lambda out: [l for l in out.splitlines() if 'final test accuracy' in l][0]
  assert final_line(rerun.stdout).split(';')[0] == final_line(result.stdout).split(';')[0]
