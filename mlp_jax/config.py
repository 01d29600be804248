"""Every setting, once: the table the flags, the configs and their checks come from.

`SETTINGS` is the one place a setting is declared: its name (the flag's and the
field's), type, default, help, check, whether a sweep may list several values of
it (a grid, mlp_jax.grid) and whether it is an input of the compiled program
(train.TRACED_SETTINGS). From it come

- `TrainConfig`, the frozen record of every setting that decides the numbers a run
  produces (`config.json` stores it, `load_trained` rebuilds the model from it);
- `RunOptions`, how a run is carried out, which changes no number;
- the absl flags of every entry point (mlp_jax.flags) and their validation.

This module imports neither jax nor absl: entry points parse and check their
flags before the heavy imports.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from mlp_jax.errors import UsageError

# Size of the MNIST training set; a batch can be no larger.
MNIST_TRAIN_SIZE = 60_000
# The bundled canonical MNIST; any other --dataset name is loaded through TFDS.
BUNDLED_DATASET = 'mnist'
LR_SCHEDULES = ('constant', 'cosine', 'warmup_cosine')
# jax.default_matmul_precision values; 'default' leaves the backend's own (TF32 on
# recent NVIDIA GPUs, bf16 passes on TPUs, full float32 on CPUs).
MATMUL_PRECISIONS = ('default', 'high', 'highest')
# Seeds per chunk on a CPU when --chunk_size is auto (about 1.4 MB of state each for
# the seed config): large enough that chunking costs nothing measurable.
CPU_CHUNK_SIZE = 256

# The model registry: --model's values, each the flax module that builds it, as
# 'module:Class' (imported on first use: this module stays free of jax) or the
# class itself (register_model). The class builds itself from a config with
# `from_config(config, num_classes)` and names itself with `title(config)`
# (mlp_jax.models).
MODELS: Dict[str, Union[str, type]] = {
    'mlp': 'mlp_jax.models:MLP',
    'cnn': 'mlp_jax.models:CNN',
}


def register_model(name: str, model: Union[str, type]) -> None:
  """Adds --model=`name`: `model` is a flax module class (or 'module:Class') with
  `from_config(config, num_classes)` and `title(config)`."""
  MODELS[name] = model


# Checks: (flag name, value) -> the message of what is wrong, or None.
Check = Callable[[str, Any], Optional[str]]


def at_least(minimum: int, auto: bool = False) -> Check:
  """A check that the value is at least `minimum` (`auto`: the flag also takes auto)."""
  shown = 'auto or at least' if auto else 'at least'
  return lambda name, v: (f'--{name} must be {shown} {minimum}, got {v}'
                          if v < minimum else None)


def _positive(name: str, value: float) -> Optional[str]:
  if not value > 0:  # also rejects NaN
    return f'--{name} must be positive, got {value}'
  return None


def _rate(name: str, value: float) -> Optional[str]:
  if not 0 <= value < 1:  # also rejects NaN
    return f'--{name} must be in [0, 1), got {value}'
  return None


def _sizes(name: str, value: Tuple[int, ...]) -> Optional[str]:
  if not value or any(h < 1 for h in value):
    return (f'--{name} must be a comma-separated list of positive integers, got '
            f'{",".join(map(str, value)) or "nothing"}')
  return None


def _seed(name: str, value: int) -> Optional[str]:
  if not 0 <= value < 2**32:
    return f'--{name} must be in [0, 2**32), got {value}'
  return None


def one_of(choices: Union[Sequence[str], Callable[[], Sequence[str]]]) -> Check:
  """A check that the value is one of `choices` (or of what a callable gives then)."""
  def check(name: str, value: str) -> Optional[str]:
    allowed = list(choices() if callable(choices) else choices)
    if value not in allowed:
      return f'--{name} must be one of {", ".join(allowed)}, got {value!r}'
    return None
  return check


@dataclasses.dataclass(frozen=True)
class Sweep:
  """How a sweep lists several values of a setting (a grid).

  Attributes:
    order: the grid's axes (and so its point directories) nest in this order.
    separator: between values: ',' but for settings whose one value holds commas.
  """
  order: int
  separator: str = ','


@dataclasses.dataclass(frozen=True)
class Setting:
  """One row of SETTINGS.

  Attributes:
    name: the flag's name and the field's.
    type: int, float, str, bool or tuple (comma-separated positive ints).
    default: the field's default (None: unset); its flag's default too, but
      'auto' for an `auto` setting.
    help: the flag's help (a callable: computed when the flag is defined).
    of: 'train' (a TrainConfig field: changes the numbers) or 'run' (a
      RunOptions field: changes none).
    flag: which entry points define the flag: 'all' (every one that trains,
      mlp_jax.flags.define_training_flags / define_run_flags), 'main' or
      'sweep' (that entry point alone), '' (no flag: set in code).
    check: the value's check (not applied to None); its message names the flag.
    choices: the flag accepts only these (absl's enum flag).
    auto: the flag also takes 'auto', which is None in the field.
    sweep: a sweep may list several values (a grid), and how.
    traced: an input of the compiled program rather than part of it (learning
      rate, dropout rate): grid points differing only in it share one program.
  """
  name: str
  type: type
  default: Any
  help: Union[str, Callable[[], str]]
  of: str = 'train'
  flag: str = 'all'
  check: Optional[Check] = None
  choices: Tuple[str, ...] = ()
  auto: bool = False
  sweep: Optional[Sweep] = None
  traced: bool = False

  @property
  def help_text(self) -> str:
    return self.help() if callable(self.help) else self.help


# The rows, TrainConfig's in its field order (its repr keys traced programs in
# mlp_jax.program_cache), then RunOptions'.
SETTINGS: Tuple[Setting, ...] = (
    Setting('epochs', int, 100, 'Passes over the training set.', check=at_least(1)),
    Setting('seed', int, 0, 'The run\'s seed: initialisation and data order.', flag='main',
            check=_seed),
    Setting('batch_size', int, 128, 'Examples per optimizer step.', check=at_least(1),
            sweep=Sweep(3)),
    Setting('learning_rate', float, 1e-3, 'Adam learning rate (the peak of a schedule).',
            check=_positive, sweep=Sweep(1), traced=True),
    Setting('hidden_sizes', tuple, (128, 128), 'Comma-separated widths of the hidden layers.',
            check=_sizes, sweep=Sweep(4, '/')),
    Setting('init_seed', int, None, 'If set, draw the initial parameters from this seed '
            'instead of --seed.', check=_seed),
    Setting('data_seed', int, None, 'If set, draw the data order from this seed instead of '
            '--seed.', check=_seed),
    Setting('data_dir', str, None, 'Directory with the four MNIST IDX files (gzipped or raw). '
            'Default: the copy bundled with mlp_jax.'),
    Setting('model', str, 'mlp', lambda: f'Network: {" or ".join(MODELS)}.',
            check=one_of(lambda: MODELS), sweep=Sweep(5)),
    Setting('dropout', float, 0.0, 'Dropout rate in [0, 1) (0: none).', check=_rate,
            sweep=Sweep(2), traced=True),
    Setting('batch_norm', bool, False, 'Batch normalisation before each ReLU.'),
    Setting('augment', bool, False, 'Random shifts of up to 2 pixels of the training images, '
            'drawn inside the compiled epoch.'),
    Setting('lr_schedule', str, 'constant',
            f'Learning-rate schedule: {", ".join(LR_SCHEDULES)}.', check=one_of(LR_SCHEDULES),
            sweep=Sweep(6)),
    Setting('dataset', str, BUNDLED_DATASET, 'mnist (the bundled canonical files) or a TFDS '
            'dataset of 28x28x1 images: fashion_mnist, kmnist, emnist/digits, ...'),
    Setting('tfds_data_dir', str, None, 'Where TFDS datasets are prepared (default: TFDS\'s '
            'own, $TFDS_DATA_DIR or ~/tensorflow_datasets).'),
    # The width a run resolved (RunOptions.vmap_width is what was asked for): a seed's
    # numbers depend on it (XLA picks reduction orders by shape), never on which seeds
    # share its group.
    Setting('vmap_width', int, 1, 'Seeds vectorised together in one group of the compiled '
            'program.', flag='', check=at_least(1, auto=True)),
    Setting('matmul_precision', str, 'default', 'Precision of float32 matrix products: default '
            '(the backend\'s: TF32 on recent NVIDIA GPUs), high, or highest (full float32).',
            check=one_of(MATMUL_PRECISIONS), choices=MATMUL_PRECISIONS),
    Setting('validation_size', int, 0, 'Training images held out as a validation split, '
            'evaluated after every epoch like the test set (history.csv gains validation_loss '
            'and validation_accuracy) and used by a sweep to rank grid points and pick best '
            'epochs. The same images for every seed, point and process (a fixed permutation, '
            'independent of --seed); 0: none, every training image is trained on.',
            check=at_least(0)),
    # SHA-256 of the held-out indices (mlp_jax.data.hold_out), filled in by the driver
    # once the data is loaded, so config.json records which images were held out.
    Setting('validation_sha256', str, None, 'SHA-256 of the held-out training indices.',
            flag=''),

    Setting('checkpoint_every', int, None, 'Save a checkpoint every N epochs (and after the '
            'last); 0: none; auto: as often as costs at most ~2% of training (asynchronous '
            'saves).', of='run', auto=True,
            check=lambda name, v: (f'--{name} must be auto, 0 (off) or more, got {v}'
                                   if v < 0 else None)),
    Setting('keep_checkpoints', int, 3, 'How many of the newest checkpoints to keep per chunk '
            'of seeds.', of='run', check=at_least(1)),
    Setting('overwrite', bool, False, 'Start over in a workdir that holds a run with other '
            'settings (its records and checkpoints are deleted).', of='run'),
    Setting('chunk_size', int, None, 'Seeds held on the devices and trained by one program at '
            'a time (memory bound; changes no result); auto: on a GPU/TPU one vmap group per '
            f'device, on a CPU {CPU_CHUNK_SIZE}.', of='run', auto=True,
            check=at_least(1, auto=True)),
    Setting('vmap_width', int, None, 'Seeds vectorised together with jax.vmap, a number or '
            'auto: on a GPU/TPU every seed of a chunk at once (as many as fit in memory), on a '
            'CPU 1 (seeds one after another). A seed\'s numbers depend on the width, never on '
            'its neighbours: --seed=k --vmap_width=W replays seed k of a width-W sweep bit for '
            'bit.', of='run', auto=True, check=at_least(1, auto=True)),
    Setting('tensorboard', bool, True, 'Write TensorBoard event files (tensorboard/ in each run '
            'directory, and the mean in a sweep\'s).', of='run'),
    Setting('tensorboard_members', bool, False, 'In a sweep of more than 64 seeds per grid '
            'point, still write every member\'s TensorBoard scalars and HParams run (by default '
            'such a sweep writes each point\'s mean and one HParams run per point: TensorBoard '
            'slows down at a few hundred runs).', of='run'),
    Setting('seed_curves', bool, False, 'Also draw each seed\'s curves.png (after training, in '
            'parallel processes); the sweep\'s own curves.png is always drawn.', of='run',
            flag='sweep'),
    Setting('target_difference', float, None, 'A difference of final accuracy (e.g. 0.001: '
            'a tenth of a point) the sweep should be able to detect: its summary then says how '
            'many seeds detect it (80% power, alpha 0.05, paired across grid points) at the '
            'spread the seeds showed.', of='run', flag='sweep', check=_positive),
    Setting('stop_on_divergence', bool, False, 'Stop (exit 2, records kept) once a seed\'s '
            'loss is not finite; without it a diverged seed is named once and trains on.',
            of='run'),
    # Set by the entry points beside the compilation cache (environment.program_cache_dir);
    # None: each process traces its own programs (mlp_jax.program_cache).
    Setting('program_cache_dir', str, None, 'Where traced programs are kept between '
            'processes.', of='run', flag=''),
    Setting('deterministic', bool, True, 'Deterministic GPU execution (XLA\'s deterministic '
            'ops, no autotuning): the same command gives the same bits in any process; '
            '--nodeterministic may be faster. Recorded in environment.json (xla_flags); no '
            'effect on a CPU, which is deterministic anyway.', of='run'),
    Setting('compilation_cache_dir', str, None, 'JAX persistent compilation cache. Default: '
            '$MLP_JAX_COMPILATION_CACHE or ~/.cache/mlp_jax/xla; empty turns it off.',
            of='run'),
)


def settings_of(of: str) -> Tuple[Setting, ...]:
  """The rows of TrainConfig ('train') or RunOptions ('run'), in field order."""
  return tuple(s for s in SETTINGS if s.of == of)


def setting(name: str, of: Optional[str] = None) -> Setting:
  """The row of flag `name` (of TrainConfig's or RunOptions' if `of` is given; the
  row with a flag first: vmap_width is both)."""
  rows = [s for s in SETTINGS if s.name == name and (of is None or s.of == of)]
  if not rows:
    raise KeyError(name)
  return sorted(rows, key=lambda s: not s.flag)[0]


# The settings a sweep can list several values of, in the order the grid nests them.
SWEEPABLE: Tuple[str, ...] = tuple(
    s.name for s in sorted((s for s in SETTINGS if s.sweep), key=lambda s: s.sweep.order))
# The settings that are inputs of the compiled program (train.TRACED_SETTINGS).
TRACED_SETTINGS: Tuple[str, ...] = tuple(s.name for s in SETTINGS if s.traced)


def _annotation(row: Setting) -> Any:
  kind = Tuple[int, ...] if row.type is tuple else row.type
  return Optional[kind] if row.default is None else kind


def _fields(of: str) -> list:
  return [(s.name, _annotation(s), dataclasses.field(default=s.default)) for s in settings_of(of)]


def _check_rows(values: Any, of: str) -> None:
  """Raises UsageError with the first failing check of `values`' fields, in field order."""
  for row in settings_of(of):
    value = getattr(values, row.name)
    if row.check is not None and value is not None:
      message = row.check(row.name, value)
      if message:
        raise UsageError(message)


# Fields config.json holds only when they differ from these values: a run without a
# validation split writes (and compares equal to) the config.json it always had, and
# one of a version before the split reads back with none.
WRITTEN_WHEN_SET = {'validation_size': 0, 'validation_sha256': None}

_TrainFields = dataclasses.make_dataclass('_TrainFields', _fields('train'), frozen=True)
_RunFields = dataclasses.make_dataclass('_RunFields', _fields('run'), frozen=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig(_TrainFields):
  """Every setting that determines the numbers a run produces: a field per row of
  SETTINGS of 'train' (see each row's help; `seed` is the default source of every
  random choice, `vmap_width` the width the run resolved)."""

  def __post_init__(self):
    # Normalise so that a config read back from JSON compares equal.
    object.__setattr__(self, 'hidden_sizes', tuple(int(h) for h in self.hidden_sizes))

  def validate(self, train_size: int = MNIST_TRAIN_SIZE) -> 'TrainConfig':
    """Raises UsageError naming the flag of the first invalid setting."""
    _check_rows(self, 'train')
    if self.validation_size and self.validation_size >= train_size:
      raise UsageError(f'--validation_size={self.validation_size} must be smaller than the '
                       f'training set of --dataset={self.dataset} ({train_size} images)')
    if self.batch_size > train_size - self.validation_size:
      if self.validation_size:
        raise UsageError(f'--validation_size={self.validation_size} leaves '
                         f'{train_size - self.validation_size} of the {train_size} training '
                         f'images of --dataset={self.dataset}, fewer than one batch '
                         f'(--batch_size={self.batch_size})')
      raise UsageError(f'--batch_size={self.batch_size} is larger than the training set '
                       f'({train_size} examples)')
    if self.dataset != BUNDLED_DATASET and self.data_dir is not None:
      raise UsageError(f'--data_dir reads the MNIST IDX files; with --dataset={self.dataset} '
                       'use --tfds_data_dir')
    return self

  def replace(self, **changes: Any) -> 'TrainConfig':
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['hidden_sizes'] = list(self.hidden_sizes)
    for name, unset in WRITTEN_WHEN_SET.items():
      if d[name] == unset:
        del d[name]
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> 'TrainConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise UsageError(f'config has unknown settings: {", ".join(unknown)}')
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n'


@dataclasses.dataclass(frozen=True)
class RunOptions(_RunFields):
  """How seeds are run, from the entry point to the driver; none of it changes a
  number (the vmap width is resolved into each seed's TrainConfig, which does). A
  field per row of SETTINGS of 'run'; None for an `auto` one: the machine decides
  (mlp_jax.run resolves it; the driver gets a concrete chunk_size)."""

  def replace(self, **changes: Any) -> 'RunOptions':
    return dataclasses.replace(self, **changes)

  def validate(self) -> 'RunOptions':
    _check_rows(self, 'run')
    return self


def parse_hidden_sizes(text: str) -> Tuple[int, ...]:
  """'128,128' -> (128, 128); raises UsageError on anything but positive integers."""
  parts = [p.strip() for p in text.split(',')]
  try:
    sizes = tuple(int(p) for p in parts)
  except ValueError:
    sizes = ()
  if not sizes or any(s < 1 for s in sizes):
    raise UsageError(f'--hidden_sizes must be a comma-separated list of positive '
                     f'integers, got {text!r}')
  return sizes
