"""The records sink: a chunk's per-epoch records written in one batch, off the training path.

The driver hands the sink each epoch's metrics of all its seeds at once (one
transfer off the device). A background thread formats them into every seed's
history.csv (and TensorBoard events), so the next epoch trains while the host
writes; an error of that thread (a full disk) is raised in the driver at the
next call. On Linux the thread runs at the lowest priority (nice 19), so on a
machine whose cores training keeps busy it takes only the time training leaves
idle. A process that draws curves.png after training imports matplotlib on a
second such thread after the first epoch, instead of at the end; on its own
thread, so that the rows of the next epochs are not queued behind it (under
nice 19 on busy cores, the import can take as long as the training). history.csv
needs no fsync: the
chunk's checkpoints hold the metrics log, and `begin` rewrites the rows a
checkpoint covers from it.

When the chunk's last epoch is done, `finish` writes each seed's trained
parameters (in parallel threads: serialising and fsync-ing them is the host's
largest per-seed cost), the record that marks a run complete.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from mlp_jax import metrics as metric_spec
from mlp_jax import records

# The metrics log's columns of a run without a validation split (mlp_jax.metrics):
# what each seed's row of an epoch is made from, and the layout its checkpoints have.
LOG_COLUMNS = metric_spec.log_columns(metric_spec.recorded())
# Threads that write parameter files at the end of a chunk (I/O bound).
PARAMS_WRITERS = 8


def new_log(seeds: int, epochs: int, columns: Sequence[str] = LOG_COLUMNS) -> np.ndarray:
  """An empty metrics log: float32[seeds, epochs, len(columns)]."""
  return np.zeros((seeds, epochs, len(columns)), np.float32)


def log_epoch(log: np.ndarray, rows: Sequence[int], epoch: int,
              metrics: Dict[str, np.ndarray], columns: Sequence[str] = LOG_COLUMNS) -> None:
  """Stores epoch `epoch` (1-based) of the seeds in `rows` (metrics: name -> [len(rows)])."""
  for column, name in enumerate(columns):
    log[np.asarray(rows), epoch - 1, column] = metrics[name]


def logged_metrics(log: np.ndarray, rows: Sequence[int], epoch: int,
                   columns: Sequence[str] = LOG_COLUMNS) -> Dict[str, np.ndarray]:
  """The inverse of log_epoch: name -> float32[len(rows)]."""
  values = log[np.asarray(rows), epoch - 1]
  return {name: values[:, column] for column, name in enumerate(columns)}


class RecordSink:
  """Writes the records of the seeds of one chunk that live on this process.

  Args:
    run_dirs: each seed's run directory, in the order of the chunk's rows given
      to every call (this process's rows with a real seed).
    train_examples, test_examples: what the counts in the metrics are out of.
    tensorboard: also write TensorBoard events into <run_dir>/tensorboard.
    prepare_curves: this process draws curves after training; a second thread
      imports matplotlib once the first epoch's records are queued.
    validation_examples: the size of the validation split (0: none, and no
      validation metrics).
  """

  def __init__(self, run_dirs: Sequence[str], train_examples: int, test_examples: int,
               tensorboard: bool = False, prepare_curves: bool = False,
               validation_examples: int = 0):
    self.run_dirs = list(run_dirs)
    self._examples = {metric_spec.TRAIN: train_examples, metric_spec.TEST: test_examples,
                      metric_spec.VALIDATION: validation_examples}
    self.metrics = metric_spec.recorded(metric_spec.splits_of(validation_examples))
    self.log_columns = metric_spec.log_columns(self.metrics)
    self._thread = concurrent.futures.ThreadPoolExecutor(1, 'mlp_jax-records',
                                                         initializer=lowest_priority)
    self._prepare_curves = prepare_curves
    self._curves_thread: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._pending: List[concurrent.futures.Future] = []
    self._with_tensorboard = tensorboard and bool(self.run_dirs)
    self._tensorboard = None  # made by the thread at its first write (see _write)
    self.seconds = 0.0  # time the driver spent here (waiting on the thread included)

  def begin(self, log: np.ndarray, rows: Sequence[int], epoch: int) -> None:
    """Makes each seed's history.csv hold exactly the rows of epochs 1..`epoch` of the
    log (a checkpoint's), dropping any later ones, which will be recomputed."""
    tick = time.perf_counter()
    for index, run_dir in enumerate(self.run_dirs):
      path = os.path.join(run_dir, records.HISTORY_FILE)
      if epoch:
        records.write_history(path, [
            self._rows(e, logged_metrics(log, [rows[index]], e, self.log_columns))[0]
            for e in range(1, epoch + 1)])
      elif os.path.lexists(path):
        os.remove(path)
    self.seconds += time.perf_counter() - tick

  def write(self, epoch: int, metrics: Dict[str, np.ndarray]) -> None:
    """Queues epoch `epoch` of every seed (metrics: self.log_columns -> [seeds])."""
    tick = time.perf_counter()
    self._raise_errors(wait=False)
    self._pending.append(self._thread.submit(self._write, epoch, metrics))
    if self._prepare_curves:
      # After the first epoch's write, not before: the import would compete with
      # loading and compiling the programs, which hold the interpreter.
      from mlp_jax import plots  # pylint: disable=g-import-not-at-top
      self._curves_thread = concurrent.futures.ThreadPoolExecutor(
          1, 'mlp_jax-curves', initializer=lowest_priority)
      self._pending.append(self._curves_thread.submit(plots.import_matplotlib))
      self._prepare_curves = False
    self.seconds += time.perf_counter() - tick

  def finish(self, variables: Sequence[Any]) -> None:
    """Writes every seed's trained variables (host pytrees), after its history."""
    tick = time.perf_counter()
    self._raise_errors(wait=True)
    paths = [os.path.join(d, records.PARAMS_FILE) for d in self.run_dirs]
    with concurrent.futures.ThreadPoolExecutor(PARAMS_WRITERS, 'mlp_jax-params') as pool:
      list(pool.map(records.save_params, paths, variables))
    self.seconds += time.perf_counter() - tick

  def close(self) -> None:
    """Waits for the queued writes; raises the first error among them."""
    tick = time.perf_counter()
    try:
      self._raise_errors(wait=True)
    finally:
      self._thread.shutdown(wait=True)
      if self._curves_thread is not None:
        self._curves_thread.shutdown(wait=True)
      if self._tensorboard is not None:
        self._tensorboard.close()
      self.seconds += time.perf_counter() - tick

  def _rows(self, epoch: int, metrics: Dict[str, np.ndarray]) -> List[Dict[str, str]]:
    return records.history_rows(epoch, metrics, self._examples, self.metrics)

  def _write(self, epoch: int, metrics: Dict[str, np.ndarray]) -> None:
    for run_dir, row in zip(self.run_dirs, self._rows(epoch, metrics)):
      records.append_history(os.path.join(run_dir, records.HISTORY_FILE), [row])
    if self._with_tensorboard:
      if self._tensorboard is None:
        # Here rather than in __init__: this thread spends the import of the event
        # writer while the next epoch trains instead of before the first one.
        from mlp_jax.tensorboard import EpochWriter  # pylint: disable=g-import-not-at-top
        self._tensorboard = EpochWriter(
            [os.path.join(d, records.TENSORBOARD_DIR) for d in self.run_dirs])
      self._tensorboard.write(epoch, metric_spec.values(self.metrics, metrics, self._examples))

  def _raise_errors(self, wait: bool) -> None:
    if wait:
      concurrent.futures.wait(self._pending)
    done = [f for f in self._pending if f.done()]
    self._pending = [f for f in self._pending if not f.done()]
    for future in done:
      future.result()  # re-raises the thread's error here


def lowest_priority() -> None:
  """Gives the calling thread alone the lowest scheduling priority (nice 19), on
  Linux, where a thread id names one thread to setpriority (elsewhere it would name
  a process, so this does nothing there). Training's threads then come first: on 2
  cores XLA's pool keeps both busy, and the records' work fits in its gaps."""
  if sys.platform.startswith('linux'):
    try:
      os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
      pass  # a sandbox may refuse it; the records are the same either way


def accuracies(metrics: Dict[str, np.ndarray], train_examples: int, test_examples: int,
               validation_examples: int = 0) -> Dict[str, np.ndarray]:
  """Log metrics -> the recorded metrics (mlp_jax.metrics) as float64[seeds]: losses,
  and accuracies from the counts."""
  examples = {metric_spec.TRAIN: train_examples, metric_spec.TEST: test_examples,
              metric_spec.VALIDATION: validation_examples}
  return metric_spec.values(metric_spec.recorded(metric_spec.splits_of(validation_examples)),
                            metrics, examples)


def render_curves(run_dirs: Sequence[str], titles: Sequence[str],
                  workers: Optional[int] = None,
                  should_stop: Callable[[], bool] = lambda: False) -> bool:
  """Draws <run_dir>/curves.png of each finished run from its history.csv, in
  parallel processes when there are several (matplotlib is not thread-safe).

  Returns False if `should_stop()` (asked between pictures) said to stop first:
  the pictures not yet drawn are left out (each one is written whole). The
  processes ignore SIGINT and SIGTERM (the parent decides) and end when the
  parent does, however it ends."""
  if len(run_dirs) <= 1:
    for run_dir, title in zip(run_dirs, titles):
      if should_stop():
        return False
      _render_one(run_dir, title)
    return True
  import multiprocessing  # pylint: disable=g-import-not-at-top
  workers = workers or min(len(run_dirs), os.cpu_count() or 1)
  # Spawned, not forked: a fork of a process running JAX's threads can deadlock.
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context('spawn'),
      initializer=_curves_worker, initargs=(os.getpid(),)) as pool:
    pending = {pool.submit(_render_one, d, t) for d, t in zip(run_dirs, titles)}
    while pending:
      done, pending = concurrent.futures.wait(pending, timeout=0.2,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        future.result()
      if pending and should_stop():
        for future in pending:
          future.cancel()
        return False
  return True


def _curves_worker(parent: int) -> None:
  """In a process drawing curves: signals are the parent's to act on, and the
  process ends within a second of its parent, even one killed by SIGKILL (whose
  pool cannot tell it to)."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)

  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name='mlp_jax-parent-watch', daemon=True).start()


def _render_one(run_dir: str, title: str) -> None:
  from mlp_jax import plots  # pylint: disable=g-import-not-at-top
  history = records.read_history(os.path.join(run_dir, records.HISTORY_FILE))
  plots.plot_history(history.columns_as_arrays(), os.path.join(run_dir, records.CURVES_FILE),
                     title)
