"""Work on the active (modality, example) slots of a batch only, in fixed-size chunks.

IMDer draws and scores a modality only for the examples that miss it. Masks are per example, so
the active slots of a batch [M, B] vary from batch to batch, while a compiled program needs fixed
shapes. `over_slots` packs the active slots of each modality to the front, cuts them into chunks
of `chunk` slots, runs `fn` on one chunk [M, chunk, ...] at a time (`lax.map`), skipping a chunk
with no active slot (`lax.cond`), and scatters the results back to [M, B, ...], zero where
inactive. `fn` must treat the slots of a chunk independently. Under a sharded jit the chunks are
gathered and scattered by one-hot products and pinned replicated, so the gradients agree with
one device's.

Details: docs/imder.md#training-configsimder_mosipy-the-authors-configjson (the packed path).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def num_chunks(batch: int, chunk: int) -> int:
  """Chunks of `chunk` slots that hold a modality missing from every example of the batch."""
  if chunk < 1:
    raise ValueError(f'chunk must be >= 1, got {chunk}')
  return -(-batch // chunk)


def chunk_size(batch: int, fraction: float) -> int:
  """Slots per modality in one chunk: ceil(fraction * batch), between 1 and batch."""
  if not 0. < fraction <= 1.:
    raise ValueError(f'the chunk fraction must be in (0, 1], got {fraction}')
  return max(1, min(batch, math.ceil(fraction * batch - 1e-9)))


def chunk_positions(active: Array, chunk: int) -> tuple[Array, Array]:
  """(positions [K, M, chunk], valid [K, M, chunk]) of the active slots of `active` [M, B].

  Chunk k holds, for each modality, its active examples number k*chunk .. (k+1)*chunk - 1 in
  example order; a place past the modality's last active example has position B (out of range)
  and valid False.
  """
  m, b = active.shape
  k = num_chunks(b, chunk)
  order = jnp.argsort(~active, axis=1, stable=True)  # active examples first, in example order
  order = jnp.pad(order, ((0, 0), (0, k * chunk - b)))
  valid = jnp.arange(k * chunk)[None, :] < jnp.sum(active, axis=1)[:, None]
  positions = jnp.where(valid, order, b)
  split = lambda a: a.reshape(m, k, chunk).transpose(1, 0, 2)  # noqa: E731
  return split(positions), split(valid)


def _one_hot(positions: Array, batch: int, dtype) -> Array:
  """[M, C, batch]: 1 where a slot reads / writes an example (none for an out-of-range place)."""
  return jax.nn.one_hot(positions, batch, dtype=dtype)


def gather(values: Array, positions: Array) -> Array:
  """values [M, B, ...] at positions [M, C] -> [M, C, ...] (zeros at an out-of-range place).

  Float arrays by a one-hot product (HIGHEST precision: products by 1 and sums of zeros, exact),
  integer ones (keys) by indexing (the last example at an out-of-range place). See the module
  docstring for why not an indexed gather of the floats.
  """
  if not jnp.issubdtype(values.dtype, jnp.floating):
    last = values.shape[1] - 1
    return jax.vmap(lambda v, p: v[jnp.minimum(p, last)])(values, positions)
  one_hot = _one_hot(positions, values.shape[1], values.dtype)
  flat = values.reshape(values.shape[:2] + (-1,))
  out = jnp.einsum('mcb,mbf->mcf', one_hot, flat, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(positions.shape + values.shape[2:])


def scatter(values: Array, positions: Array, batch: int) -> Array:
  """values [M, C, ...] placed at positions [M, C] of zeros [M, batch, ...]; out-of-range dropped
  (a one-hot product, like `gather`)."""
  one_hot = _one_hot(positions, batch, values.dtype)
  flat = values.reshape(values.shape[:2] + (-1,))
  out = jnp.einsum('mcb,mcf->mbf', one_hot, flat, precision=jax.lax.Precision.HIGHEST)
  return out.reshape((values.shape[0], batch) + values.shape[2:])


def _replicated(x: Array) -> Array:
  """x kept whole on every device when a mesh is set (`jax.set_mesh`), else unchanged."""
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec())


def over_slots(fn: Callable, active: Array, chunk: int, *per_slot: Array):
  """fn over the active slots of `active` [M, B]: a pytree of [M, B, ...], zeros where inactive.

  `per_slot` are arrays [M, B, ...] (or pytrees of them, e.g. keys) gathered per chunk; `fn`
  takes them as [M, chunk, ...] and returns a pytree of [M, chunk, ...] arrays.
  """
  batch = active.shape[1]
  positions, valid = chunk_positions(active, chunk)
  shapes = jax.eval_shape(fn, *jax.tree.map(lambda a: gather(a, positions[0]), per_slot))

  def one_chunk(chunk_positions_valid):
    pos, ok = chunk_positions_valid
    skip = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # noqa: E731
    run = lambda: fn(*jax.tree.map(lambda a: _replicated(gather(a, pos)), per_slot))  # noqa: E731
    return jax.lax.cond(jnp.any(ok), run, skip)

  out = jax.lax.map(one_chunk, (positions, valid))  # leaves [K, M, chunk, ...]
  flat_positions = positions.transpose(1, 0, 2).reshape(active.shape[0], -1)  # invalid: batch

  def place(leaf):
    leaf = jnp.swapaxes(leaf, 0, 1).reshape((leaf.shape[1], -1) + leaf.shape[3:])
    return scatter(leaf, flat_positions, batch)

  return jax.tree.map(place, out)
