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
  """

  epochs: int = 100
  seed: int = 0
  batch_size: int = 128
  learning_rate: float = 1e-3
  hidden_sizes: Tuple[int, ...] = (128, 128)
  init_seed: Optional[int] = None
  data_seed: Optional[int] = None
  data_dir: Optional[str] = None

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
