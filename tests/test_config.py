import dataclasses

import pytest

from mlp_jax.config import RunOptions, TrainConfig, parse_hidden_sizes
from mlp_jax.errors import UsageError


def test_json_round_trip():
  config = TrainConfig(epochs=3, seed=7, hidden_sizes=(64, 32), data_seed=2)
  import json
  assert TrainConfig.from_dict(json.loads(config.to_json())) == config


@pytest.mark.parametrize('changes, flag', [
    ({'epochs': 0}, '--epochs'), ({'epochs': -1}, '--epochs'),
    ({'batch_size': 0}, '--batch_size'), ({'batch_size': 60001}, '--batch_size'),
    ({'learning_rate': -0.1}, '--learning_rate'), ({'learning_rate': float('nan')}, '--learning_rate'),
    ({'hidden_sizes': (0,)}, '--hidden_sizes'), ({'seed': -1}, '--seed'),
])
def test_invalid_settings_name_their_flag(changes, flag):
  with pytest.raises(UsageError, match=flag):
    TrainConfig(**changes).validate()


def test_parse_hidden_sizes():
  assert parse_hidden_sizes('128,128') == (128, 128)
  assert parse_hidden_sizes(' 64 ') == (64,)
  for bad in ('0', 'abc', '', '128,', '-5', '1.5'):
    with pytest.raises(UsageError, match='--hidden_sizes'):
      parse_hidden_sizes(bad)


def test_config_json_keeps_its_keys_and_values():
  """config.json's format: the same keys and values as every earlier run's."""
  import json
  assert json.loads(TrainConfig().to_json()) == {
      'augment': False, 'batch_norm': False, 'batch_size': 128, 'data_dir': None,
      'data_seed': None, 'dataset': 'mnist', 'dropout': 0.0, 'epochs': 100,
      'hidden_sizes': [128, 128], 'init_seed': None, 'learning_rate': 0.001,
      'lr_schedule': 'constant', 'matmul_precision': 'default', 'model': 'mlp', 'seed': 0,
      'tfds_data_dir': None, 'vmap_width': 1}


def test_the_table_gives_the_sweepable_and_traced_sets():
  from mlp_jax import config, grid, train  # pylint: disable=g-import-not-at-top
  # The grid's nesting order names its point directories: it must not change.
  assert list(grid.SWEEPABLE) == ['learning_rate', 'dropout', 'batch_size', 'hidden_sizes',
                                  'model', 'lr_schedule']
  assert grid.SWEEPABLE['hidden_sizes'][1] == '/'
  assert train.TRACED_SETTINGS == config.TRACED_SETTINGS == ('learning_rate', 'dropout')
  orders = [s.sweep.order for s in config.SETTINGS if s.sweep]
  assert len(set(orders)) == len(orders)  # the grid's nesting order is never a tie
  fields = lambda cls: [f.name for f in dataclasses.fields(cls)]
  assert fields(TrainConfig) == [s.name for s in config.settings_of('train')]
  assert fields(RunOptions) == [s.name for s in config.settings_of('run')]
  for row in config.SETTINGS:
    assert row.of in ('train', 'run') and row.flag in ('all', 'main', 'sweep', ''), row
    assert row.help_text.endswith(('.', '...', ')')), row.name


@pytest.mark.parametrize('changes, message', [
    ({'checkpoint_every': -1}, '--checkpoint_every must be auto, 0 (off) or more, got -1'),
    ({'keep_checkpoints': 0}, '--keep_checkpoints must be at least 1, got 0'),
    ({'chunk_size': 0}, '--chunk_size must be auto or at least 1, got 0'),
    ({'vmap_width': 0}, '--vmap_width must be auto or at least 1, got 0'),
])
def test_invalid_run_options_name_their_flag(changes, message):
  RunOptions().validate()
  with pytest.raises(UsageError) as raised:
    RunOptions(**changes).validate()
  assert str(raised.value) == message


@pytest.mark.parametrize('changes, message', [
    ({'epochs': 0}, '--epochs must be at least 1, got 0'),
    ({'batch_size': 60001}, '--batch_size=60001 is larger than the training set (60000 '
     'examples)'),
    ({'learning_rate': -0.1}, '--learning_rate must be positive, got -0.1'),
    ({'hidden_sizes': ()}, '--hidden_sizes must be a comma-separated list of positive '
     'integers, got nothing'),
    ({'model': 'rnn'}, "--model must be one of mlp, cnn, got 'rnn'"),
    ({'dropout': 1.0}, '--dropout must be in [0, 1), got 1.0'),
    ({'lr_schedule': 'step'}, "--lr_schedule must be one of constant, cosine, warmup_cosine, "
     "got 'step'"),
    ({'dataset': 'kmnist', 'data_dir': '/d'}, '--data_dir reads the MNIST IDX files; with '
     '--dataset=kmnist use --tfds_data_dir'),
    ({'vmap_width': 0}, '--vmap_width must be auto or at least 1, got 0'),
    ({'matmul_precision': 'low'}, "--matmul_precision must be one of default, high, highest, "
     "got 'low'"),
    ({'data_seed': 2**32}, '--data_seed must be in [0, 2**32), got 4294967296'),
])
def test_validation_messages(changes, message):
  with pytest.raises(UsageError) as raised:
    TrainConfig(**changes).validate()
  assert str(raised.value) == message
