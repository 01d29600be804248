"""Fitting a training to the machine before it starts: the vmap width, the chunk
size, device memory and disk.

Every estimate of what fits is made here: the automatic vmap width narrowed to the
device's memory (measured on the compiled programs), an explicit --chunk_size
checked against it, and a sweep's records and checkpoints checked against the
free disk space and inodes.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Set, Tuple

import jax
import numpy as np

from mlp_jax import models, records
from mlp_jax.config import CPU_CHUNK_SIZE, RunOptions, TrainConfig
from mlp_jax.driver import Context, Member
from mlp_jax.errors import UsageError
from mlp_jax.layout import Layout, stored_vmap_width
from mlp_jax.tensorboard import member_runs
from mlp_jax.workdir import WorkdirError, free_space, size_text


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
    # cost; wider groups gain little on a CPU (docs/performance.md).
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


# Share of a device's memory a chunk may plan to use (XLA needs some for itself).
MEMORY_SHARE = 0.8


def device_memory_bytes() -> Optional[int]:
  """What JAX may allocate on this process's first device (None on a CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return int(stats['bytes_limit']) if stats and 'bytes_limit' in stats else None


def seeds_that_fit(bytes_per_seed: float, fixed_bytes: float, limit: int) -> int:
  """How many seeds one device holds within MEMORY_SHARE of `limit` bytes."""
  return max(0, math.floor((MEMORY_SHARE * limit - fixed_bytes) / max(bytes_per_seed, 1.0)))


def check_chunk_fits(seeds_per_device: int, bytes_per_seed: float, fixed_bytes: float,
                     limit: Optional[int]) -> None:
  """UsageError naming --chunk_size if a chunk of that many seeds per device would not fit."""
  if limit is None:
    return
  fit = seeds_that_fit(bytes_per_seed, fixed_bytes, limit)
  if seeds_per_device > fit:
    raise UsageError(
        f'--chunk_size: {seeds_per_device} seeds per device need about '
        f'{(seeds_per_device * bytes_per_seed + fixed_bytes) / 2**30:.1f} GiB, more than '
        f'{MEMORY_SHARE:.0%} of the device\'s {limit / 2**30:.1f} GiB; at most {fit} fit: '
        'use a smaller --chunk_size')
