"""Training masks drawn on the host, per example, and batches that each hold one missing pattern.

`train.mask_draw='step'` (the default) draws each training batch's masks inside the compiled
step. `'host'` draws them here instead, one example at a time from the same protocol
distribution, with a key folded from (seed, epoch, example index). `'host_grouped'` then forms
each epoch's batches from examples whose final masks are equal, so a method sees a batch of one
pattern with static shapes (`pattern_missing`); the number of batches varies with the epoch
(`EpochPlans.sizes`). `PatternBatcher` regroups evaluation rows the same way.

Batches carry `train_mask` bool [B, 3] and, grouped, `pattern_missing` int32 [B, k].
Details: docs/protocol.md#missing-modalities-while-training.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mmer_jax.data import schema

MASK_DRAWS = ('step', 'host', 'host_grouped')
_MASK_SALT = 0x6d61736b  # folded into the seed's key: host draws do not reuse any other stream


def check_mask_draw(value: str) -> str:
  if value not in MASK_DRAWS:
    raise ValueError(f'train.mask_draw: expected one of {MASK_DRAWS}, got {value!r}')
  return value


@functools.lru_cache(maxsize=None)
def _drawer(missing_mode: str, rate, available: tuple[bool, ...]) -> Callable:
  """jit(vmap) of one example's training mask: (keys [N], own [N, 3]) -> bool [N, 3]."""
  from mmer_jax import steps  # a cycle otherwise: steps -> methods -> data
  avail = np.asarray(available, bool)

  def one(key, own):
    return steps.training_modality_mask(key, own[None], missing_mode=missing_mode, rate=rate,
                                        available=avail)[0]
  return jax.jit(jax.vmap(one))


def draw_masks(seed: int, epoch: int, indices: np.ndarray, own: np.ndarray, *,
               missing_mode: str, rate, available) -> np.ndarray:
  """bool [N, 3]: the training masks (own AND drawn) of the examples `indices` in `epoch`.

  `own` bool [N, 3]: each example's own modalities. Example i's draw uses the key
  fold_in(fold_in(fold_in(key(seed), salt), epoch), indices[i]) alone.
  """
  indices = np.asarray(indices, np.int64)
  if len(indices) == 0:
    return np.zeros((0, len(schema.MODALITIES)), bool)
  base = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), _MASK_SALT), epoch)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))
  rate = tuple(rate) if isinstance(rate, (list, tuple, np.ndarray)) else float(rate)
  drawer = _drawer(missing_mode, rate, tuple(bool(a) for a in np.asarray(available)))
  return np.asarray(drawer(keys, jnp.asarray(own, bool)))


def pattern_codes(masks: np.ndarray) -> np.ndarray:
  """int [N]: a mask's pattern as bits (a=1, v=2, t=4)."""
  return (np.asarray(masks, np.int64) << np.arange(masks.shape[1])).sum(axis=1)


