"""mlp_jax.checkpoints: when a chunk saves, where its checkpoints open, and what an
orbax failure stands for."""

import errno
import os
import sys

import jax
import numpy as np
import pytest

from mlp_jax import checkpoints


def test_auto_checkpoints_follow_their_cost():
  policy = checkpoints.SavePolicy(every=None, save_seconds=0.0)
  assert policy.wants(1, 10) and not policy.wants(10, 10)  # the last epoch needs none
  policy.save_seconds = 3600.0
  assert not policy.wants(5, 10)
  every_2 = checkpoints.SavePolicy(every=2)
  assert [e for e in range(1, 8) if every_2.wants(e, 7)] == [2, 4, 6, 7]


def test_checkpoints_open_at_their_first_save(tmp_path):
  """A new chunk needs no orbax before its first save (its import is a noticeable part
  of a laptop run's start-up): nothing is created until then, and a chunk that never
  saves leaves no directory."""
  directory = str(tmp_path / 'chunk')
  state = {'x': jax.numpy.arange(4, dtype=np.float32)}
  unsaved = checkpoints.ChunkCheckpoints(directory, [0], 2, checkpoints.SavePolicy(1), 16)
  assert unsaved.restore_latest(state) == (0, None, [])
  unsaved.close()
  assert not os.path.exists(directory)
  saved = checkpoints.ChunkCheckpoints(directory, [0], 2, checkpoints.SavePolicy(1), 16)
  saved.save(1, state)
  saved.close()
  reopened = checkpoints.ChunkCheckpoints(directory, [0], 2, checkpoints.SavePolicy(1), 16)
  epoch, restored, notes = reopened.restore_latest(state)
  reopened.close()
  assert (epoch, notes) == (1, [])
  np.testing.assert_array_equal(restored['x'], state['x'])



def test_orbax_errors_become_the_os_error_they_stand_for():
  full = checkpoints.os_error_of(ValueError(
      "RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']"))
  assert full.errno == errno.ENOSPC
  assert checkpoints.os_error_of(ValueError('PERMISSION_DENIED: open')).errno == errno.EACCES
  assert checkpoints.os_error_of(ValueError('a bug')) is None



def test_a_fixed_interval_saves_on_its_multiples_and_the_last_epoch():
  every_3 = checkpoints.SavePolicy(every=3)
  assert [e for e in range(1, 11) if every_3.wants(e, 10)] == [3, 6, 9, 10]
  every_1 = checkpoints.SavePolicy(every=1)
  assert [e for e in range(1, 4) if every_1.wants(e, 3)] == [1, 2, 3]


def test_the_auto_policy_waits_cost_factor_times_its_last_save(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(checkpoints.time, 'perf_counter', lambda: clock[0])
  policy = checkpoints.SavePolicy(every=None)
  policy.started()
  clock[0] = 102.0
  policy.finished()
  assert policy.save_seconds == 2.0
  due = 100.0 + checkpoints.COST_FACTOR * 2.0  # since the last save started
  clock[0] = due - 0.5
  assert not policy.wants(3, 10)
  clock[0] = due
  assert policy.wants(3, 10)
  assert not policy.wants(10, 10)


def test_the_auto_policys_first_guess_is_the_size_over_the_assumed_rate(tmp_path):
  policy = checkpoints.SavePolicy(every=None)
  chunk = checkpoints.ChunkCheckpoints(str(tmp_path / 'c'), [0, 1], 2, policy, 300_000_000)
  opening = 0.0 if 'orbax.checkpoint' in sys.modules else (
      checkpoints.ASSUMED_OPEN_SECONDS)
  assert policy.save_seconds == pytest.approx(
      300_000_000 / checkpoints.ASSUMED_BYTES_PER_SECOND + opening)
  chunk.close()
  fixed = checkpoints.SavePolicy(every=2)
  checkpoints.ChunkCheckpoints(str(tmp_path / 'd'), [0], 2, fixed, 300_000_000).close()
  assert fixed.save_seconds == 0.0  # a fixed interval needs no guess


def test_row_keys_are_ints_for_seeds_and_names_for_grid_members():
  keys = checkpoints.row_keys([np.int64(3), 7, 'lr=0.1'])
  assert keys == [3, 7, 'lr=0.1'] and [type(k) for k in keys] == [int, int, str]


def test_an_os_error_is_itself_and_a_message_without_a_code_is_read():
  error = OSError(errno.EIO, 'I/O error')
  assert checkpoints.os_error_of(error) is error
  full = checkpoints.os_error_of(RuntimeError('write failed: No space left on device'))
  assert full.errno == errno.ENOSPC and full.strerror == os.strerror(errno.ENOSPC)
  assert checkpoints.os_error_of(ValueError("x [os_error_code=13]")).errno == errno.EACCES


def test_checkpointed_seeds_of_a_missing_directory_is_none(tmp_path):
  assert checkpoints.checkpointed_seeds(str(tmp_path / 'none')) is None


def test_no_checkpoints_never_saves_nor_restores():
  none = checkpoints.NoCheckpoints()
  assert none.restore_latest({'x': 1}) == (0, None, [])
  assert not any(none.wants(e, 5) for e in range(1, 6))
  with pytest.raises(AssertionError):
    none.restore(1, {'x': 1})
