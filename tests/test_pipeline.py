"""Input pipeline: fixed shapes, masks, determinism, padding invariance (under an MMGCN graph)."""

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

from mmer_jax.data import graphs
from mmer_jax.data import pipeline
from mmer_jax.data import schema


def _utterance_spec():
  return schema.DatasetSpec(
      name='toy', task='classification', label_names=('a', 'b', 'c'),
      modalities={'audio': schema.ModalitySpec('sequence', 4, max_len=6),
                  'text': schema.ModalitySpec('utterance', 5)})


def _utterance_source(n=11, seed=0):
  rng = np.random.default_rng(seed)
  return [{'audio': rng.normal(size=(int(rng.integers(1, 9)), 4)).astype(np.float32),
           'text': rng.normal(size=5).astype(np.float32), 'label': int(rng.integers(3)),
           'dialogue_id': f'd{i}', 'turn': 0, 'speaker': 0} for i in range(n)]


def test_utterance_batches_fixed_shapes_and_masks():
  spec, source = _utterance_spec(), _utterance_source()
  batches = list(pipeline.utterance_batches(source, spec, batch_size=4))
  assert len(batches) == 3
  for b in batches:
    assert b['audio'].shape == (4, 6, 4) and b['text'].shape == (4, 5)
    assert b['lengths']['audio'].shape == (4,) and 'visual' not in b
    assert b['modality_mask'].tolist() == [[True, False, True]] * 4
  assert batches[-1]['example_mask'].tolist() == [True, True, True, False]
  # Truncation to max_len and zero padding beyond the valid frames.
  for i, ex in enumerate(source[:4]):
    n = min(len(ex['audio']), 6)
    assert batches[0]['lengths']['audio'][i] == n
    np.testing.assert_array_equal(batches[0]['audio'][i, :n], ex['audio'][:n])
    assert not batches[0]['audio'][i, n:].any()
  labels = np.concatenate([b['label'][b['example_mask']] for b in batches])
  assert labels.tolist() == [ex['label'] for ex in source]


def test_shuffling_is_seeded_per_epoch():
  spec, source = _utterance_spec(), _utterance_source(n=40)

  def labels(seed, epoch):
    return np.concatenate([b['text'][:, 0] for b in pipeline.utterance_batches(
        source, spec, batch_size=8, seed=seed, epoch=epoch, shuffle=True)])

  np.testing.assert_array_equal(labels(3, 0), labels(3, 0))
  assert not np.array_equal(labels(3, 0), labels(3, 1))
  assert not np.array_equal(labels(3, 0), labels(4, 0))
  assert sorted(labels(3, 1)) == sorted(labels(3, 0))


def test_index_names_each_rows_example_also_in_a_resumed_epoch():
  spec, source = _utterance_spec(), _utterance_source(n=21)
  batches = list(pipeline.utterance_batches(source, spec, batch_size=8, seed=1, epoch=2, shuffle=True))
  order = pipeline.epoch_order(21, seed=1, epoch=2, shuffle=True)
  index = np.concatenate([b['index'] for b in batches])
  assert index.dtype == np.int32
  np.testing.assert_array_equal(index[:21], order)
  assert (index[21:] == -1).all()  # padding rows
  for b in batches:  # the row really holds that example
    for i in np.flatnonzero(b['example_mask']):
      np.testing.assert_array_equal(b['text'][i], source[b['index'][i]]['text'])
  # A resumed epoch passes the tail of the permutation: the same rows, the same indices.
  tail = list(pipeline.utterance_batches(source, spec, batch_size=8, order=order[8:]))
  for a, b in zip(batches[1:], tail):
    np.testing.assert_array_equal(a['index'], b['index'])
    np.testing.assert_array_equal(a['text'], b['text'])


def _dialogue_spec():
  return schema.DatasetSpec(
      name='toy_conv', task='classification', label_names=('a', 'b'), conversational=True,
      modalities={m: schema.ModalitySpec('utterance', 3) for m in ('audio', 'visual', 'text')})


