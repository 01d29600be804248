"""Training seeds into a workdir: the orchestration both entry points call.

A single run (`train_and_evaluate`, behind `python -m mlp_jax.main`) is a sweep of
one seed with another directory layout (mlp_jax.layout): both go through `train`,
which locks the workdir, fits the training to the machine (mlp_jax.planning: vmap
width, chunk size, memory, disk), prepares each seed's run directory
(mlp_jax.layout), hands the seeds to the driver (mlp_jax.driver), and writes what
comes after training (mlp_jax.summaries: a sweep's summaries; curves, timing).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import numpy as np

from mlp_jax import environment, models, records
from mlp_jax.config import RunOptions, TrainConfig
from mlp_jax.data import Dataset, hold_out, load_data
from mlp_jax.driver import (Context, DriverTiming, Member, Reporter, chunks_to_train,
                            sync_processes, train_chunk, writing_in)
from mlp_jax.grid import Grid, GridPoint, program_groups
from mlp_jax.program_cache import ProgramCache
from mlp_jax.train import program_config
from mlp_jax.progress import Progress
from mlp_jax.sink import render_curves
from mlp_jax.tensorboard import member_runs
from mlp_jax.errors import Interrupted
from mlp_jax.workdir import RUN, SWEEP, StopRequests, claim, lock
from mlp_jax.layout import (Layout, default_workdir, prepare_run_dirs, prepare_sweep_dir,
                            say_what_is_rebuilt, sweep_settings)
from mlp_jax.planning import (fitted_width, plan_sweep, resolve_chunk_size, resolve_vmap_width,
                              trained_together)
from mlp_jax.summaries import (epoch_line, planning_lines, points_table, selection_note,
                               sweep_line, sweep_shape, write_summaries)


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
        todo = [m for m in group if m.run_dir not in complete]
        progress.add_done((len(group) - len(todo)) * epochs)
        for chunk in chunks_to_train(group, todo, ctx, driver_options, layout.checkpoint_dir,
                                     layout.saved_checkpoint_dirs()):
          train_chunk(chunk, ctx, driver_options, stop, reporter, progress, timing, started)
    finally:
      progress.close()
    if programs is not None:
      timing.programs_from_cache, timing.programs_traced = programs.hits, programs.misses
    sync_processes('mlp_jax: all seeds trained')
    if jax.process_index() != 0:
      return None
    return finish(points, members, layout, options, timing, started, dataset, stop)


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


