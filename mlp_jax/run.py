"""Training seeds into a workdir: what both entry points call.

A single run (`train_and_evaluate`, behind `python -m mlp_jax.main`) is a sweep of
one seed with another directory layout (`Layout`): both go through `train`, which
locks the workdir, resolves the settings that depend on the machine (vmap width,
chunk size), prepares each seed's run directory, hands the seeds to the driver
(mlp_jax.driver), and writes what comes after training (a sweep's summaries,
curves, timing).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import jax
import numpy as np

from mlp_jax import environment, models, records
from mlp_jax.checkpoints import RowKey
from mlp_jax.config import CPU_CHUNK_SIZE, RunOptions, TrainConfig
from mlp_jax.data import Dataset, hold_out, load_data
from mlp_jax.driver import (Context, DriverTiming, EpochReport, Member, Reporter,
                            check_chunk_fits, device_memory_bytes, seeds_that_fit,
                            sync_processes, train_members, writing_in)
from mlp_jax.grid import Grid, GridPoint, program_groups
from mlp_jax.program_cache import ProgramCache
from mlp_jax.train import program_config
from mlp_jax.progress import Progress
from mlp_jax.sink import render_curves
from mlp_jax.tensorboard import member_runs, write_grid_hparams
from mlp_jax.errors import Interrupted
from mlp_jax.workdir import (RUN, SWEEP, StopRequests, WorkdirError, claim, free_space,
                             is_ours, lock, refuse_other_settings, remove_entries, size_text,
                             write_marker)

def default_workdir(name: str) -> str:
  """A new folder runs/<date>-<time>-<name>."""
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  path, suffix = os.path.join('runs', f'{stamp}-{name}'), 1
  while os.path.exists(path):
    suffix += 1
    path = os.path.join('runs', f'{stamp}-{name}-{suffix}')
  return path


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the records of a training go: one run directory, or a sweep of seeds."""
  workdir: str
  sweep: bool

  def run_dir(self, seed: int, point: str = '') -> str:
    """A seed's run directory (in a grid, under its point's directory)."""
    if not self.sweep:
      return self.workdir
    return records.seed_dir(os.path.join(self.workdir, point) if point else self.workdir, seed)

  def member(self, config: TrainConfig, point: GridPoint) -> Member:
    """The member training `config` (a seed of `point`), named in a grid by its run
    directory within the sweep."""
    run_dir = self.run_dir(config.seed, point.name)
    name = os.path.relpath(run_dir, self.workdir) if point.settings else None
    return Member(config, run_dir, name)

  def checkpoint_dir(self, keys: Sequence[RowKey]) -> str:
    if self.sweep:
      return records.chunk_checkpoint_dir(self.workdir, keys)
    return os.path.join(self.workdir, records.CHECKPOINT_DIR)

  @property
  def settings_file(self) -> str:
    return os.path.join(self.workdir, records.SWEEP_FILE if self.sweep else records.CONFIG_FILE)

  def saved_checkpoint_dirs(self) -> List[str]:
    """A sweep's existing chunk checkpoint directories, whatever chunking made them
    (a single run has one, found by checkpoint_dir)."""
    root = os.path.join(self.workdir, records.CHECKPOINT_DIR)
    if not self.sweep or not os.path.isdir(root):
      return []
    return [os.path.join(root, name) for name in sorted(os.listdir(root))
            if os.path.isdir(os.path.join(root, name))]

  def refuse_the_other_layout(self) -> None:
    """A run's workdir is never used for a sweep, nor a sweep's for a run."""
    if self.sweep and records.is_run(self.workdir):
      raise WorkdirError(f'--workdir={self.workdir} holds a single run (config.json); a '
                         'sweep needs its own workdir')
    if not self.sweep and records.is_sweep(self.workdir):
      raise WorkdirError(f'--workdir={self.workdir} holds a sweep (sweep.json); a single '
                         'run needs its own workdir')


def sweep_settings(config: TrainConfig, seeds: Sequence[int], grid: Grid) -> Dict[str, Any]:
  """What sweep.json holds: everything that decides the sweep's numbers (the config
  of its first grid point, and the grid)."""
  shared = config.to_dict()
  del shared['seed']
  settings = {'seeds': list(seeds), 'config': shared}
  if grid:
    settings['grid'] = grid.to_json()
  return settings


def stored_vmap_width(layout: Layout) -> Optional[int]:
  """The vmap width a workdir's earlier training resolved, if it has one."""
  if not os.path.exists(layout.settings_file):
    return None
  settings = records.read_json_object(layout.settings_file)
  width = (settings.get('config', {}) if layout.sweep else settings).get('vmap_width')
  return width if isinstance(width, int) and width >= 1 else None


