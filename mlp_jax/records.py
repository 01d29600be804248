"""What a run writes in its workdir, and reading it back.

    config.json       every resolved setting (TrainConfig)
    environment.json  where it ran (see mlp_jax.environment)
    history.csv       one row per finished epoch, flushed as the epoch ends
    params.msgpack    the trained parameters (flax msgpack)
    timing.json       start-up, compile and total wall times
    curves.png        accuracy and loss per epoch

Every file but history.csv is written whole to a temporary name and renamed, so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Dict, List, Mapping, Sequence

import jax
import numpy as np
from flax import serialization

from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError

CONFIG_FILE = 'config.json'
ENVIRONMENT_FILE = 'environment.json'
HISTORY_FILE = 'history.csv'
PARAMS_FILE = 'params.msgpack'
TIMING_FILE = 'timing.json'
CURVES_FILE = 'curves.png'

METRIC_COLUMNS = ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy')
TIMING_COLUMNS = ('epoch_seconds', 'eval_seconds')
HISTORY_COLUMNS = ('epoch',) + METRIC_COLUMNS + TIMING_COLUMNS


def format_metric(value: Any) -> str:
  """The shortest decimal that reads back to the same value: float32 losses as
  float32 (0.09227577), exact accuracies as float64 (0.9676)."""
  if isinstance(value, (np.float32, float)):
    return str(value)
  raise TypeError(f'metric of unexpected type {type(value).__name__}')


def history_row(epoch: int, metrics: Mapping[str, Any], epoch_seconds: float,
                eval_seconds: float) -> Dict[str, str]:
  """One history.csv row as strings; metrics are float32 scalars."""
  row = {'epoch': str(epoch)}
  row.update({name: format_metric(metrics[name]) for name in METRIC_COLUMNS})
  row.update(epoch_seconds=repr(float(epoch_seconds)), eval_seconds=repr(float(eval_seconds)))
  return row


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file and a rename."""
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode())


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _csv_text(rows: Sequence[Mapping[str, str]], header: bool,
              fieldnames: Sequence[str] = HISTORY_COLUMNS) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator='\n')
  if header:
    writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


def append_history(path: str, row: Mapping[str, str]) -> None:
  """Appends one row (writing the header first if the file is new), flushed to disk."""
  new = not os.path.exists(path) or os.path.getsize(path) == 0
  with open(path, 'a') as f:
    f.write(_csv_text([row], header=new))
    f.flush()
    os.fsync(f.fileno())


def write_history(path: str, rows: Sequence[Mapping[str, str]]) -> None:
  """Writes a whole history.csv (header and rows) atomically."""
  write_bytes_atomic(path, _csv_text(rows, header=True).encode())


def write_csv(path: str, rows: Sequence[Mapping[str, str]]) -> None:
  """Writes rows of strings (columns from the first row) as a CSV file, atomically."""
  write_bytes_atomic(path, _csv_text(rows, header=True, fieldnames=list(rows[0])).encode())


def read_history(path: str) -> List[Dict[str, str]]:
  """history.csv as a list of rows, each a dict of column -> string."""
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def history_columns(rows: Sequence[Mapping[str, str]]) -> Dict[str, np.ndarray]:
  """Rows -> {column: float64 array}, the form plots and statistics want."""
  if not rows:
    return {c: np.zeros(0) for c in HISTORY_COLUMNS}
  return {c: np.array([float(r[c]) for r in rows]) for c in rows[0]}


def save_params(path: str, variables: Any) -> None:
  """Writes trained variables ({'params': ..., 'batch_stats': ...}) as flax msgpack."""
  write_bytes_atomic(path, serialization.msgpack_serialize(jax.tree.map(np.asarray, variables)))


def load_params(path: str) -> Dict[str, Any]:
  """Reads what save_params wrote: the variables as nested dicts of numpy arrays."""
  with open(path, 'rb') as f:
    return serialization.msgpack_restore(f.read())


def load_config(workdir: str) -> TrainConfig:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UsageError(f'{workdir}: not a run directory (no {CONFIG_FILE})')
  try:
    return TrainConfig.from_dict(read_json(path))
  except (ValueError, TypeError) as e:
    raise UsageError(f'{path}: unreadable config ({e})') from None
