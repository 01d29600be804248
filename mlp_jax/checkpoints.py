"""Checkpoints of a chunk of seeds with orbax: everything needed to continue exactly.

A checkpoint of epoch e holds the chunk's whole RunState after e epochs (params,
optimizer state, epoch counter, data-order keys: the RNG state) and its metrics
log (every recorded number of epochs 1..e, from which a resume rewrites each
seed's history.csv), one global array per leaf with the seed axis split over the
devices, and the list of seeds it holds. Every process writes the rows of its
own devices (orbax's multi-host protocol).

Saves are asynchronous: `save` returns once the arrays are copied off the
device, and the next epochs train while orbax writes them. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash at
any instant leaves the previous checkpoints readable; a SIGKILL loses the
epochs since the last finished save.

How often (`SavePolicy`): every N epochs when asked (`--checkpoint_every=N`),
else ('auto') whenever the time since the last save has reached COST_FACTOR
times what saves cost here, so checkpoints take at most ~1/COST_FACTOR of the
run, at any number of seeds.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional, Sequence, Tuple

import jax

# Auto policy: at least this many times a save's cost between two saves (2%).
COST_FACTOR = 50
# Until a save here has been timed, its cost is guessed from its size at this rate
# (a conservative disk; orbax measured 175 MB/s on an H100 host and ~1 GB/s here).
ASSUMED_BYTES_PER_SECOND = 150e6


def _orbax():
  # Imported on first use: keeps `import mlp_jax` and --checkpoint_every=0 light.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


@dataclasses.dataclass
class SavePolicy:
  """When a chunk saves: every `every` epochs, or (every=None) by cost.

  Attributes:
    every: save after every `every` epochs and after the last; None: auto.
    save_seconds: what the last save took from its start until orbax had
      written it (measured), or the size-based guess before any.
  """
  every: Optional[int]
  save_seconds: float = 0.0
  _since: float = dataclasses.field(default_factory=time.perf_counter)

  def wants(self, epoch: int, last_epoch: int) -> bool:
    """Whether a save is due after `epoch` (the stop on a signal is the caller's)."""
    if self.every is not None:
      return epoch == last_epoch or epoch % self.every == 0
    # The last epoch needs none: the run's records are written from the states in
    # memory, and a crash before they are complete resumes from the previous save.
    return (epoch < last_epoch and
            time.perf_counter() - self._since >= COST_FACTOR * self.save_seconds)

  def started(self) -> None:
    self._since = time.perf_counter()

  def finished(self) -> None:
    self.save_seconds = time.perf_counter() - self._since


class ChunkCheckpoints:
  """The checkpoints of one chunk of seeds, in `<directory>/<epoch>/`.

  Args:
    directory: where this chunk's checkpoints live.
    seeds: the chunk's seeds, in row order (padding rows included); a directory
      holding checkpoints of other seeds is not restored from.
    keep: how many of the newest checkpoints to keep.
    policy: when to save.
    nbytes: the size of what one save writes (for the auto policy's first guess).
  """

  def __init__(self, directory: str, seeds: Sequence[int], keep: int, policy: SavePolicy,
               nbytes: int):
    ocp = _orbax()
    self.seeds = [int(s) for s in seeds]
    self.policy = policy
    if policy.every is None:
      policy.save_seconds = nbytes / ASSUMED_BYTES_PER_SECOND
    self.blocking_seconds = 0.0  # the time saves held up training
    self._in_flight = False
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))

  def latest_epoch(self) -> Optional[int]:
    """The newest complete checkpoint's epoch, if it holds this chunk's seeds."""
    latest = self._manager.latest_step()
    if latest is None:
      return None
    ocp = _orbax()
    stored = self._manager.restore(latest, args=ocp.args.Composite(seeds=ocp.args.JsonRestore()))
    return latest if stored['seeds'] == self.seeds else None

  def wants(self, epoch: int, last_epoch: int) -> bool:
    self._note_finished()
    if self._in_flight and self.policy.every is None:
      return False  # auto: never queue a save behind another
    return self.policy.wants(epoch, last_epoch)

  def save(self, epoch: int, tree: Any) -> None:
    """Starts saving `tree` (global arrays with a seed axis) as the checkpoint of
    `epoch`; returns once the arrays are off the device."""
    ocp = _orbax()
    tick = time.perf_counter()
    self._wait()  # one save at a time
    self.policy.started()
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), seeds=ocp.args.JsonSave(self.seeds)), force=True)
    self._in_flight = True
    self.blocking_seconds += time.perf_counter() - tick

  def restore(self, epoch: int, like: Any) -> Any:
    """The tree saved after `epoch`, placed and typed as the arrays of `like`."""
    ocp = _orbax()
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    # Orbax hands back plain containers; put the leaves back into `like`'s structure.
    return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored['state']))

  def close(self) -> None:
    """Waits for a save in flight (its time counts as blocking), then closes."""
    tick = time.perf_counter()
    self._wait()
    self._manager.close()
    self.blocking_seconds += time.perf_counter() - tick

  def _note_finished(self) -> None:
    if self._in_flight and not self._manager.is_saving_in_progress():
      self._manager.check_for_errors()
      self._in_flight = False
      self.policy.finished()

  def _wait(self) -> None:
    if self._in_flight:
      self._manager.wait_until_finished()
      self._in_flight = False
      self.policy.finished()


class NoCheckpoints:
  """Checkpoints off (--checkpoint_every=0): the same interface, saving nothing."""

  seeds: Tuple[int, ...] = ()
  blocking_seconds = 0.0

  def latest_epoch(self) -> Optional[int]:
    return None

  def wants(self, epoch: int, last_epoch: int) -> bool:
    del epoch, last_epoch
    return False

  def save(self, epoch: int, tree: Any) -> None:
    del epoch, tree

  def restore(self, epoch: int, like: Any) -> Any:
    raise AssertionError('NoCheckpoints holds no checkpoint')

  def close(self) -> None:
    pass