def resolve_vmap_width(seeds: int, layout: Layout, options: RunOptions) -> Tuple[int, bool]:
  """--vmap_width=auto made concrete (see RunOptions.vmap_width) for programs of
  `seeds` members: (the width, whether it is yet to be fitted to device memory: a
  new choice on a GPU/TPU). A workdir keeps the width it was started with, so a
  resumed seed keeps its numbers."""
  if options.vmap_width is not None:
    return options.vmap_width, False
  stored = None if options.overwrite else stored_vmap_width(layout)
  if stored is not None:
    return stored, False
  if jax.default_backend() == 'cpu':
    # Every seed of a sweep is then `mlp_jax.main --seed=k` bit for bit, at no replay
    # cost; wider groups gained at most ~12% here (README, Seed sweeps).
    return 1, False
  per_device = -(-seeds // jax.device_count())
  if options.chunk_size is not None:
    per_device = min(per_device, -(-options.chunk_size // jax.device_count()))
  return max(1, per_device), True


def fitted_width(ctx: Context, width: int) -> int:
  """An automatic vmap width narrowed to what fits in device memory: measured on the
  compiled programs of `ctx` at that width (kept for training when they fit)."""
  limit = device_memory_bytes()
  if limit is None:
    return width
  per_seed, fixed = ctx.programs.bytes_per_seed(width * ctx.mesh.size)
  return min(width, max(1, seeds_that_fit(per_seed, fixed, limit)))


def resolve_chunk_size(config: TrainConfig, options: RunOptions, ctx: Context) -> int:
  """--chunk_size=auto made concrete; an explicit size that cannot fit is refused."""
  width = config.vmap_width
  if options.chunk_size is None:
    if jax.default_backend() == 'cpu':
      return CPU_CHUNK_SIZE
    return width * ctx.mesh.size  # the chunk vectorised whole
  limit = device_memory_bytes()
  if limit is not None:
    unit = width * ctx.mesh.size
    size = -(-options.chunk_size // unit) * unit
    check_chunk_fits(size // ctx.mesh.size, *ctx.programs.bytes_per_seed(size), limit)
  return options.chunk_size


def prepare_run_dirs(members: Sequence[Member], env: Dict[str, Any], overwrite: bool,
                     write: bool) -> None:
  """Checks each seed's run directory against its config and, if `write`, sets it up.

  Every directory is checked before any is written. A directory that is not
  provably mlp_jax's is refused (workdir.claim), with or without `overwrite`; a
  lost config.json is restored from the run's marker. One holding a run with
  other settings is refused (naming them) unless `overwrite`, which deletes that
  run's records. A new one gets the marker, config.json and environment.json.
  With several processes only process 0 writes.
  """
  for member in members:
    config_path = os.path.join(member.run_dir, records.CONFIG_FILE)
    claim(member.run_dir, RUN, flag='', write=write)
    if os.path.exists(config_path) and not overwrite:
      refuse_other_settings(member.run_dir, records.read_json_object(config_path),
                            member.config.to_dict())
  if not write:
    return
  for member in members:
    config_path = os.path.join(member.run_dir, records.CONFIG_FILE)
    if overwrite:
      remove_entries(member.run_dir, records.RUN_ENTRIES)
    os.makedirs(member.run_dir, exist_ok=True)
    if not os.path.exists(config_path):
      # The marker first: it makes the folder provably ours, and restores config.json.
      write_marker(member.run_dir, RUN, member.config.to_dict())
      records.write_bytes_atomic(config_path, member.config.to_json().encode())
    # Checked apart from config.json: a full disk may have come between the two.
    if not os.path.exists(os.path.join(member.run_dir, records.ENVIRONMENT_FILE)):
      records.write_json(os.path.join(member.run_dir, records.ENVIRONMENT_FILE), env)


def prepare_sweep_dir(layout: Layout, settings: Dict[str, Any], members: Sequence[Member],
                      env: Dict[str, Any], overwrite: bool, write: bool) -> None:
  """Checks sweep.json against `settings`; with `overwrite` deletes the previous
  sweep's summaries and checkpoints and the run directories of members it listed
  that this one does not (the listed ones are started over per member).

  More seeds with otherwise the same settings extend the sweep (`extension`): its
  seeds' records and checkpoints stay as they are, sweep.json lists the new seeds
  too, and the statistics of the old seeds are removed (redone after training).
  """
  path = layout.settings_file
  extended = None
  if os.path.exists(path) and not overwrite:
    stored = records.read_json_object(path)
    extended = extension(layout.workdir, stored, settings)
    if extended is None:
      refuse_other_settings(layout.workdir, stored, settings)
  if not write:
    return
  if extended:
    # The old statistics go before any new seed trains: finish() redoes them when
    # timing.json is missing, so an extension killed before its end still does.
    remove_entries(layout.workdir, [e for e in records.SWEEP_ENTRIES if e not in (
        records.SWEEP_FILE, records.ENVIRONMENT_FILE, records.CHECKPOINT_DIR)])
    records.write_json(path, settings)
    write_marker(layout.workdir, SWEEP, settings)
    each = ' at each grid point' if settings.get('grid') else ''
    print(f'sweep: extending {layout.workdir} by {len(extended)} seed(s) '
          f'({seed_ranges(extended)}){each}; its {len(settings["seeds"]) - len(extended)} '
          'finished seed(s) are kept as they are', flush=True)
  if overwrite:
    previous = (records.sweep_run_dirs(records.read_json_object(path))
                if os.path.exists(path) else [])
    kept = {os.path.relpath(m.run_dir, layout.workdir) for m in members}
    # Only folders provably a run of mlp_jax's are deleted; anything else stays.
    dropped = sorted(d for d in set(previous) - kept
                     if is_ours(os.path.join(layout.workdir, d), RUN))
    remove_entries(layout.workdir, [*records.SWEEP_ENTRIES, *dropped])
    for run_dir in dropped:  # and a grid's point directories left empty
      parent = os.path.dirname(run_dir)
      while parent and os.path.isdir(os.path.join(layout.workdir, parent)) and not os.listdir(
          os.path.join(layout.workdir, parent)):
        os.rmdir(os.path.join(layout.workdir, parent))
        parent = os.path.dirname(parent)
  if not os.path.exists(path):
    write_marker(layout.workdir, SWEEP, settings)  # first: see prepare_run_dirs
    records.write_json(path, settings)
  if not os.path.exists(os.path.join(layout.workdir, records.ENVIRONMENT_FILE)):
    records.write_json(os.path.join(layout.workdir, records.ENVIRONMENT_FILE), env)


def extension(workdir: str, stored: Dict[str, Any], requested: Dict[str, Any]
              ) -> Optional[List[int]]:
  """The seeds `requested` (sweep.json's settings) adds to the `stored` sweep when it
  is an extension of it (more seeds, every other setting the same); [] if nothing
  differs; None if other settings differ. Leaving out stored seeds is a WorkdirError
  (only --overwrite drops seeds)."""
  old, new = stored.get('seeds'), requested['seeds']
  if not isinstance(old, list) or {**stored, 'seeds': new} != requested:
    return None
  kept, listed = set(new), set(old)
  dropped = [s for s in old if s not in kept]
  if dropped:
    raise WorkdirError(f'--workdir={workdir} holds a sweep of seeds {seed_ranges(old)}; '
                       f'seeds {seed_ranges(new)} leave out {len(dropped)} of them '
                       f'({seed_ranges(dropped)}): list them too to extend the sweep, use '
                       '--overwrite to start over without them, or choose another workdir')
  if old != new and listed == kept:
    return None  # the same seeds in another order: not an extension
  return [s for s in new if s not in listed]


def seed_ranges(seeds: Sequence[int]) -> str:
  """[0, 1, 2, 3, 7, 9, 10] -> '0-3,7,9-10' (what --seeds reads; order kept)."""
  parts: List[List[int]] = []
  for seed in seeds:
    if parts and seed == parts[-1][1] + 1:
      parts[-1][1] = seed
    else:
      parts.append([seed, seed])
  return ','.join(str(a) if a == b else f'{a}-{b}' for a, b in parts)


@dataclasses.dataclass
class Outcome:
  """What `train` did: the members, their final test accuracy, and the timing."""
  members: List[Member]
  final_test_accuracy: np.ndarray   # float64[members]
  timing: DriverTiming
  trained: bool                     # False: everything was already complete


def train(config: TrainConfig, seeds: Sequence[int], layout: Layout, options: RunOptions,
          reporter: Reporter, started: float, dataset: Optional[Dataset] = None,
          grid: Grid = Grid()) -> Optional[Outcome]:
  """Trains (or resumes) `seeds` of every point of `grid` (of `config` alone without
  one) into `layout`; None on processes but 0 (process 0 writes what follows
  training).

  Members that differ only in traced settings (train.TRACED_SETTINGS) share one
  compiled program and its chunks; each other program trains after the one before.
  `dataset`: the data to train on (default: the config's, loaded and verified).
  """
  options.validate()
  points = grid.points(config)
  dataset = load_data(config) if dataset is None else dataset
  for point in points:
    point.config.validate(train_size=dataset.full_train_size)
  # The same held-out images for every point and seed; config.json records which.
  dataset = hold_out(dataset, config.validation_size)
  config = config.replace(validation_sha256=dataset.validation_sha256)
  points = grid.points(config)
  timing = DriverTiming()
  kind = SWEEP if layout.sweep else RUN
  claim(layout.workdir, kind, write=False)  # before the lock file: a folder not ours stays so
  # Signals stop at an epoch boundary (the driver) or between the final writes (finish).
  with lock(layout.workdir, jax.process_index()), writing_in(layout.workdir), \
      StopRequests() as stop:
    claim(layout.workdir, kind, write=jax.process_index() == 0)
    layout.refuse_the_other_layout()
    members = [layout.member(p.config.replace(seed=s), p) for p in points for s in seeds]
    groups = program_groups(members, lambda m: program_config(m.config))
    width, to_fit = resolve_vmap_width(max(map(len, groups)), layout, options)
    if layout.sweep:  # a seed's lost config.json restored first: is_complete reads it
      for member in members:
        claim(member.run_dir, RUN, flag='', write=jax.process_index() == 0)
    # Read once (is_complete reads each params file back); --overwrite starts every
    # member over (prepare_run_dirs deletes their records).
    complete = set() if options.overwrite else {
        m.run_dir for m in members if records.is_complete(m.run_dir)}
    if not options.overwrite:
      say_what_is_rebuilt([m.run_dir for m in members if m.run_dir not in complete], layout)
    due = [any(m.run_dir not in complete for m in group) for group in groups]
    programs = ProgramCache(options.program_cache_dir) if options.program_cache_dir else None
    contexts = create_contexts(groups, due, width, dataset, programs)
    if to_fit and any(due):
      fitted = min(fitted_width(ctx, width) for ctx in contexts if ctx is not None)
      if fitted < width:
        width, contexts = fitted, create_contexts(groups, due, fitted, dataset, programs)
    # Point by point (the order of the records); grouped by program to train.
    members = [dataclasses.replace(m, config=m.config.replace(vmap_width=width))
               for m in members]
    groups = program_groups(members, lambda m: program_config(m.config))
    # Before anything is written: an explicit --chunk_size that cannot fit is refused.
    chunk_sizes = [None if ctx is None else resolve_chunk_size(group[0].config, options, ctx)
                   for group, ctx in zip(groups, contexts)]
    env = environment.describe(dataset)
    first = jax.process_index() == 0
    if layout.sweep:
      plan_sweep(layout, members, complete, options, dataset.num_classes, len(seeds))
      # The sweep's settings, then every seed's folder, checked before the sweep's own
      # records change (--overwrite).
      prepare_sweep_dir(layout, sweep_settings(members[0].config, seeds, grid), members, env,
                        options.overwrite, write=False)
      prepare_run_dirs(members, env, options.overwrite, write=False)
      prepare_sweep_dir(layout, sweep_settings(members[0].config, seeds, grid), members, env,
                        options.overwrite, write=first)
    prepare_run_dirs(members, env, options.overwrite, write=first)
    sync_processes('mlp_jax: run directories ready')
    if not layout.sweep:
      shown = f' (vmap width {width})' if width > 1 else ''
      print(f'mlp_jax: run in {layout.workdir}{shown}', flush=True)
    epochs = config.epochs
    progress = Progress(len(members) * epochs, unit='seed-epochs' if layout.sweep
                        else 'epochs', out=sys.stdout, bar=sys.stderr)
    # Beyond 64 seeds per point a sweep's TensorBoard holds each point's mean, unless
    # every member is asked for: TensorBoard slows down at a few hundred runs.
    member_tensorboard = options.tensorboard and (
        not layout.sweep or member_runs(len(seeds), options.tensorboard_members))
    try:
      for group, ctx, chunk_size in zip(groups, contexts, chunk_sizes):
        if ctx is None:
          progress.add_done(len(group) * epochs)
          continue
        driver_options = options.replace(chunk_size=chunk_size, tensorboard=member_tensorboard)
        if layout.sweep:
          print(f'sweep: {sweep_shape(len(points), len(seeds), len(group), epochs)}, vmap '
                f'width {width}, {trained_together(len(group), chunk_size, width, ctx)} over '
                f'{jax.device_count()} device(s) in {jax.process_count()} process(es); '
                f'writing to {layout.workdir}', flush=True)
        train_members(group, [m for m in group if m.run_dir not in complete], ctx,
                      driver_options, layout.checkpoint_dir, reporter, progress,
                      timing, started, layout.saved_checkpoint_dirs())
    finally:
      progress.close()
    if programs is not None:
      timing.programs_from_cache, timing.programs_traced = programs.hits, programs.misses
    sync_processes('mlp_jax: all seeds trained')
    if jax.process_index() != 0:
      return None
    return finish(points, members, layout, options, timing, started, dataset, stop)


def say_what_is_rebuilt(run_dirs: Sequence[str], layout: Layout) -> None:
  """Names each finished run (its parameters written) whose history.csv is lost or
  damaged: it is finished again from its checkpoint, whose metrics log rewrites the
  history. Without any checkpoint that would be training it all over: refused in
  one line naming the cause (--overwrite retrains it, to the same bits)."""
  checkpoints = os.path.join(layout.workdir, records.CHECKPOINT_DIR)
  saved = os.path.isdir(checkpoints) and bool(os.listdir(checkpoints))
  for run_dir in run_dirs:
    if records.params_written(run_dir):
      if not saved:
        raise WorkdirError(f'{records.missing_history(run_dir)}, though the run has its '
                           'parameters; no checkpoint holds its metrics to rebuild it: use '
                           '--overwrite to train it again (the same bits)')
      print(f'mlp_jax: {records.missing_history(run_dir)}, though the run has its '
            'parameters; rebuilding its records from its checkpoint', flush=True)


# A sweep of more new run directories than this says what it will take before it starts.
PLAN_LINE_MEMBERS = 1000


def plan_sweep(layout: Layout, members: Sequence[Member], complete: Set[str],
               options: RunOptions, num_classes: int, seeds_per_point: int) -> None:
  """Before a sweep writes anything: what its members' records and checkpoints will
  take on disk, refused in one line if more than the filesystem has free (bytes or
  files), and said in one line when it is large (PLAN_LINE_MEMBERS)."""
  todo = [m for m in members if m.run_dir not in complete]
  if not todo:
    return
  config = todo[0].config
  shapes = models._param_shapes(config, num_classes)  # pylint: disable=protected-access
  params_bytes = 4 * sum(int(np.prod(shape)) for shape in shapes.values())
  free, inodes, block = free_space(layout.workdir)
  tensorboard = options.tensorboard and member_runs(seeds_per_point, options.tensorboard_members)
  per_member, files = records.footprint(params_bytes, config.epochs, block, options.seed_curves,
                                        tensorboard)
  checkpoints = 0 if options.checkpoint_every == 0 else (
      records.CHECKPOINT_PARAMS_FACTOR * params_bytes * options.keep_checkpoints)
  need, need_files = len(todo) * (per_member + checkpoints), len(todo) * files
  what = (f'{len(todo)} run directories of {size_text(per_member)} and checkpoints of '
          f'{size_text(checkpoints)} per seed need about {size_text(need)} and {need_files} '
          'files')
  if need > free or need_files > inodes:
    raise WorkdirError(f'--workdir={layout.workdir}: {what}; its filesystem has '
                       f'{size_text(free)} and {inodes} files free: use fewer seeds, '
                       '--checkpoint_every=0 or another --workdir')
  if len(todo) >= PLAN_LINE_MEMBERS:
    print(f'sweep: plan: {len(todo) * config.epochs} seed-epochs on {jax.device_count()} '
          f'device(s); '
          f'{what} ({size_text(free)} free); each epoch line gives its seconds', flush=True)


def trained_together(members: int, chunk_size: int, width: int, ctx: Context) -> str:
  """'chunks of N' for a sweep's header, N the seeds that train together: the chunk
  size rounded up to whole vmap groups on every device (driver.plan_chunks), at most
  the members there are (padded the same way)."""
  unit = width * ctx.mesh.size
  capacity = -(-chunk_size // unit) * unit
  together = min(capacity, -(-members // unit) * unit)
  rounded = (f' (--chunk_size={chunk_size} rounded up to whole vmap groups of {width} on '
             f'each of {ctx.mesh.size} device(s))' if capacity != chunk_size and
             together == capacity else '')
  return f'chunks of {together}{rounded}'


def create_contexts(groups: Sequence[Sequence[Member]], due: Sequence[bool], width: int,
                    dataset: Dataset, programs: Optional[ProgramCache] = None
                    ) -> List[Optional[Context]]:
  """A Context (compiled programs at vmap width `width`, traced through
  `programs` if given) for each group that is due to train (None for the
  others); the data goes on the devices once."""
  contexts: List[Optional[Context]] = []
  shared = None
  for group, needed in zip(groups, due):
    ctx = None
    if needed:
      ctx = Context.create(group[0].config.replace(vmap_width=width), dataset, like=shared,
                           program_cache=programs)
      shared = shared or ctx
    contexts.append(ctx)
  return contexts


def sweep_shape(points: int, seeds: int, members: int, epochs: int) -> str:
  """'10 seeds x 3 epochs', or for a grid '3 grid points x 10 seeds: 30 members (of
  this program) x 3 epochs'."""
  if points == 1:
    return f'{seeds} seeds x {epochs} epochs'
  return (f'{points} grid points x {seeds} seeds: {members} members of this program x '
          f'{epochs} epochs')


def finish(points: Sequence[GridPoint], members: List[Member], layout: Layout,
           options: RunOptions, timing: DriverTiming, started: float, dataset: Dataset,
           stop: Optional[StopRequests] = None) -> Outcome:
  """What follows training: curves, a sweep's summaries, timing.json (written only
  when something was trained, or missing).

  A signal seen by `stop` stops between these writes (each is whole), with one
  line (Interrupted); the same command then writes what is missing."""
  tick = time.perf_counter()
  run_dirs = [m.run_dir for m in members]
  stop_point(stop, layout, 'none of them written yet')
  if not layout.sweep or options.seed_curves:
    missing = [m for m in members if not os.path.exists(os.path.join(m.run_dir,
                                                                       records.CURVES_FILE))]
    render_curves([m.run_dir for m in missing],
                  [f'{models.describe(m.config)}, seed {m.config.seed}' for m in missing],
                  should_stop=lambda: stop is not None and stop.requested is not None)
    stop_point(stop, layout, 'some curves.png drawn')
  curves = records.read_curves(run_dirs)
  timing_path = os.path.join(layout.workdir, records.TIMING_FILE)
  trained = bool(timing.seed_epochs) or not os.path.exists(timing_path)
  if trained and layout.sweep:
    write_summaries(layout.workdir, points, members, options.tensorboard, dataset,
                    options.tensorboard_members)
  timing.summary_seconds = time.perf_counter() - tick
  if trained:
    stop_point(stop, layout, 'the summaries written, not timing.json')
    timing.total_seconds = time.perf_counter() - started
    records.write_json(timing_path, timing.as_dict())
  return Outcome(members, curves['test_accuracy'][:, -1], timing, bool(timing.seed_epochs))


def stop_point(stop: Optional[StopRequests], layout: Layout, done: str) -> None:
  """Interrupted if a signal has arrived: the final writes stop here, saying how far
  they got."""
  if stop is not None and stop.requested is not None:
    raise Interrupted(f'mlp_jax: stopped by {stop.requested.name} during the final writes '
                      f'({done}); every seed is trained: run the same command again to '
                      f'finish them in {layout.workdir}', stop.requested)


def write_summaries(workdir: str, points: Sequence[GridPoint], members: Sequence[Member],
                    tensorboard: bool, dataset: Dataset,
                    tensorboard_members: bool = False) -> None:
  """A sweep's statistics, per grid point (a sweep without a grid is one point):
  summary.csv, final.csv, points.csv (ranked, with each point's ensemble),
  curves.png (a band per point), the mean's TensorBoard events and, for a grid,
  its HParams table (mlp_jax.tensorboard.write_grid_hparams; `tensorboard_members`:
  a run per member even beyond 64 per point)."""
  # Imported here: scipy and matplotlib take a second of a single run's start-up.
  from mlp_jax import inference, plots, stats  # pylint: disable=g-import-not-at-top
  per_point = len(members) // len(points)
  summary, final, bands, correct = [], [], [], []
  for i, point in enumerate(points):
    mine = members[i * per_point:(i + 1) * per_point]
    run_dirs = [m.run_dir for m in mine]
    curves = records.read_curves(run_dirs)
    summary += [{**point.cells, **row} for row in stats.summary_rows(curves)]
    # With a validation split, best epochs are chosen on it (test reported at them).
    rows = stats.final_rows([m.config.seed for m in mine], curves['test_accuracy'],
                            curves.get(VALIDATION_ACCURACY))
    for row, epoch in zip(rows, records.diverged_epochs(curves)):
      row[records.DIVERGED_COLUMN] = '' if epoch is None else str(epoch)
    final += [{**point.cells, **row} for row in rows]
    bands.append((point, curves))
    correct.append(inference.ensemble_correct(run_dirs, dataset.test_images,
                                              dataset.test_labels))
  records.write_csv(os.path.join(workdir, records.SUMMARY_FILE), summary)
  records.write_csv(os.path.join(workdir, records.FINAL_FILE), final)
  # With a validation split, points are ranked and tied on it alone (no test column).
  validation = ([c[VALIDATION_ACCURACY][:, -1] for _, c in bands]
                if VALIDATION_ACCURACY in bands[0][1] else None)
  records.write_csv(os.path.join(workdir, records.POINTS_FILE), stats.point_rows(
      [p.cells for p in points], [c['test_accuracy'][:, -1] for _, c in bands],
      [records.format_fraction(n, len(dataset.test_labels)) for n in correct], validation))
  config = points[0].config
  if len(points) == 1:
    curves = bands[0][1]
    plots.plot_band(curves, os.path.join(workdir, records.CURVES_FILE),
                    f'{models.describe(config)}, {per_point} seeds: mean final test accuracy '
                    f'{curves["test_accuracy"][:, -1].mean():.4f}')
  else:
    plots.plot_bands([(p.name.replace('/', ', '), c) for p, c in bands],
                     os.path.join(workdir, records.CURVES_FILE),
                     f'{len(points)} grid points x {per_point} seeds: mean and 95% CI')
  if tensorboard:
    from mlp_jax.tensorboard import EpochWriter  # pylint: disable=g-import-not-at-top
    writer = EpochWriter([os.path.join(workdir, records.TENSORBOARD_DIR, p.name)
                          for p in points])
    try:
      for i, epoch in enumerate(bands[0][1]['epoch']):
        writer.write(int(epoch), {m: np.array([c[m][:, i].mean() for _, c in bands])
                                  for m in bands[0][1] if m != 'epoch'})
    finally:
      writer.close()
    if points[0].settings:
      tensorboard_dir = os.path.join(workdir, records.TENSORBOARD_DIR)
      write_grid_hparams(
          tensorboard_dir, [p.settings for p in points],
          [[os.path.join(m.run_dir, records.TENSORBOARD_DIR)
            for m in members[i * per_point:(i + 1) * per_point]] for i in range(len(points))],
          [os.path.join(tensorboard_dir, p.name) for p in points], [c for _, c in bands],
          [n / len(dataset.test_labels) for n in correct],
          member_runs(per_point, tensorboard_members))


def epoch_line(report: EpochReport) -> str:
  """The console line of a single run's epoch."""
  m, epochs = report.metrics, report.configs[0].epochs
  return (f'epoch {report.epoch:>{len(str(epochs))}}/{epochs}  '
          f'train loss {m["train_loss"][0]:.4f} acc {m["train_accuracy"][0]:.4f}  '
          f'test loss {m["test_loss"][0]:.4f} acc {m["test_accuracy"][0]:.4f}  '
          + (f'val loss {m["validation_loss"][0]:.4f} acc {m["validation_accuracy"][0]:.4f}  '
             if 'validation_loss' in m else '') +
          f'{report.epoch_seconds:.2f}s + eval {report.eval_seconds:.2f}s')


def sweep_line(report: EpochReport) -> str:
  """One console line per chunk epoch: how far, and how much the seeds disagree."""
  accuracy, loss = report.metrics['test_accuracy'], report.metrics['train_loss']
  epochs = report.configs[0].epochs
  seeds = [c.seed for c in report.configs]
  spread = (f' ± {accuracy.std(ddof=1):.4f} [{accuracy.min():.4f}, {accuracy.max():.4f}]'
            if len(seeds) > 1 else '')
  points = len({c.replace(seed=0) for c in report.configs})
  who = (f'{len(seeds)} seed(s) {seeds[0]}..{seeds[-1]}' if points == 1 else
         f'{len(seeds)} members of {points} grid points')
  return (f'epoch {report.epoch:>{len(str(epochs))}}/{epochs}  {who}  '
          f'test acc mean {accuracy.mean():.4f}{spread}  train loss mean {loss.mean():.4f}  '
          f'{report.epoch_seconds:.2f}s + eval {report.eval_seconds:.2f}s')


def train_and_evaluate(config: TrainConfig, workdir: Optional[str] = None,
                       options: RunOptions = RunOptions(),
                       started: Optional[float] = None,
                       dataset: Optional[Dataset] = None) -> Dict[str, Any]:
  """Trains one seed as `config` says, writing every record into `workdir`.

  Re-running on the same workdir resumes from its last checkpoint, or says the
  run is complete.

  Args:
    config: the run's settings (its vmap_width is replaced by options.vmap_width
      when given; auto keeps the workdir's or uses 1 for a single seed).
    workdir: where to write; default a new folder under runs/.
    options: checkpointing, overwrite and output behaviour.
    started: time.perf_counter() at process start, for timing.json.
    dataset: the config's data, if already loaded (data.load_data).

  Returns:
    The final epoch's metrics and the workdir.
  """
  started = time.perf_counter() if started is None else started
  workdir = workdir or default_workdir(f'seed{config.seed}')
  outcome = train(config, [config.seed], Layout(workdir, sweep=False), options, epoch_line,
                  started, dataset)
  final = records.final_row(workdir)
  if outcome is not None and outcome.trained:
    timing = outcome.timing
    diverged = records.diverged_epochs(records.read_curves([workdir]))[0]
    warning = '' if diverged is None else f' (diverged at epoch {diverged})'
    print(f'mlp_jax: final test accuracy {float(final["test_accuracy"]):.4f}{warning} after '
          f'{config.epochs} epochs; start-up {timing.startup_seconds:.1f}s, total '
          f'{timing.total_seconds:.1f}s; records in {workdir}', flush=True)
  else:
    print(f'mlp_jax: {workdir} holds a complete run of {config.epochs} epochs '
          f'(final test accuracy {float(final["test_accuracy"]):.4f}); nothing to do',
          flush=True)
  return {**{k: float(v) for k, v in final.items()}, 'workdir': workdir}


def train_sweep(config: TrainConfig, seeds: Sequence[int], workdir: Optional[str] = None,
                options: RunOptions = RunOptions(), started: Optional[float] = None,
                grid: Grid = Grid(), dataset: Optional[Dataset] = None
                ) -> Optional[List[Dict[str, str]]]:
  """Trains (or resumes) every seed of a sweep (of every point of `grid`) into
  `workdir` and writes its summaries; returns points.csv's rows, best first (None
  on processes but 0). `dataset`: the config's data, if already loaded."""
  started = time.perf_counter() if started is None else started
  workdir = workdir or default_workdir(f'sweep{seeds[0]}')
  outcome = train(config, seeds, Layout(workdir, sweep=True), options, sweep_line, started,
                  dataset, grid)
  if outcome is None:
    return None
  if not outcome.trained:
    print(f'sweep: {workdir} holds a complete sweep; nothing to do', flush=True)
  points = records.read_csv(os.path.join(workdir, records.POINTS_FILE))
  timing = outcome.timing
  if grid:
    print(points_table(points, grid.flags), flush=True)
  else:
    p = points[0]
    spread = (f' ± {float(p["std"]):.4f} (std), 95% CI [{float(p["ci95_low"]):.4f}, '
              f'{float(p["ci95_high"]):.4f}]' if int(p['n']) > 1 else '')
    validated = (f'; validation accuracy mean {float(p["validation_mean"]):.4f}'
                 if p.get('validation_mean') else '')
    print(f'sweep: final test accuracy over {p["n"]} seed(s): mean {float(p["mean"]):.4f}'
          f'{spread}; ensemble of the seeds {float(p["ensemble_test_accuracy"]):.4f}'
          f'{validated}', flush=True)
    print(f'sweep: {selection_note(p)}', flush=True)
  for line in planning_lines(outcome.members, len(grid.points(config)), options):
    print(f'sweep: {line}', flush=True)
  print(f'sweep: {timing.seed_epochs} seed-epochs trained in {timing.train_seconds:.1f}s; '
        f'records in {workdir}', flush=True)
  return points


VALIDATION_ACCURACY = 'validation_accuracy'
# Suggested to a sweep that selected on the test set.
SPLIT_ADVICE = ('--validation_size=5000 holds out training images to select on instead, '
                'leaving the test set an unbiased estimate')


def selection_note(point: Dict[str, str]) -> str:
  """What a single sweep's best epochs (final.csv) were chosen on."""
  if point.get('selected_on') == 'validation':
    return ('final.csv\'s best epochs are chosen on validation accuracy; the test accuracy '
            'reported is the one at that epoch')
  return f'final.csv\'s best epochs are chosen on the test set itself; {SPLIT_ADVICE}'


def planning_lines(members: Sequence[Member], points: int, options: RunOptions) -> List[str]:
  """Seed planning (mlp_jax.stats, 80% power, alpha 0.05) of a finished sweep, on its
  selection metric (final validation accuracy with a split, else test): the smallest
  difference its seeds detect and, with --target_difference, the seeds that detect
  that. A grid's test is paired (seed k matches across points), on the per-seed
  differences of the runner-up from the best; a single sweep's is the two-sample
  test against another sweep of as many seeds with its spread."""
  from mlp_jax import stats  # pylint: disable=g-import-not-at-top
  per_point = len(members) // points
  if per_point < 2:
    return []
  finals = []
  for i in range(points):
    curves = records.read_curves([m.run_dir for m in members[i * per_point:(i + 1) * per_point]])
    finals.append(curves.get(VALIDATION_ACCURACY, curves['test_accuracy'])[:, -1])
  metric = ('final validation accuracy' if VALIDATION_ACCURACY in curves
            else 'final test accuracy')
  if points > 1:
    order = sorted(range(points), key=lambda i: -float(np.mean(finals[i])))
    std = float(np.std(finals[order[1]] - finals[order[0]], ddof=1))
    paired, basis = True, f'paired, std {std:.4f} of the per-seed differences of ranks 1 and 2'
  else:
    std = float(np.std(finals[0], ddof=1))
    paired, basis = False, (f'unpaired, against another sweep of as many seeds, std '
                            f'{std:.4f} of each')
  detectable = stats.detectable_difference(per_point, std, paired=paired)
  lines = [f'{per_point} seeds detect a difference of {detectable:.4f} in {metric} '
           f'(80% power, alpha 0.05; {basis})']
  target = options.target_difference
  if target is not None:
    needed = stats.seeds_needed(target, std, paired=paired) if std > 0 else 2
    lines.append(f'--target_difference={target:g} needs {needed} seeds'
                 + (' per sweep' if not paired else '') + ' at that spread'
                 + (f' (--seeds=0-{needed - 1})' if needed > per_point else
                    '; these seeds suffice'))
  return lines


def points_table(points: Sequence[Dict[str, str]], flags: Sequence[str]) -> str:
  """points.csv's rows as the console table a grid sweep ends with: ranked, and
  compared with the best, on validation accuracy with a split (else on the test
  set, which the title says, suggesting the split)."""
  validated = points[0].get('selected_on') == 'validation'
  header = ['rank', *flags, 'seeds', *(['val acc'] if validated else []), 'final test acc',
            '95% CI', 'ensemble', 'vs best', 'Holm p', 'tied']
  lines = [header]
  for p in points:
    number = lambda key, digits=4: f'{float(p[key]):.{digits}f}' if p.get(key) else '-'
    lines.append([p['rank'], *(p[f] for f in flags), p['n'],
                  *([number('validation_mean')] if validated else []),
                  f'{number("mean")} ± {number("std")}',
                  f'[{number("ci95_low")}, {number("ci95_high")}]',
                  number('ensemble_test_accuracy'),
                  f'{float(p["difference_to_best"]):+.4f}' if p['difference_to_best'] else '-',
                  f'{float(p["holm_p_value"]):.3g}' if p.get('holm_p_value') else '-',
                  {'true': 'yes', 'false': 'no'}.get(p.get('tied_with_best', ''), '-')])
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  tied = [p['rank'] for p in points if p.get('tied_with_best') == 'true']
  if validated:
    title = ('grid: ranked on mean final validation accuracy; vs best, Holm p (paired '
             't-tests against the best, Holm-adjusted) and ties on validation; test accuracy '
             '(± std) is the estimate of each point')
  else:
    title = ('grid: ranked on mean final TEST accuracy (selected on the test set: the '
             f'winner\'s figure is optimistic; {SPLIT_ADVICE}); vs best, Holm p (paired '
             't-tests against the best, Holm-adjusted) and ties on test accuracy')
  if not any(p.get('tied_with_best') for p in points[1:]):
    footer = 'grid: ties need at least 2 seeds per point'
  elif len(tied) > 1:
    footer = f'grid: tied with the best (Holm p > 0.05): rank(s) {", ".join(tied)}'
  else:
    footer = 'grid: no point is tied with the best (every Holm p <= 0.05)'
  return '\n'.join([title] + ['  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                               for line in lines] + [footer])
