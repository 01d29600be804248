"""Checkpoints of a chunk of seeds with orbax: everything needed to continue exactly.

A checkpoint of epoch e holds the chunk's whole RunState after e epochs, one
global array per leaf with the seed axis split over the devices (params,
optimizer state, epoch counter, data-order keys: the RNG state), and the list
of seeds it holds. Every process writes the rows of its own devices (orbax's
multi-host protocol). The history rows of epochs 1..e are in each seed's
history.csv, written before the checkpoint; a resume keeps exactly those rows.

Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a crash at any instant leaves the previous checkpoints readable.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax

CHECKPOINT_DIR = 'checkpoints'


def _orbax():
  # Imported on first use: keeps `import mlp_jax` and --checkpoint_every=0 light.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


class ChunkCheckpoints:
  """The checkpoints of one chunk of seeds, in `<directory>/<epoch>/`.

  Args:
    directory: where this chunk's checkpoints live.
    seeds: the chunk's seeds, in row order (padding rows included); a directory
      holding checkpoints of other seeds is not restored from.
    keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, directory: str, seeds: Sequence[int], keep: int):
    ocp = _orbax()
    self.seeds = [int(s) for s in seeds]
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_epoch(self) -> Optional[int]:
    """The newest complete checkpoint's epoch, if it holds this chunk's seeds."""
    latest = self._manager.latest_step()
    if latest is None:
      return None
    ocp = _orbax()
    stored = self._manager.restore(latest, args=ocp.args.Composite(seeds=ocp.args.JsonRestore()))
    return latest if stored['seeds'] == self.seeds else None

  def save(self, epoch: int, states: Any) -> None:
    """Saves the chunk's states (global arrays with a seed axis) after `epoch`."""
    ocp = _orbax()
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(states), seeds=ocp.args.JsonSave(self.seeds)), force=True)
    self._manager.wait_until_finished()

  def restore(self, epoch: int, like: Any) -> Any:
    """The states saved after `epoch`, placed and typed as the arrays of `like`."""
    ocp = _orbax()
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    # Orbax hands back plain containers; put the leaves back into RunState's structure.
    return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored['state']))

  def close(self) -> None:
    self._manager.close()
