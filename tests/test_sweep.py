"""Seed sweeps: the bitwise guarantee, summaries, key derivation."""

import contextlib
import csv
import io
import json
import os

import numpy as np
import pytest

from conftest import crash_at_epoch, read, run_options, without_timing
from mlp_jax import stats
from mlp_jax.config import TrainConfig
from mlp_jax.run import Layout, epoch_line, sweep_line, train

CONFIG = TrainConfig(epochs=2)


def _train(subset, workdir, seeds, sweep=True, config=CONFIG, **options):
  """Trains in-process as the entry points do (their flags: tests/test_flags.py's
  test_flags_set_the_config_and_options); returns what was printed."""
  options.setdefault('tensorboard', False)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train(config, seeds, Layout(str(workdir), sweep=sweep), run_options(**options),
          sweep_line if sweep else epoch_line, started=0.0, dataset=subset)
  return out.getvalue()


@pytest.fixture(scope='module')
def runs(subset, tmp_path_factory):
  """Single runs of seeds 1 and 2, and three sweeps holding them in other company."""
  root = tmp_path_factory.mktemp('sweeps')
  out = {}
  for seed in (1, 2):
    out[f'single{seed}'] = str(root / f'single{seed}')
    _train(subset, out[f'single{seed}'], [seed], sweep=False, config=CONFIG.replace(seed=seed))
  for name, seeds, chunk_size in (('all4', [0, 1, 2, 3], None), ('reversed_chunk1', [2, 1], 1),
                                  ('mixed_chunk2', [5, 1, 2], 2)):
    out[name] = str(root / name)
    out[name + '_stdout'] = _train(subset, out[name], seeds, chunk_size=chunk_size)
  return out


@pytest.mark.slow
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


@pytest.mark.slow
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
  # An accuracy's CI is the t interval on the logit scale (inside [0, 1]), a loss's the
  # plain t interval: t(0.975, 3) s / sqrt(4).
  logits = np.log(final_accuracy / (1 - final_accuracy))
  half_width = 3.182446305284263 * logits.std(ddof=1) / 2
  assert float(row['ci95_high']) == pytest.approx(
      1 / (1 + np.exp(-(logits.mean() + half_width))), rel=1e-9)
  assert 0 < float(row['ci95_low']) < float(row['mean']) < float(row['ci95_high']) < 1
  final_loss = np.array([float(histories[s][-1]['test_loss']) for s in range(4)])
  loss_row = summary[('2', 'test_loss')]
  half_width = 3.182446305284263 * final_loss.std(ddof=1) / 2
  assert float(loss_row['ci95_high']) == pytest.approx(final_loss.mean() + half_width, rel=1e-9)
  assert stats.summarize(final_accuracy).n == 4
  assert 'test acc mean' in runs['all4_stdout']


@pytest.mark.slow
def test_fixing_init_and_data_seeds(subset, tmp_path):
  """--init_seed and --data_seed hold one source of randomness fixed across seeds."""
  both = tmp_path / 'both_fixed'
  data_only = tmp_path / 'data_fixed'
  one_epoch = CONFIG.replace(epochs=1)
  _train(subset, both, [0, 1], config=one_epoch.replace(init_seed=7, data_seed=7),
         checkpoint_every=0)
  _train(subset, data_only, [0, 1], config=one_epoch.replace(data_seed=7), checkpoint_every=0)
  history = lambda d, s: without_timing(read(d / f'seed_{s}' / 'history.csv'))
  assert history(both, 0) == history(both, 1)            # nothing random left to differ
  assert history(data_only, 0) != history(data_only, 1)  # initialisation still varies


@pytest.mark.slow
def test_vmap_width_runs_and_records_its_setting(subset, tmp_path):
  workdir = tmp_path / 'vmapped'
  _train(subset, workdir, [0, 1, 2, 3], config=CONFIG.replace(epochs=1), vmap_width=2,
         checkpoint_every=0)
  assert json.loads(read(workdir / 'sweep.json'))['config']['vmap_width'] == 2
  assert json.loads(read(workdir / 'seed_3' / 'config.json'))['vmap_width'] == 2
  accuracy = float(list(csv.DictReader(open(workdir / 'seed_3' / 'history.csv')))[0]['test_accuracy'])
  assert accuracy > 0.7


