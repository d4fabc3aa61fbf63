"""MMGCN's adjacency picture (mmer_jax/analysis/mmgcn_adjacency.py): the dense-matrix helper on a
hand-built graph, and the figure on a real `:smoke` run of configs/mmgcn_iemocap.py.

The end-to-end test builds the run in-process and draws with freshly initialised parameters (no
training: the structure of the matrix does not depend on it); the config's `analysis` entry is
run through `analysis.run_all`, as train.py does after the test evaluation. A trained run is
covered by test_configs.py's `:smoke` runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmer_jax import analysis
from mmer_jax.analysis import mmgcn_adjacency


# -------------------------------------------------------------------------- dense_adjacency

def _tiny_graph():
  """Two utterances (0, 1) x two modalities (0, 1), plus a padding node 4.

  Nodes: 0 = (u0, m0), 1 = (u1, m0), 2 = (u0, m1), 3 = (u1, m1), 4 = padding.
  """
  nodes = {'utterance': np.array([0, 1, 0, 1, 0], np.int32),
           'modality': np.array([0, 0, 1, 1, 0], np.int32),
           'real': np.array([True, True, True, True, False])}
  # (sender, receiver, weight): a self-loop, both directions of a pair (different weights, to
  # see the orientation), a cross-modal edge, a duplicate (summed), and a padding edge.
  edges = [(0, 0, 0.5), (0, 1, 0.25), (1, 0, 0.125), (0, 2, 0.75), (3, 1, 1.0), (3, 1, 2.0),
           (4, 4, 9.0)]
  senders, receivers, weights = (np.array(x) for x in zip(*edges))
  real = np.array([True] * 6 + [False])
  return senders, receivers, weights.astype(np.float32), nodes, real


def test_dense_adjacency_exact_values():
  senders, receivers, weights, nodes, real = _tiny_graph()
  keys = [(0, 0), (1, 0), (0, 1), (1, 1)]  # nodes 0, 1, 2, 3 in this order
  matrix = mmgcn_adjacency.dense_adjacency(senders, receivers, weights, nodes, keys,
                                           edge_real=real)
  expected = np.array([[0.5, 0.125, 0.0, 0.0],   # row = receiver, column = sender
                       [0.25, 0.0, 0.0, 3.0],
                       [0.75, 0.0, 0.0, 0.0],
                       [0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(matrix, expected)
  assert matrix.dtype == np.float64


def test_dense_adjacency_chosen_nodes_and_order():
  senders, receivers, weights, nodes, real = _tiny_graph()
  # A subset in another order: node 2 then node 0; edges to or from other nodes are left out.
  matrix = mmgcn_adjacency.dense_adjacency(senders, receivers, weights, nodes, [(0, 1), (0, 0)],
                                           edge_real=real)
  np.testing.assert_array_equal(matrix, [[0.0, 0.75], [0.0, 0.5]])
  np.testing.assert_array_equal(mmgcn_adjacency.node_indices(nodes, [(1, 1), (0, 0)]), [3, 0])


def test_dense_adjacency_padding_edges_without_mask_and_unknown_key():
  senders, receivers, weights, nodes, _ = _tiny_graph()
  # The padding edge touches only the padding node, which is no key: left out even unmasked.
  matrix = mmgcn_adjacency.dense_adjacency(senders, receivers, weights, nodes,
                                           [(0, 0), (1, 0), (0, 1), (1, 1)])
  assert matrix.sum() == pytest.approx(0.5 + 0.25 + 0.125 + 0.75 + 3.0)
  with pytest.raises(ValueError, match='utterance 2 and modality 0'):
    mmgcn_adjacency.node_indices(nodes, [(2, 0)])


def test_choose_skips_padding_and_single_speaker_dialogues():
  turn_mask = np.zeros((3, 6), bool)
  turn_mask[0, :4] = turn_mask[1, :5] = True
  speaker = np.zeros((3, 6), np.int32)
  speaker[1, 3] = 1
  batch = {'turn_mask': turn_mask, 'speaker': speaker, 'dialogue_mask': np.array([1, 1, 0], bool)}
  assert mmgcn_adjacency.choose(batch) == (1, 2)
  speaker[1, 3] = 0  # no dialogue with two speakers: the first real one
  assert mmgcn_adjacency.choose(batch) == (0, 2)


# ------------------------------------------------------------------------------ end to end

@pytest.mark.slow  # the smoke config test checks the PNG in the default run
def test_mmgcn_smoke_run_draws_the_adjacency(tmp_path):
  from configs import mmgcn_iemocap  # pylint: disable=g-import-not-at-top
  from mmer_jax import train  # pylint: disable=g-import-not-at-top

  config = mmgcn_iemocap.get_config('smoke')
  assert tuple(config.analysis) == ('mmgcn_adjacency',)
  config.data.data_dir = str(tmp_path / 'data')
  run = train.Run(config)
  params = run.init_params()
  workdir = str(tmp_path / 'run')
  paths = analysis.run_all(config.analysis, run, params, workdir)
  png, path = tmp_path / 'run' / 'mmgcn_adjacency.png', tmp_path / 'run' / 'mmgcn_adjacency.json'
  assert paths == [str(png), str(path)]
  with open(png, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert png.stat().st_size > 1000

  record = json.loads(path.read_text())
  matrix = np.asarray(record['matrix'])
  labels = record['labels']
  turns, mods = record['turns'], record['modalities']
  assert mods == ['audio', 'visual', 'text']
  assert matrix.shape == (len(labels), len(labels)) == (len(turns) * len(mods),) * 2
  turn = record['utterance_turn']
  assert turns == list(range(turn - 4, turn + 5))  # the smoke dialogues are long enough
  assert len(record['chosen_rows']) == len(mods)
  assert all(labels[i].startswith(f't{turn} ') for i in record['chosen_rows'])
  assert [label.split()[1] for label in labels] == [m[0] for m in mods for _ in turns]
  assert len({label.split()[2] for label in labels}) >= 2  # two speakers
  assert isinstance(record['dialogue'], int) and isinstance(record['dialogue_index'], int)

  np.testing.assert_allclose(matrix, matrix.T, rtol=1e-5, atol=1e-7)
  assert (matrix >= 0).all()
  node_turn = np.array([int(label.split()[0][1:]) for label in labels])
  node_mod = np.array([label.split()[1] for label in labels])
  apart = (node_turn[:, None] != node_turn[None]) & (node_mod[:, None] != node_mod[None])
  assert (matrix[apart] == 0).all()
  # Every other pair is an edge of the graph with a positive weight (all modalities present).
  assert (matrix[~apart] > 0).all()