def _dialogues(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [pipeline.Dialogue(
      dialogue_id=f'd{k}', features={m: rng.normal(size=(n, 3)).astype(np.float32)
                                     for m in ('audio', 'visual', 'text')},
      label=rng.integers(2, size=n), speaker=rng.integers(2, size=n).astype(np.int32))
          for k, n in enumerate(lengths)]


def test_load_dialogues_groups_and_orders_turns():
  spec = _dialogue_spec()
  rows = []
  for did, n in (('x', 3), ('y', 2)):
    for t in reversed(range(n)):
      rows.append({'dialogue_id': did.encode(), 'turn': t, 'speaker': t % 2, 'label': t % 2,
                   **{m: np.full(3, t, np.float32) for m in ('audio', 'visual', 'text')}})
  dialogues = pipeline.load_dialogues(rows, spec)
  assert [d.dialogue_id for d in dialogues] == ['x', 'y']
  assert dialogues[0].features['text'][:, 0].tolist() == [0, 1, 2]
  assert dialogues[0].label.tolist() == [0, 1, 0]


def _masked_degree_normalised_sum(batch):
  """A GCN-style aggregation that must ignore padding: per real node, sum of D^-1/2 A D^-1/2 x."""
  graph = jax.tree_util.tree_map(lambda x: x[0], batch['graph'])  # the one shard
  x = jnp.asarray(batch['text']).reshape(-1, 3)[graph.nodes['utterance']]
  node_mask = jraph.get_node_padding_mask(graph)
  edge_mask = jraph.get_edge_padding_mask(graph)
  n = x.shape[0]
  deg = jraph.segment_sum(edge_mask.astype(jnp.float32), graph.receivers, n)
  inv = jnp.where(deg > 0, jax.lax.rsqrt(jnp.maximum(deg, 1.0)), 0.0)
  msg = x[graph.senders] * (inv[graph.senders] * inv[graph.receivers] * edge_mask)[:, None]
  out = jraph.segment_sum(msg, graph.receivers, n)
  return np.asarray(out)[np.asarray(node_mask)], np.asarray(graph.nodes['utterance'])[np.asarray(node_mask)]


def test_padding_never_changes_a_masked_result():
  spec = _dialogue_spec()
  dialogues = _dialogues([4, 7])
  alone = graphs.add_dialogue_graph(
      pipeline.collate_dialogues(dialogues[:1], spec, dialogues_per_batch=1, buckets=(4,)), 3)
  padded = pipeline.collate_dialogues(dialogues, spec, dialogues_per_batch=4, buckets=(8, 16),
                                      indices=[5, 2])
  assert 'graph' not in padded  # the generic pipeline builds no graph; graph methods add it
  assert padded['index'].tolist() == [5, 2, -1, -1]
  padded = graphs.add_dialogue_graph(padded, 3)
  assert padded['text'].shape == (4, 8, 3)
  assert padded['dialogue_mask'].tolist() == [True, True, False, False]
  assert padded['turn_mask'].sum() == 11
  out_alone, _ = _masked_degree_normalised_sum(alone)
  out_padded, utt = _masked_degree_normalised_sum(padded)
  first = utt < 8  # nodes of the first dialogue in the padded batch
  np.testing.assert_allclose(out_padded[first], out_alone, rtol=1e-6)


def test_dialogue_batches_compile_shapes_are_bucketed():
  spec = _dialogue_spec()
  dialogues = _dialogues([2, 3, 9, 30, 5, 1, 12])
  shapes = {b['text'].shape for b in pipeline.dialogue_batches(
      dialogues, spec, dialogues_per_batch=2, buckets=(8, 16, 32), shuffle=True, seed=1)}
  assert shapes <= {(2, 8, 3), (2, 16, 3), (2, 32, 3)}
  total = sum(b['turn_mask'].sum() for b in pipeline.dialogue_batches(
      dialogues, spec, dialogues_per_batch=2, buckets=(8, 16, 32)))
  assert total == sum(len(d) for d in dialogues)


def test_bucket_length_rounds_up():
  assert pipeline.bucket_length(5, (8, 16)) == 8
  assert pipeline.bucket_length(16, (8, 16)) == 16
  assert pipeline.bucket_length(17, (8, 16)) == 32


def test_prefetch_preserves_order_and_errors():
  assert list(pipeline.prefetch(iter(range(10)))) == list(range(10))

  def broken():
    yield 1
    raise RuntimeError('boom')

  with pytest.raises(RuntimeError, match='boom'):
    list(pipeline.prefetch(broken()))
