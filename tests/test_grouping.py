"""Host-drawn training masks and one-pattern batches (mmer_jax/data/grouping.py).

Streams of such batches are tested in test_streams.py, a run's epochs of different lengths in
test_train.py."""

import numpy as np
import pytest

from mmer_jax import missing
from mmer_jax.data import grouping

ALL = np.ones(3, bool)


def _pattern_probs(rate):
  """Closed form P(kept set) at one missing rate over three modalities, at least one kept."""
  probs = {}
  for code in range(1, 8):
    keep = np.array([(code >> i) & 1 for i in range(3)], bool)
    probs[tuple(keep)] = (1 - rate)**keep.sum() * rate**(3 - keep.sum())
  total = sum(probs.values())
  return {k: v / total for k, v in probs.items()}


def _draw(indices, seed=0, epoch=0, own=None, mode='rate', rate=0.5):
  own = np.tile(ALL, (len(indices), 1)) if own is None else own
  return grouping.draw_masks(seed, epoch, np.asarray(indices), own, missing_mode=mode, rate=rate,
                             available=ALL)


def test_an_examples_draw_depends_on_seed_epoch_and_index_only():
  full = _draw(np.arange(500))
  picked = np.array([7, 499, 3, 250])
  np.testing.assert_array_equal(_draw(picked), full[picked])  # any subset, any order
  assert not np.array_equal(_draw(np.arange(500), epoch=1), full)
  assert not np.array_equal(_draw(np.arange(500), seed=1), full)


@pytest.mark.parametrize('rate', [0.3, 0.7])
def test_host_draws_match_the_protocols_closed_form(rate):
  n = 40_000
  masks = _draw(np.arange(n), rate=rate)
  rows, counts = np.unique(masks, axis=0, return_counts=True)
  freq = {tuple(r): c / n for r, c in zip(rows, counts)}
  probs = _pattern_probs(rate)
  assert set(freq) <= set(probs)
  for pattern, p in probs.items():
    assert abs(freq.get(pattern, 0.0) - p) < 6 * np.sqrt(p * (1 - p) / n), (pattern, freq, probs)
  want = missing.effective_missing_fraction(rate, 3)
  np.testing.assert_allclose(1 - masks.mean(axis=0), want, atol=6 * np.sqrt(want / n))


def test_drop_one_and_an_examples_own_modalities():
  masks = _draw(np.arange(3000), mode='drop_one')
  assert np.all(masks.sum(axis=1) == 2)
  np.testing.assert_allclose(masks.mean(axis=0), 2 / 3, atol=0.04)
  own = np.tile(ALL, (3000, 1))
  own[::2, 2] = False  # every other example has no text
  masks = _draw(np.arange(3000), own=own)
  assert not masks[::2, 2].any() and masks.any(axis=1).all()  # a rate draw keeps one of its own


def test_grouped_batches_hold_one_pattern_and_visit_every_example_once():
  masks = _draw(np.arange(203))
  batches = grouping.grouped_batches(masks, batch_size=16, seed=3, epoch=2)
  flat = np.concatenate(batches)
  np.testing.assert_array_equal(np.sort(flat), np.arange(203))
  for b in batches:
    assert 1 <= len(b) <= 16 and (masks[b] == masks[b][0]).all()
  patterns = {tuple(m) for m in masks}
  assert len(batches) == sum(-(-int((masks == p).all(1).sum()) // 16) for p in patterns)
  again = grouping.grouped_batches(masks, batch_size=16, seed=3, epoch=2)
  assert all(np.array_equal(a, b) for a, b in zip(batches, again))
  other = grouping.grouped_batches(masks, batch_size=16, seed=3, epoch=3)
  assert not all(np.array_equal(a, b) for a, b in zip(batches, other))  # reshuffled each epoch
  first_patterns = [tuple(masks[b[0]]) for b in batches[:6]]
  assert len(set(first_patterns)) > 1  # batches shuffled across patterns, not pattern after pattern


def test_pattern_missing_lists_the_columns_the_pattern_lacks():
  np.testing.assert_array_equal(grouping.pattern_missing([True, False, False], ALL, 2),
                                [[1, 2], [1, 2]])
  assert grouping.pattern_missing(ALL, ALL, 3).shape == (3, 0)
  only_at = np.array([True, False, True])
  np.testing.assert_array_equal(grouping.pattern_missing([False, False, True], only_at, 1), [[0]])


def _row_predict(calls):
  """A stand-in method: each row's output depends on that row alone (its index and features)."""
  def predict(params, batch):
    calls.append(batch)
    text = np.asarray(batch['text']).reshape(len(batch['index']), -1).sum(-1)
    return np.stack([batch['index'] * 1.0 + params, text], -1)
  return predict


def _masked_batches(n=29, size=8, seed=0):
  rng = np.random.default_rng(seed)
  mask = rng.random((n, 3)) < 0.6
  mask[~mask.any(1), 2] = True
  mask[3] = False  # a row with nothing: not scored
  for start in range(0, n, size):
    rows = np.arange(start, min(n, start + size))
    pad = size - len(rows)
    yield {'text': np.pad(rng.normal(size=(len(rows), 4)), ((0, pad), (0, 0))),
           'index': np.pad(rows, (0, pad), constant_values=-1),
           'example_mask': np.arange(size) < len(rows),
           'modality_mask': np.pad(mask[rows], ((0, pad), (0, 0)), constant_values=True),
           'label': np.zeros(size, np.int32)}


def test_predict_split_by_pattern_returns_the_same_rows_in_split_order():
  from mmer_jax import evaluate
  plain_calls, grouped_calls = [], []
  plain = evaluate.predict_split(_row_predict(plain_calls), 0.5, _masked_batches(), available=ALL)
  grouped = evaluate.predict_split(_row_predict(grouped_calls), 0.5, _masked_batches(), available=ALL,
                                   group_patterns=True)
  np.testing.assert_array_equal(grouped[2], plain[2])
  np.testing.assert_array_equal(grouped[0][plain[2]], plain[0][plain[2]])
  for batch in grouped_calls:
    rows = batch['modality_mask'][batch['example_mask']]
    assert len(batch['index']) == 8 and (rows == rows[0]).all()
    lacks = np.flatnonzero(~batch['modality_mask'][0])
    np.testing.assert_array_equal(batch['pattern_missing'], np.tile(lacks, (8, 1)))
  assert sum(b['example_mask'].sum() for b in grouped_calls) == plain[2].sum()
