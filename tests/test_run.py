"""mlp_jax.run: what the entry points' functions hand to `train`, their default
workdirs, what they return and print (here around a stand-in for `train` that
writes the records a finished training leaves; `train` itself is tested on real
trainings in test_driver, test_sweep, test_workdir and test_faults)."""

import os
import re
import signal
import types

import numpy as np
import pytest

from conftest import run_options
from mlp_jax import records, run
from mlp_jax.config import TrainConfig
from mlp_jax.driver import DriverTiming, Member
from mlp_jax.errors import Interrupted
from mlp_jax.layout import Layout

CONFIG = TrainConfig(epochs=2)
OPTIONS = run_options(checkpoint_every=0, tensorboard=False)


# A seed whose stand-in training diverges (its losses not finite from epoch 2 on).
DIVERGING_SEED = 13


def _history(run_dir, seed):
  """Epoch 2's test accuracy is 0.9 + seed / 100 (0.1 for DIVERGING_SEED)."""
  diverged = seed == DIVERGING_SEED
  os.makedirs(run_dir, exist_ok=True)
  records.write_history(os.path.join(run_dir, records.HISTORY_FILE), [
      {'epoch': str(e), 'train_loss': loss, 'train_accuracy': '0.8', 'test_loss': '0.25',
       'test_accuracy': a}
      for e, loss, a in ((1, '0.5', '0.5'),
                         (2, 'nan' if diverged else '0.5',
                          '0.1' if diverged else str(0.9 + seed / 100)))])


@pytest.fixture
def calls(monkeypatch):
  """run.train replaced: records its arguments, writes each seed's history (final test
  accuracy 0.9 + seed / 100) and a sweep's points.csv; says it trained the first time."""
  made = []

  def train(config, seeds, layout, options, reporter, started, dataset=None, grid=None):
    made.append(dict(config=config, seeds=list(seeds), layout=layout, options=options,
                     reporter=reporter, dataset=dataset))
    members = [Member(config.replace(seed=s), layout.run_dir(s)) for s in seeds]
    for m in members:
      _history(m.run_dir, m.config.seed)
    if layout.sweep:
      finals = [0.9 + s / 100 for s in seeds]
      records.write_csv(os.path.join(layout.workdir, records.POINTS_FILE), [{
          'rank': '1', 'n': str(len(seeds)), 'mean': str(np.mean(finals)),
          'std': str(np.std(finals, ddof=1)), 'ci95_low': '0.85', 'ci95_high': '0.95',
          'ensemble_test_accuracy': '0.93', 'selected_on': 'test'}])
    timing = DriverTiming(startup_seconds=1.25, total_seconds=7.5, train_seconds=4.0,
                          seed_epochs=0 if len(made) > 1 else 2 * len(seeds))
    return run.Outcome(members, np.zeros(len(seeds)), timing, trained=len(made) == 1)

  monkeypatch.setattr(run, 'train', train)
  return made


def test_a_single_run_goes_to_a_new_runs_folder_and_returns_its_final_row(
    calls, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  result = run.train_and_evaluate(CONFIG.replace(seed=3), options=OPTIONS, dataset='data')
  (call,) = calls
  workdir = call['layout'].workdir
  assert re.fullmatch(r'runs/\d{8}-\d{6}-seed3', workdir), workdir
  assert call['layout'] == Layout(workdir, sweep=False) and call['seeds'] == [3]
  assert call['reporter'] is run.epoch_line and call['dataset'] == 'data'
  assert result == {'epoch': 2.0, 'train_loss': 0.5, 'train_accuracy': 0.8, 'test_loss': 0.25,
                    'test_accuracy': 0.93, 'workdir': workdir}
  assert capsys.readouterr().out == (
      f'mlp_jax: final test accuracy 0.9300 after 2 epochs; start-up 1.2s, total 7.5s; '
      f'records in {workdir}\n')
  assert run.train_and_evaluate(CONFIG.replace(seed=3), workdir, OPTIONS) == result
  assert capsys.readouterr().out == (
      f'mlp_jax: {workdir} holds a complete run of 2 epochs (final test accuracy 0.9300); '
      'nothing to do\n')


def test_a_diverged_run_says_so_in_its_final_line(calls, tmp_path, capsys):
  run.train_and_evaluate(CONFIG.replace(seed=DIVERGING_SEED), str(tmp_path / 'run'), OPTIONS)
  assert capsys.readouterr().out.startswith(
      'mlp_jax: final test accuracy 0.1000 (diverged at epoch 2) after 2 epochs;')


def test_a_sweep_returns_its_points_and_says_its_mean(calls, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  points = run.train_sweep(CONFIG, [4, 5], options=OPTIONS)
  workdir = calls[0]['layout'].workdir
  assert re.fullmatch(r'runs/\d{8}-\d{6}-sweep4', workdir), workdir
  assert calls[0]['layout'].sweep and calls[0]['reporter'] is run.sweep_line
  assert points == records.read_csv(os.path.join(workdir, records.POINTS_FILE))
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == ('sweep: final test accuracy over 2 seed(s): mean 0.9450 ± 0.0071 (std), '
                      '95% CI [0.8500, 0.9500]; ensemble of the seeds 0.9300')
  assert lines[1].startswith("sweep: final.csv's best epochs are chosen on the test set")
  assert lines[2].startswith('sweep: 2 seeds detect a difference of ')
  assert lines[-1] == f'sweep: 4 seed-epochs trained in 4.0s; records in {workdir}'
  assert run.train_sweep(CONFIG, [4, 5], workdir, OPTIONS) == points
  assert capsys.readouterr().out.splitlines()[0] == (
      f'sweep: {workdir} holds a complete sweep; nothing to do')


def test_a_stop_point_says_how_far_the_final_writes_got(tmp_path):
  layout = Layout(str(tmp_path), sweep=True)
  run.stop_point(None, layout, 'nothing')
  run.stop_point(types.SimpleNamespace(requested=None), layout, 'nothing')
  with pytest.raises(Interrupted) as error:
    run.stop_point(types.SimpleNamespace(requested=signal.SIGTERM), layout, 'some written')
  assert str(error.value) == (
      f'mlp_jax: stopped by SIGTERM during the final writes (some written); every seed is '
      f'trained: run the same command again to finish them in {tmp_path}')
  assert error.value.exit_code == 128 + signal.SIGTERM
