"""Length-grouped dialogue batches (`data.length_grouping='sorted'`): every dialogue once per epoch
in ceil(n / B) batches, reproducible per (seed, epoch), less padding; and what a dialogue is
predicted never depends on which batch (or batch size) carried it. Streams resuming a sorted epoch
at any batch: test_streams.py."""

import numpy as np
import pytest

from mmer_jax.data import pipeline
from test_mmgcn import _apply, _batch, _dialogues, _init, _model

LENGTHS = [3, 17, 5, 9, 12, 2, 30, 7, 7, 21, 4, 15, 11, 6, 8, 26, 13]


def _indices(epoch, size=4, seed=0, **kw):
  return pipeline.dialogue_batch_indices(LENGTHS, dialogues_per_batch=size, seed=seed, epoch=epoch,
                                         shuffle=True, length_grouping='sorted', **kw)


@pytest.mark.parametrize('size,pool', [(4, 0), (4, 2), (5, 0), (16, 0), (17, 1)])
def test_a_sorted_epoch_visits_every_dialogue_once_in_ceil_n_over_b_batches(size, pool):
  for epoch in range(3):
    batches = _indices(epoch, size, pool_batches=pool)
    assert len(batches) == -(-len(LENGTHS) // size)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(LENGTHS)))
    assert all(len(b) == size for b in batches if len(b) != len(LENGTHS) % size)


def test_sorted_batches_are_reproducible_per_seed_and_epoch_and_hold_similar_lengths():
  same = [np.concatenate(b).tolist() for b in (_indices(1), _indices(1))]
  assert same[0] == same[1]
  assert np.concatenate(_indices(1)).tolist() != np.concatenate(_indices(2)).tolist()
  assert np.concatenate(_indices(1)).tolist() != np.concatenate(_indices(1, seed=1)).tolist()
  lengths = np.asarray(LENGTHS)
  spans = sorted((lengths[b].min(), lengths[b].max()) for b in _indices(0))
  for (_, hi), (lo, _) in zip(spans, spans[1:]):  # whole-split pool: the batches do not overlap
    assert hi <= lo
  plain = pipeline.dialogue_batch_indices(LENGTHS, dialogues_per_batch=4, seed=0, epoch=0, shuffle=True)
  waste = [pipeline.padding_waste(LENGTHS, b, dialogues_per_batch=4, buckets=(8, 16, 32))
           for b in (_indices(0), plain)]
  assert waste[0] < waste[1]


def test_evaluation_order_ignores_length_grouping():
  for grouping in ('none', 'sorted'):
    batches = pipeline.dialogue_batch_indices(LENGTHS, dialogues_per_batch=4, shuffle=False,
                                              length_grouping=grouping)
    assert np.concatenate(batches).tolist() == list(range(len(LENGTHS)))
  with pytest.raises(ValueError, match='length_grouping'):
    pipeline.dialogue_batch_indices(LENGTHS, dialogues_per_batch=4, length_grouping='bucket')


def test_predictions_per_dialogue_do_not_depend_on_grouping_or_batch_size():
  dialogues = _dialogues(LENGTHS[:9])
  model = _model(message_passing='blocks')
  params = _init(model, _batch(dialogues[:2], buckets=(32,)))
  lengths = [len(d) for d in dialogues]

  def predict(batches, size):
    out = {}
    for ids in batches:
      batch = _batch([dialogues[i] for i in ids], per_batch=size, buckets=(8, 16, 32), indices=ids)
      logits = np.asarray(_apply(model, params, batch))
      for row, i in enumerate(ids):
        out[int(i)] = logits[row, :lengths[i]]
    return out

  runs = [predict(pipeline.dialogue_batch_indices(lengths, dialogues_per_batch=size, seed=1,
                                                  epoch=epoch, shuffle=True, length_grouping=grouping), size)
          for size, grouping, epoch in [(3, 'none', 0), (3, 'sorted', 0), (4, 'sorted', 1), (9, 'none', 2)]]
  for run in runs[1:]:
    assert sorted(run) == sorted(runs[0]) == list(range(len(dialogues)))
    for i in run:
      np.testing.assert_allclose(run[i], runs[0][i], rtol=1e-5, atol=1e-6)
