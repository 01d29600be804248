"""Run configuration: one frozen record of every setting a training run depends on.

`TrainConfig` is the single source of truth for what a run does. The entry points
(`mlp_jax.main`, `experiments.sweep`) build it from absl flags (`mlp_jax.flags`),
`config.json` stores it, and `load_trained` rebuilds the model from it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional, Tuple

from mlp_jax.errors import UsageError

# Size of the MNIST training set; a batch can be no larger.
MNIST_TRAIN_SIZE = 60_000
# The bundled canonical MNIST; any other --dataset name is loaded through TFDS.
BUNDLED_DATASET = 'mnist'
MODELS = ('mlp', 'cnn')
LR_SCHEDULES = ('constant', 'cosine', 'warmup_cosine')
# jax.default_matmul_precision values; 'default' leaves the backend's own (TF32 on
# recent NVIDIA GPUs, bf16 passes on TPUs, full float32 on CPUs).
MATMUL_PRECISIONS = ('default', 'high', 'highest')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting that determines the numbers a run produces.

  Attributes:
    epochs: number of passes over the training set.
    seed: the run's seed; the default source of every random choice.
    batch_size: examples per optimizer step.
    learning_rate: Adam's step size.
    hidden_sizes: widths of the MLP's hidden layers, input to output.
    init_seed: if set, the parameter initialisation comes from this seed instead
      of `seed` (a sweep uses it to hold the initialisation fixed).
    data_seed: if set, the data order comes from this seed instead of `seed`
      (a sweep uses it to hold the data order fixed).
    data_dir: directory holding the four MNIST IDX files; None means the copy
      bundled with the package.
    model: 'mlp' or 'cnn' (see mlp_jax.models).
    dropout: dropout rate in the model (0: none).
    batch_norm: batch normalisation in the model.
    augment: random shifts of up to 2 pixels of every training image, every epoch.
    lr_schedule: 'constant', 'cosine' (decay to 0 over the run) or
      'warmup_cosine' (linear warm-up over the first epoch, then cosine).
    dataset: 'mnist' (the bundled canonical files) or a TFDS dataset name of
      28x28x1 images (fashion_mnist, kmnist, emnist/digits, ...).
    tfds_data_dir: where TFDS datasets are prepared (None: TFDS's default).
    vmap_width: seeds vectorised together (jax.vmap) in one group of the
      compiled program; 1 runs seeds one after another. A seed's numbers depend
      on the width (XLA picks reduction orders by shape), never on which seeds
      share its group: a group short of seeds is padded to the full width.
    matmul_precision: precision of float32 matrix products (MATMUL_PRECISIONS).
  """

  epochs: int = 100
  seed: int = 0
  batch_size: int = 128
  learning_rate: float = 1e-3
  hidden_sizes: Tuple[int, ...] = (128, 128)
  init_seed: Optional[int] = None
  data_seed: Optional[int] = None
  data_dir: Optional[str] = None
  model: str = 'mlp'
  dropout: float = 0.0
  batch_norm: bool = False
  augment: bool = False
  lr_schedule: str = 'constant'
  dataset: str = BUNDLED_DATASET
  tfds_data_dir: Optional[str] = None
  vmap_width: int = 1
  matmul_precision: str = 'default'

  def __post_init__(self):
    # Normalise so that a config read back from JSON compares equal.
    object.__setattr__(self, 'hidden_sizes', tuple(int(h) for h in self.hidden_sizes))

  def validate(self, train_size: int = MNIST_TRAIN_SIZE) -> 'TrainConfig':
    """Raises UsageError naming the flag of the first invalid setting."""
    if self.epochs < 1:
      raise UsageError(f'--epochs must be at least 1, got {self.epochs}')
    if self.batch_size < 1:
      raise UsageError(f'--batch_size must be at least 1, got {self.batch_size}')
    if self.batch_size > train_size:
      raise UsageError(f'--batch_size={self.batch_size} is larger than the training set '
                       f'({train_size} examples)')
    if not self.learning_rate > 0:  # also rejects NaN
      raise UsageError(f'--learning_rate must be positive, got {self.learning_rate}')
    if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
      raise UsageError('--hidden_sizes must be a comma-separated list of positive '
                       f'integers, got {",".join(map(str, self.hidden_sizes)) or "nothing"}')
    if self.model not in MODELS:
      raise UsageError(f'--model must be one of {", ".join(MODELS)}, got {self.model!r}')
    if not 0 <= self.dropout < 1:  # also rejects NaN
      raise UsageError(f'--dropout must be in [0, 1), got {self.dropout}')
    if self.lr_schedule not in LR_SCHEDULES:
      raise UsageError(f'--lr_schedule must be one of {", ".join(LR_SCHEDULES)}, '
                       f'got {self.lr_schedule!r}')
    if self.dataset != BUNDLED_DATASET and self.data_dir is not None:
      raise UsageError(f'--data_dir reads the MNIST IDX files; with --dataset={self.dataset} '
                       'use --tfds_data_dir')
    if self.vmap_width < 1:
      raise UsageError(f'--vmap_width must be auto or at least 1, got {self.vmap_width}')
    if self.matmul_precision not in MATMUL_PRECISIONS:
      raise UsageError(f'--matmul_precision must be one of {", ".join(MATMUL_PRECISIONS)}, '
                       f'got {self.matmul_precision!r}')
    for name in ('seed', 'init_seed', 'data_seed'):
      value = getattr(self, name)
      if value is not None and not 0 <= value < 2**32:
        raise UsageError(f'--{name} must be in [0, 2**32), got {value}')
    return self

  def replace(self, **changes: Any) -> 'TrainConfig':
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['hidden_sizes'] = list(self.hidden_sizes)
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


