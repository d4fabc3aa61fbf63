"""Tests for the MMGCN parity harness (mmer_jax/parity/mmgcn.py).

Without PyTorch: the weight map gives exactly the names and shapes of the authors'
DialogueGCNModel state dict on this path (written below from their `model.py`, `model_mm.py` and
`model_GCN.py`) and round-trips every tensor; our normalised edge weights, scattered by the
harness into their dense layout, equal their adjacency written in numpy from the paper's
formula over the same node features (dialogues of unequal length included); the legacy index
their `create_big_adj` relies on, the module stand-ins and the loss. With torch: their runtime
patches come and go. With torch and a checkout of hujingwen6666/MMGCN named by
MMER_AUTHORS_MMGCN, the full parity run (skipped otherwise).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.data import graphs
from mmer_jax.parity import mmgcn as parity

_HAS_TORCH = importlib.util.find_spec('torch') is not None
DIMS = {'audio': 12, 'visual': 9, 'text': 10}  # small inputs: the map does not depend on them
LAYERS = 3


# -- the authors' state dict, written from their code -------------------------------------------


def their_mapped_shapes(dims, num_layers):
  """DialogueGCNModel('LSTM', graph_type='MMGCN', att_type='concat_subsequently', modals='avl',
  D_e=100, graph_hidden_size=100, n_speakers=2, n_classes=6): the parameters its forward uses."""
  out = {}
  for letter, m in (('a', 'audio'), ('v', 'visual'), ('l', 'text')):
    out[f'linear_{letter}.weight'], out[f'linear_{letter}.bias'] = (200, dims[m]), (200,)
  for k in range(2):  # nn.LSTM(200, 100, num_layers=2, bidirectional=True)
    for suffix in ('', '_reverse'):
      out.update({f'lstm_l.weight_ih_l{k}{suffix}': (400, 200), f'lstm_l.weight_hh_l{k}{suffix}': (400, 100),
                  f'lstm_l.bias_ih_l{k}{suffix}': (400,), f'lstm_l.bias_hh_l{k}{suffix}': (400,)})
  out['graph_model.speaker_embeddings.weight'] = (2, 200)
  out['graph_model.graph_net.fcs.0.weight'], out['graph_model.graph_net.fcs.0.bias'] = (100, 200), (100,)
  for i in range(num_layers):  # GraphConvolution(100, 100, variant=True): weight [2 * 100, 100]
    out[f'graph_model.graph_net.convs.{i}.weight'] = (200, 100)
  out['smax_fc.weight'], out['smax_fc.bias'] = (6, 900), (6,)  # Linear(300 * 3, 6)
  return out


def _batch(lengths, max_turns, seed=0, dims=None):
  """A dialogue batch with these lengths (padding zeroed, as their collate pads), with its graph."""
  dims = DIMS if dims is None else dims
  rng = np.random.default_rng(seed)
  b = len(lengths)
  turn_mask = np.arange(max_turns)[None] < np.asarray(lengths)[:, None]
  batch = {m: np.where(turn_mask[..., None], rng.standard_normal((b, max_turns, d)), 0).astype(np.float32)
           for m, d in dims.items()}
  batch['speaker'] = np.where(turn_mask, rng.integers(0, 2, (b, max_turns)), 0).astype(np.int32)
  batch['label'] = np.where(turn_mask, rng.integers(0, 6, (b, max_turns)), 0).astype(np.int32)
  batch['turn_mask'] = turn_mask
  batch['modality_mask'] = np.ones((b, max_turns, 3), bool)
  return graphs.add_dialogue_graph(batch, 3, 1)


@pytest.fixture(scope='module')
def random_params():
  """Our parameters (3 GCN layers, small inputs), every leaf distinct random numbers."""
  batch = _batch([4, 4], 4)
  net = parity.model(LAYERS)
  shapes = jax.eval_shape(lambda k: net.init(k, *parity.model_inputs(batch), deterministic=True)['params'],
                          jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def test_weight_map_gives_the_authors_names_and_shapes(random_params):
  theirs = parity.to_authors(random_params, LAYERS)
  assert {k: v.shape for k, v in theirs.items()} == their_mapped_shapes(DIMS, LAYERS)
  np.testing.assert_array_equal(theirs['graph_model.graph_net.convs.2.weight'],
                                random_params['gcn']['layer_3']['kernel'])  # as is, no transpose
  np.testing.assert_array_equal(theirs['smax_fc.weight'], random_params['classifier']['kernel'].T)


def test_weight_map_round_trips_exactly(random_params):
  back = parity.from_authors(parity.to_authors(random_params, LAYERS), LAYERS)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(random_params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, random_params)
  # Their unused parameters (att_model, gatedatt, ...) are no part of the map.
  extra = {**parity.to_authors(random_params, LAYERS), 'gatedatt.transform_av.bias': np.ones(1)}
  jax.tree_util.tree_map(np.testing.assert_array_equal, parity.from_authors(extra, LAYERS), random_params)


def test_lstm_biases_sum_and_their_gradient_is_one_of_them(random_params):
  theirs = parity.to_authors(random_params, LAYERS)
  rng = np.random.default_rng(1)
  theirs['lstm_l.bias_hh_l1_reverse'] = rng.standard_normal(400).astype(np.float32)
  ih, hh = theirs['lstm_l.bias_ih_l1_reverse'], theirs['lstm_l.bias_hh_l1_reverse']
  gates = ('i', 'f', 'g', 'o')  # torch's order of the 4 H rows
  summed = parity.from_authors(theirs, LAYERS)['text_lstm_1_backward']
  grad = parity.from_authors(theirs, LAYERS, gradient=True)['text_lstm_1_backward']
  for k, gate in enumerate(gates):
    np.testing.assert_allclose(summed[f'h{gate}']['bias'], (ih + hh)[100 * k:100 * (k + 1)], rtol=1e-6)
    np.testing.assert_array_equal(grad[f'h{gate}']['bias'], ih[100 * k:100 * (k + 1)])


# -- layouts: their dense adjacency in numpy ----------------------------------------------------


def their_adjacency(nodes, lengths, cos_scale=0.99999):
  """MMGCN's adjacency in their layout (rows m * N + offset_b + t), from the paper: within a
  dialogue, every pair of one modality's nodes and each turn's nodes across modalities, weighted
  1 - arccos(cos_scale cos(x_i, x_j)) / pi; then D^-1/2 A D^-1/2 with D the row sums."""
  total, m = sum(lengths), 3
  unit = nodes / np.linalg.norm(nodes, axis=-1, keepdims=True)
  weight = lambda i, j: 1 - math.acos(cos_scale * float(unit[i] @ unit[j])) / math.pi  # noqa: E731
  adj = np.zeros((m * total, m * total))
  start = 0
  for n in lengths:
    for a in range(m):
      for c in range(m):
        for t in range(n):
          for u in range(n):
            if a == c or t == u:
              i, j = a * total + start + t, c * total + start + u
              adj[i, j] = weight(i, j)
    start += n
  d = adj.sum(axis=1) ** -0.5
  return d[:, None] * adj * d[None, :]


@pytest.mark.usefixtures('x64')
@pytest.mark.parametrize('lengths', [(4, 2, 3), pytest.param((3, 3), marks=pytest.mark.slow)])
def test_dense_adjacency_is_their_layout(lengths):
  batch = _batch(lengths, 4, seed=2)
  batch = {k: np.asarray(v, np.float64) if k in DIMS else v for k, v in batch.items()}
  net = parity.model(1)
  inputs = parity.model_inputs(batch)
  params = net.init(jax.random.PRNGKey(1), *inputs, deterministic=True)['params']
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
  (_, weights), state = net.apply({'params': params}, *inputs, deterministic=True, return_adjacency=True,
                                  capture_intermediates=lambda mdl, _: mdl.name == 'gcn',
                                  mutable=['intermediates'])
  gcn = state['intermediates']['gcn']['__call__'][0]
  nodes = parity.to_authors_nodes(gcn, batch['graph'], batch['turn_mask'])[:, :200]
  dense = parity.dense_adjacency(weights, batch['graph'], batch['turn_mask'])
  np.testing.assert_allclose(dense, their_adjacency(nodes, list(lengths)), rtol=1e-12, atol=1e-14)
  # Their node rows: modality-major, the dialogues' real turns concatenated.
  index = parity.authors_node_index(batch['graph'], batch['turn_mask'])[0]
  real = index >= 0
  assert sorted(index[real].tolist()) == list(range(3 * sum(lengths)))


def test_compare_adjacency_splits_off_the_self_loops():
  theirs = np.array([[1.0, 0.5], [0.5, 2.0]])
  ours = theirs + np.array([[0.0, 1e-3], [1e-3, 1e-2]])
  q = parity.compare_adjacency(ours, theirs, 1e-2, 1e-3)
  assert q['adjacency']['max_rel'] == pytest.approx(5e-4) and q['adjacency']['ok']
  assert q['adjacency/self_loops']['max_rel'] == pytest.approx(5e-3) and not q['adjacency/self_loops']['ok']


# -- their runtime: the legacy index, the stand-ins, the loss -----------------------------------


def test_legacy_index_is_a_tuple_of_rows_and_columns():
  idx = np.array(np.diag_indices(3))
  idx[1] += 3  # the diagonal of the block (0, 1), as their create_big_adj builds it
  a = np.zeros((3, 6))
  a[parity.legacy_index(idx)] = [1, 2, 3]
  np.testing.assert_array_equal(a[:, 3:], np.diag([1, 2, 3]))
  for other in (np.array([0, 2]), (slice(0, 2), 1), 3, np.array([[0.5]])):
    assert parity.legacy_index(other) is other


def test_stub_modules_come_and_go():
  before = {k: sys.modules.get(k) for k in parity.STUBS}  # modules already imported stay as they are
  with parity.stub_modules():
    from torch_geometric.nn import GraphConv, RGCNConv  # pylint: disable=g-import-not-at-top
    import ipdb  # pylint: disable=g-import-not-at-top,unused-import
    if before['torch_geometric.nn'] is None:
      with pytest.raises(RuntimeError, match='stand-in'):
        RGCNConv(1, 2)
    del GraphConv
  assert {k: sys.modules.get(k) for k in parity.STUBS} == before


@pytest.mark.usefixtures('x64')
def test_weighted_nll_is_their_nll_loss():
  rng = np.random.default_rng(3)
  logits = rng.standard_normal((2, 4, 6))
  label = rng.integers(0, 6, (2, 4))
  turn_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  w = rng.uniform(0.5, 2.0, 6)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  rows = turn_mask.reshape(-1)
  y, lp = label.reshape(-1)[rows], logp.reshape(-1, 6)[rows]
  want = -np.sum(w[y] * lp[np.arange(len(y)), y]) / np.sum(w[y])  # nn.NLLLoss(weight), 'mean'
  got = parity.weighted_nll(jnp.asarray(logits), jnp.asarray(label), jnp.asarray(turn_mask), w)
  np.testing.assert_allclose(float(got), want, rtol=1e-12)


def test_gradient_groups_report_the_worst_gcn_layer():
  ok = {'max_abs': 1e-9, 'max_rel': 1e-7, 'tolerance': 1e-4, 'ok': True}
  bad = {'max_abs': 1.0, 'max_rel': 1.0, 'tolerance': 1e-4, 'ok': False}
  worst = parity.worst_of({'gradient/gcn/layer_1': ok, 'gradient/gcn/layer_2': bad})
  assert worst['worst'] == 'layer_2' and not worst['ok']
  assert parity.gradient_groups(2)[-4:] == ('gcn/input', 'gcn/layer_1', 'gcn/layer_2', 'classifier')


@pytest.mark.skipif(not _HAS_TORCH, reason='needs PyTorch (pip install -e .[parity])')
def test_authors_runtime_patches_come_and_go():
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  cuda, setitem, default = torch.Tensor.cuda, torch.Tensor.__setitem__, torch.get_default_dtype()
  with parity.authors_runtime(torch, np.float64):
    x = torch.zeros(2, 4)
    assert x.dtype == torch.float64 and x.cuda() is x
    idx = np.array(np.diag_indices(2))
    idx[1] += 2
    x[idx] = torch.tensor([1.0, 2.0], dtype=torch.float64)
    np.testing.assert_array_equal(x.numpy(), [[0, 0, 1, 0], [0, 0, 0, 2]])
  assert torch.Tensor.cuda is cuda and torch.Tensor.__setitem__ is setitem
  assert torch.get_default_dtype() == default


# -- the full check --------------------------------------------------------------------------------

_REPO = os.environ.get('MMER_AUTHORS_MMGCN')
_WHY = ('needs PyTorch (pip install -e .[parity])' if not _HAS_TORCH
        else 'needs a checkout of hujingwen6666/MMGCN named by MMER_AUTHORS_MMGCN' if not _REPO else '')


@pytest.mark.skipif(bool(_WHY), reason=_WHY or 'runs')
def test_full_parity_with_the_authors_code():
  report = parity.run(_REPO, precisions=('float32', 'float64'), seed=0, batch_size=3)
  bad = {p: [k for k, v in report[p].items() if not v['ok']] for p in ('float32', 'float64')}
  assert report['ok'], bad
  assert report['self_loops_float32_vs_float64']['ours'] < 1e-4
