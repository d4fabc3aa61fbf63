"""Orbax checkpoints of a run: the latest state (for resuming) and the best params (for testing).

Both are `ocp.CheckpointManager`s under `<workdir>/checkpoints/`; orbax writes each step to a
temporary directory and renames it when complete, so a run killed mid-save leaves the previous
checkpoint intact. The loop's own bookkeeping (best metric so far, its step) is saved as JSON
beside the state, so a resumed run makes the same selection as an uninterrupted one.

Several processes (`jax.distributed`): every process calls the same functions in the same order
(orbax synchronises them); the state is replicated, so each passes its own host copy and orbax
lets process 0 write it (its numpy handler), and every process reads it back. The files are the
same as a single process writes, so a run can resume, or be evaluated, on another number of hosts.
The workdir must be on a filesystem that all hosts share.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from mmer_jax import parallel


def create_managers(workdir: str) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
  """(latest, best) managers; `latest` keeps two steps, `best` one."""
  root = os.path.abspath(os.path.join(workdir, 'checkpoints'))

  def manager(name, keep):
    # The item handlers are named up front so a fresh process can read a checkpoint's metadata.
    return ocp.CheckpointManager(
        os.path.join(root, name),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})

  return manager('latest', 2), manager('best', 1)


def save(manager: ocp.CheckpointManager, step: int, items: Any, meta: dict) -> None:
  """Saves a pytree and JSON metadata at `step` and waits until it is on disk.

  A step that is already on disk is kept as it is: only a resumed run re-saves a step, and it
  recomputes exactly the same state (the run was interrupted after this save, before the next).
  """
  if int(step) in manager.all_steps():
    return
  manager.save(int(step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(parallel.to_host(items)), meta=ocp.args.JsonSave(meta)), force=True)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None) -> tuple[Any, dict] | None:
  """(items, meta) of `step` (default: the latest), shaped like `target`; None when there is none."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, parallel.to_host(target))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return restored.state, dict(restored.meta)


def restore_params(manager: ocp.CheckpointManager, step: int | None = None) -> Any | None:
  """The `params` of a checkpoint as saved (numpy arrays), without a target to shape them; None
  when there is none. How `init_from` reads another run without rebuilding its model."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored.state['params']


def saved_params_shapes(manager: ocp.CheckpointManager, step: int | None = None) -> Any | None:
  """`jax.ShapeDtypeStruct`s of a checkpoint's `params` from its metadata (nothing is read), so
  a resumed run can shape its state like the saved one, fitted leaves included."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  metadata = manager.item_metadata(step)['state']['params']
  return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), metadata)
