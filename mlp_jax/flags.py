"""The training flags, defined once for every entry point that trains.

`mlp_jax.main` and `experiments.sweep` both call `define_training_flags()` at import
and `config_from_flags()` in their main, so a flag means the same everywhere. The
sweepable flags (mlp_jax.grid.SWEEPABLE) are read as text, so that a sweep can
take a list of values (a grid, `grid_from_flags`); anywhere else a list is one
line naming the flag, as is a list for any other flag.
"""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional, Tuple

from absl import flags

from mlp_jax.config import (CPU_CHUNK_SIZE, LR_SCHEDULES, MATMUL_PRECISIONS, MODELS, RunOptions,
                            TrainConfig)
from mlp_jax.errors import UsageError
from mlp_jax.grid import SWEEPABLE, Grid, parse_values, sweepable_text

_DEFAULTS = TrainConfig()
_RUN_DEFAULTS = RunOptions()


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


def _define_number(name: str, default, help_text: str, flag_values: flags.FlagValues,
                   base: flags.ArgumentParser) -> None:
  flags.DEFINE(_OneValue(base), name, default, help_text, flag_values,
               flags.ArgumentSerializer())


def _define_sweepable(name: str, default, help_text: str, flag_values: flags.FlagValues
                      ) -> None:
  """A flag read as text: one value, or in a sweep a list of them (a grid)."""
  separator = SWEEPABLE[name][1]
  flags.DEFINE_string(name, str(default), f'{help_text} In a sweep, a list ("{separator}"-'
                      'separated) trains every value: a grid.', flag_values=flag_values)


def define_training_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the flags that set a TrainConfig (all but --seed, which differs per entry point)."""
  _define_number('epochs', _DEFAULTS.epochs, 'Passes over the training set.', flag_values,
                 flags.IntegerParser(lower_bound=None))
  _define_sweepable('batch_size', _DEFAULTS.batch_size, 'Examples per optimizer step.',
                    flag_values)
  _define_sweepable('learning_rate', _DEFAULTS.learning_rate, 'Adam learning rate (the peak '
                    'of a schedule).', flag_values)
  _define_sweepable('hidden_sizes', ','.join(map(str, _DEFAULTS.hidden_sizes)),
                    'Comma-separated widths of the hidden layers.', flag_values)
  _define_number('init_seed', None, 'If set, draw the initial parameters from this seed '
                 'instead of --seed.', flag_values, flags.IntegerParser())
  _define_number('data_seed', None, 'If set, draw the data order from this seed instead of '
                 '--seed.', flag_values, flags.IntegerParser())
  flags.DEFINE_string('data_dir', None, 'Directory with the four MNIST IDX files (gzipped '
                      'or raw). Default: the copy bundled with mlp_jax.', flag_values=flag_values)
  _define_sweepable('model', _DEFAULTS.model, f'Network: {" or ".join(MODELS)}.',
                    flag_values)
  _define_sweepable('dropout', _DEFAULTS.dropout, 'Dropout rate in [0, 1) (0: none).',
                    flag_values)
  flags.DEFINE_bool('batch_norm', _DEFAULTS.batch_norm, 'Batch normalisation before each '
                    'ReLU.', flag_values=flag_values)
  flags.DEFINE_bool('augment', _DEFAULTS.augment, 'Random shifts of up to 2 pixels of the '
                    'training images, drawn inside the compiled epoch.', flag_values=flag_values)
  _define_sweepable('lr_schedule', _DEFAULTS.lr_schedule,
                    f'Learning-rate schedule: {", ".join(LR_SCHEDULES)}.', flag_values)
  flags.DEFINE_string('dataset', _DEFAULTS.dataset, 'mnist (the bundled canonical files) or '
                      'a TFDS dataset of 28x28x1 images: fashion_mnist, kmnist, emnist/digits, '
                      '...', flag_values=flag_values)
  flags.DEFINE_string('tfds_data_dir', None, 'Where TFDS datasets are prepared (default: '
                      'TFDS\'s own, $TFDS_DATA_DIR or ~/tensorflow_datasets).',
                      flag_values=flag_values)
  flags.DEFINE_string('vmap_width', 'auto', 'Seeds vectorised together with jax.vmap, a '
                      'number or auto: on a GPU/TPU every seed of a chunk at once (as many as '
                      'fit in memory), on a CPU 1 (seeds one after another). A seed\'s numbers '
                      'depend on the width, never on its neighbours: --seed=k --vmap_width=W '
                      'replays seed k of a width-W sweep bit for bit.', flag_values=flag_values)
  flags.DEFINE_enum('matmul_precision', _DEFAULTS.matmul_precision, MATMUL_PRECISIONS,
                    'Precision of float32 matrix products: default (the backend\'s: TF32 on '
                    'recent NVIDIA GPUs), high, or highest (full float32).',
                    flag_values=flag_values)


def define_run_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the flags of how a run is carried out (RunOptions), which change no number."""
  flags.DEFINE_string('checkpoint_every', 'auto', 'Save a checkpoint every N epochs (and '
                      'after the last); 0: none; auto: as often as costs at most ~2% of '
                      'training (asynchronous saves, see the README).',
                      flag_values=flag_values)
  flags.DEFINE_integer('keep_checkpoints', _RUN_DEFAULTS.keep_checkpoints,
                       'How many of the newest checkpoints to keep per chunk of seeds.',
                       flag_values=flag_values)
  flags.DEFINE_string('chunk_size', 'auto', 'Seeds held on the devices and trained by one '
                      'program at a time (memory bound; changes no result); auto: on a GPU/TPU '
                      'one vmap group per device, on a CPU %d.' % CPU_CHUNK_SIZE,
                      flag_values=flag_values)
  flags.DEFINE_bool('tensorboard', _RUN_DEFAULTS.tensorboard, 'Write TensorBoard event files '
                    '(tensorboard/ in each run directory, and the mean in a sweep\'s).',
                    flag_values=flag_values)
  flags.DEFINE_bool('deterministic', True, 'Deterministic GPU execution (XLA\'s '
                    'deterministic ops, no autotuning): the same command gives the same bits in '
                    'any process; --nodeterministic may be faster. Recorded in environment.json '
                    '(xla_flags); no effect on a CPU, which is deterministic anyway.',
                    flag_values=flag_values)
  flags.DEFINE_bool('stop_on_divergence', False, 'Stop (exit 2, records kept) once a seed\'s '
                    'loss is not finite; without it a diverged seed is named once and trains on.',
                    flag_values=flag_values)
  flags.DEFINE_bool('overwrite', False, 'Start over in a workdir that holds a run with '
                    'other settings (its records and checkpoints are deleted).',
                    flag_values=flag_values)
  flags.DEFINE_string('compilation_cache_dir', None, 'JAX persistent compilation cache. '
                      'Default: $MLP_JAX_COMPILATION_CACHE or ~/.cache/mlp_jax/xla; '
                      'empty turns it off.', flag_values=flag_values)


