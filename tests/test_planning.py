"""mlp_jax.planning: what fits in device memory and on disk, and the sweep's plan lines."""

import os
import types

import pytest

from mlp_jax import driver, planning, records
from mlp_jax.config import RunOptions, TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.run import Layout

CONFIG = TrainConfig(epochs=2, batch_size=128)


def test_a_chunk_too_large_for_the_device_is_one_line_naming_chunk_size():
  assert planning.seeds_that_fit(bytes_per_seed=1e6, fixed_bytes=1e8, limit=10**9) == 700
  planning.check_chunk_fits(700, 1e6, 1e8, 10**9)
  planning.check_chunk_fits(10**6, 1e6, 1e8, None)  # a CPU: no device limit
  with pytest.raises(UsageError, match=r'--chunk_size: 701 seeds per device .* at most 700'):
    planning.check_chunk_fits(701, 1e6, 1e8, 10**9)


@pytest.mark.slow
def test_an_automatic_width_narrows_to_what_fits_in_device_memory(subset, monkeypatch):
  """On a GPU/TPU --vmap_width=auto starts from every seed at once and narrows to
  what the device holds (a CPU has no limit: simulated here)."""
  config = CONFIG.replace(vmap_width=8)
  ctx = driver.Context.create(config, subset)
  per_seed, fixed = ctx.programs.bytes_per_seed(8)
  limit = int((fixed + 3.5 * per_seed) / planning.MEMORY_SHARE)  # room for 3 seeds
  monkeypatch.setattr(planning, 'device_memory_bytes', lambda: limit)
  assert planning.fitted_width(ctx, 8) == 3
  monkeypatch.setattr(planning, 'device_memory_bytes', lambda: 100 * limit)
  assert planning.fitted_width(ctx, 8) == 8



def test_a_large_sweep_says_what_it_will_take_first(tmp_path, capsys):
  from mlp_jax import planning  # pylint: disable=g-import-not-at-top
  from mlp_jax.driver import Member  # pylint: disable=g-import-not-at-top
  members = [Member(CONFIG.replace(seed=s), records.seed_dir(str(tmp_path), s))
             for s in range(planning.PLAN_LINE_MEMBERS)]
  planning.plan_sweep(Layout(str(tmp_path), sweep=True), members, set(), RunOptions(), 10,
                 len(members))
  line = capsys.readouterr().out
  assert line.startswith(f'sweep: plan: {2 * planning.PLAN_LINE_MEMBERS} seed-epochs on 1 '
                         f'device(s); {planning.PLAN_LINE_MEMBERS} run directories of ') and ' free)' in line
  assert os.listdir(tmp_path) == []



def test_seeds_that_fit_take_their_share_of_the_limit_after_the_fixed_bytes():
  # 0.8 * 1000 - 200 = 600 bytes for seeds of 7 bytes: 85 whole seeds.
  assert planning.seeds_that_fit(7, 200, 1000) == 85
  assert planning.seeds_that_fit(7, 900, 1000) == 0  # the data alone is over the share
  assert planning.seeds_that_fit(0, 0, 1000) == 800  # a seed counts at least a byte


def test_an_explicit_or_stored_vmap_width_is_kept(tmp_path):
  layout = Layout(str(tmp_path / 'sweep'), sweep=True)
  assert planning.resolve_vmap_width(10, layout, RunOptions(vmap_width=4)) == (4, False)
  # On a CPU an automatic width is 1: each seed is its single run bit for bit.
  assert planning.resolve_vmap_width(10, layout, RunOptions()) == (1, False)


@pytest.mark.parametrize('members, chunk_size, width, devices, expected', [
    (10, 4, 4, 1, 'chunks of 4'),
    (10, 6, 4, 1, 'chunks of 8 (--chunk_size=6 rounded up to whole vmap groups of 4 on each '
     'of 1 device(s))'),
    (3, 16, 2, 2, 'chunks of 4'),  # fewer members than a chunk: padded to a whole group
    (10, 5, 1, 2, 'chunks of 6 (--chunk_size=5 rounded up to whole vmap groups of 1 on each '
     'of 2 device(s))'),
])
def test_trained_together_rounds_to_whole_vmap_groups_on_every_device(
    members, chunk_size, width, devices, expected):
  ctx = types.SimpleNamespace(mesh=types.SimpleNamespace(size=devices))
  assert planning.trained_together(members, chunk_size, width, ctx) == expected
