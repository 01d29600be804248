"""mlp_jax.records: the files a run writes, and reading them back with errors that name them."""

import os

import numpy as np
import pytest

from conftest import read
from mlp_jax import metrics, records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError


def _rows(epochs):
  """History rows of one seed for epochs 1..epochs, from the metrics log's columns."""
  rows = []
  for epoch in range(1, epochs + 1):
    logged = {'train_loss': np.float32([1 / epoch]), 'train_correct': np.float32([50 * epoch]),
              'test_loss': np.float32([2 / epoch]), 'test_correct': np.float32([3 * epoch]),
              'epoch_seconds': np.float32([0.5]), 'eval_seconds': np.float32([0.25])}
    rows += records.history_rows(epoch, logged, {'train': 200, 'test': 10})
  return rows


def test_history_rows_are_exact_fractions_and_shortest_losses():
  assert _rows(2)[1] == {'epoch': '2', 'train_loss': '0.5', 'train_accuracy': '0.5',
                         'test_loss': '1.0', 'test_accuracy': '0.6', 'epoch_seconds': '0.5',
                         'eval_seconds': '0.25'}
  assert records.format_fraction(9520, 10_000) == '0.952'
  assert records.format_loss(0.1) == '0.1'


def test_a_history_written_then_appended_reads_back_as_written(tmp_path):
  path = str(tmp_path / records.HISTORY_FILE)
  rows = _rows(3)
  records.write_history(path, rows[:1])
  records.append_history(path, rows[1:])
  text = read(path)
  assert text.splitlines()[0] == ','.join(records.HISTORY_COLUMNS)
  assert len(text.splitlines()) == 4
  history = records.read_history(path)
  assert history.columns == records.HISTORY_COLUMNS
  assert history.rows == {int(r['epoch']): r for r in rows}
  assert history.metrics == records.METRIC_COLUMNS
  assert history.column('train_loss').tolist() == [1.0, 0.5, 0.33333334]  # the cell's decimal
  assert history.columns_as_arrays()['test_accuracy'].tolist() == [0.3, 0.6, 0.9]


@pytest.mark.parametrize('text, message', [
    ('', 'empty'),
    ('epoch,train_loss\n1,0.5', 'ends in a partial row'),
    ('train_loss\n0.5\n', 'bad header'),
    ('epoch,train_loss\n1,0.5,7\n', 'line 2: 3 cells, the header has 2'),
    ('epoch,train_loss\n0,0.5\n', "line 2: epoch '0' is not a positive integer"),
    ('epoch,train_loss\n1,0.5\n1,0.4\n', 'line 3: epoch 1 repeated'),
    ('epoch,train_loss\n1,abc\n', "line 2: train_loss 'abc' is not a number"),
])
def test_a_bad_history_is_one_line_naming_the_file_and_line(tmp_path, text, message):
  path = tmp_path / records.HISTORY_FILE
  path.write_text(text)
  with pytest.raises(UsageError) as error:
    records.read_history(str(path))
  assert str(error.value).startswith(str(path)) and message in str(error.value)
  assert '\n' not in str(error.value)


def test_write_bytes_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / 'f.bin')
  records.write_bytes_atomic(path, b'old')
  records.write_bytes_atomic(path, b'new content')
  assert read(path, 'rb') == b'new content'
  assert os.listdir(tmp_path) == ['f.bin']
  with pytest.raises(FileNotFoundError):
    records.write_bytes_atomic(str(tmp_path / 'no_dir' / 'f.bin'), b'x')
  assert os.listdir(tmp_path) == ['f.bin']


def test_the_temporary_file_of_a_write_names_the_file_written(tmp_path, monkeypatch):
  seen = []
  real_replace = os.replace
  monkeypatch.setattr(os, 'replace', lambda a, b: (seen.append(os.path.basename(a)),
                                                   real_replace(a, b)))
  records.write_bytes_atomic(str(tmp_path / 'config.json'), b'{}')
  assert seen == [f'config.json.tmp{os.getpid()}']
  assert records.being_written(seen[0]) == 'config.json'
  for name in ('config.json', 'config.json.tmp', 'config.json.tmpx1', 'notes.tmp.txt'):
    assert records.being_written(name) is None, name


