"""Per-seed checkpoints with orbax: everything needed to continue a run exactly.

A checkpoint of epoch e holds the seed's whole RunState after e epochs (params,
optimizer state, epoch counter, data-order key: the RNG state) and the history
rows of epochs 1..e as the exact strings history.csv holds. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash at
any instant leaves the previous checkpoints readable.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import jax
import numpy as np
from flax import serialization

from mlp_jax.train import RunState

CHECKPOINT_DIR = 'checkpoints'

Rows = List[Dict[str, str]]


def _orbax():
  # Imported on first use: keeps `import mlp_jax` and --checkpoint_every=0 light.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


class Checkpoints:
  """The checkpoints of one seed's run, in `<workdir>/checkpoints/<epoch>/`.

  Args:
    workdir: the seed's run directory.
    keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, workdir: str, keep: int):
    ocp = _orbax()
    self._manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_epoch(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: RunState, rows: Rows) -> None:
    """Saves a host copy of one seed's state after epoch `state.epoch`, with its rows."""
    ocp = _orbax()
    epoch = int(state.epoch)
    tree = jax.tree.map(np.asarray, serialization.to_state_dict(state))
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_drop_empty(tree)),
        history=ocp.args.JsonSave({'rows': list(rows)})), force=True)
    self._manager.wait_until_finished()

  def restore(self, template: RunState, epoch: Optional[int] = None) -> Tuple[RunState, Rows]:
    """The state and rows saved after `epoch` (default: the latest).

    `template` is any RunState of the same structure (e.g. a fresh init); its
    values are not used.
    """
    ocp = _orbax()
    epoch = self.latest_epoch() if epoch is None else epoch
    tree = jax.tree.map(np.asarray, serialization.to_state_dict(template))
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_drop_empty(tree)), history=ocp.args.JsonRestore()))
    state = serialization.from_state_dict(template, _refill_empty(tree, restored['state']))
    return state, restored['history']['rows']

  def close(self) -> None:
    self._manager.close()


def _drop_empty(tree):
  """Orbax stores no empty subtrees (optax's EmptyState); leave them out."""
  if isinstance(tree, dict):
    return {k: _drop_empty(v) for k, v in tree.items() if not (isinstance(v, dict) and not v)}
  return tree


def _refill_empty(template, restored):
  if isinstance(template, dict):
    return {k: _refill_empty(v, restored.get(k, {})) for k, v in template.items()}
  return restored
