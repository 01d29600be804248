"""Where a training's records go and how its directories are prepared.

`Layout` is one run directory (mlp_jax.main) or a sweep's (seed_<k>/, a grid's
<flag>=<value>/.../seed_<k>/); `prepare_run_dirs` and `prepare_sweep_dir` check
each directory against the settings it records (refusing others, restoring lost
settings files from the workdir's marker, extending a finished sweep with more
seeds) and write config.json, sweep.json and environment.json.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any, Dict, List, Optional, Sequence

from mlp_jax import records
from mlp_jax.checkpoints import RowKey
from mlp_jax.config import TrainConfig
from mlp_jax.driver import Member
from mlp_jax.grid import Grid, GridPoint
from mlp_jax.workdir import (RUN, SWEEP, WorkdirError, claim, is_ours, refuse_other_settings,
                             remove_entries, write_marker)


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
