"""mlp_jax.layout: where a training's records go, what sweep.json holds, and when a
sweep is extended (preparing the directories is tested on real runs in test_workdir)."""

import datetime
import os

import pytest

from mlp_jax import layout, records
from mlp_jax.config import TrainConfig
from mlp_jax.grid import Grid
from mlp_jax.layout import Layout
from mlp_jax.workdir import WorkdirError

GRID = Grid((('learning_rate', (1e-3, 3e-3)), ('hidden_sizes', ((32,), (16, 16)))))


def test_a_run_is_its_workdir_and_a_sweep_has_a_directory_per_seed():
  run, sweep = Layout('w', sweep=False), Layout('s', sweep=True)
  assert run.run_dir(3) == 'w' and run.settings_file == os.path.join('w', 'config.json')
  assert run.checkpoint_dir([0]) == os.path.join('w', 'checkpoints')
  assert sweep.run_dir(3) == os.path.join('s', 'seed_3')
  assert sweep.run_dir(3, 'learning_rate=0.001') == os.path.join('s', 'learning_rate=0.001',
                                                                 'seed_3')
  assert sweep.settings_file == os.path.join('s', 'sweep.json')
  assert sweep.checkpoint_dir([0, 1]) == records.chunk_checkpoint_dir('s', [0, 1])


def test_a_grid_member_is_named_by_its_directory_in_the_sweep():
  config = TrainConfig(epochs=1)
  point = GRID.points(config)[1]
  member = Layout('s', sweep=True).member(config.replace(seed=4), point)
  assert member.run_dir == os.path.join('s', 'learning_rate=0.001', 'hidden_sizes=16,16',
                                        'seed_4')
  assert member.name == os.path.join('learning_rate=0.001', 'hidden_sizes=16,16', 'seed_4')
  alone = Layout('s', sweep=True).member(config, Grid().points(config)[0])
  assert alone.run_dir == os.path.join('s', 'seed_0') and alone.name is None


def test_sweep_settings_hold_the_config_without_its_seed_and_the_grid():
  config = TrainConfig(epochs=2, seed=9)
  settings = layout.sweep_settings(config, [0, 1], Grid())
  expected = config.to_dict()
  del expected['seed']
  assert settings == {'seeds': [0, 1], 'config': expected}
  assert layout.sweep_settings(config, [5], GRID)['grid'] == [
      ['learning_rate', [1e-3, 3e-3]], ['hidden_sizes', [[32], [16, 16]]]]


def test_the_stored_vmap_width_is_read_from_the_settings_file(tmp_path):
  run, sweep = Layout(str(tmp_path / 'run'), False), Layout(str(tmp_path / 'sweep'), True)
  assert layout.stored_vmap_width(run) is None
  os.makedirs(run.workdir)
  os.makedirs(sweep.workdir)
  records.write_json(run.settings_file, {'vmap_width': 4})
  records.write_json(sweep.settings_file, {'config': {'vmap_width': 2}})
  assert layout.stored_vmap_width(run) == 4 and layout.stored_vmap_width(sweep) == 2
  records.write_json(run.settings_file, {'vmap_width': 0})
  assert layout.stored_vmap_width(run) is None


def test_the_other_layout_is_refused_and_saved_checkpoints_are_listed(tmp_path):
  records.write_json(str(tmp_path / records.CONFIG_FILE), {})
  with pytest.raises(WorkdirError, match='holds a single run'):
    Layout(str(tmp_path), sweep=True).refuse_the_other_layout()
  Layout(str(tmp_path), sweep=False).refuse_the_other_layout()
  sweep = Layout(str(tmp_path / 'sweep'), sweep=True)
  assert sweep.saved_checkpoint_dirs() == []
  for name in ('seeds-2-3-b', 'seeds-0-1-a'):
    os.makedirs(tmp_path / 'sweep' / 'checkpoints' / name)
  (tmp_path / 'sweep' / 'checkpoints' / 'stray.txt').write_text('')
  assert sweep.saved_checkpoint_dirs() == [
      str(tmp_path / 'sweep' / 'checkpoints' / n) for n in ('seeds-0-1-a', 'seeds-2-3-b')]


@pytest.mark.parametrize('seeds, text', [
    ([0, 1, 2, 3, 7, 9, 10], '0-3,7,9-10'), ([5], '5'), ([3, 2, 1], '3,2,1'), ([], ''),
])
def test_seed_ranges(seeds, text):
  assert layout.seed_ranges(seeds) == text


def test_more_seeds_with_the_same_settings_extend_a_sweep():
  stored = {'seeds': [0, 1], 'config': {'epochs': 2}}
  more = {'seeds': [0, 1, 5, 2], 'config': {'epochs': 2}}
  assert layout.extension('w', stored, more) == [5, 2]
  assert layout.extension('w', stored, dict(stored)) == []
  assert layout.extension('w', stored, {'seeds': [0, 1, 2], 'config': {'epochs': 3}}) is None
  assert layout.extension('w', stored, {'seeds': [1, 0], 'config': {'epochs': 2}}) is None
  with pytest.raises(WorkdirError, match=r'^--workdir=w holds a sweep of seeds 0-1; seeds 1-2 '
                     r'leave out 1 of them \(0\)'):
    layout.extension('w', stored, {'seeds': [1, 2], 'config': {'epochs': 2}})


def test_a_default_workdir_is_new_and_named_by_the_time(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  before = datetime.datetime.now().replace(microsecond=0)
  first = layout.default_workdir('sweep')
  folder, name = os.path.split(first)
  assert folder == 'runs' and name.endswith('-sweep')
  stamp = datetime.datetime.strptime(name[:-len('-sweep')], '%Y%m%d-%H%M%S')
  assert before <= stamp <= datetime.datetime.now()
  os.makedirs(first)
  second = layout.default_workdir('sweep')
  if second.startswith(first):  # the same second: a suffix keeps them apart
    assert second == f'{first}-2'
  assert not os.path.exists(second)
