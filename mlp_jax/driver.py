"""The driver: trains any number of seeds, writing complete, resumable run directories.

    prepare_run_dirs -> plan_chunks -> train_chunk (one flat epoch loop) per chunk

A chunk of seeds is one array per state leaf with a leading seed axis, split over
every device of every process (mlp_jax.mesh); each epoch of a chunk is one
compiled call of `train.map_over_seeds(train_epoch)`, its metrics leave the
device in one transfer, and the records sink (mlp_jax.sink) writes them off the
training path. Checkpoints (mlp_jax.checkpoints) are saved asynchronously when
their policy says so, and always on SIGTERM/SIGINT before stopping.

A seed's numbers depend on its config (vmap width and matmul precision
included), never on the chunk: chunks are padded to whole groups of the vmap
width on every device, padding rows repeat the chunk's first seed and are
dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from typing import (Any, Callable, Dict, FrozenSet, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple)

import jax
import numpy as np

from mlp_jax import environment
from mlp_jax.checkpoints import (ChunkCheckpoints, NoCheckpoints, RowKey, SavePolicy,
                                 checkpointed_seeds)
from mlp_jax.config import RunOptions, TrainConfig
from mlp_jax.data import Dataset
from mlp_jax.errors import Interrupted, UsageError
from mlp_jax.launch import lost_peer_exits, stops_on_lost_peer
from mlp_jax.mesh import SeedMesh
from mlp_jax.program_cache import Program, ProgramCache, trace
from mlp_jax.progress import Progress
from mlp_jax import metrics as metric_spec
from mlp_jax.sink import RecordSink, log_epoch, new_log
from mlp_jax.train import (Hyperparameters, RunState, hyperparameters, make_trainer,
                           key_seeds, keys_from_seeds, map_over_seeds,
                           program_cache_config)
from mlp_jax.workdir import StopRequests, WorkdirError, describe_os_error

# The losses whose non-finite value marks a diverged seed (those every run has).
DIVERGENCE_LOSSES = tuple(m.log_column for m in metric_spec.recorded()
                          if m.kind == metric_spec.LOSS)


@dataclasses.dataclass(frozen=True)
class Member:
  """One run to train: its settings, its run directory and, in a grid, its name
  (`learning_rate=0.001/seed_3`, its run directory within the sweep)."""
  config: TrainConfig
  run_dir: str
  name: Optional[str] = None

  @property
  def key(self) -> RowKey:
    """What identifies it in a chunk checkpoint: its seed, or its name in a grid."""
    return self.config.seed if self.name is None else self.name

  @property
  def label(self) -> str:
    """How messages name it."""
    return f'seed {self.config.seed}' if self.name is None else self.name


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Seeds trained together: `members` on the first rows of `size` (padded) rows.

  `complete`: seeds of `members` whose records are already complete (a chunk
  resumed from its checkpoint after some of its seeds were finished): trained
  along, as their rows are in the checkpoint, but their records are not touched.
  """
  members: Tuple[Member, ...]
  size: int
  checkpoint_dir: str
  complete: FrozenSet[RowKey] = frozenset()

  @property
  def todo(self) -> List[Member]:
    """The members whose records this chunk writes."""
    return [m for m in self.members if m.key not in self.complete]

  @property
  def rows(self) -> List[Member]:
    """Each row's member; padding rows repeat the first (their results are dropped)."""
    return list(self.members) + [self.members[0]] * (self.size - len(self.members))

  @property
  def row_configs(self) -> List[TrainConfig]:
    return [m.config for m in self.rows]


