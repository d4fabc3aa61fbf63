"""Tests for data/graphs.py: the dialogue graph's edges and padding, and its sharded form."""

import jraph
import numpy as np
import pytest

from mmer_jax.data import graphs


def test_dialogue_graph_structure():
  lengths = [3, 5]
  graph = graphs.dialogue_graph(lengths, max_turns=8, num_modalities=3)
  real_edges = sum(graphs.num_edges(n, 3) for n in lengths)
  assert graph.nodes['utterance'].shape == (graphs.node_budget(2, 8, 3),)
  assert graph.senders.shape == (graphs.edge_budget(real_edges),) and graph.n_node.shape == (3,)
  # Per dialogue: M n^2 intra-modality edges (self-loops included) + n M (M - 1) cross edges.
  assert graph.n_edge[:2].tolist() == [3 * n * n + n * 6 for n in lengths]
  node_mask = np.asarray(jraph.get_node_padding_mask(graph))
  edge_mask = np.asarray(jraph.get_edge_padding_mask(graph))
  assert (node_mask == graph.nodes['real']).all() and (edge_mask == graph.edges['real']).all()
  utt, mod = graph.nodes['utterance'], graph.nodes['modality']
  s, r = graph.senders[edge_mask], graph.receivers[edge_mask]
  assert node_mask[s].all() and node_mask[r].all()
  dialogue = utt // 8
  assert (dialogue[s] == dialogue[r]).all(), 'edges never leave a dialogue'
  same_mod = mod[s] == mod[r]
  assert (same_mod == ~graph.edges['cross'][edge_mask]).all()
  assert (utt[s][~same_mod] == utt[r][~same_mod]).all(), 'cross-modal edges join one utterance'
  edges = set(zip(s.tolist(), r.tolist()))
  assert len(edges) == len(s), 'no duplicate edges'
  assert all((b, a) in edges for a, b in edges), 'graph is symmetric'


def test_sharded_graph_splits_the_batch_into_consecutive_groups():
  graph = graphs.sharded_dialogue_graph([3, 5, 2, 1], max_turns=8, num_modalities=2, num_shards=2)
  assert graph.senders.shape[0] == 2 and graph.nodes['utterance'].shape == (2, graphs.node_budget(2, 8, 2))
  assert graph.n_edge[:, :2].tolist() == [[2 * 9 + 3 * 2, 2 * 25 + 5 * 2], [2 * 4 + 2 * 2, 2 + 2]]
  # One edge budget for all shards (the larger shard's), indices local to each shard's dialogues.
  assert graph.senders.shape[1] == graphs.edge_budget(2 * 9 + 6 + 2 * 25 + 10)
  assert graph.nodes['utterance'][1][graph.nodes['real'][1]].max() == 8 + 0
  with pytest.raises(ValueError, match='equal shards'):
    graphs.sharded_dialogue_graph([3, 5, 2], max_turns=8, num_modalities=2, num_shards=2)
