"""Tests for data/streams.py: the batches of a run's epochs, resumable at any batch."""

import types

import numpy as np

from configs import default
from mmer_jax.data import streams as streams_lib
from test_length_grouping import LENGTHS
from test_mmgcn import _spec


def test_streams_give_one_pattern_batches_that_cover_the_epoch(grouped_toy_config):
  dataset = streams_lib.load_dataset(grouped_toy_config)
  streams = streams_lib.Streams(grouped_toy_config, dataset, level='utterance')
  sizes = streams.epoch_sizes(3)
  for epoch in range(3):
    batches = list(streams.epoch('train', epoch, train=True))
    assert len(batches) == sizes[epoch]
    seen = []
    for b in batches:
      rows = b['example_mask']
      final = b['modality_mask'] & b['train_mask']
      assert (final == final[0]).all()  # padding rows carry the pattern too
      lacks = np.flatnonzero(dataset.spec.available & ~final[0])
      np.testing.assert_array_equal(b['pattern_missing'], np.tile(lacks, (len(rows), 1)))
      seen += list(b['index'][rows])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(dataset.sources['train'])))
    # Resuming at batch 2 gives the same batches from there.
    tail = list(streams.epoch('train', epoch, train=True, start=2))
    for a, b in zip(batches[2:], tail):
      np.testing.assert_array_equal(a['index'], b['index'])
      np.testing.assert_array_equal(a['train_mask'], b['train_mask'])


def _streams(**data):
  """Streams over a fake dataset of LENGTHS-turn dialogues in every split."""
  spec = _spec()
  rows = [{'dialogue_id': f'd{k:02d}', 'turn': t, 'label': t % 3, 'speaker': t % 2,
           **{m: np.full(d.dim, k + t / 100, np.float32) for m, d in spec.modalities.items()}}
          for k, n in enumerate(LENGTHS) for t in range(n)]
  dataset = types.SimpleNamespace(spec=spec, sources={s: rows for s in ('train', 'valid', 'test')})
  config = default.get_config()
  config.data.update(batch_size=4, eval_batch_size=4, buckets=(8, 16, 32), prefetch=0, **data)
  return streams_lib.Streams(config, dataset, level='dialogue')


def test_streams_resume_a_sorted_epoch_at_any_batch():
  s = _streams(length_grouping='sorted')
  full = [b['index'].tolist() for b in s.epoch('train', 3, train=True)]
  assert len(full) == s.num_batches('train', train=True) == 5
  for start in (0, 2, 4):
    assert [b['index'].tolist() for b in s.epoch('train', 3, train=True, start=start)] == full[start:]
  plain = [b['index'].tolist() for b in _streams().epoch('train', 3, train=True)]
  assert plain != full  # the field takes effect
  assert ([b['index'].tolist() for b in s.epoch('test', train=False)]
          == [b['index'].tolist() for b in _streams().epoch('test', train=False)])
