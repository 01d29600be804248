"""mlp_jax.mesh: the seed axis over the devices (here the one CPU device of the test
process; several devices are tested through the sweeps of test_driver and test_grid)."""

import jax
import numpy as np
import pytest

from mlp_jax import mesh

pytestmark = pytest.mark.skipif(jax.device_count() != 1, reason='written for one device')


def test_one_device_holds_every_row():
  seeds = mesh.SeedMesh()
  assert seeds.size == jax.device_count() == 1
  assert seeds.padded(5) == 5 and seeds.padded(0) == 0
  assert seeds.local_rows(5) == [0, 1, 2, 3, 4]
  assert seeds.mesh.axis_names == (mesh.SEED_AXIS,)


def test_put_seeds_then_local_rows_of_gives_the_host_arrays_back():
  seeds = mesh.SeedMesh()
  tree = {'w': np.arange(12, dtype=np.float32).reshape(4, 3),
          'step': np.arange(4, dtype=np.int32)}
  placed = seeds.put_seeds(tree)
  assert placed['w'].sharding == seeds.by_seed
  back = seeds.local_rows_of(placed)
  assert back['w'].tobytes() == tree['w'].tobytes() and back['step'].tolist() == [0, 1, 2, 3]
  per_seed = seeds.local_seeds(placed)
  assert sorted(per_seed) == [0, 1, 2, 3]
  assert per_seed[2]['w'].tolist() == [6.0, 7.0, 8.0] and int(per_seed[2]['step']) == 2


def test_replicate_and_shard_map_each_seed_over_its_own_row():
  seeds = mesh.SeedMesh()
  shared = seeds.replicate(np.float32([10.0, 20.0]))
  assert shared.sharding == seeds.replicated

  def add(per_seed, offset):  # [S, 2] + [2]
    return per_seed + offset

  step = jax.jit(seeds.shard(add, per_seed_args=1, shared_args=1))
  out = step(seeds.put_seeds(np.float32([[1, 2], [3, 4], [5, 6]])), shared)
  assert seeds.local_rows_of(out).tolist() == [[11, 22], [13, 24], [15, 26]]
