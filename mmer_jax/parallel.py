"""Data parallelism: a 1-D `Mesh` over axis `batch` for sharded jit, and the pmap layout.

Under jit, batch arrays are placed with `NamedSharding(mesh, P('batch'))` and parameters are
replicated; XLA inserts the gradient all-reduce. Under pmap, batches are reshaped to
[devices, per_device, ...] and the step reduces with `psum` over the same axis name. A dialogue
graph (jraph) comes with one graph per device stacked on its leading axis
(`data/graphs.py`), so it is split like every other batch field.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'batch'


def create_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def check_batch_size(batch_size: int, num_devices: int, what: str = 'data.batch_size') -> None:
  if batch_size % num_devices:
    raise ValueError(f'{what}={batch_size} must be divisible by the {num_devices} devices '
                     'that data parallelism splits it over')


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a host batch on the mesh: every leaf split along its leading axis."""
  return jax.device_put(batch, NamedSharding(mesh, P(AXIS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, P()))


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
