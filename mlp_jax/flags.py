"""The absl flags of the settings (mlp_jax.config.SETTINGS), defined from its rows.

`mlp_jax.main` and `experiments.sweep` both call `define_training_flags()` and
`define_run_flags()` at import (and `define_entry_point_flags` for their own) and
`config_from_flags()` / `run_options_from_flags()` in their main, so a flag means
the same everywhere. The sweepable flags (mlp_jax.grid.SWEEPABLE) are read as
text, so that a sweep can take a list of values (a grid, `grid_from_flags`);
anywhere else a list is one line naming the flag, as is a list for any other flag.
"""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional, Tuple

from absl import flags

from mlp_jax.config import SETTINGS, RunOptions, Setting, TrainConfig, settings_of
from mlp_jax.errors import UsageError
from mlp_jax.grid import SWEEPABLE, Grid, parse_values, sweepable_text


class _OneValue(flags.ArgumentParser):
  """An absl number parser that names the problem when given a list."""

  def __init__(self, base: flags.ArgumentParser):
    self._base = base

  def parse(self, argument):
    if isinstance(argument, str) and ',' in argument:
      raise ValueError(f'one value only: lists (a grid of a sweep) work for {sweepable_text()}')
    return self._base.parse(argument)

  def flag_type(self) -> str:
    return self._base.flag_type()


def define_flag(row: Setting, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the absl flag of one row of config.SETTINGS.

  A sweepable setting is read as text (one value, or in a sweep a list: a grid);
  an `auto` one as text too ('auto' or a number); numbers refuse a list, naming
  the flags that take one.
  """
  name, help_text = row.name, row.help_text
  if row.sweep:
    default = (','.join(map(str, row.default)) if isinstance(row.default, tuple)
               else str(row.default))
    flags.DEFINE_string(name, default, f'{help_text} In a sweep, a list ("{row.sweep.separator}"'
                        '-separated) trains every value: a grid.', flag_values=flag_values)
  elif row.auto:
    flags.DEFINE_string(name, 'auto' if row.default is None else str(row.default), help_text,
                        flag_values=flag_values)
  elif row.type is bool:
    flags.DEFINE_bool(name, row.default, help_text, flag_values=flag_values)
  elif row.choices:
    flags.DEFINE_enum(name, row.default, row.choices, help_text, flag_values=flag_values)
  elif row.type in (int, float):
    parser = flags.IntegerParser() if row.type is int else flags.FloatParser()
    flags.DEFINE(_OneValue(parser), name, row.default, help_text, flag_values,
                 flags.ArgumentSerializer())
  else:
    flags.DEFINE_string(name, row.default, help_text, flag_values=flag_values)


def define_training_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the flags that set a TrainConfig (all but --seed, which differs per entry point)."""
  for row in settings_of('train'):
    if row.flag == 'all':
      define_flag(row, flag_values)


def define_run_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the flags of how a run is carried out (RunOptions), which change no number."""
  for row in settings_of('run'):
    if row.flag == 'all':
      define_flag(row, flag_values)


def define_entry_point_flags(entry_point: str, flag_values: flags.FlagValues = flags.FLAGS
                             ) -> None:
  """Defines the settings' flags only `entry_point` ('main', 'sweep') takes."""
  for row in SETTINGS:
    if row.flag == entry_point:
      define_flag(row, flag_values)


def _auto_or_int(flag: str, text: str) -> Optional[int]:
  """'auto' -> None; a whole number -> itself (checked by RunOptions.validate); else a
  UsageError naming the flag."""
  if text.strip() == 'auto':
    return None
  try:
    return int(text)
  except ValueError:
    raise UsageError(f'--{flag} must be auto or a whole number, got {text!r}') from None


def _sweepable_values(flag_values: flags.FlagValues) -> Dict[str, Tuple[Any, ...]]:
  """{flag: the values it lists} for every sweepable flag (one value unless a grid)."""
  return {name: parse_values(name, flag_values[name].value) for name in SWEEPABLE}


def _values(of: str, flag_values: flags.FlagValues) -> Dict[str, Any]:
  """{field: value} of every row of `of` whose flag this entry point defines (a
  sweepable one's text left as is)."""
  values = {}
  for row in settings_of(of):
    if row.flag and row.name in flag_values:
      value = flag_values[row.name].value
      values[row.name] = _auto_or_int(row.name, value) if row.auto else value
  return values


def config_from_flags(seed: int, flag_values: flags.FlagValues = flags.FLAGS,
                      grid: bool = False) -> TrainConfig:
  """The validated TrainConfig the parsed flags describe, for `seed`.

  `grid`: a sweep, where a sweepable flag may list several values (the config
  then holds the first; `grid_from_flags` gives the rest); elsewhere that is a
  UsageError naming the flag.
  """
  f = flag_values
  values = _sweepable_values(f)
  for name, listed in values.items():
    if len(listed) > 1 and not grid:
      raise UsageError(f'--{name}={f[name].value}: one value only; a list of values makes '
                       'a grid, in python -m experiments.sweep')
  first = {name: listed[0] for name, listed in values.items()}
  return TrainConfig(**{**_values('train', f), **first, 'seed': seed}).validate()


def grid_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Grid:
  """The grid the sweepable flags list (empty when each gives one value)."""
  return Grid(tuple((name, listed) for name, listed in _sweepable_values(flag_values).items()
                    if len(listed) > 1))


def run_options_from_flags(flag_values: flags.FlagValues = flags.FLAGS,
                           **entry_point_options) -> RunOptions:
  """The validated RunOptions the parsed flags describe (plus options set in code)."""
  return RunOptions(**{**_values('run', flag_values), **entry_point_options}).validate()


def reject_extra_arguments(argv) -> None:
  if len(argv) > 1:
    raise UsageError(f'unexpected arguments: {" ".join(argv[1:])} (flags look like --name=value)')


def parse_seeds(text: str, flag: str = 'seeds') -> List[int]:
  """'0-3,10,12-13' -> [0, 1, 2, 3, 10, 12, 13]; UsageError on anything else.

  Ranges are inclusive; seeds must be non-negative, below 2**32, and listed once.
  `flag`: the flag the text comes from (--seeds, --init_seeds, --data_seeds).
  """
  seeds: List[int] = []
  for part in text.split(','):
    part = part.strip()
    low, sep, high = part.partition('-')
    try:
      first, last = int(low), int(high if sep else low)
    except ValueError:
      raise UsageError(f'--{flag}: {part!r} is not a seed or a range like 0-7 '
                       f'(in {text!r})') from None
    if first < 0 or last >= 2**32:
      raise UsageError(f'--{flag}: {part!r} is outside [0, 2**32)')
    if last < first:
      raise UsageError(f'--{flag}: range {part!r} runs backwards')
    seeds.extend(range(first, last + 1))
  repeated = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
  if repeated:
    raise UsageError(f'--{flag} lists seed(s) more than once: {repeated[:10]}')
  return seeds