@dataclasses.dataclass
class DriverTiming:
  """Where a process's time went, in seconds (timing.json).

  train/eval are the compiled calls; host work is everything else after
  start-up: records (the sink's time on the training path and its final
  writes), checkpoints (the time saves held up training) and the entry point's
  summaries.
  """
  compile_seconds: float = 0.0
  startup_seconds: Optional[float] = None     # process start to the first epoch's call
  first_epoch_done_seconds: Optional[float] = None  # process start to its end
  train_seconds: float = 0.0                  # the epochs' compiled calls, summed
  eval_seconds: float = 0.0
  seed_epochs: int = 0                        # epochs trained in this process, over seeds
  records_seconds: float = 0.0
  checkpoint_seconds: float = 0.0
  summary_seconds: float = 0.0
  total_seconds: Optional[float] = None
  # Programs loaded from / traced into the program cache (None: no cache).
  programs_from_cache: Optional[int] = None
  programs_traced: Optional[int] = None

  @property
  def host_seconds(self) -> float:
    return self.records_seconds + self.checkpoint_seconds + self.summary_seconds

  def as_dict(self) -> Dict[str, Any]:
    return {**dataclasses.asdict(self), 'host_seconds': self.host_seconds}


@dataclasses.dataclass
class EpochReport:
  """What the driver tells its reporter after each epoch of a chunk."""
  configs: List[TrainConfig]           # this process's seeds that trained this epoch
  epoch: int
  metrics: Dict[str, np.ndarray]       # their recorded metrics (mlp_jax.metrics), [seeds]
  epoch_seconds: float
  eval_seconds: float


Reporter = Callable[[EpochReport], str]


@contextlib.contextmanager
def writing_in(workdir: str) -> Iterator[None]:
  """Turns an OSError (disk full, permissions) into one WorkdirError naming `workdir`."""
  try:
    yield
  except OSError as e:
    raise WorkdirError(describe_os_error(workdir, e)) from None


