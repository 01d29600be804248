"""TensorBoard event files of per-epoch metrics, for one run or a chunk of a sweep's seeds.

`tensorboard --logdir runs/` then shows every run and seed. Written with tensorboardX
(no TensorFlow), which is imported only when a writer is made: importing this module
loads neither tensorboardX nor jax.
"""

from __future__ import annotations

import os
import resource
import secrets
import time
from typing import Mapping, Optional, Sequence

import numpy as np

# TensorBoard shows a tag's prefix as a section, so 'train_loss' becomes 'loss/train' and
# the train and test curves of a quantity share a section.
def _tag(metric: str) -> str:
  split, _, quantity = metric.partition('_')
  return f'{quantity}/{split}' if quantity else metric


def _allow_open_files(count: int) -> None:
  """Raises this process's soft limit on open files to fit `count` more, if the hard
  limit allows: a chunk of 1,000 seeds keeps 1,000 event files open, and a soft limit
  of 1,024 is common."""
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  wanted = len(os.listdir('/proc/self/fd')) + count + 64 if os.path.isdir('/proc/self/fd') \
      else count + 256
  if soft != resource.RLIM_INFINITY and soft < wanted:
    new_soft = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))


class EpochWriter:
  """Per-epoch scalars of several seeds, one events file per seed, and optionally their mean.

  Made for the records sink of a sweep's chunk: `write` is called once per epoch with
  the metrics of every seed, builds one event per seed (all its metrics in one summary)
  and appends it to that seed's open file. Files are not flushed per epoch; they are
  flushed every `flush_secs` seconds (so TensorBoard shows a long run as it goes) and
  on `close`.

  Args:
    logdirs: one directory per seed (e.g. `<seed_dir>/tensorboard`), made if missing.
    mean_logdir: if given, the mean over the seeds of each metric is written there too.
    flush_secs: at most this long between a `write` and its events reaching the files.
  """

  def __init__(self, logdirs: Sequence[str], mean_logdir: Optional[str] = None,
               flush_secs: float = 120.0):
    # pylint: disable=g-import-not-at-top
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2, summary_pb2
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    self._count = len(logdirs)
    self._flush_secs = flush_secs
    self._last_flush = time.monotonic()
    directories = list(logdirs) + ([mean_logdir] if mean_logdir is not None else [])
    _allow_open_files(len(directories))
    # Several writers may start in the same second in one directory (a resumed chunk, a
    # second process): the random suffix keeps their files apart.
    suffix = f'.{os.getpid()}.{secrets.token_hex(4)}'
    self._writers = []
    try:
      for directory in directories:
        os.makedirs(directory, exist_ok=True)
        self._writers.append(EventsWriter(os.path.join(directory, 'events'), suffix))
    except BaseException:
      self.close()
      raise
    self._with_mean = mean_logdir is not None

  def write(self, epoch: int, metrics: Mapping[str, np.ndarray]) -> None:
    """Appends one epoch's scalars of every seed (and their mean).

    Args:
      epoch: the step TensorBoard plots against (1 for the first epoch).
      metrics: name -> float array of shape [len(logdirs)], e.g. 'train_loss',
        'train_accuracy', 'test_loss', 'test_accuracy' (tagged 'loss/train',
        'accuracy/train', 'loss/test', 'accuracy/test').
    """
    tags, columns = [], []
    for name, values in metrics.items():
      values = np.asarray(values, dtype=np.float64)
      if values.shape != (self._count,):
        raise ValueError(f'metric {name!r} has shape {values.shape}, '
                         f'expected ({self._count},): one value per logdir')
      tags.append(_tag(name))
      columns.append(values)
    rows = np.stack(columns, axis=1).tolist() if columns else [[]] * self._count
    if self._with_mean:
      rows.append([float(np.mean(column)) for column in columns])
    wall_time = time.time()
    summary = self._summary_pb2.Summary
    event = self._event_pb2.Event
    for writer, row in zip(self._writers, rows):
      values = [summary.Value(tag=tag, simple_value=value) for tag, value in zip(tags, row)]
      writer.write_event(event(wall_time=wall_time, step=epoch,
                               summary=summary(value=values)))
    if time.monotonic() - self._last_flush >= self._flush_secs:
      self.flush()

  def flush(self) -> None:
    """Writes every event so far to the files."""
    for writer in self._writers:
      writer.flush()
    self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes every file; the writer is unusable afterwards."""
    writers, self._writers = self._writers, []
    for writer in writers:
      writer.close()

  def __enter__(self) -> 'EpochWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
