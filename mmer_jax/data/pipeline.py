"""Fixed-shape numpy batches from a built dataset: utterance batches and dialogue batches.

Steps compile once per shape, so every batch of a stream has the same shape: the last batch is
padded with rows whose `example_mask` is False, sequences are padded (or truncated) to the
modality's `max_len`, and dialogues are padded to a few length buckets. Padding never changes a
masked result: models pool over `lengths`, losses and metrics weight by `example_mask`. The order
of an epoch is a function of (seed, epoch).

The fields of each kind of batch: docs/data.md#batch-fields.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mmer_jax.data import schema

DEFAULT_BUCKETS = (8, 16, 32, 64, 128)


def epoch_order(num_examples: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The example order of one epoch; a fresh, reproducible permutation per (seed, epoch)."""
  if not shuffle:
    return np.arange(num_examples)
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


def sequence_lengths(spec: schema.DatasetSpec, max_lens: Mapping[str, int] | None = None) -> dict[str, int]:
  """Padded length per sequence-level modality: the spec's default unless overridden."""
  max_lens = dict(max_lens or {})
  return {name: int(max_lens.get(name) or m.max_len)
          for name, m in spec.modalities.items() if m.level == 'sequence'}


def collate_utterances(examples: Sequence[Mapping[str, Any]], spec: schema.DatasetSpec, *,
                       batch_size: int, max_lens: Mapping[str, int] | None = None,
                       indices: Sequence[int] | None = None) -> dict:
  """Stacks up to `batch_size` examples into one fixed-shape batch (padding rows masked out).

  `indices`: the examples' positions in their split (`index`; default 0..n-1).
  """
  n = len(examples)
  if n > batch_size:
    raise ValueError(f'{n} examples do not fit a batch of {batch_size}')
  seq_lens = sequence_lengths(spec, max_lens)
  batch: dict[str, Any] = {'lengths': {}}
  for name, m in spec.modalities.items():
    if m.level == 'utterance':
      x = np.zeros((batch_size, m.dim), np.float32)
      for i, ex in enumerate(examples):
        x[i] = ex[name]
    else:
      t_max = seq_lens[name]
      x = np.zeros((batch_size, t_max, m.dim), np.float32)
      lengths = np.ones(batch_size, np.int32)  # padding rows: one zero frame, never empty
      for i, ex in enumerate(examples):
        frames = ex[name][:t_max]
        x[i, : len(frames)] = frames
        lengths[i] = len(frames)
      batch['lengths'][name] = lengths
    batch[name] = x
  label_dtype = np.int32 if spec.task == 'classification' else np.float32
  batch['label'] = np.zeros(batch_size, label_dtype)
  batch['label'][:n] = [ex['label'] for ex in examples]
  batch['example_mask'] = np.arange(batch_size) < n
  batch['modality_mask'] = np.tile(spec.available, (batch_size, 1))
  for i, ex in enumerate(examples):
    batch['modality_mask'][i] = sample_available(ex, spec)
  batch['index'] = np.full(batch_size, -1, np.int32)
  batch['index'][:n] = np.arange(n) if indices is None else np.asarray(indices)
  return batch


def sample_available(example: Mapping[str, Any], spec: schema.DatasetSpec) -> np.ndarray:
  """bool [3]: the modalities one stored example has (the spec's, less those marked absent)."""
  out = spec.available.copy()
  for name in spec.incomplete:
    out[schema.MODALITIES.index(name)] = bool(example[f'{name}_present'])
  return out


def read(source, indices: Sequence[int]) -> list:
  """Examples at `indices`, batched when the source supports it (tfds data sources do)."""
  indices = [int(i) for i in indices]
  if hasattr(source, '__getitems__'):
    return source.__getitems__(indices)
  return [source[i] for i in indices]


def utterance_batches(source, spec: schema.DatasetSpec, *, batch_size: int, seed: int = 0,
                      epoch: int = 0, shuffle: bool = False, drop_remainder: bool = False,
                      max_lens: Mapping[str, int] | None = None,
                      order: np.ndarray | None = None) -> Iterator[dict]:
  """One epoch of utterance batches from a random-access source (e.g. `tfds.data_source`).

  `order` (default: `epoch_order(...)`) gives the example positions to read, in batch order; a
  resumed epoch passes the tail of its permutation.
  """
  if order is None:
    order = epoch_order(len(source), seed=seed, epoch=epoch, shuffle=shuffle)
  stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
  for start in range(0, stop, batch_size):
    indices = order[start: start + batch_size]
    yield collate_utterances(read(source, indices), spec, batch_size=batch_size, max_lens=max_lens,
                             indices=indices)


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
  return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


