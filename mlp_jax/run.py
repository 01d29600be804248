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

from mlp_jax import environment, models, plots, records
from mlp_jax.checkpoints import CHECKPOINT_DIR, ChunkCheckpoints
from mlp_jax.config import BUNDLED_DATASET, TrainConfig
from mlp_jax.data import Dataset, load_mnist
from mlp_jax.errors import Interrupted, UsageError
from mlp_jax.mesh import SeedMesh
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
  """How seeds are run. Only vmap_width > 1 changes a number in the history.

  Attributes:
    checkpoint_every: save a checkpoint every this many epochs (and after the
      last); 0 saves none, so an interrupted run starts over.
    keep_checkpoints: how many of the newest checkpoints each chunk keeps.
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


def to_device(dataset: Dataset, mesh: SeedMesh) -> DeviceData:
  """The dataset replicated on every device of the mesh, images as uint8[N, 784]."""
  flat = lambda images: images.reshape(images.shape[0], -1)
  return DeviceData(*(mesh.replicate(a) for a in (
      flat(dataset.train_images), dataset.train_labels,
      flat(dataset.test_images), dataset.test_labels)))


def load_data(config: TrainConfig) -> Dataset:
  """Validates `config`, loads its data and checks the config against it."""
  config.validate()
  if config.dataset == BUNDLED_DATASET:
    dataset = load_mnist(config.data_dir)
  else:
    from mlp_jax.tfds_data import load_tfds  # pylint: disable=g-import-not-at-top
    dataset = load_tfds(config.dataset, config.tfds_data_dir)
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


def is_complete(workdir: str) -> bool:
  """A run is complete once its trained parameters are written (the last record)."""
  return os.path.exists(os.path.join(workdir, records.PARAMS_FILE))


def prepare_seed_dir(config: TrainConfig, workdir: str, env: Dict[str, Any], overwrite: bool,
                     write: bool = True) -> None:
  """Checks a seed's workdir against `config` and, if `write`, sets it up.

  A workdir holding a run with other settings is refused (WorkdirError naming
  them) unless `overwrite`, which deletes that run's records. A new one gets
  config.json and environment.json. With several processes only process 0
  writes; the others only check.
  """
  config_path = os.path.join(workdir, records.CONFIG_FILE)
  if os.path.exists(config_path) and not overwrite:
    refuse_other_settings(workdir, records.read_json(config_path), config.to_dict())
  if not write:
    return
  if overwrite:
    remove_entries(workdir, RUN_ENTRIES)
  os.makedirs(workdir, exist_ok=True)
  if not os.path.exists(config_path):
    records.write_bytes_atomic(config_path, config.to_json().encode())
    records.write_json(os.path.join(workdir, records.ENVIRONMENT_FILE), env)


class SeedRun:
  """One seed's records while the driver trains it: its rows and final files."""

  def __init__(self, config: TrainConfig, workdir: str):
    self.config, self.workdir = config, workdir
    self.rows: List[Dict[str, str]] = []

  def _path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  @property
  def epoch(self) -> int:
    return len(self.rows)

  def keep_rows(self, epochs: int) -> None:
    """Keeps the first `epochs` rows of history.csv byte for byte (those a checkpoint
    covers) and drops the rest, which will be recomputed to the same bits."""
    path = self._path(records.HISTORY_FILE)
    rows = records.read_history(path)[:epochs] if epochs and os.path.exists(path) else []
    if len(rows) != epochs:
      raise WorkdirError(f'{path} has {len(rows)} rows but its checkpoint is of epoch '
                         f'{epochs}; use --overwrite to start over')
    self.rows = rows
    if rows:
      records.write_history(path, rows)
    else:
      remove_entries(self.workdir, [records.HISTORY_FILE])

  def record(self, row: Dict[str, str]) -> None:
    self.rows.append(row)
    records.append_history(self._path(records.HISTORY_FILE), row)

  def finish(self, variables: Any) -> None:
    """Writes the curves and then the trained variables: the run is complete."""
    plots.plot_history(records.history_columns(self.rows), self._path(records.CURVES_FILE),
                       f'{models.describe(self.config)}, seed {self.config.seed}')
    records.save_params(self._path(records.PARAMS_FILE), variables)


@dataclasses.dataclass
class EpochReport:
  """What the driver tells its reporter after each epoch of a chunk."""
  seeds: List[SeedRun]                 # this process's seeds that trained this epoch
  metrics: List[Dict[str, Any]]        # their metrics, as train.epoch_metrics returns
  epoch_seconds: float
  eval_seconds: float


Reporter = Callable[[EpochReport], str]


