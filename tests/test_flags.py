"""mlp_jax.flags: the entry points' flags, and what they turn into."""

from absl import flags
import pytest

from mlp_jax.config import RunOptions, TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.flags import (config_from_flags, define_run_flags, define_training_flags,
                           parse_seeds, reject_extra_arguments, run_options_from_flags)


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


def test_flags_set_the_config_and_options():
  """What the entry points' flags turn into (the in-process tests here start from that)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from mlp_jax.flags import (config_from_flags, define_run_flags,  # pylint: disable=g-import-not-at-top
                             define_training_flags, run_options_from_flags)
  flag_values = flags.FlagValues()
  define_training_flags(flag_values)
  define_run_flags(flag_values)
  flag_values(['sweep', '--epochs=1', '--init_seed=7', '--data_seed=8', '--vmap_width=2',
               '--chunk_size=3', '--checkpoint_every=0', '--overwrite', '--notensorboard'])
  assert config_from_flags(5, flag_values) == TrainConfig(epochs=1, seed=5, init_seed=7,
                                                          data_seed=8)
  assert run_options_from_flags(flag_values, seed_curves=True) == RunOptions(
      checkpoint_every=0, overwrite=True, chunk_size=3, vmap_width=2, tensorboard=False,
      seed_curves=True)
  defaults = flags.FlagValues()
  define_training_flags(defaults)
  define_run_flags(defaults)
  defaults(['sweep'])
  assert config_from_flags(0, defaults) == TrainConfig()
  assert run_options_from_flags(defaults) == RunOptions()



def test_every_flag_comes_from_a_row():
  # pylint: disable=g-import-not-at-top
  from absl import flags
  from mlp_jax import config
  from mlp_jax.flags import define_entry_point_flags, define_run_flags, define_training_flags
  for entry_point in ('main', 'sweep'):
    flag_values = flags.FlagValues()
    define_training_flags(flag_values)
    define_run_flags(flag_values)
    define_entry_point_flags(entry_point, flag_values)
    expected = {s.name for s in config.SETTINGS if s.flag in ('all', entry_point)}
    assert set(flag_values) == expected, entry_point
    for row in config.SETTINGS:
      if row.name in expected and row.flag:
        assert row.help_text in flag_values[row.name].help, row.name



def _parsed(*argv):
  flag_values = flags.FlagValues()
  define_training_flags(flag_values)
  define_run_flags(flag_values)
  flag_values(['main', *argv])
  return flag_values


def test_auto_is_none_and_a_number_is_itself():
  assert run_options_from_flags(_parsed('--chunk_size=auto', '--vmap_width=4')) == RunOptions(
      chunk_size=None, vmap_width=4)
  with pytest.raises(UsageError, match="--chunk_size must be auto or a whole number, got 'many'"):
    run_options_from_flags(_parsed('--chunk_size=many'))


def test_a_list_is_refused_where_one_value_is_wanted():
  with pytest.raises(flags.IllegalFlagValueError, match='one value only: lists'):
    _parsed('--keep_checkpoints=2,3')
  assert run_options_from_flags(_parsed('--keep_checkpoints=2')) == RunOptions(keep_checkpoints=2)
  assert config_from_flags(3, _parsed('--batch_size=64')) == TrainConfig(batch_size=64, seed=3)


def test_parse_seeds_names_its_flag_and_the_part_at_fault():
  with pytest.raises(UsageError, match=r"^--init_seeds: 'x' is not a seed or a range like 0-7 "
                     r"\(in '1,x'\)$"):
    parse_seeds('1,x', flag='init_seeds')
  with pytest.raises(UsageError, match=r'^--seeds lists seed\(s\) more than once: \[2, 3\]$'):
    parse_seeds('1-3,2-3')
  assert parse_seeds('4294967295') == [2**32 - 1]


def test_extra_arguments_are_refused_naming_them():
  reject_extra_arguments(['main'])
  with pytest.raises(UsageError, match=r'^unexpected arguments: a b \(flags look like'):
    reject_extra_arguments(['main', 'a', 'b'])
