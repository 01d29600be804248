import pytest

from mlp_jax.config import TrainConfig, parse_hidden_sizes
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