class ChunkPrograms:
  """The compiled programs for a chunk of C seeds (C a multiple of the device count):
  `get(C)` -> (init, train_epoch, evaluate), compiled once per C."""

  def __init__(self, trainer, data: DeviceData, mesh: SeedMesh, vmap_width: int):
    self._trainer, self._data, self._mesh, self._width = trainer, data, mesh, vmap_width
    self._cache: Dict[int, Any] = {}
    self.compile_seconds = 0.0

  def get(self, size: int):
    if size not in self._cache:
      start = time.perf_counter()
      t, d, m, w = self._trainer, self._data, self._mesh, self._width
      options = environment.compiler_options()
      # Initial states are made on this process's default device for the whole chunk
      # (cheap), then each process places the rows of its own devices.
      init = jax.jit(map_over_seeds(t.init, 3, w), compiler_options=options)
      keys = jax.ShapeDtypeStruct((size, 2), np.uint32)
      states = jax.eval_shape(init, keys, keys, keys)
      states = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=m.by_seed),
                            states)
      epoch = jax.jit(m.shard(map_over_seeds(t.train_epoch, 1, w), 1, 2),
                      donate_argnums=0, compiler_options=options).lower(
                          states, d.train_images, d.train_labels).compile()
      evaluate = jax.jit(m.shard(map_over_seeds(t.evaluate, 1, w), 1, 2),
                         compiler_options=options).lower(
          states, d.test_images, d.test_labels).compile()
      self._cache[size] = (init, epoch, evaluate)
      self.compile_seconds += time.perf_counter() - start
    return self._cache[size]

  def initial_states(self, keys: Sequence[Sequence[jax.Array]]) -> RunState:
    """The chunk's initial states from each seed's (init, order, noise) keys, split
    over the mesh: a RunState whose leaves have a leading seed axis."""
    init, _, _ = self.get(len(keys))
    return self._mesh.put_seeds(jax.device_get(init(*(np.stack(k) for k in zip(*keys)))))


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


def sync_processes(name: str) -> None:
  """Waits for every process (no-op with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _any_process(flag: bool) -> bool:
  """True if `flag` is true on any process: all processes stop together."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def train_seeds(configs: Sequence[TrainConfig], workdirs: Sequence[str],
                checkpoint_dir: Callable[[Sequence[int]], str], dataset: Dataset,
                env: Dict[str, Any], options: RunOptions, reporter: Reporter,
                progress: Progress, started: float) -> DriverTiming:
  """Trains every seed (configs differ only in the seed) to its last epoch.

  Checks and sets up each seed's workdir (prepare_seed_dir), then trains the
  incomplete seeds in chunks of `options.chunk_size`, split over every device
  of every process (mlp_jax.mesh). Each epoch of a chunk is one compiled call,
  after which every seed's row is written (flushed), the chunk's checkpoint
  saved when due (in `checkpoint_dir(seeds of the chunk)`), and the reporter's
  line printed. Each process writes the records of the seeds on its devices.
  A chunk with a checkpoint resumes from it.

  Raises:
    Interrupted: SIGTERM or SIGINT arrived (to any process); the chunk was
      checkpointed (unless checkpoints are off).
    WorkdirError: a record could not be written (e.g. disk full); what was
      written before is intact.
  """
  timing = DriverTiming()
  try:
    for config, workdir in zip(configs, workdirs):
      prepare_seed_dir(config, workdir, env, options.overwrite, write=jax.process_index() == 0)
  except OSError as e:
    raise WorkdirError(describe_os_error(workdir, e)) from None
  sync_processes('mlp_jax: seed workdirs ready')
  epochs = configs[0].epochs
  todo = [i for i, w in enumerate(workdirs) if not is_complete(w)]
  done_epochs = (len(configs) - len(todo)) * epochs
  progress.set_done(done_epochs)
  if not todo:
    return timing
  mesh = SeedMesh()
  data = to_device(dataset, mesh)
  trainer = make_trainer(configs[0], train_size=data.train_images.shape[0],
                         num_classes=dataset.num_classes)
  programs = ChunkPrograms(trainer, data, mesh, options.vmap_width)
  with StopRequests() as stop:
    for start in range(0, len(todo), options.chunk_size):
      members = todo[start:start + options.chunk_size]
      size = mesh.padded(len(members))
      # Padding rows repeat the chunk's first seed; their results are dropped.
      padded = members + [members[0]] * (size - len(members))
      _, train_epoch, evaluate = programs.get(size)
      timing.compile_seconds = programs.compile_seconds
      runs = {row: SeedRun(configs[members[row]], workdirs[members[row]])
              for row in mesh.local_rows(size) if row < len(members)}
      states = programs.initial_states([seed_keys(configs[i]) for i in padded])
      checkpoints = None
      if options.checkpoint_every:
        checkpoints = ChunkCheckpoints(checkpoint_dir([configs[i].seed for i in members]),
                                       [configs[i].seed for i in padded],
                                       options.keep_checkpoints)
      try:
        epoch = checkpoints.latest_epoch() or 0 if checkpoints else 0
        try:
          if epoch:
            states = checkpoints.restore(epoch, states)
          for run in runs.values():
            run.keep_rows(epoch)
        except OSError as e:
          raise WorkdirError(describe_os_error(workdirs[members[0]], e)) from None
        done_epochs += epoch * len(members)
        progress.set_done(done_epochs)
        if epoch:
          progress.line(f'mlp_jax: resumed {len(members)} seed(s) from their checkpoint '
                        f'after epoch {epoch}')
        if epoch == epochs:  # the last checkpoint was written, the final records not all
          _finish(runs, mesh.local_seeds(states))
        while epoch < epochs:
          tick = time.perf_counter()
          if timing.startup_seconds is None:
            timing.startup_seconds = tick - started
          states, train_metrics = train_epoch(states, data.train_images, data.train_labels)
          train_metrics = mesh.local_seeds(train_metrics)
          epoch_seconds = time.perf_counter() - tick
          tick = time.perf_counter()
          test_metrics = mesh.local_seeds(evaluate(states, data.test_images, data.test_labels))
          eval_seconds = time.perf_counter() - tick
          epoch += 1
          timing.train_seconds += epoch_seconds
          timing.eval_seconds += eval_seconds
          stopping = _any_process(stop.requested is not None)
          report = EpochReport(list(runs.values()), [], epoch_seconds, eval_seconds)
          try:
            for row, run in runs.items():
              metrics = epoch_metrics(train_metrics[row], test_metrics[row],
                                      trainer.examples_per_epoch, data.test_labels.shape[0])
              run.record(records.history_row(epoch, metrics, epoch_seconds, eval_seconds))
              report.metrics.append(metrics)
            if checkpoints and (stopping or epoch == epochs or
                                epoch % options.checkpoint_every == 0):
              checkpoints.save(epoch, states)
            if epoch == epochs:
              _finish(runs, mesh.local_seeds(states))
          except OSError as e:
            raise WorkdirError(describe_os_error(workdirs[members[0]], e)) from None
          timing.seed_epochs += len(members)
          done_epochs += len(members)
          if timing.first_epoch_done_seconds is None:
            timing.first_epoch_done_seconds = time.perf_counter() - started
          if runs:
            progress.advance(reporter(report), len(members))
          if stopping:
            raise Interrupted(_stop_message(stop.requested, epoch, options),
                              stop.requested or signal.SIGTERM)
      finally:
        if checkpoints:
          checkpoints.close()
  timing.total_seconds = time.perf_counter() - started
  return timing


