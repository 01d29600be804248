"""The seed axis over every device of every process.

A chunk of seeds is one array per state leaf with a leading seed axis, split over
a 1-D mesh of all devices (`jax.sharding`); the data is replicated. Inside the
compiled program each device maps the per-seed functions over its own seeds
(`jax.shard_map` around `train.map_over_seeds`), so a seed runs the same
computation on 1 device, on 4, or on 2 processes x 2 devices. With several
processes (`jax.distributed`), each process feeds and reads only the seeds on
its own devices.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

SEED_AXIS = 'seeds'


class SeedMesh:
  """A 1-D mesh over `jax.devices()` (every process's) with the seed axis split on it."""

  def __init__(self, devices: Optional[Sequence[jax.Device]] = None):
    """`devices`: all of every process's by default; a benchmark may take just one."""
    devices = jax.devices() if devices is None else list(devices)
    self.mesh = jax.make_mesh((len(devices),), (SEED_AXIS,), devices=devices)
    self.by_seed = NamedSharding(self.mesh, P(SEED_AXIS))
    self.replicated = NamedSharding(self.mesh, P())

  @property
  def size(self) -> int:
    return self.mesh.devices.size

  def padded(self, seeds: int) -> int:
    """The chunk length: `seeds` rounded up to a multiple of the device count."""
    return -(-seeds // self.size) * self.size

  def local_rows(self, length: int) -> List[int]:
    """Rows of a seed-axis array of `length` that live on this process's devices."""
    index_map = self.by_seed.addressable_devices_indices_map((length,))
    rows = set()
    for index in index_map.values():
      rows.update(range(*index[0].indices(length)))
    return sorted(rows)

  def shard(self, fn: Callable[..., Any], per_seed_args: int, shared_args: int
            ) -> Callable[..., Any]:
    """`fn` of arrays with a leading seed axis -> the same, each device doing its seeds."""
    in_specs = (P(SEED_AXIS),) * per_seed_args + (P(),) * shared_args
    return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=P(SEED_AXIS))

  def replicate(self, array: np.ndarray) -> jax.Array:
    """A host array (the same on every process) placed whole on every device."""
    return jax.make_array_from_callback(array.shape, self.replicated, lambda index: array[index])

  def put_seeds(self, tree: Any) -> Any:
    """A host pytree with a leading seed axis -> global arrays split over the mesh.

    Only the rows of this process's devices are read, so other processes' rows
    may hold anything of the right shape.
    """
    return jax.tree.map(lambda a: jax.make_array_from_callback(
        a.shape, self.by_seed, lambda index: a[index]), tree)

  def local_rows_of(self, tree: Any) -> Any:
    """Global seed-axis arrays -> host numpy arrays of this process's rows (in
    `local_rows` order), all copied off the devices in one batch."""
    leaves, treedef = jax.tree.flatten(tree)
    shards = [sorted(leaf.addressable_shards, key=lambda s: s.index[0].start or 0)
              for leaf in leaves]
    for shard in (s for per_leaf in shards for s in per_leaf):
      shard.data.copy_to_host_async()
    return jax.tree.unflatten(treedef, [
        np.concatenate([np.asarray(s.data) for s in per_leaf]) for per_leaf in shards])

  def local_seeds(self, tree: Any) -> Dict[int, Any]:
    """Global seed-axis arrays -> {row: host pytree of that seed} for this process's rows."""
    leaves, treedef = jax.tree.flatten(tree)
    per_row: Dict[int, List[np.ndarray]] = {}
    for leaf in leaves:
      for shard in leaf.addressable_shards:
        data = np.asarray(shard.data)
        start = shard.index[0].start or 0
        for offset in range(data.shape[0]):
          per_row.setdefault(start + offset, []).append(data[offset])
    return {row: jax.tree.unflatten(treedef, values) for row, values in per_row.items()
            if len(values) == len(leaves)}