def grouped_batches(masks: np.ndarray, *, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
  """One epoch's batches (positions into `masks`), each of one pattern.

  Examples are shuffled, stably grouped by pattern, each group cut into batches of `batch_size`
  (the last one shorter), and the batches shuffled; keyed by (seed, epoch).
  """
  rng = np.random.default_rng((seed, epoch, _MASK_SALT))
  order = rng.permutation(len(masks))
  codes = pattern_codes(masks)[order]
  order = order[np.argsort(codes, kind='stable')]
  codes = pattern_codes(masks)[order]
  batches = []
  for code in np.unique(codes):
    members = order[codes == code]
    batches += [members[i: i + batch_size] for i in range(0, len(members), batch_size)]
  return [batches[i] for i in rng.permutation(len(batches))]


def pattern_missing(mask: np.ndarray, available: np.ndarray, batch_size: int) -> np.ndarray:
  """int32 [batch_size, k]: the columns of `available` that the pattern `mask` [3] lacks."""
  columns = np.flatnonzero(np.asarray(available, bool) & ~np.asarray(mask, bool)).astype(np.int32)
  return np.tile(columns, (batch_size, 1))


class EpochPlans:
  """Each epoch's training batches (example positions and their drawn masks) under host draws.

  `own` bool [N, 3]: the training split's per-example availability, read once.
  """

  def __init__(self, own: np.ndarray, *, seed: int, batch_size: int, grouped: bool,
               missing_mode: str, rate, available: np.ndarray):
    self.own, self.seed, self.batch_size, self.grouped = np.asarray(own, bool), seed, batch_size, grouped
    self.missing_mode, self.rate = missing_mode, rate
    self.available = np.asarray(available, bool)
    self._cache: dict[int, tuple[list[np.ndarray], np.ndarray]] = {}

  def plan(self, epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(the epoch's batches as example positions, every example's mask bool [N, 3])."""
    if epoch not in self._cache:
      n = len(self.own)
      masks = draw_masks(self.seed, epoch, np.arange(n), self.own, missing_mode=self.missing_mode,
                         rate=self.rate, available=self.available)
      if self.grouped:  # an example left with no modality trains on nothing: it is left out
        kept = np.flatnonzero(masks.any(axis=1))
        batches = [kept[b] for b in grouped_batches(masks[kept], batch_size=self.batch_size,
                                                     seed=self.seed, epoch=epoch)]
      else:
        order = np.random.default_rng((self.seed, epoch)).permutation(n)
        batches = [order[i: i + self.batch_size] for i in range(0, n, self.batch_size)]
      if len(self._cache) > 4:
        self._cache.pop(next(iter(self._cache)))
      self._cache[epoch] = (batches, masks)
    return self._cache[epoch]

  def sizes(self, num_epochs: int) -> list[int]:
    """Batches per epoch, epochs 0..num_epochs-1."""
    if not self.grouped:
      return [-(-len(self.own) // self.batch_size)] * num_epochs
    return [len(self.plan(e)[0]) for e in range(num_epochs)]

  def annotate(self, batch: dict, positions: np.ndarray, masks: np.ndarray) -> dict:
    """Adds `train_mask` (and, grouped, `pattern_missing`) to a collated batch of `positions`."""
    size = batch['example_mask'].shape[0]
    drawn = masks[positions]
    fill = drawn[0] if len(drawn) else self.available
    train_mask = np.tile(fill, (size, 1))  # padding rows: the batch's pattern
    train_mask[: len(drawn)] = drawn
    batch['train_mask'] = train_mask
    if self.grouped:
      batch['pattern_missing'] = pattern_missing(fill, self.available, size)
    return batch


class PatternBatcher:
  """Evaluation in batches of one pattern: rows of any batches in, one-pattern batches out.

  `add(batch, first_row)` takes a masked batch (its `modality_mask` final, `example_mask` False on
  rows not to score) whose rows are split rows first_row...; rows of each pattern are buffered
  and sent to `predict(params, batch)` as soon as a batch of the same size is full (with
  `pattern_missing`), the rest at `outputs(num_rows)`, padded by copies of their first row that
  `example_mask` hides. Only utterance batches ([B] rows). A method whose draws are keyed per
  example (IMDer) predicts the same for a row whatever batch it lands in.
  """

  def __init__(self, predict: Callable, params, available):
    self.predict, self.params, self.available = predict, params, np.asarray(available, bool)
    self._buffers: dict[int, list[tuple[np.ndarray, dict]]] = {}
    self._done: list[tuple[np.ndarray, np.ndarray]] = []
    self.batch_size: int | None = None

  def add(self, batch: dict, first_row: int) -> None:
    mask = np.asarray(batch['example_mask'], bool)
    self.batch_size = self.batch_size or len(mask)
    codes = pattern_codes(np.asarray(batch['modality_mask'], bool))
    for code in np.unique(codes[mask]):
      rows = np.flatnonzero(mask & (codes == code))
      self._buffers.setdefault(int(code), []).append(
          (first_row + rows, jax.tree.map(lambda v, rows=rows: np.asarray(v)[rows], batch)))
      if sum(len(p) for p, _ in self._buffers[int(code)]) >= self.batch_size:
        self._flush(int(code))

  def _flush(self, code: int) -> None:
    parts = self._buffers.pop(code)
    positions = np.concatenate([p for p, _ in parts])
    rows = jax.tree.map(lambda *xs: np.concatenate(xs), *[r for _, r in parts])
    for start in range(0, len(positions), self.batch_size):
      chunk = jax.tree.map(lambda v, s=start: v[s: s + self.batch_size], rows)
      n = len(chunk['example_mask'])
      pad = np.concatenate([np.arange(n), np.zeros(self.batch_size - n, np.int64)])
      full = jax.tree.map(lambda v, pad=pad: v[pad], chunk)
      full['example_mask'] = np.arange(self.batch_size) < n
      full['pattern_missing'] = pattern_missing(chunk['modality_mask'][0], self.available,
                                                self.batch_size)
      out = np.asarray(self.predict(self.params, full))[:n]
      self._done.append((positions[start: start + n], out))

  def outputs(self, num_rows: int) -> np.ndarray:
    """[num_rows, ...]: every scored row's output in split order (zeros on unscored rows)."""
    for code in list(self._buffers):
      self._flush(code)
    if not self._done:
      raise ValueError('PatternBatcher: no row was scored')
    out = np.zeros((num_rows,) + self._done[0][1].shape[1:], self._done[0][1].dtype)
    for positions, values in self._done:
      out[positions] = values
    return out


def as_one_pattern(batch: dict, available) -> dict:
  """The batch with every row given its first row's modality mask, and `pattern_missing`: what
  `PatternBatcher` would send (for timing a one-pattern step, `mmer_jax.benchmark`)."""
  mask = np.asarray(batch['modality_mask'], bool)
  size = len(mask)
  return {**batch, 'modality_mask': np.tile(mask[0], (size, 1)),
          'pattern_missing': pattern_missing(mask[0], available, size)}
