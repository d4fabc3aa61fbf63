"""Data parallelism: a 1-D `Mesh` over axis `batch` for sharded jit, and the pmap layout.

Under jit, batch arrays are placed with `NamedSharding(mesh, P('batch'))` and parameters are
replicated; XLA inserts the gradient all-reduce. Under pmap, batches are reshaped to
[devices, per_device, ...] and the step reduces with `psum` over the same axis name. A dialogue
graph (jraph) comes with one graph per device stacked on its leading axis
(`data/graphs.py`), so it is split like every other batch field.

Several processes (`jax.distributed.initialize`, one per host: docs/scaling.md): the mesh spans
every process's devices. Every process reads the same global batch (same seed, same order) and
places only the rows of its own devices (`shard_batch`); the replicated state is built the same on
every process and each fills its own devices' copies (`replicate`). What the host reads back goes
through `to_host`: a replicated array from this process's own copy, a batch-sharded one (eval
outputs) gathered from all processes. With one process every function here does what it always did.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Any, Callable
import zlib

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'batch'
# How long `barrier` waits for the other processes (process 0 may be building a dataset).
BARRIER_TIMEOUT_S = 6 * 3600
_barrier_ids = itertools.count()  # every process creates the same barriers in the same order


def create_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def check_batch_size(batch_size: int, num_devices: int, what: str = 'data.batch_size') -> None:
  if batch_size % num_devices:
    raise ValueError(f'{what}={batch_size} must be divisible by the {num_devices} devices '
                     'that data parallelism splits it over')


def is_main_process() -> bool:
  """Whether this process writes the run's files (process 0; the only one without
  `jax.distributed`)."""
  return jax.process_index() == 0


def _from_global_host_value(x, sharding: NamedSharding) -> jax.Array:
  """A global array from a host value every process holds whole: each process fills only its
  own devices' slices (no cross-process traffic, no equality check)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a host batch on the mesh: every leaf split along its leading axis.

  A mesh over several processes: every process passes the same global batch and contributes the
  rows of its own devices."""
  sharding = NamedSharding(mesh, P(AXIS))
  if not mesh.is_multi_process:
    return jax.device_put(batch, sharding)
  return jax.tree_util.tree_map(lambda x: _from_global_host_value(x, sharding), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A copy of `tree` on every device of the mesh.

  A mesh over several processes: each process holds the same values (the same seed and data
  built them) and fills its own devices' copies; arrays already spread over the processes are
  resharded (or kept) as they are."""
  sharding = NamedSharding(mesh, P())
  if not mesh.is_multi_process:
    return jax.device_put(tree, sharding)

  def place(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)
    return _from_global_host_value(jax.device_get(x), sharding)
  return jax.tree_util.tree_map(place, tree)


def to_host(tree: Any) -> Any:
  """Numpy values of (device) arrays: `jax.device_get` with one process. With several, an array
  that spans processes is read from this process's own copy when replicated, and gathered from
  all processes when sharded (a collective: every process must call this in the same order)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)
  return jax.tree_util.tree_map(get, tree)


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
  """Waits until every process has reached this barrier (nothing with one process).

  The distributed runtime's own barrier, not a device collective: on CPU, gloo gives a process
  only 30 s to join the *first* collective, shorter than, e.g., building a dataset."""
  if jax.process_count() > 1:
    key = f'mmer_jax/{name}/{next(_barrier_ids)}'
    ocp.multihost.get_barrier_sync_fn()(key=key, timeout_ms=int(timeout_s * 1000))


def join_collectives() -> None:
  """A first collective over all devices, right after `jax.distributed.initialize` while the
  processes are still together: it sets up the cross-process communicator (gloo on CPU waits only
  30 s for every process to join it; once set up, a collective waits as long as it takes)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('mmer_jax/join_collectives')


