"""mlp_jax.sink: the metrics log, and the records thread that writes each epoch."""

import os
import sys
import threading

import numpy as np
import pytest

from conftest import read
from mlp_jax import plots, records, sink


def test_metrics_log_round_trip():
  log = sink.new_log(4, 3)
  metrics = {name: np.arange(2, dtype=np.float32) + i for i, name in enumerate(sink.LOG_COLUMNS)}
  sink.log_epoch(log, [1, 3], 2, metrics)
  back = sink.logged_metrics(log, [1, 3], 2)
  assert all(np.array_equal(back[name], metrics[name]) for name in sink.LOG_COLUMNS)
  assert not log[[0, 2]].any() and not log[:, [0, 2]].any()


def test_the_sink_makes_its_tensorboard_writer_on_its_thread(tmp_path):
  """tensorboardX is imported by the records thread at the first write, while the
  next epoch trains, not before the first epoch."""
  run_dir = str(tmp_path / 'run')
  os.makedirs(run_dir)
  records_sink = sink.RecordSink([run_dir], 100, 10, tensorboard=True)
  assert not os.path.exists(os.path.join(run_dir, records.TENSORBOARD_DIR))
  metrics = {name: np.ones(1, np.float32) for name in sink.LOG_COLUMNS}
  records_sink.write(1, metrics)
  records_sink.close()
  assert os.listdir(os.path.join(run_dir, records.TENSORBOARD_DIR))


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='renices threads on Linux only')
def test_the_records_thread_runs_at_the_lowest_priority(tmp_path):
  """It yields to training's threads; the thread that made the sink keeps its priority."""
  records_sink = sink.RecordSink([str(tmp_path)], 100, 10)
  nice = lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
  assert records_sink._thread.submit(nice).result() == 19  # pylint: disable=protected-access
  records_sink.close()
  assert nice() == os.getpriority(os.PRIO_PROCESS, 0) < 19


@pytest.mark.parametrize('prepare', [True, False])
def test_the_sink_imports_matplotlib_after_the_first_epoch_when_asked(tmp_path, monkeypatch,
                                                                      prepare):
  """A process that draws curves.png imports matplotlib once, after the first
  epoch's records (not during start-up, not at the end), on a thread of its own at
  the lowest priority: the next epochs' rows are written while it runs."""
  calls, release = [], threading.Event()
  nice = lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

  def slow_import():
    calls.append((threading.current_thread().name, nice()))
    assert release.wait(timeout=60)
  monkeypatch.setattr(plots, 'import_matplotlib', slow_import)
  records_sink = sink.RecordSink([str(tmp_path)], 100, 10, prepare_curves=prepare)
  records_sink._thread.submit(lambda: None).result()  # pylint: disable=protected-access
  assert calls == []
  metrics = {name: np.ones(1, np.float32) for name in sink.LOG_COLUMNS}
  for epoch in (1, 2, 3):
    records_sink.write(epoch, metrics)
  records_sink._thread.submit(lambda: None).result()  # pylint: disable=protected-access
  # All three rows are on disk while the import has not returned.
  assert len(read(tmp_path / records.HISTORY_FILE).splitlines()) == 1 + 3
  release.set()
  records_sink.close()
  assert len(calls) == (1 if prepare else 0)
  assert all(name.startswith('mlp_jax-curves') for name, _ in calls)
  if sys.platform.startswith('linux'):
    assert all(priority == 19 for _, priority in calls)



def test_a_new_log_is_zeros_of_a_column_per_log_column():
  log = sink.new_log(5, 2)
  assert log.shape == (5, 2, len(sink.LOG_COLUMNS)) and log.dtype == np.float32
  assert not log.any()


def test_log_epoch_writes_each_row_and_epoch_in_its_place():
  log = sink.new_log(3, 2, columns=('a', 'b'))
  sink.log_epoch(log, [2, 0], 2, {'a': np.array([5, 6]), 'b': np.array([7, 8])},
                 columns=('a', 'b'))
  expected = np.zeros((3, 2, 2), np.float32)
  expected[2, 1] = [5, 7]
  expected[0, 1] = [6, 8]
  np.testing.assert_array_equal(log, expected)
  back = sink.logged_metrics(log, [0], 2, columns=('a', 'b'))
  assert back['a'].tolist() == [6.0] and back['b'].tolist() == [8.0]


def test_accuracies_divide_the_counts_by_each_splits_size():
  logged = {'train_loss': np.float32([0.5, 0.25]), 'train_correct': np.float32([30, 45]),
            'test_loss': np.float32([0.75, 1.0]), 'test_correct': np.float32([8, 9])}
  values = sink.accuracies(logged, train_examples=60, test_examples=10)
  assert list(values) == ['train_loss', 'train_accuracy', 'test_loss', 'test_accuracy']
  assert values['train_accuracy'].tolist() == [0.5, 0.75]
  assert values['test_accuracy'].tolist() == [0.8, 0.9]
  assert values['test_loss'].dtype == np.float64 and values['test_loss'].tolist() == [0.75, 1.0]
  with_validation = sink.accuracies({**logged, 'validation_loss': np.float32([2.0]),
                                     'validation_correct': np.float32([3])}, 60, 10, 4)
  assert with_validation['validation_accuracy'].tolist() == [0.75]


def test_the_history_a_sink_writes_holds_each_epochs_row(tmp_path):
  records_sink = sink.RecordSink([str(tmp_path)], 100, 10)
  for epoch in (1, 2):
    metrics = {name: np.full(1, 2 * epoch, np.float32) for name in sink.LOG_COLUMNS}
    records_sink.write(epoch, metrics)
  records_sink.close()
  rows = read(tmp_path / records.HISTORY_FILE).splitlines()
  header = rows[0].split(',')
  assert header[:5] == ['epoch', 'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy']
  second = dict(zip(header, rows[2].split(',')))
  assert (second['epoch'], second['train_loss'], second['train_accuracy'],
          second['test_accuracy']) == ('2', '4.0', '0.04', '0.4')