@pytest.mark.parametrize('args, expected', [
    (['--seeds=3-1'], 'runs backwards'), (['--seeds=x'], '--seeds'),
    (['--chunk_size=0'], '--chunk_size'), (['--vmap_width=0'], '--vmap_width'),
    (['--epochs=0'], '--epochs'),
])
def test_sweep_bad_input(args, expected, tmp_path, run_module):
  result = run_module('experiments.sweep', f'--workdir={tmp_path / "w"}', *args)
  assert result.returncode == 2 and expected in result.stderr
  assert 'Traceback' not in result.stderr and not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_overwrite_with_other_seeds_leaves_no_stale_seed(subset, tmp_path, monkeypatch, capsys):
  from mlp_jax import run  # pylint: disable=g-import-not-at-top
  from mlp_jax.workdir import WorkdirError  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(run, 'load_data', lambda config: subset)
  workdir = str(tmp_path / 'sweep')
  config = CONFIG.replace(epochs=1)
  no_tensorboard = run_options(tensorboard=False)
  run.train_sweep(config, [0, 1], workdir, no_tensorboard)
  with pytest.raises(WorkdirError, match='seeds'):
    run.train_sweep(config, [1, 2], workdir, no_tensorboard)
  capsys.readouterr()
  run.train_sweep(config, [1, 2], workdir, run_options(tensorboard=False, overwrite=True))
  result = capsys.readouterr().out
  assert sorted(p for p in os.listdir(workdir) if p.startswith('seed_')) == ['seed_1', 'seed_2']
  assert [r['seed'] for r in csv.DictReader(open(os.path.join(workdir, 'final.csv')))] == ['1', '2']
  # Re-running the finished sweep trains nothing and prints the same final summary.
  run.train_sweep(config, [1, 2], workdir, no_tensorboard)
  rerun = capsys.readouterr().out
  assert 'holds a complete sweep' in rerun
  final_line = lambda out: [l for l in out.splitlines() if 'final test accuracy' in l][0]
  assert final_line(rerun).split(';')[0] == final_line(result).split(';')[0]


def _file_hashes(*roots):
  """{path: sha256} of every file under the given directories."""
  import hashlib  # pylint: disable=g-import-not-at-top
  hashes = {}
  for root in roots:
    for directory, _, names in os.walk(root):
      for name in names:
        path = os.path.join(directory, name)
        hashes[path] = hashlib.sha256(read(path, 'rb')).hexdigest()
  return hashes


def _statistics(workdir):
  return {name: read(os.path.join(workdir, name)) for name in ('summary.csv', 'final.csv',
                                                                'points.csv')}


@pytest.mark.slow
def test_extending_a_sweep_trains_only_the_new_seeds(subset, runs, tmp_path):
  """Seeds 0-1, then 0-3 on the same workdir, killed once and resumed: the finished
  seeds' files (and their chunk's checkpoints) keep every byte, the new seeds train
  in chunks of their own, and every statistic equals the sweep of 0-3 trained at once."""
  workdir = tmp_path / 'extended'
  _train(subset, workdir, [0, 1], checkpoint_every=1)
  old_chunks = sorted(os.listdir(workdir / 'checkpoints'))
  before = _file_hashes(workdir / 'seed_0', workdir / 'seed_1', workdir / 'checkpoints')
  assert len(before) > 10
  # Killed in the new seeds' second epoch: the old statistics are gone, sweep.json lists 0-3.
  crash = pytest.MonkeyPatch()
  crash_at_epoch(crash, 2)
  try:
    with pytest.raises(RuntimeError, match='crash'):
      _train(subset, workdir, [0, 1, 2, 3], checkpoint_every=1)
  finally:
    crash.undo()
  assert json.loads(read(workdir / 'sweep.json'))['seeds'] == [0, 1, 2, 3]
  assert not any((workdir / name).exists() for name in ('final.csv', 'points.csv',
                                                        'timing.json'))
  out = _train(subset, workdir, [0, 1, 2, 3], checkpoint_every=1)
  assert 'resumed 2 seed(s) from their checkpoint after epoch 1' in out
  assert _file_hashes(workdir / 'seed_0', workdir / 'seed_1',
                      *(workdir / 'checkpoints' / c for c in old_chunks)) == before
  new_chunks = sorted(set(os.listdir(workdir / 'checkpoints')) - set(old_chunks))
  assert len(new_chunks) == 1 and new_chunks[0].startswith('seeds-2-3-')
  for seed in (2, 3):
    assert read(workdir / f'seed_{seed}' / 'params.msgpack', 'rb') == read(
        os.path.join(runs['all4'], f'seed_{seed}', 'params.msgpack'), 'rb')
  assert _statistics(workdir) == _statistics(runs['all4'])
  assert json.loads(read(workdir / 'timing.json'))['seed_epochs'] == 2  # the resumed epoch
  assert os.path.getsize(workdir / 'curves.png') > 0
  # Complete: a re-run trains nothing and changes nothing.
  after = _file_hashes(workdir)
  _train(subset, workdir, [0, 1, 2, 3], checkpoint_every=1)
  assert _file_hashes(workdir) == after