def test_json_objects_round_trip_and_bad_ones_are_named(tmp_path):
  path = str(tmp_path / 'a.json')
  records.write_json(path, {'b': [1, 2], 'a': 'x'})
  assert read(path) == '{\n  "a": "x",\n  "b": [\n    1,\n    2\n  ]\n}\n'
  assert records.read_json_object(path) == {'a': 'x', 'b': [1, 2]}
  with pytest.raises(UsageError, match=r'missing\.json: missing$'):
    records.read_json_object(str(tmp_path / 'missing.json'))
  (tmp_path / 'bad.json').write_text('{"a": ')
  with pytest.raises(UsageError, match=r'bad\.json: unreadable JSON \(Expecting value, line 1\)'):
    records.read_json_object(str(tmp_path / 'bad.json'))
  (tmp_path / 'list.json').write_text('[1]')
  with pytest.raises(UsageError, match=r'list\.json: expected a JSON object, found list'):
    records.read_json_object(str(tmp_path / 'list.json'))


def test_params_round_trip_and_a_truncated_file_is_refused(tmp_path):
  path = str(tmp_path / records.PARAMS_FILE)
  variables = {'params': {'dense': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}}}
  records.save_params(path, variables)
  back = records.load_params(path)
  assert back['params']['dense']['kernel'].tobytes() == variables['params']['dense'][
      'kernel'].tobytes()
  data = read(path, 'rb')
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(UsageError, match='damaged parameters file'):
    records.load_params(path)
  with pytest.raises(UsageError, match='unreadable'):
    records.load_params(str(tmp_path / 'none.msgpack'))


def test_a_run_is_complete_with_its_params_and_every_epoch(tmp_path):
  run = str(tmp_path)
  assert not records.is_run(run)
  with pytest.raises(UsageError, match='not a run directory'):
    records.load_config(run)
  records.write_json(os.path.join(run, records.CONFIG_FILE), TrainConfig(epochs=3).to_dict())
  assert records.is_run(run) and records.load_config(run) == TrainConfig(epochs=3)
  records.write_history(os.path.join(run, records.HISTORY_FILE), _rows(2))
  assert records.missing_history(run).endswith('history.csv: 2 of 3 epochs recorded')
  records.append_history(os.path.join(run, records.HISTORY_FILE), _rows(3)[2:])
  assert records.missing_history(run) is None and not records.is_complete(run)
  records.save_params(os.path.join(run, records.PARAMS_FILE), {'params': {'b': np.zeros(2)}})
  assert records.is_complete(run)
  assert records.final_row(run)['epoch'] == '3'


def test_run_directories_and_checkpoint_names():
  assert records.seed_dir('/w', 7) == os.path.join('/w', 'seed_7')
  assert records.sweep_run_dirs({'seeds': [0, 2]}) == ['seed_0', 'seed_2']
  seeds = records.chunk_checkpoint_dir('/w', [4, 5, 6])
  assert seeds.startswith(os.path.join('/w', 'checkpoints', 'seeds-4-6-'))
  assert seeds != records.chunk_checkpoint_dir('/w', [4, 6])  # the digest tells them apart
  named = records.chunk_checkpoint_dir('/w', ['a/seed_0', 'a/seed_1'])
  assert os.path.basename(named).startswith('members-2-') and len(os.path.basename(named)) == 22


def test_footprint_rounds_each_file_up_to_whole_blocks():
  size, files = records.footprint(params_bytes=5000, epochs=2, block=4096, curves=False,
                                  tensorboard=False)
  # The folder, the marker, config.json, environment.json, history (360 B), params (5000 B).
  assert (size, files) == (4096 * (1 + 1 + 1 + 1 + 1 + 2), 6)
  with_all = records.footprint(5000, 2, 4096, curves=True, tensorboard=True)
  assert with_all == (size + 4096 * (10 + 1), 9)  # curves.png 40 kB, events 600 B, a folder


def test_curves_of_several_runs_and_where_they_diverged(tmp_path):
  for name, losses in (('a', ['0.5', '0.25']), ('b', ['0.5', 'nan'])):
    os.makedirs(tmp_path / name)
    rows = [{'epoch': str(e), 'train_loss': loss, 'test_loss': '1.0'}
            for e, loss in enumerate(losses, start=1)]
    records.write_history(str(tmp_path / name / records.HISTORY_FILE), rows)
  curves = records.read_curves([str(tmp_path / 'a'), str(tmp_path / 'b')])
  assert sorted(curves) == ['epoch', 'test_loss', 'train_loss']
  assert curves['epoch'].tolist() == [1, 2] and curves['train_loss'][0].tolist() == [0.5, 0.25]
  assert records.diverged_epochs(curves) == [None, 2]
  assert metrics.names(metrics.in_columns(curves)) == ('train_loss', 'test_loss')