# --------------------------------------------------------------------------- dialogues


@dataclasses.dataclass
class Dialogue:
  """One conversation in turn order: per-turn features [n, D], labels, speakers, and which
  modalities each turn has (`available` bool [n, 3])."""
  dialogue_id: str
  features: dict[str, np.ndarray]
  label: np.ndarray
  speaker: np.ndarray
  available: np.ndarray | None = None  # None: every turn has every modality of the spec

  def __len__(self) -> int:
    return len(self.label)


def _utterance_vector(x: np.ndarray) -> np.ndarray:
  # A dialogue model sees one vector per turn; sequence-level features are mean-pooled.
  return x if x.ndim == 1 else x.mean(axis=0)


def load_dialogues(source, spec: schema.DatasetSpec) -> list[Dialogue]:
  """Reads a whole split and groups it into dialogues (sorted by dialogue id, turns in order)."""
  rows: dict[str, list] = collections.defaultdict(list)
  for ex in read(source, range(len(source))):
    did = ex['dialogue_id']
    did = did.decode() if isinstance(did, bytes) else str(did)
    rows[did].append(ex)
  dialogues = []
  for did in sorted(rows):
    turns = sorted(rows[did], key=lambda ex: int(ex['turn']))
    feats = {m: np.stack([_utterance_vector(np.asarray(ex[m], np.float32)) for ex in turns])
             for m in spec.modalities}
    dialogues.append(Dialogue(
        dialogue_id=did, features=feats,
        label=np.array([ex['label'] for ex in turns]),
        speaker=np.array([ex['speaker'] for ex in turns], np.int32),
        available=np.stack([sample_available(ex, spec) for ex in turns])))
  return dialogues


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """Smallest bucket that holds `n` turns; longer dialogues round up to a multiple of the largest."""
  for b in sorted(buckets):
    if n <= b:
      return b
  top = max(buckets)
  return -(-n // top) * top


def collate_dialogues(dialogues: Sequence[Dialogue], spec: schema.DatasetSpec, *,
                      dialogues_per_batch: int, buckets: Sequence[int] = DEFAULT_BUCKETS,
                      indices: Sequence[int] | None = None) -> dict:
  """Pads up to `dialogues_per_batch` dialogues to one bucket length.

  `indices`: the dialogues' positions in their split (`index`, -1 on padding rows; default 0..n-1).
  A method that needs a graph adds it in its `host_batch` hook (`data/graphs.py`).
  """
  n_dia = len(dialogues)
  if n_dia > dialogues_per_batch:
    raise ValueError(f'{n_dia} dialogues do not fit a batch of {dialogues_per_batch}')
  length = bucket_length(max([len(d) for d in dialogues] + [1]), buckets)
  b = dialogues_per_batch
  batch: dict[str, Any] = {}
  for name, m in spec.modalities.items():
    x = np.zeros((b, length, m.dim), np.float32)
    for k, d in enumerate(dialogues):
      x[k, : len(d)] = d.features[name]
    batch[name] = x
  label_dtype = np.int32 if spec.task == 'classification' else np.float32
  batch['label'] = np.zeros((b, length), label_dtype)
  batch['speaker'] = np.zeros((b, length), np.int32)
  turn_mask = np.zeros((b, length), bool)
  for k, d in enumerate(dialogues):
    batch['label'][k, : len(d)] = d.label
    batch['speaker'][k, : len(d)] = d.speaker
    turn_mask[k, : len(d)] = True
  batch['turn_mask'] = turn_mask
  batch['example_mask'] = turn_mask
  batch['dialogue_mask'] = np.arange(b) < n_dia
  batch['modality_mask'] = np.tile(spec.available, (b, length, 1))
  for k, d in enumerate(dialogues):
    if d.available is not None:
      batch['modality_mask'][k, : len(d)] = d.available
  index = np.full((b,), -1, np.int32)
  index[:n_dia] = np.arange(n_dia) if indices is None else np.asarray(indices, np.int32)
  batch['index'] = index
  return batch


LENGTH_GROUPINGS = ('none', 'sorted')


def dialogue_batch_indices(lengths: Sequence[int], *, dialogues_per_batch: int, seed: int = 0,
                           epoch: int = 0, shuffle: bool = False, length_grouping: str = 'none',
                           pool_batches: int = 0) -> list[np.ndarray]:
  """The dialogue positions of each batch of one epoch, in batch order.

  'none': consecutive slices of the epoch's permutation (`epoch_order`). 'sorted' (training only,
  `shuffle`): the permutation is cut into pools of `pool_batches` batches (0: the whole split),
  each pool sorted by length (stable, so equally long dialogues keep their random order) and cut
  into batches, and the batches are shuffled; so dialogues of similar length share a batch and
  little of it is padding. Both are reproducible per (seed, epoch) and give
  ceil(n / dialogues_per_batch) batches that hold every dialogue once. Without `shuffle` (evaluation)
  the order is the split's: evaluation keys missing-rate masks by position in the split.
  """
  if length_grouping not in LENGTH_GROUPINGS:
    raise ValueError(f'data.length_grouping: expected one of {LENGTH_GROUPINGS}, got {length_grouping!r}')
  lengths = np.asarray(lengths)
  n, size = len(lengths), dialogues_per_batch
  order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
  if not shuffle or length_grouping == 'none':
    return [order[s: s + size] for s in range(0, n, size)]
  pool = n if pool_batches <= 0 else pool_batches * size
  batches = []
  for p in range(0, n, pool):
    chunk = order[p: p + pool]
    chunk = chunk[np.argsort(lengths[chunk], kind='stable')]
    batches += [chunk[s: s + size] for s in range(0, len(chunk), size)]
  shuffled = np.random.default_rng((seed, epoch, _BATCH_ORDER_SALT)).permutation(len(batches))
  return [batches[i] for i in shuffled]


_BATCH_ORDER_SALT = 0x6C656E  # 'len': the batch order's stream is not the permutation's


def padding_waste(lengths: Sequence[int], batches: Sequence[np.ndarray], *, dialogues_per_batch: int,
                  buckets: Sequence[int] = DEFAULT_BUCKETS) -> float:
  """Share of an epoch's turn slots (dialogues_per_batch x bucket length per batch) that are padding."""
  lengths = np.asarray(lengths)
  slots = sum(dialogues_per_batch * bucket_length(int(lengths[b].max()), buckets) for b in batches)
  return 1.0 - float(lengths.sum()) / slots


def dialogue_batches(dialogues: Sequence[Dialogue], spec: schema.DatasetSpec, *,
                     dialogues_per_batch: int, seed: int = 0, epoch: int = 0, shuffle: bool = False,
                     buckets: Sequence[int] = DEFAULT_BUCKETS, length_grouping: str = 'none',
                     pool_batches: int = 0, start: int = 0) -> Iterator[dict]:
  """One epoch of dialogue batches (`dialogue_batch_indices`) from batch `start` on; each is
  padded to the smallest bucket that fits it."""
  batches = dialogue_batch_indices([len(d) for d in dialogues], dialogues_per_batch=dialogues_per_batch,
                                   seed=seed, epoch=epoch, shuffle=shuffle,
                                   length_grouping=length_grouping, pool_batches=pool_batches)
  for ids in batches[start:]:
    yield collate_dialogues([dialogues[i] for i in ids], spec, dialogues_per_batch=dialogues_per_batch,
                            buckets=buckets, indices=ids)


# --------------------------------------------------------------------------- host prefetch


def prefetch(iterator: Iterator[Any], size: int = 2) -> Iterator[Any]:
  """Runs `iterator` in a background thread, `size` items ahead (hides host batching time)."""
  q: queue.Queue = queue.Queue(maxsize=size)
  sentinel = object()
  errors: list[BaseException] = []

  def work():
    try:
      for item in iterator:
        q.put(item)
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)
    finally:
      q.put(sentinel)

  threading.Thread(target=work, daemon=True).start()
  while True:
    item = q.get()
    if item is sentinel:
      if errors:
        raise errors[0]
      return
    yield item