@pytest.mark.slow
def test_extension_message_and_what_is_refused(subset, tmp_path, capsys):
  from mlp_jax.workdir import WorkdirError  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'sweep'
  config = CONFIG.replace(epochs=1)
  _train(subset, workdir, [0, 1], config=config, checkpoint_every=0)
  before = _file_hashes(workdir)
  with pytest.raises(WorkdirError, match=r'holds a sweep of seeds 0-1; seeds 1,7 leave out 1 '
                     r'of them \(0\): .* use --overwrite'):
    _train(subset, workdir, [1, 7], config=config, checkpoint_every=0)
  with pytest.raises(WorkdirError,
                     match=r'other settings \((config\.)?learning_rate 0.001 -> 0.01'):
    _train(subset, workdir, [0, 1, 2], config=config.replace(learning_rate=0.01),
           checkpoint_every=0)
  with pytest.raises(WorkdirError, match=r'other settings \(seeds \[0, 1\] -> \[1, 0\]'):
    _train(subset, workdir, [1, 0], config=config, checkpoint_every=0)
  assert _file_hashes(workdir) == before
  out = _train(subset, workdir, [5, 0, 1], config=config, checkpoint_every=0)
  assert ('extending ' + str(workdir) + ' by 1 seed(s) (5); its 2 finished seed(s) are kept '
          'as they are') in out
  assert [r['seed'] for r in csv.DictReader(open(workdir / 'final.csv'))] == ['5', '0', '1']
  assert {p: h for p, h in _file_hashes(workdir).items() if 'seed_' in p and 'seed_5' not in p
          } == {p: h for p, h in before.items() if 'seed_' in p}


@pytest.mark.slow
def test_extending_a_grid_adds_the_seeds_to_every_point(subset, tmp_path):
  from mlp_jax.grid import Grid  # pylint: disable=g-import-not-at-top
  grid = Grid((('learning_rate', (0.001, 0.003)),))
  workdir = tmp_path / 'grid'
  config = CONFIG.replace(epochs=1)
  options = run_options(tensorboard=False, checkpoint_every=0)
  run = lambda seeds: train(config, seeds, Layout(str(workdir), sweep=True), options,
                            sweep_line, started=0.0, dataset=subset, grid=grid)
  with contextlib.redirect_stdout(io.StringIO()):
    run([0])
    points = ['learning_rate=0.001', 'learning_rate=0.003']
    before = _file_hashes(*(workdir / p / 'seed_0' for p in points))
    run([0, 1])
  assert _file_hashes(*(workdir / p / 'seed_0' for p in points)) == before
  assert all((workdir / p / 'seed_1' / 'params.msgpack').exists() for p in points)
  assert json.loads(read(workdir / 'sweep.json'))['seeds'] == [0, 1]
  assert [r['n'] for r in csv.DictReader(open(workdir / 'points.csv'))] == ['2', '2']
  assert json.loads(read(workdir / 'timing.json'))['seed_epochs'] == 2