# Seeds per chunk on a CPU when --chunk_size is auto (about 1.4 MB of state each for
# the seed config): large enough that chunking costs nothing measurable.
CPU_CHUNK_SIZE = 256


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """How seeds are run; none of it changes a number (the vmap width is resolved
  into each seed's TrainConfig, which does).

  Attributes:
    checkpoint_every: N: save every N epochs (and after the last); 0: none, so an
      interrupted run starts over; None (auto): as often as costs at most ~2% of
      the run (mlp_jax.checkpoints).
    keep_checkpoints: how many of the newest checkpoints each chunk keeps.
    overwrite: start over in a workdir that holds a run with other settings.
    chunk_size: seeds held on the devices and trained by one program at a time;
      None (auto): on a GPU/TPU the widest vmap group that fits, on a CPU 256.
    vmap_width: seeds vectorised together (see TrainConfig.vmap_width); None
      (auto): on a GPU/TPU every seed of a chunk at once (up to what fits in
      memory), on a CPU 1.
    tensorboard: write TensorBoard events (per seed; a sweep's mean too).
    seed_curves: draw each seed's curves.png in a sweep (a single run always does).
    stop_on_divergence: stop once a seed's loss is not finite (exit 2, records
      kept); else each diverged seed is named once and the run goes on.
    program_cache_dir: where traced programs are kept between processes
      (mlp_jax.program_cache); None: each process traces its own. The entry
      points keep them beside the compilation cache
      (environment.program_cache_dir).
  """
  checkpoint_every: Optional[int] = None
  keep_checkpoints: int = 3
  overwrite: bool = False
  chunk_size: Optional[int] = None
  vmap_width: Optional[int] = None
  tensorboard: bool = True
  seed_curves: bool = False
  stop_on_divergence: bool = False
  program_cache_dir: Optional[str] = None

  def replace(self, **changes: Any) -> 'RunOptions':
    return dataclasses.replace(self, **changes)

  def validate(self) -> 'RunOptions':
    if self.checkpoint_every is not None and self.checkpoint_every < 0:
      raise UsageError(f'--checkpoint_every must be auto, 0 (off) or more, got '
                       f'{self.checkpoint_every}')
    if self.keep_checkpoints < 1:
      raise UsageError(f'--keep_checkpoints must be at least 1, got {self.keep_checkpoints}')
    if self.chunk_size is not None and self.chunk_size < 1:
      raise UsageError(f'--chunk_size must be auto or at least 1, got {self.chunk_size}')
    if self.vmap_width is not None and self.vmap_width < 1:
      raise UsageError(f'--vmap_width must be auto or at least 1, got {self.vmap_width}')
    return self
