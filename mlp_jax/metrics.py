"""The metrics a run records, listed once: every writer and reader takes them from here.

A metric is one entry of `METRICS`: its history.csv column, the split of images
it is measured on and its kind. The compiled programs compute each kind on each
split (mlp_jax.train), the metrics log of a checkpoint and the records sink keep
one column per metric (`log_column`), history.csv, TensorBoard, plots, the
sweep summaries and experiments.compare read the names from here.

Adding a metric is one entry below plus its computation (the value of its kind
among those `train.by_kind` is given, for the training steps and for evaluation). Old checkpoints keep restoring: a run records the metrics of
the splits it has (`recorded`), in the order of `METRICS`, so a run without a
validation split keeps the metrics log and history.csv it always had.

This module does not import jax: tools that only read records load it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence, Tuple

import numpy as np

TRAIN, TEST, VALIDATION = 'train', 'test', 'validation'
LOSS, ACCURACY = 'loss', 'accuracy'


@dataclasses.dataclass(frozen=True)
class Metric:
  """One recorded number per epoch and seed.

  Attributes:
    name: its history.csv column ('test_accuracy').
    split: the images it is measured on: TRAIN (during the epoch's steps, in
      training mode), TEST or VALIDATION (after the epoch, in evaluation mode).
    kind: LOSS (mean cross-entropy, float32, written as the shortest decimal that
      reads back to it) or ACCURACY (an exact fraction: the device counts correct
      predictions, the host divides by the split's size).
  """
  name: str
  split: str
  kind: str

  @property
  def log_column(self) -> str:
    """Its column of the metrics log and of the device's metrics: a loss as is,
    an accuracy as the count of correct predictions ('test_correct')."""
    return f'{self.split}_correct' if self.kind == ACCURACY else self.name

  @property
  def tag(self) -> str:
    """Its TensorBoard tag: the kind is the section, so a quantity's splits share one."""
    return f'{self.kind}/{self.split}'

  def cell(self, logged: float, examples: int) -> str:
    """Its history.csv cell from the logged value: a loss as the shortest decimal of
    the float32 ('0.09227577'), an accuracy exactly (9520 of 10,000 is '0.952')."""
    if self.kind == ACCURACY:
      return str(int(logged) / examples)
    return str(np.float32(logged))

  def values(self, logged: np.ndarray, examples: int) -> np.ndarray:
    """float64[seeds] from the logged column (for TensorBoard and the console)."""
    values = np.asarray(logged).astype(np.float64)
    return values / examples if self.kind == ACCURACY else values


# Every metric a run may record, in history.csv's column order.
METRICS: Tuple[Metric, ...] = (
    Metric('train_loss', TRAIN, LOSS),
    Metric('train_accuracy', TRAIN, ACCURACY),
    Metric('test_loss', TEST, LOSS),
    Metric('test_accuracy', TEST, ACCURACY),
    Metric('validation_loss', VALIDATION, LOSS),
    Metric('validation_accuracy', VALIDATION, ACCURACY),
)
BY_NAME = {m.name: m for m in METRICS}
# The splits every run has; VALIDATION only with --validation_size.
DEFAULT_SPLITS = (TRAIN, TEST)
# Splits evaluated after each epoch (in evaluation mode), in the order they run.
EVALUATED_SPLITS = (TEST, VALIDATION)
# Seconds of the epoch's compiled calls, recorded beside the metrics (never compared).
TIMING_COLUMNS = ('epoch_seconds', 'eval_seconds')


def recorded(splits: Iterable[str] = DEFAULT_SPLITS) -> Tuple[Metric, ...]:
  """The metrics of a run with these splits, in the order of METRICS."""
  splits = set(splits)
  return tuple(m for m in METRICS if m.split in splits)


def splits_of(validation_size: int) -> Tuple[str, ...]:
  """The splits of a run holding out `validation_size` training images."""
  return DEFAULT_SPLITS + ((VALIDATION,) if validation_size else ())


def log_columns(metrics: Sequence[Metric]) -> Tuple[str, ...]:
  """The metrics log's columns (float32; counts below 2**24 are exact): one per
  metric, then the timing."""
  return tuple(m.log_column for m in metrics) + TIMING_COLUMNS


def in_columns(columns: Iterable[str]) -> Tuple[Metric, ...]:
  """The metrics among `columns` (a history.csv header), in the order of METRICS."""
  present = set(columns)
  return tuple(m for m in METRICS if m.name in present)


def names(metrics: Sequence[Metric]) -> Tuple[str, ...]:
  return tuple(m.name for m in metrics)


def values(metrics: Sequence[Metric], logged: Mapping[str, np.ndarray],
           examples: Mapping[str, int]) -> dict:
  """{name: float64[seeds]} of `metrics` from logged columns ({log_column: [seeds]})
  and each split's number of examples."""
  return {m.name: m.values(logged[m.log_column], examples.get(m.split, 1)) for m in metrics}
