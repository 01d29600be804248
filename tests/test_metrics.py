"""mlp_jax.metrics: the recorded metrics, their columns and how their values are read."""

import numpy as np
import pytest

from mlp_jax import metrics


def test_the_default_metrics_log_and_history_keep_their_layout():
  """Checkpoints hold the metrics log by position: a run without a split keeps the
  columns it always had, and a split's metrics come after them (before the timing)."""
  from mlp_jax import metrics, records, sink  # pylint: disable=g-import-not-at-top
  assert sink.LOG_COLUMNS == ('train_loss', 'train_correct', 'test_loss', 'test_correct',
                              'epoch_seconds', 'eval_seconds')
  assert records.HISTORY_COLUMNS == ('epoch', 'train_loss', 'train_accuracy', 'test_loss',
                                     'test_accuracy', 'epoch_seconds', 'eval_seconds')
  split = metrics.log_columns(metrics.recorded(metrics.splits_of(500)))
  assert split == sink.LOG_COLUMNS[:4] + ('validation_loss', 'validation_correct') + \
      sink.LOG_COLUMNS[4:]



def test_every_metric_is_a_loss_or_an_accuracy_of_a_split_named_after_both():
  assert metrics.names(metrics.METRICS) == (
      'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy', 'validation_loss',
      'validation_accuracy')
  for m in metrics.METRICS:
    assert m.name == f'{m.split}_{m.kind}' and metrics.BY_NAME[m.name] is m
  assert metrics.BY_NAME['test_accuracy'].log_column == 'test_correct'
  assert metrics.BY_NAME['test_loss'].log_column == 'test_loss'
  assert metrics.BY_NAME['validation_accuracy'].tag == 'accuracy/validation'


def test_the_recorded_metrics_follow_the_splits_in_the_order_of_metrics():
  assert metrics.splits_of(0) == ('train', 'test')
  assert metrics.splits_of(5000) == ('train', 'test', 'validation')
  assert metrics.names(metrics.recorded(['test', 'train'])) == (
      'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy')
  assert metrics.names(metrics.in_columns(
      ['epoch', 'test_accuracy', 'epoch_seconds', 'train_loss'])) == ('train_loss',
                                                                      'test_accuracy')


@pytest.mark.parametrize('name, logged, examples, text', [
    ('test_accuracy', 9520.0, 10_000, '0.952'),     # exact, not float32's 0.95199996
    ('train_accuracy', np.float32(59904), 59904, '1.0'),
    ('test_loss', np.float32(0.09227577), 10_000, '0.09227577'),
    ('train_loss', 1 / 3, 1, '0.33333334'),         # the float32's shortest decimal
])
def test_a_cell_is_the_exact_fraction_or_the_shortest_float32(name, logged, examples, text):
  assert metrics.BY_NAME[name].cell(logged, examples) == text


def test_values_divide_the_counts_by_their_splits_examples():
  logged = {'train_loss': np.float32([0.5, 2.0]), 'test_correct': np.float32([3, 7])}
  chosen = (metrics.BY_NAME['train_loss'], metrics.BY_NAME['test_accuracy'])
  values = metrics.values(chosen, logged, {'test': 10, 'train': 1000})
  assert list(values) == ['train_loss', 'test_accuracy']
  assert values['train_loss'].dtype == np.float64 and values['train_loss'].tolist() == [0.5, 2.0]
  assert values['test_accuracy'].tolist() == [0.3, 0.7]