def first_process_first(fn: Callable[[], Any], name: str) -> Any:
  """`fn()` on process 0, then, after a barrier, on the others: for steps that write shared files
  (building a dataset, fitting feature statistics into the workdir), so that the other processes
  read what process 0 wrote instead of racing it on the same files. An exception on any process
  stops them all after that turn (none is left waiting for the others)."""
  if jax.process_count() == 1:
    return fn()
  out = None
  for first in (True, False):
    error = None
    if is_main_process() == first:
      try:
        out = fn()
      except Exception as e:  # pylint: disable=broad-except
        error = e
    barrier(name)
    failed = multihost_utils.process_allgather(np.int32(error is not None))
    if error is not None:
      raise error
    if failed.any():
      raise RuntimeError(f'{name} failed on processes {np.flatnonzero(failed).tolist()} '
                         '(see their logs)')
  return out


def check_shared_directory(path: str) -> None:
  """Fails, on every process, unless every process sees in `path` a file process 0 has just
  written there: a run's checkpoints and statistics are written once, by process 0, for every
  process to read, so the workdir must be on a filesystem that all hosts share (nothing with one
  process)."""
  if jax.process_count() == 1:
    return
  marker = os.path.join(path, '.shared_check')
  token = np.uint32(0)
  if is_main_process():
    token = np.uint32(np.random.default_rng().integers(1, 2**32))
    os.makedirs(path, exist_ok=True)
    with open(marker, 'w', encoding='utf-8') as f:
      f.write(str(int(token)))
  token = int(multihost_utils.broadcast_one_to_all(token))
  try:
    with open(marker, encoding='utf-8') as f:
      seen = f.read()
  except FileNotFoundError:
    seen = None
  # Every process learns which ones failed and all stop together (none waits for the others).
  sees = multihost_utils.process_allgather(np.int32(seen == str(token)))
  if is_main_process():
    os.remove(marker)
  if not sees.all():
    raise ValueError(f'processes {np.flatnonzero(sees == 0).tolist()} do not see in {path} what '
                     'process 0 wrote there: with several processes the workdir must be on a '
                     'filesystem that all hosts share (NFS, Filestore, ...)')


def check_same_on_processes(tree: Any, what: str) -> None:
  """Fails unless every process holds the same host values in `tree` (a checksum of their bytes
  is compared): e.g. an initial state that two hosts built from different data or code."""
  if jax.process_count() == 1:
    return
  checksum = 0
  for x in jax.tree_util.tree_leaves(to_host(tree)):
    x = np.ascontiguousarray(x)
    checksum = zlib.crc32(x.tobytes(), zlib.crc32(str((x.shape, x.dtype)).encode(), checksum))
  multihost_utils.assert_equal(np.uint32(checksum), f'{what} differs between the processes: '
                               'every process must run the same code, config and data')


def split_for_pmap(batch: dict, num_devices: int) -> dict:
  """[B, ...] -> [devices, B / devices, ...] for every leaf (a graph's [devices, ...] leaves
  become [devices, 1, ...]: each device sees one shard graph)."""
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x).reshape((num_devices, -1) + np.shape(x)[1:]), batch)


def stack_for_pmap(tree: Any, num_devices: int) -> Any:
  """One copy per device along a new leading axis (pmap places it, one slice per device)."""
  return jax.tree_util.tree_map(
      lambda x: np.broadcast_to(np.asarray(x), (num_devices,) + np.shape(x)).copy(), jax.device_get(tree))


def under_mesh(fn: Callable, mesh: Mesh) -> Callable:
  """`fn` called (and so traced) with `mesh` set (`jax.set_mesh`), so that a method can pin an
  intermediate's layout with `jax.lax.with_sharding_constraint(x, PartitionSpec())` (IMDer's
  slot chunks: `ops/slots.py`); without a set mesh such constraints are skipped."""
  @functools.wraps(fn)
  def call(*args, **kwargs):
    with jax.set_mesh(mesh):
      return fn(*args, **kwargs)
  return call
