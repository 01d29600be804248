"""The on-disk layout of runs and sweeps: every file name, every writer, the only readers.

A run directory (`python -m mlp_jax.main`, or `seed_<k>/` of a sweep):

    .mlp_jax.json     the marker, written first: mlp_jax made this folder, for these
                      settings (mlp_jax.workdir.claim)
    config.json       every resolved setting (TrainConfig)
    environment.json  where it ran (see mlp_jax.environment)
    history.csv       one row per finished epoch
    params.msgpack    the trained parameters (flax msgpack); written last: it
                      and a history.csv of every epoch mark the run complete
    curves.png        accuracy and loss per epoch (a single run; a sweep's seeds
                      on request)
    tensorboard/      TensorBoard event files (unless turned off)
    timing.json       start-up, training, evaluation, host work and total seconds
                      (a single run; a sweep has one for all its seeds)
    checkpoints/      a single run's checkpoints (mlp_jax.checkpoints)

A sweep directory (`python -m experiments.sweep`):

    .mlp_jax.json                  the marker, as above
    sweep.json, environment.json   the sweep's settings (and grid) and where it ran
    seed_<k>/                      a run directory per seed; in a grid, per point:
    <flag>=<value>/.../seed_<k>/   (mlp_jax.grid)
    summary.csv, final.csv         statistics over the seeds (per grid point, with a
                                   column per swept setting)
    points.csv                     per grid point: final test accuracy (mean, std,
                                   95% CI), rank, Welch's test against the best, and
                                   the ensemble of its seeds (a sweep without a grid
                                   is one point)
    variance.csv                   a crossed design's (init_seed=<i>/seed_<j>/):
                                   variance components of final test accuracy
    curves.png, tensorboard/       mean and 95% band (per point); the mean per epoch
    timing.json, checkpoints/      as above, for all the seeds

This module imports neither jax nor flax (params are (de)serialised with flax
imported on first use), so tools that only read records (experiments.compare)
stay light. Every file but history.csv is written whole to a temporary name
and renamed, so a crash leaves either the old file or the new one. history.csv
is appended to without fsync: a checkpoint holds the metrics of every epoch it
covers, and a resume rewrites the rows from it, so nothing a checkpoint covers
can be lost or garbled.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from mlp_jax import metrics as metric_spec
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.grid import point_name

CONFIG_FILE = 'config.json'
ENVIRONMENT_FILE = 'environment.json'
HISTORY_FILE = 'history.csv'
PARAMS_FILE = 'params.msgpack'
TIMING_FILE = 'timing.json'
CURVES_FILE = 'curves.png'
CHECKPOINT_DIR = 'checkpoints'
TENSORBOARD_DIR = 'tensorboard'
SWEEP_FILE = 'sweep.json'
SUMMARY_FILE = 'summary.csv'
FINAL_FILE = 'final.csv'
POINTS_FILE = 'points.csv'
VARIANCE_FILE = 'variance.csv'  # a crossed design's (mlp_jax.crossed)
SEED_DIR = 'seed_{}'
# The mark of a folder mlp_jax made (mlp_jax.workdir.claim): what made it, and the
# settings it was made for.
MARKER_FILE = '.mlp_jax.json'

EPOCH_COLUMN = 'epoch'
# The metric columns of a run without a validation split (mlp_jax.metrics lists them all).
METRIC_COLUMNS = metric_spec.names(metric_spec.recorded())
TIMING_SUFFIX = '_seconds'
TIMING_COLUMNS = metric_spec.TIMING_COLUMNS
HISTORY_COLUMNS = (EPOCH_COLUMN,) + METRIC_COLUMNS + TIMING_COLUMNS
# final.csv's column naming the first epoch with a non-finite loss (empty: none).
DIVERGED_COLUMN = 'diverged_at_epoch'

# What a run and a sweep write at their top level, removed by --overwrite (nothing else;
# the marker stays, rewritten for the new settings).
RUN_ENTRIES = (CONFIG_FILE, ENVIRONMENT_FILE, HISTORY_FILE, PARAMS_FILE, TIMING_FILE,
               CURVES_FILE, TENSORBOARD_DIR, CHECKPOINT_DIR)
SWEEP_ENTRIES = (SWEEP_FILE, ENVIRONMENT_FILE, SUMMARY_FILE, FINAL_FILE, POINTS_FILE,
                 VARIANCE_FILE, CURVES_FILE, TENSORBOARD_DIR, TIMING_FILE, CHECKPOINT_DIR)


# What one run directory's records take, for planning a sweep (measured on the default
# MLP; rounded up): the small files, a history row, a TensorBoard epoch, curves.png.
SMALL_RECORDS_BYTES = (1024, 1024, 3072)  # the marker, config.json, environment.json
HISTORY_ROW_BYTES = 120
TENSORBOARD_EPOCH_BYTES = 300
CURVES_BYTES = 40_000
# A chunk checkpoint holds per seed about this many times its parameters (the
# optimizer's state and the metrics log beside them: 2.7x measured with Adam).
CHECKPOINT_PARAMS_FACTOR = 3


def footprint(params_bytes: int, epochs: int, block: int, curves: bool, tensorboard: bool
              ) -> Tuple[int, int]:
  """(bytes on disk, files) of one finished run directory of a sweep, each file
  rounded up to whole blocks of the filesystem's `block` bytes."""
  whole = lambda n: -(-n // block) * block
  sizes = [*SMALL_RECORDS_BYTES, HISTORY_ROW_BYTES * (epochs + 1), params_bytes]
  if curves:
    sizes.append(CURVES_BYTES)
  if tensorboard:
    sizes += [TENSORBOARD_EPOCH_BYTES * epochs, 0]  # the events file and its folder
  return block + sum(map(whole, sizes)), 1 + len(sizes)  # the folder itself too


def seed_dir(sweep_dir: str, seed: int) -> str:
  return os.path.join(sweep_dir, SEED_DIR.format(seed))


def sweep_run_dirs(settings: Dict[str, Any]) -> List[str]:
  """The run directories (relative to the sweep) of the members sweep.json lists."""
  grid = [[(flag, tuple(v) if isinstance(v, list) else v) for v in values]
          for flag, values in settings.get('grid') or []]
  return [seed_dir(point_name(point), seed) for point in itertools.product(*grid)
          for seed in settings.get('seeds', [])]


def chunk_checkpoint_dir(sweep_dir: str, keys: Sequence[Union[int, str]]) -> str:
  """Where a sweep keeps the checkpoints of a chunk: named by its members (seeds,
  or a grid's member names), so the same command finds them again."""
  digest = hashlib.sha1(','.join(map(str, keys)).encode()).hexdigest()[:12]
  if all(isinstance(k, int) for k in keys):
    return os.path.join(sweep_dir, CHECKPOINT_DIR, f'seeds-{keys[0]}-{keys[-1]}-{digest}')
  return os.path.join(sweep_dir, CHECKPOINT_DIR, f'members-{len(keys)}-{digest}')


def is_sweep(path: str) -> bool:
  return os.path.exists(os.path.join(path, SWEEP_FILE))


def is_run(path: str) -> bool:
  return os.path.exists(os.path.join(path, CONFIG_FILE))


def is_complete(run_dir: str) -> bool:
  """A run is complete once its trained parameters are written (the last record) and
  read back whole, and its history.csv holds every epoch its config asks for: a
  damaged params.msgpack (a truncated copy, a bad disk) or a lost or damaged
  history makes the run incomplete, so it is finished again from its checkpoint
  (or retrained: the same bits), which rewrites both."""
  return params_written(run_dir) and missing_history(run_dir) is None


def params_written(run_dir: str) -> bool:
  """Whether the run's params.msgpack exists and reads back whole."""
  path = os.path.join(run_dir, PARAMS_FILE)
  if not os.path.exists(path):
    return False
  try:
    load_params(path)
  except UsageError:
    return False
  return True


def missing_history(run_dir: str) -> Optional[str]:
  """What the run's history.csv lacks of the epochs its config asks for ('history.csv:
  missing', '... 2 of 3 epochs recorded'), or None if it holds them all."""
  try:
    epochs = load_config(run_dir).epochs
    recorded = read_history(os.path.join(run_dir, HISTORY_FILE)).rows
  except UsageError as e:
    return str(e)
  if set(recorded) != set(range(1, epochs + 1)):
    return (f'{os.path.join(run_dir, HISTORY_FILE)}: {len(recorded)} of {epochs} epochs '
            'recorded')
  return None


# ----------------------------------------------------------------------------- writing


def format_loss(value: Any) -> str:
  """A float32 loss as the shortest decimal that reads back to it (0.09227577)."""
  return str(np.float32(value))


def format_fraction(count: int, total: int) -> str:
  """An exact accuracy: 9520 of 10,000 is '0.952', not float32's 0.95199996."""
  return str(int(count) / total)


def history_rows(epoch: int, metrics: Mapping[str, np.ndarray], examples: Mapping[str, int],
                 recorded: Sequence[metric_spec.Metric] = metric_spec.recorded()
                 ) -> List[Dict[str, str]]:
  """The history.csv rows of one epoch of several seeds.

  Args:
    epoch: the epoch just finished (1-based).
    metrics: the metrics log's columns of the epoch (metric_spec.log_columns):
      losses (float32[S]), counts of correct predictions ('test_correct', [S]),
      'epoch_seconds', 'eval_seconds' (float32[S]).
    examples: what each split's counts are out of ({'train': 59904, 'test': 10000}).
    recorded: the run's metrics, in their column order.
  """
  return [{
      EPOCH_COLUMN: str(epoch),
      **{m.name: m.cell(metrics[m.log_column][i], examples.get(m.split, 1)) for m in recorded},
      **{c: format_loss(metrics[c][i]) for c in TIMING_COLUMNS},
  } for i in range(len(metrics[TIMING_COLUMNS[0]]))]


# write_bytes_atomic writes `<name>` through `<name><TEMPORARY_INFIX><pid>` beside it.
TEMPORARY_INFIX = '.tmp'


def being_written(name: str) -> Optional[str]:
  """The file whose write_bytes_atomic `name` is the temporary file of, else None."""
  stem, infix, pid = name.rpartition(TEMPORARY_INFIX)
  return stem if infix and pid.isdigit() else None


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file, fsync and a rename."""
  tmp = f'{path}{TEMPORARY_INFIX}{os.getpid()}'
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


def csv_text(rows: Sequence[Mapping[str, str]], header: bool,
             fieldnames: Sequence[str] = HISTORY_COLUMNS) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator='\n')
  if header:
    writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


def append_history(path: str, rows: Sequence[Mapping[str, str]]) -> None:
  """Appends rows (the header first if the file is new); no fsync (see the module doc)."""
  with open(path, 'a') as f:
    f.write(csv_text(rows, header=f.tell() == 0, fieldnames=list(rows[0])))


def write_history(path: str, rows: Sequence[Mapping[str, str]]) -> None:
  """Writes a whole history.csv (header and rows) atomically."""
  write_bytes_atomic(path, csv_text(rows, header=True, fieldnames=list(rows[0])).encode())


def write_csv(path: str, rows: Sequence[Mapping[str, str]]) -> None:
  """Writes rows of strings (columns from the first row) as a CSV file, atomically."""
  write_bytes_atomic(path, csv_text(rows, header=True, fieldnames=list(rows[0])).encode())


def save_params(path: str, variables: Any) -> None:
  """Writes trained variables ({'params': ..., 'batch_stats': ...}) of numpy arrays
  as flax msgpack."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  write_bytes_atomic(path, serialization.msgpack_serialize(variables))


# ----------------------------------------------------------------------------- reading


def read_json_object(path: str) -> Dict[str, Any]:
  """A JSON file holding an object; UsageError if it is missing, unreadable or not one."""
  try:
    with open(path) as f:
      obj = json.load(f)
  except FileNotFoundError:
    raise UsageError(f'{path}: missing') from None
  except json.JSONDecodeError as e:
    raise UsageError(f'{path}: unreadable JSON ({e.msg}, line {e.lineno})') from None
  except (OSError, UnicodeDecodeError) as e:
    raise UsageError(f'{path}: unreadable ({e})') from None
  if not isinstance(obj, dict):
    raise UsageError(f'{path}: expected a JSON object, found {type(obj).__name__}')
  return obj


@dataclasses.dataclass(frozen=True)
class History:
  """history.csv as text: the header and, for each epoch, its row (column -> cell text)."""
  columns: Tuple[str, ...]
  rows: Dict[int, Dict[str, str]]

  @property
  def metrics(self) -> Tuple[str, ...]:
    """The columns compared bit for bit: all but `epoch` and the timing columns."""
    return tuple(c for c in self.columns
                 if c != EPOCH_COLUMN and not c.endswith(TIMING_SUFFIX))

  def column(self, name: str) -> np.ndarray:
    """float64[epochs] of one column, in epoch order."""
    return np.array([float(self.rows[e][name]) for e in sorted(self.rows)])

  def columns_as_arrays(self) -> Dict[str, np.ndarray]:
    """{column: float64[epochs]}, the form plots and statistics want."""
    return {c: self.column(c) for c in self.columns}


def _parse_epoch(text: str, where: str) -> int:
  try:
    epoch = int(text)
  except ValueError:
    epoch = 0
  if epoch < 1:
    raise UsageError(f'{where}: epoch {text!r} is not a positive integer')
  return epoch


def read_history(path: str) -> History:
  """Reads and checks history.csv, keeping every cell as text.

  Raises:
    UsageError: the file is missing, empty, ends in a partial row, has a row
      whose length differs from the header's, a bad or repeated epoch, or a
      metric cell that is not a number; naming the file and line.
  """
  try:
    with open(path, newline='') as f:
      text = f.read()
  except FileNotFoundError:
    raise UsageError(f'{path}: missing') from None
  except (OSError, UnicodeDecodeError) as e:
    raise UsageError(f'{path}: unreadable ({e})') from None
  if not text:
    raise UsageError(f'{path}: empty')
  if not text.endswith('\n'):
    raise UsageError(f'{path}: ends in a partial row (still being written?)')
  lines = list(csv.reader(io.StringIO(text)))
  columns = tuple(lines[0])
  if EPOCH_COLUMN not in columns or len(set(columns)) != len(columns) or '' in columns:
    raise UsageError(f'{path}: bad header {",".join(columns)!r}')
  history = History(columns, {})
  for number, cells in enumerate(lines[1:], start=2):
    where = f'{path}, line {number}'
    if len(cells) != len(columns):
      raise UsageError(f'{where}: {len(cells)} cells, the header has {len(columns)}')
    row = dict(zip(columns, cells))
    epoch = _parse_epoch(row[EPOCH_COLUMN], where)
    if epoch in history.rows:
      raise UsageError(f'{where}: epoch {epoch} repeated')
    for name in history.metrics:
      try:
        float(row[name])
      except ValueError:
        raise UsageError(f'{where}: {name} {row[name]!r} is not a number') from None
    history.rows[epoch] = row
  return history


def final_row(run_dir: str) -> Dict[str, str]:
  """The last epoch's row of a run's history.csv."""
  history = read_history(os.path.join(run_dir, HISTORY_FILE))
  if not history.rows:
    raise UsageError(f'{os.path.join(run_dir, HISTORY_FILE)}: no epoch recorded')
  return history.rows[max(history.rows)]


def read_curves(run_dirs: Sequence[str]) -> Dict[str, np.ndarray]:
  """Every metric of several runs' history.csv: {metric: float64[runs, epochs]} in
  the order of mlp_jax.metrics (the metrics of the first run's header), plus
  'epoch': int[epochs] (the runs must have the same epochs and columns)."""
  histories = [read_history(os.path.join(d, HISTORY_FILE)) for d in run_dirs]
  curves = {m: np.stack([h.column(m) for h in histories])
            for m in metric_spec.names(metric_spec.in_columns(histories[0].columns))}
  curves['epoch'] = np.array(sorted(histories[0].rows))
  return curves


def diverged_epochs(curves: Mapping[str, np.ndarray]) -> List[Any]:
  """For each run of `curves` (read_curves), the first epoch whose train or test loss
  is not finite (the run diverged), or None."""
  bad = ~(np.isfinite(curves['train_loss']) & np.isfinite(curves['test_loss']))
  return [int(curves['epoch'][np.argmax(row)]) if row.any() else None for row in bad]


def read_csv(path: str) -> List[Dict[str, str]]:
  """The rows of a CSV file with a header (summary.csv, final.csv, points.csv)."""
  try:
    with open(path, newline='') as f:
      return list(csv.DictReader(f))
  except OSError as e:
    raise UsageError(f'{path}: unreadable ({e.strerror or e})') from None


def load_params(path: str) -> Dict[str, Any]:
  """Reads what save_params wrote: the variables as nested dicts of numpy arrays.

  Raises:
    UsageError: the file is missing, truncated or not flax msgpack (naming it).
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise UsageError(f'{path}: unreadable ({e.strerror or e})') from None
  try:
    variables = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises its own types for truncated or garbled data
    raise UsageError(f'{path}: damaged parameters file ({e})') from None
  if not isinstance(variables, dict) or 'params' not in variables:
    raise UsageError(f'{path}: damaged parameters file (no params)')
  return variables


def load_config(run_dir: str) -> TrainConfig:
  path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UsageError(f'{run_dir}: not a run directory (no {CONFIG_FILE})')
  try:
    return TrainConfig.from_dict(read_json_object(path))
  except (ValueError, TypeError) as e:
    raise UsageError(f'{path}: unreadable config ({e})') from None

