"""Running seeds: from configs to complete, resumable workdirs.

The pure training functions live in mlp_jax.train; this module does the I/O
around them. `train_seeds` is the one driver: it trains any number of seeds in
chunks, each chunk one compiled program per epoch (seeds mapped inside it, see
`train.map_over_seeds`), writes each seed's records as its epochs finish,
checkpoints, resumes, and stops cleanly on SIGTERM/SIGINT. A single run
(`train_and_evaluate`, behind `python -m mlp_jax.main`) is the driver with one
seed whose workdir is the run's; a sweep (experiments.sweep) gives it many.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import numpy as np

from mlp_jax import environment, plots, records
from mlp_jax.checkpoints import CHECKPOINT_DIR, Checkpoints
from mlp_jax.config import TrainConfig
from mlp_jax.data import Dataset, load_mnist
from mlp_jax.errors import Interrupted, UsageError
from mlp_jax.progress import Progress
from mlp_jax.train import (RunState, epoch_metrics, make_trainer, map_over_seeds,
                           seed_keys)
from mlp_jax.workdir import (StopRequests, WorkdirError, describe_os_error, lock,
                             refuse_other_settings, remove_entries)

# What a run writes in its workdir, removed by --overwrite (nothing else is touched).
RUN_ENTRIES = (records.CONFIG_FILE, records.ENVIRONMENT_FILE, records.HISTORY_FILE,
               records.PARAMS_FILE, records.TIMING_FILE, records.CURVES_FILE, CHECKPOINT_DIR)


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """How seeds are run; none of these changes a number in the history.

  Attributes:
    checkpoint_every: save a checkpoint every this many epochs (and after the
      last); 0 saves none, so an interrupted run starts over.
    keep_checkpoints: how many of the newest checkpoints each seed keeps.
    overwrite: start over in a workdir that holds a run with other settings.
    chunk_size: seeds held on the device and trained by one program at a time.
    vmap_width: seeds vectorised together inside a chunk (1: one after another,
      bit-identical to single runs; >1 changes the last bits, see train.map_over_seeds).
  """
  checkpoint_every: int = 1
  keep_checkpoints: int = 3
  overwrite: bool = False
  chunk_size: int = 256
  vmap_width: int = 1

  def validate(self) -> 'RunOptions':
    if self.checkpoint_every < 0:
      raise UsageError(f'--checkpoint_every must be 0 (off) or more, got {self.checkpoint_every}')
    if self.keep_checkpoints < 1:
      raise UsageError(f'--keep_checkpoints must be at least 1, got {self.keep_checkpoints}')
    if self.chunk_size < 1:
      raise UsageError(f'--chunk_size must be at least 1, got {self.chunk_size}')
    if self.vmap_width < 1:
      raise UsageError(f'--vmap_width must be at least 1, got {self.vmap_width}')
    return self


class DeviceData(NamedTuple):
  """The dataset on the device, images flattened to uint8[N, 784]."""
  train_images: jax.Array
  train_labels: jax.Array
  test_images: jax.Array
  test_labels: jax.Array


def to_device(dataset: Dataset) -> DeviceData:
  flat = lambda images: images.reshape(images.shape[0], -1)
  return DeviceData(*jax.device_put((flat(dataset.train_images), dataset.train_labels,
                                     flat(dataset.test_images), dataset.test_labels)))


def load_data(config: TrainConfig) -> Dataset:
  """Validates `config`, loads its data and checks the config against it."""
  config.validate()
  dataset = load_mnist(config.data_dir)
  config.validate(train_size=len(dataset.train_labels))
  return dataset


def default_workdir(name: str) -> str:
  """A new folder runs/<date>-<time>-<name>."""
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  path, suffix = os.path.join('runs', f'{stamp}-{name}'), 1
  while os.path.exists(path):
    suffix += 1
    path = os.path.join('runs', f'{stamp}-{name}-{suffix}')
  return path


class SeedRun:
  """One seed's workdir and host-side progress: its rows, checkpoints, and state.

  Opening it checks the workdir's settings, writes config.json and
  environment.json if new, and restores the latest checkpoint if there is one
  (rewriting history.csv from the checkpoint's rows, byte for byte).
  """

  def __init__(self, config: TrainConfig, workdir: str, env: Dict[str, Any],
               options: RunOptions):
    self.config, self.workdir = config, workdir
    self.rows: List[Dict[str, str]] = []
    self.restored: Optional[RunState] = None
    config_path = self._path(records.CONFIG_FILE)
    if os.path.exists(config_path):
      if options.overwrite:
        remove_entries(workdir, RUN_ENTRIES)
      else:
        refuse_other_settings(workdir, records.read_json(config_path), config.to_dict())
    os.makedirs(workdir, exist_ok=True)
    if not os.path.exists(config_path):
      records.write_bytes_atomic(config_path, config.to_json().encode())
      records.write_json(self._path(records.ENVIRONMENT_FILE), env)
    self.checkpoints = (Checkpoints(workdir, options.keep_checkpoints)
                        if options.checkpoint_every else None)
    self.checkpoint_every = options.checkpoint_every
    self.complete = os.path.exists(self._path(records.PARAMS_FILE))

  def _path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  @property
  def epoch(self) -> int:
    return len(self.rows)

  def resume(self, template: RunState) -> Optional[RunState]:
    """Restores the latest checkpoint (None if there is none) and its history rows."""
    latest = self.checkpoints.latest_epoch() if self.checkpoints else None
    if latest is None:
      self.rows = []
      remove_entries(self.workdir, [records.HISTORY_FILE])
      return None
    state, self.rows = self.checkpoints.restore(template, latest)
    records.write_history(self._path(records.HISTORY_FILE), self.rows)
    return state

  def record(self, row: Dict[str, str]) -> None:
    self.rows.append(row)
    records.append_history(self._path(records.HISTORY_FILE), row)

  def checkpoint_due(self, stopping: bool) -> bool:
    return bool(self.checkpoints) and (
        stopping or self.epoch == self.config.epochs or self.epoch % self.checkpoint_every == 0)

  def finish(self, params: Any) -> None:
    """Writes the trained parameters and the curves: the run is complete."""
    plots.plot_history(records.history_columns(self.rows), self._path(records.CURVES_FILE),
                       f'MLP {self.config.hidden_sizes}, seed {self.config.seed}')
    records.save_params(self._path(records.PARAMS_FILE), params)
    self.complete = True

  def close(self) -> None:
    if self.checkpoints:
      self.checkpoints.close()


@dataclasses.dataclass
class EpochReport:
  """What the driver tells its reporter after each epoch of a chunk."""
  seeds: List[SeedRun]                 # the chunk's seeds that trained this epoch
  metrics: List[Dict[str, Any]]        # their metrics, as train.epoch_metrics returns
  epoch_seconds: float
  eval_seconds: float


Reporter = Callable[[EpochReport], str]


def _take(tree: Any, index: int) -> Any:
  return jax.tree.map(lambda x: x[index], tree)


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


class _ChunkPrograms:
  """The compiled programs for a chunk of C seeds, compiled once per C."""

  def __init__(self, trainer, data: DeviceData, vmap_width: int):
    self._trainer, self._data, self._width = trainer, data, vmap_width
    self._cache: Dict[int, Any] = {}
    self.compile_seconds = 0.0

  def get(self, size: int):
    if size not in self._cache:
      start = time.perf_counter()
      t, d, w = self._trainer, self._data, self._width
      init = jax.jit(map_over_seeds(t.init, 2, w))
      keys = jax.ShapeDtypeStruct((size, 2), np.uint32)
      states = jax.eval_shape(init, keys, keys)
      epoch = jax.jit(map_over_seeds(t.train_epoch, 1, w), donate_argnums=0).lower(
          states, d.train_images, d.train_labels).compile()
      evaluate = jax.jit(map_over_seeds(t.evaluate, 1, w)).lower(
          states.params, d.test_images, d.test_labels).compile()
      self._cache[size] = (init, epoch, evaluate)
      self.compile_seconds += time.perf_counter() - start
    return self._cache[size]


@dataclasses.dataclass
class DriverTiming:
  """Where a process's time went, in seconds (timing.json)."""
  compile_seconds: float = 0.0
  startup_seconds: Optional[float] = None     # process start to the first epoch's call
  first_epoch_done_seconds: Optional[float] = None  # process start to its end
  train_seconds: float = 0.0                  # the epochs' compiled calls, summed
  eval_seconds: float = 0.0
  seed_epochs: int = 0                        # epochs trained in this process, over seeds
  total_seconds: Optional[float] = None


def train_seeds(seed_runs: Sequence[SeedRun], dataset: Dataset, options: RunOptions,
                reporter: Reporter, progress: Progress, started: float) -> DriverTiming:
  """Trains every incomplete seed run to its last epoch.

  All runs share one config but for the seed. Seeds go in chunks of
  `options.chunk_size`; each epoch of a chunk is one compiled call, after which
  every seed's row is written (flushed), its checkpoint saved when due, and the
  reporter's line printed.

  Raises:
    Interrupted: SIGTERM or SIGINT arrived; every seed of the chunk was
      checkpointed (unless checkpoints are off).
    WorkdirError: a record could not be written (e.g. disk full); what was
      written before is intact.
  """
  timing = DriverTiming()
  todo = [r for r in seed_runs if not r.complete]
  done_epochs = sum(r.epoch for r in seed_runs if r.complete)
  config = todo[0].config
  data = to_device(dataset)
  trainer = make_trainer(config, train_size=data.train_images.shape[0])
  programs = _ChunkPrograms(trainer, data, options.vmap_width)
  test_size = data.test_labels.shape[0]
  with StopRequests() as stop:
    for start in range(0, len(todo), options.chunk_size):
      chunk = todo[start:start + options.chunk_size]
      init, train_epoch, evaluate = programs.get(len(chunk))
      keys = [seed_keys(r.config) for r in chunk]
      fresh = jax.device_get(init(np.stack([k[0] for k in keys]),
                                  np.stack([k[1] for k in keys])))
      try:
        restored = [r.resume(_take(fresh, j)) for j, r in enumerate(chunk)]
      except OSError as e:
        raise WorkdirError(describe_os_error(chunk[0].workdir, e)) from None
      done_epochs += sum(r.epoch for r in chunk)
      progress.set_done(done_epochs)
      resumed = [r for r in chunk if r.epoch]
      if resumed:
        progress.line(f'mlp_jax: resumed {len(resumed)} seed(s) from their checkpoints, '
                      f'seed {resumed[0].config.seed} after epoch {resumed[0].epoch}')
      states = jax.device_put(_stack([s if s is not None else _take(fresh, j)
                                      for j, s in enumerate(restored)]))
      timing.compile_seconds = programs.compile_seconds
      while any(r.epoch < config.epochs for r in chunk):
        tick = time.perf_counter()
        if timing.startup_seconds is None:
          timing.startup_seconds = tick - started
        states, train_metrics = train_epoch(states, data.train_images, data.train_labels)
        train_metrics = jax.device_get(train_metrics)
        epoch_seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        test_metrics = jax.device_get(evaluate(states.params, data.test_images,
                                               data.test_labels))
        eval_seconds = time.perf_counter() - tick
        timing.train_seconds += epoch_seconds
        timing.eval_seconds += eval_seconds
        try:
          report = _record_epoch(chunk, states, train_metrics, test_metrics,
                                 trainer.examples_per_epoch, test_size, epoch_seconds,
                                 eval_seconds, stopping=stop.requested is not None)
        except OSError as e:
          raise WorkdirError(describe_os_error(chunk[0].workdir, e)) from None
        timing.seed_epochs += len(report.seeds)
        done_epochs += len(report.seeds)
        if timing.first_epoch_done_seconds is None:
          timing.first_epoch_done_seconds = time.perf_counter() - started
        progress.advance(reporter(report), len(report.seeds))
        if stop.requested:
          raise Interrupted(_stop_message(stop.requested, chunk, options), stop.requested)
  timing.total_seconds = time.perf_counter() - started
  return timing


def _stop_message(signum: signal.Signals, chunk: List[SeedRun], options: RunOptions) -> str:
  epoch = min(r.epoch for r in chunk)
  if options.checkpoint_every:
    return (f'mlp_jax: stopped by {signum.name} after epoch {epoch}; checkpoints are '
            'saved: run the same command again to resume')
  return (f'mlp_jax: stopped by {signum.name} after epoch {epoch}; checkpoints are '
          'off (--checkpoint_every=0), so running the same command again starts over')


def _record_epoch(chunk: List[SeedRun], states: RunState, train_metrics, test_metrics,
                  train_examples: int, test_examples: int, epoch_seconds: float,
                  eval_seconds: float, stopping: bool) -> EpochReport:
  """Writes the rows (and due checkpoints and final records) of one chunk epoch."""
  report = EpochReport([], [], epoch_seconds, eval_seconds)
  host_states = None
  for j, run in enumerate(chunk):
    if run.epoch >= run.config.epochs:
      continue  # finished before a resume put it in this chunk; its extra epoch is dropped
    metrics = epoch_metrics(_take(train_metrics, j), _take(test_metrics, j),
                            train_examples, test_examples)
    run.record(records.history_row(run.epoch + 1, metrics, epoch_seconds, eval_seconds))
    report.seeds.append(run)
    report.metrics.append(metrics)
    finished = run.epoch == run.config.epochs
    if run.checkpoint_due(stopping) or finished:
      host_states = host_states if host_states is not None else jax.device_get(states)
      state = _take(host_states, j)
      if run.checkpoint_due(stopping):
        run.checkpoints.save(state, run.rows)
      if finished:
        run.finish(state.params)
  return report


def epoch_line(report: EpochReport) -> str:
  """The console line of one seed's epoch."""
  run, m = report.seeds[0], report.metrics[0]
  epochs = run.config.epochs
  return (f'epoch {run.epoch:>{len(str(epochs))}}/{epochs}  '
          f'train loss {m["train_loss"]:.4f} acc {m["train_accuracy"]:.4f}  '
          f'test loss {m["test_loss"]:.4f} acc {m["test_accuracy"]:.4f}  '
          f'{report.epoch_seconds:.2f}s + eval {report.eval_seconds:.2f}s')


def write_timing(path: str, timing: DriverTiming) -> None:
  records.write_json(path, dataclasses.asdict(timing))


def train_and_evaluate(config: TrainConfig, workdir: Optional[str] = None,
                       options: RunOptions = RunOptions(),
                       started: Optional[float] = None) -> Dict[str, Any]:
  """Trains one seed as `config` says, writing every record into `workdir`.

  Re-running on the same workdir resumes from its last checkpoint, or says the
  run is complete.

  Args:
    config: the run's settings.
    workdir: where to write; default a new folder under runs/.
    options: checkpointing and overwrite behaviour.
    started: time.perf_counter() at process start, for timing.json.

  Returns:
    The final epoch's metrics and the workdir.
  """
  started = time.perf_counter() if started is None else started
  options.validate()
  dataset = load_data(config)
  workdir = workdir or default_workdir(f'seed{config.seed}')
  with lock(workdir):
    try:
      run = SeedRun(config, workdir, environment.describe(dataset), options)
    except OSError as e:
      raise WorkdirError(describe_os_error(workdir, e)) from None
    try:
      if run.complete:
        print(f'mlp_jax: {workdir} holds a complete run of {config.epochs} epochs; '
              'nothing to do', flush=True)
        final = records.read_history(os.path.join(workdir, records.HISTORY_FILE))[-1]
        return {**{k: float(v) for k, v in final.items()}, 'workdir': workdir}
      print(f'mlp_jax: writing to {workdir}', flush=True)
      progress = Progress(config.epochs, bar=sys.stderr)
      try:
        timing = train_seeds([run], dataset, options, epoch_line, progress, started)
      finally:
        progress.close()
      write_timing(os.path.join(workdir, records.TIMING_FILE), timing)
    finally:
      run.close()
  final = records.read_history(os.path.join(workdir, records.HISTORY_FILE))[-1]
  print(f'mlp_jax: final test accuracy {float(final["test_accuracy"]):.4f} after '
        f'{config.epochs} epochs; start-up {timing.startup_seconds:.1f}s, total '
        f'{timing.total_seconds:.1f}s; records in {workdir}', flush=True)
  return {**{k: float(v) for k, v in final.items()}, 'workdir': workdir}