@contextlib.contextmanager
def chunk_fits(chunk_flag: str = '--chunk_size') -> Iterator[None]:
  """Turns XLA running out of device memory into one line naming --chunk_size."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    raise UsageError(f'{chunk_flag}: the chunk does not fit in device memory '
                     f'({str(e).splitlines()[0][:160]}); use a smaller {chunk_flag}') from None


class DeviceData(NamedTuple):
  """The dataset on the device, images flattened to uint8[N, 784] (the validation
  split's None without one)."""
  train_images: jax.Array
  train_labels: jax.Array
  test_images: jax.Array
  test_labels: jax.Array
  validation_images: Optional[jax.Array] = None
  validation_labels: Optional[jax.Array] = None

  @property
  def nbytes(self) -> int:
    return sum(a.nbytes for a in self if a is not None)

  @property
  def eval_splits(self) -> Tuple[str, ...]:
    """The splits evaluated after each epoch, in order (metrics.EVALUATED_SPLITS)."""
    return tuple(s for s in metric_spec.EVALUATED_SPLITS
                 if getattr(self, f'{s}_labels') is not None)

  @property
  def evaluated(self) -> Tuple[jax.Array, ...]:
    """Images and labels of each of eval_splits in turn: the arguments of evaluate."""
    return tuple(getattr(self, f'{s}_{part}') for s in self.eval_splits
                 for part in ('images', 'labels'))


def to_device(dataset: Dataset, mesh: SeedMesh) -> DeviceData:
  """The dataset replicated on every device of the mesh, images as uint8[N, 784]."""
  flat = lambda images: images.reshape(images.shape[0], -1)
  arrays = [flat(dataset.train_images), dataset.train_labels, flat(dataset.test_images),
            dataset.test_labels]
  if dataset.validation_labels is not None:
    arrays += [flat(dataset.validation_images), dataset.validation_labels]
  return DeviceData(*(mesh.replicate(a) for a in arrays))


class ChunkPrograms:
  """The compiled programs for chunks of one config: `get(C)` -> (init, train_epoch,
  evaluate) for C rows (a multiple of vmap width x device count), compiled once per C.

  Each is traced through mlp_jax.program_cache: from `cache` when it holds the
  program (`description`: the config it was built from), else traced there."""

  def __init__(self, trainer, data: DeviceData, mesh: SeedMesh, vmap_width: int,
               description: str = '', cache: Optional[ProgramCache] = None):
    self._trainer, self._data, self._mesh, self._width = trainer, data, mesh, vmap_width
    self._description, self._program_cache = description, cache
    self._cache: Dict[int, Any] = {}
    self.compile_seconds = 0.0

  def _trace(self, name: str, size: int, fn: Callable[..., Any], *args: Any) -> Program:
    return trace(f'{name} of {size} rows at vmap width {self._width}: {self._description}',
                 fn, args, self._program_cache)

  def _compile(self, size: int):
    t, d, m, w = self._trainer, self._data, self._mesh, self._width
    options = environment.compiler_options()
    spec = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)
    # Initial states are made on this process's default device for the whole chunk
    # (cheap), then each process places the rows of its own devices. The keys are
    # derived inside: outside, each seed's would be five dispatches of small programs.
    seeds = jax.ShapeDtypeStruct((size,), np.uint32)
    init = self._trace('init', size,
                       map_over_seeds(lambda i, d: t.init(*keys_from_seeds(i, d)), 2, w),
                       seeds, seeds)
    states = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=m.by_seed),
                          init.out_shapes)
    hparams = {name: jax.ShapeDtypeStruct((size,), value.dtype, sharding=m.by_seed)
               for name, value in hyperparameters(TrainConfig()).items()}
    epoch = self._trace('train_epoch', size, m.shard(map_over_seeds(t.train_epoch, 2, w), 2, 2),
                        states, hparams, spec(d.train_images), spec(d.train_labels))
    evaluated = d.evaluated
    evaluate = self._trace('evaluate', size,
                           m.shard(map_over_seeds(t.evaluate, 1, w), 1, len(evaluated)),
                           states, *map(spec, evaluated))
    init = jax.jit(init, compiler_options=options)
    epoch = jax.jit(epoch, donate_argnums=0, compiler_options=options).lower(
        states, hparams, d.train_images, d.train_labels).compile()
    evaluate = jax.jit(evaluate, compiler_options=options).lower(
        states, *evaluated).compile()
    return init, epoch, evaluate

  def get(self, size: int):
    if size not in self._cache:
      start = time.perf_counter()
      with chunk_fits():
        self._cache[size] = self._compile(size)
      self.compile_seconds += time.perf_counter() - start
    return self._cache[size]

  def bytes_per_seed(self, size: int) -> Tuple[float, float]:
    """(device bytes each seed of a chunk needs, bytes independent of the seeds),
    from the memory XLA plans for the programs of `size` rows (compiled and kept
    for training)."""
    _, epoch, evaluate = self.get(size)
    sizes = [program.memory_analysis() for program in (epoch, evaluate)]
    total = max(s.argument_size_in_bytes + s.output_size_in_bytes + s.temp_size_in_bytes
                - s.alias_size_in_bytes for s in sizes)
    fixed = self._data.nbytes
    return max(0.0, total - fixed) / (size // self._mesh.size), fixed

  def initial_states(self, configs: Sequence[TrainConfig]) -> RunState:
    """The chunk's initial states, one row per config, split over the mesh: a
    RunState whose leaves have a leading seed axis."""
    init, _, _ = self.get(len(configs))
    seeds = np.array([key_seeds(c) for c in configs], np.uint32).T
    return self._mesh.put_seeds(jax.device_get(init(*seeds)))

  def hyperparameters(self, configs: Sequence[TrainConfig]) -> Hyperparameters:
    """The chunk's traced settings (train.hyperparameters), one row per config, split
    over the mesh."""
    values = [hyperparameters(c) for c in configs]
    return self._mesh.put_seeds({name: np.stack([v[name] for v in values])
                                 for name in values[0]})


def plan_chunks(members: Sequence[Member], chunk_size: int, unit: int,
                checkpoint_dir: Callable[[Sequence[RowKey]], str]) -> List[Chunk]:
  """Splits `members` into chunks of at most `chunk_size` seeds (rounded up to a
  multiple of `unit` = vmap width x device count), each padded to a multiple of
  `unit`, so that every vmap group on every device is full."""
  capacity = -(-chunk_size // unit) * unit
  chunks = []
  for start in range(0, len(members), capacity):
    part = tuple(members[start:start + capacity])
    chunks.append(Chunk(part, -(-len(part) // unit) * unit,
                        checkpoint_dir([m.key for m in part])))
  return chunks


def resumable_chunks(members: Sequence[Member], todo: Sequence[Member],
                     saved_dirs: Sequence[str], unit: int) -> List[Chunk]:
  """Chunks that continue the checkpoints in `saved_dirs` (a sweep's chunk directories,
  from any earlier chunking) holding a seed of `todo`, each as it was saved (its
  seeds, its padded size), so that an unfinished seed resumes from its checkpoint
  whatever --chunk_size is now. The furthest checkpoint wins a seed saved twice; a
  chunk that cannot be laid out on these devices (size not a multiple of `unit`)
  is left out, its seeds planned afresh."""
  by_key = {m.key: m for m in members}
  wanted = {m.key for m in todo}
  found = []
  for directory in saved_dirs:
    stored = checkpointed_seeds(directory)
    if stored is not None:
      found.append((stored[1], directory, stored[0]))
  chunks: List[Chunk] = []
  claimed = set()
  for _, directory, rows in sorted(found, key=lambda f: f[:2], reverse=True):
    keys = list(dict.fromkeys(rows))  # padding rows repeat the first member
    if (rows != keys + [keys[0]] * (len(rows) - len(keys)) or len(rows) % unit or
        not set(keys) <= set(by_key) or not set(keys) & wanted or set(keys) & claimed):
      continue
    claimed.update(keys)
    chunks.append(Chunk(tuple(by_key[k] for k in keys), len(rows), directory,
                        frozenset(set(keys) - wanted)))
  return chunks


@dataclasses.dataclass
class Context:
  """What every chunk of a process shares: devices, data, compiled programs."""
  mesh: SeedMesh
  data: DeviceData
  programs: ChunkPrograms
  examples: Dict[str, int]  # examples of each split: train (per epoch), test, ...

  @classmethod
  def create(cls, config: TrainConfig, dataset: Dataset, like: Optional['Context'] = None,
             program_cache: Optional[ProgramCache] = None) -> 'Context':
    """The programs of `config` (whose traced settings and seeds do not matter),
    on the devices and data of `like` if given (else the data is put on them),
    traced through `program_cache` if given."""
    mesh = SeedMesh() if like is None else like.mesh
    data = to_device(dataset, mesh) if like is None else like.data
    trainer = make_trainer(config, train_size=data.train_images.shape[0],
                           num_classes=dataset.num_classes, eval_splits=data.eval_splits)
    examples = {metric_spec.TRAIN: trainer.examples_per_epoch}
    examples.update({s: getattr(data, f'{s}_labels').shape[0] for s in data.eval_splits})
    return cls(mesh, data, ChunkPrograms(trainer, data, mesh, config.vmap_width,
                                         f'{program_cache_config(config)!r}, '
                                         f'{dataset.num_classes} classes', program_cache),
               examples)


@stops_on_lost_peer
def agree(*flags: bool) -> Tuple[bool, ...]:
  """Each flag true if true on any process: processes stop and save together."""
  if jax.process_count() == 1:
    return flags
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = multihost_utils.process_allgather(np.array(flags, np.int32))
  return tuple(bool(np.any(gathered[..., i])) for i in range(len(flags)))


class Diverged(UsageError):
  """A seed's loss became non-finite and --stop_on_divergence asked to stop."""


def first_diverged(log: np.ndarray, rows: Sequence[int], epoch: int,
                   columns: Sequence[str]) -> List[Optional[int]]:
  """For each of `rows`, the first of epochs 1..`epoch` of the metrics log (whose
  columns are `columns`) with a non-finite loss (None: none)."""
  losses = log[np.asarray(rows, dtype=int)][:, :epoch][
      ..., [list(columns).index(name) for name in DIVERGENCE_LOSSES]]
  bad = ~np.isfinite(losses).all(axis=-1)
  return [int(np.argmax(b)) + 1 if b.any() else None for b in bad]


@stops_on_lost_peer
def sync_processes(name: str) -> None:
  """Waits for every process (no-op with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def chunks_to_train(members: Sequence[Member], todo: Sequence[Member], ctx: Context,
                    options: RunOptions, checkpoint_dir: Callable[[Sequence[RowKey]], str],
                    saved_dirs: Sequence[str] = ()) -> List[Chunk]:
  """The chunks that train `todo`, the members of `members` whose records are not
  complete, to their last epoch (each then trained by train_chunk).

  `options`: the run's, its chunk_size resolved (a number; see
  mlp_jax.planning.resolve_chunk_size). `saved_dirs`: existing chunk checkpoint
  directories (a sweep's); an incomplete seed checkpointed in one resumes there,
  with the chunk it was saved in (resumable_chunks); the others are planned in
  chunks of options.chunk_size.
  """
  unit = members[0].config.vmap_width * ctx.mesh.size
  chunks = resumable_chunks(members, todo, saved_dirs, unit) if todo else []
  resumed = {m.key for c in chunks for m in c.members}
  return chunks + plan_chunks([m for m in todo if m.key not in resumed], options.chunk_size,
                              unit, checkpoint_dir)


def train_chunk(chunk: Chunk, ctx: Context, options: RunOptions, stop: StopRequests,
                reporter: Reporter, progress: Progress, timing: DriverTiming,
                started: float) -> None:
  """Trains one chunk from its latest checkpoint (or the start) to the last epoch,
  then writes the final records of this process's seeds.

  Each epoch is one call of the compiled train_epoch and one of evaluate (the
  chunk's ChunkPrograms); its metrics leave the devices in one transfer.

  Raises:
    Interrupted: SIGTERM or SIGINT arrived (to any process); the chunk was
      checkpointed (unless checkpoints are off).
    Diverged: a seed diverged and options.stop_on_divergence.
    OSError: a record could not be written; what was written before is intact.
  """
  configs = chunk.row_configs
  epochs = configs[0].epochs
  local = ctx.mesh.local_rows(chunk.size)      # rows on this process's devices
  todo = chunk.todo
  mine = [i for i, r in enumerate(local)       # ... holding a seed whose records are due
          if r < len(chunk.members) and chunk.members[r] in todo]
  members = [chunk.members[local[i]] for i in mine]
  diverged: Dict[str, int] = {}                # label -> the first epoch of non-finite loss
  _, train_epoch, evaluate = ctx.programs.get(chunk.size)
  states = ctx.programs.initial_states(configs)
  hparams = ctx.programs.hyperparameters(configs)
  timing.compile_seconds = ctx.programs.compile_seconds
  # Process 0 draws the curves after training (mlp_jax.run.finish).
  sink = RecordSink([m.run_dir for m in members], ctx.examples[metric_spec.TRAIN],
                    ctx.examples[metric_spec.TEST], tensorboard=options.tensorboard,
                    prepare_curves=jax.process_index() == 0,
                    validation_examples=ctx.examples.get(metric_spec.VALIDATION, 0))
  columns = sink.log_columns
  log = new_log(chunk.size, epochs, columns)
  checkpoints = open_checkpoints(chunk, options, states)
  try:
    epoch, restored, notes = checkpoints.restore_latest(
        {'state': states, 'log': ctx.mesh.put_seeds(log)})
    for note in notes:
      progress.line(note)
    if epoch:
      states = restored['state']
      log[local] = ctx.mesh.local_rows_of(restored['log'])
      progress.line(f'mlp_jax: resumed {len(todo)} seed(s) from their checkpoint '
                    f'after epoch {epoch}')
      note_divergence(diverged, members,
                      first_diverged(log, [local[i] for i in mine], epoch, columns), progress)
    sink.begin(log, [local[i] for i in mine], epoch)
    progress.add_done(epoch * len(todo))
    while epoch < epochs:
      if timing.startup_seconds is None:
        timing.startup_seconds = time.perf_counter() - started
      tick = time.perf_counter()
      with lost_peer_exits():
        states, train_metrics = train_epoch(states, hparams, ctx.data.train_images,
                                            ctx.data.train_labels)
        jax.block_until_ready(train_metrics)
        train_seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        eval_metrics = evaluate(states, *ctx.data.evaluated)
        metrics = ctx.mesh.local_rows_of({**train_metrics, **eval_metrics})
        eval_seconds = time.perf_counter() - tick
      epoch += 1
      timing.train_seconds += train_seconds
      timing.eval_seconds += eval_seconds
      timing.seed_epochs += len(todo)
      metrics.update(epoch_seconds=np.full(len(local), train_seconds, np.float32),
                     eval_seconds=np.full(len(local), eval_seconds, np.float32))
      log_epoch(log, local, epoch, metrics, columns)
      metrics = {name: values[mine] for name, values in metrics.items()}
      sink.write(epoch, metrics)
      finite = np.logical_and.reduce([np.isfinite(metrics[n]) for n in DIVERGENCE_LOSSES])
      note_divergence(diverged, members, [None if f else epoch for f in finite], progress)
      stopping, save, diverging = agree(stop.requested is not None,
                                        checkpoints.wants(epoch, epochs), bool(diverged))
      if diverging and options.stop_on_divergence:
        raise Diverged(divergence_message(diverged, epoch))
      if save or stopping:
        checkpoints.save(epoch, {'state': states, 'log': ctx.mesh.put_seeds(log)})
      if timing.first_epoch_done_seconds is None:
        timing.first_epoch_done_seconds = time.perf_counter() - started
      if members:
        progress.advance(reporter(EpochReport(
            [m.config for m in members], epoch,
            metric_spec.values(sink.metrics, metrics, ctx.examples),
            train_seconds, eval_seconds)), len(todo))
      if stopping:
        raise Interrupted(stop_message(stop.requested, epoch, options.checkpoint_every != 0),
                          stop.requested or signal.SIGTERM)
    variables = ctx.mesh.local_seeds(states)
    sink.finish([{'params': variables[local[i]].params, **variables[local[i]].model_state}
                 for i in mine])
  finally:
    try:
      checkpoints.close()
      sink.close()
    finally:
      timing.checkpoint_seconds += checkpoints.blocking_seconds
      timing.records_seconds += sink.seconds


def open_checkpoints(chunk: Chunk, options: RunOptions, states: RunState):
  """The chunk's checkpoints (a no-op stand-in when they are off)."""
  if options.checkpoint_every == 0:
    return NoCheckpoints()
  nbytes = sum(leaf.nbytes for leaf in jax.tree.leaves(states))
  return ChunkCheckpoints(chunk.checkpoint_dir, [m.key for m in chunk.rows],
                          options.keep_checkpoints, SavePolicy(options.checkpoint_every),
                          nbytes)


def note_divergence(diverged: Dict[str, int], members: Sequence[Member],
                    epochs: Sequence[Optional[int]], progress: Progress) -> None:
  """Records (and says, once per member) that members[i] diverged at epochs[i]."""
  for member, epoch in zip(members, epochs):
    if epoch is not None and member.label not in diverged:
      diverged[member.label] = epoch
      progress.line(f'mlp_jax: {member.label} diverged at epoch {epoch} (non-finite loss); '
                    'its later numbers are not meaningful (--stop_on_divergence stops '
                    'the run)')


def divergence_message(diverged: Dict[str, int], epoch: int) -> str:
  labels = list(diverged)
  if not labels:
    return (f'a seed of another process diverged (non-finite loss); stopped after epoch '
            f'{epoch} as --stop_on_divergence asks, the records so far are kept')
  named = ', '.join(f'{s} at epoch {diverged[s]}' for s in labels[:5])
  more = f' and {len(labels) - 5} more' if len(labels) > 5 else ''
  return (f'{named}{more} diverged (non-finite loss); stopped after epoch {epoch} '
          'as --stop_on_divergence asks, the records so far are kept')


def stop_message(signum: Optional[signal.Signals], epoch: int, checkpointed: bool) -> str:
  cause = signum.name if signum else 'a signal to another process'
  if checkpointed:
    return (f'mlp_jax: stopped by {cause} after epoch {epoch}; a checkpoint is '
            'saved: run the same command again to resume')
  return (f'mlp_jax: stopped by {cause} after epoch {epoch}; checkpoints are '
          'off (--checkpoint_every=0), so running the same command again starts over')