def _finish(runs: Dict[int, SeedRun], local_states: Dict[int, RunState]) -> None:
  for row, run in runs.items():
    state = local_states[row]
    run.finish({'params': state.params, **state.model_state})


def _stop_message(signum: Optional[signal.Signals], epoch: int, options: RunOptions) -> str:
  cause = signum.name if signum else 'a signal to another process'
  if options.checkpoint_every:
    return (f'mlp_jax: stopped by {cause} after epoch {epoch}; a checkpoint is '
            'saved: run the same command again to resume')
  return (f'mlp_jax: stopped by {cause} after epoch {epoch}; checkpoints are '
          'off (--checkpoint_every=0), so running the same command again starts over')


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
  with lock(workdir, jax.process_index()):
    print(f'mlp_jax: run in {workdir}', flush=True)
    progress = Progress(config.epochs, bar=sys.stderr)
    try:
      timing = train_seeds([config], [workdir],
                           lambda seeds: os.path.join(workdir, CHECKPOINT_DIR), dataset,
                           environment.describe(dataset), options, epoch_line, progress,
                           started)
    finally:
      progress.close()
    if timing.seed_epochs:
      try:
        write_timing(os.path.join(workdir, records.TIMING_FILE), timing)
      except OSError as e:
        raise WorkdirError(describe_os_error(workdir, e)) from None
  final = records.read_history(os.path.join(workdir, records.HISTORY_FILE))[-1]
  if timing.seed_epochs:
    print(f'mlp_jax: final test accuracy {float(final["test_accuracy"]):.4f} after '
          f'{config.epochs} epochs; start-up {timing.startup_seconds:.1f}s, total '
          f'{timing.total_seconds:.1f}s; records in {workdir}', flush=True)
  else:
    print(f'mlp_jax: {workdir} holds a complete run of {config.epochs} epochs '
          f'(final test accuracy {float(final["test_accuracy"]):.4f}); nothing to do',
          flush=True)
  return {**{k: float(v) for k, v in final.items()}, 'workdir': workdir}