def _auto_or_int(flag: str, text: str, minimum: int) -> Optional[int]:
  """'auto' -> None; a whole number >= minimum -> itself; else a UsageError naming the flag."""
  if text.strip() == 'auto':
    return None
  try:
    value = int(text)
  except ValueError:
    value = None
  if value is None or value < minimum:
    raise UsageError(f'--{flag} must be auto or a whole number >= {minimum}, got {text!r}')
  return value


def _sweepable_values(flag_values: flags.FlagValues) -> Dict[str, Tuple[Any, ...]]:
  """{flag: the values it lists} for every sweepable flag (one value unless a grid)."""
  return {name: parse_values(name, flag_values[name].value) for name in SWEEPABLE}


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
  return TrainConfig(
      epochs=f.epochs, seed=seed, init_seed=f.init_seed, data_seed=f.data_seed,
      data_dir=f.data_dir, batch_norm=f.batch_norm, augment=f.augment, dataset=f.dataset,
      tfds_data_dir=f.tfds_data_dir, matmul_precision=f.matmul_precision, **first).validate()


def grid_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Grid:
  """The grid the sweepable flags list (empty when each gives one value)."""
  return Grid(tuple((name, listed) for name, listed in _sweepable_values(flag_values).items()
                    if len(listed) > 1))


def run_options_from_flags(flag_values: flags.FlagValues = flags.FLAGS,
                           **entry_point_options) -> RunOptions:
  """The validated RunOptions the parsed flags describe (plus an entry point's own)."""
  f = flag_values
  return RunOptions(
      checkpoint_every=_auto_or_int('checkpoint_every', f.checkpoint_every, 0),
      keep_checkpoints=f.keep_checkpoints, overwrite=f.overwrite,
      chunk_size=_auto_or_int('chunk_size', f.chunk_size, 1),
      vmap_width=_auto_or_int('vmap_width', f.vmap_width, 1), tensorboard=f.tensorboard,
      stop_on_divergence=f.stop_on_divergence,
      **entry_point_options).validate()


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
