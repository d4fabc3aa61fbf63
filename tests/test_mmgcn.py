"""MMGCN: the paper's graph, edge weights, GCNII layer, losses, masking, padding, gradients."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

from configs import mmgcn_iemocap
from mmer_jax import train
from mmer_jax.data import graphs
from mmer_jax.data import pipeline
from mmer_jax.data import schema
from mmer_jax.methods import mmgcn as mmgcn_method
from mmer_jax.models import mmgcn

MODS = ('audio', 'visual', 'text')
DIMS = {'audio': 5, 'visual': 4, 'text': 3}


def _spec():
  return schema.DatasetSpec(
      name='toy_conv', task='classification', label_names=('a', 'b', 'c'), conversational=True,
      modalities={m: schema.ModalitySpec('utterance', DIMS[m]) for m in MODS})


def _dialogues(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [pipeline.Dialogue(
      dialogue_id=f'd{k}', features={m: rng.normal(size=(n, DIMS[m])).astype(np.float32) for m in MODS},
      label=rng.integers(3, size=n), speaker=(np.arange(n) % 2).astype(np.int32))
          for k, n in enumerate(lengths)]


def _batch(dialogues, *, per_batch=None, buckets=(8, 16), shards=1, indices=None):
  batch = pipeline.collate_dialogues(dialogues, _spec(), dialogues_per_batch=per_batch or len(dialogues),
                                     buckets=buckets, indices=indices)
  return graphs.add_dialogue_graph(batch, 3, shards)


def _model(**kw):
  args = dict(modalities=MODS, use_modalities=MODS, num_classes=3, width=8, gcn_hidden=6,
              gcn_layers=3, dropout=0.0, num_speakers=2)
  args.update(kw)
  return mmgcn.MMGCN(**args)


@functools.partial(jax.jit, static_argnums=0, static_argnames=('return_adjacency',))
def _apply(model, params, batch, **kw):
  """The model's forward pass, compiled (op by op, a deep GCN's checks take minutes)."""
  return model.apply({'params': params}, {m: batch[m] for m in MODS}, batch['speaker'],
                     batch['turn_mask'], batch['modality_mask'], batch['graph'], deterministic=True, **kw)


def _init(model, batch, seed=0):
  return model.init({'params': jax.random.PRNGKey(seed)}, {m: batch[m] for m in MODS}, batch['speaker'],
                    batch['turn_mask'], batch['modality_mask'], batch['graph'], deterministic=True)['params']


# -- the graph -----------------------------------------------------------------------------------


def test_graph_edges_are_exactly_the_papers():
  """n = 3 turns, 3 modalities: every ordered pair within a modality (self-loops included) and
  the same turn across modalities; nothing else."""
  n, m = 3, 3
  graph = graphs.dialogue_graph([n], max_turns=4, num_modalities=m)
  real = graph.nodes['real']
  node = {i: (int(graph.nodes['utterance'][i]), int(graph.nodes['modality'][i])) for i in np.flatnonzero(real)}
  assert sorted(node.values()) == [(t, k) for t in range(n) for k in range(m)]
  edges = {(node[s], node[r]) for s, r, e in zip(graph.senders, graph.receivers, graph.edges['real']) if e}
  expected = {((i, k), (j, k)) for k in range(m) for i in range(n) for j in range(n)}
  expected |= {((t, a), (t, b)) for t in range(n) for a in range(m) for b in range(m) if a != b}
  assert edges == expected and len(expected) == 45 == int(graph.n_edge[0])
  assert int(graph.edges['real'].sum()) == 45


# -- edge weights and normalisation ----------------------------------------------------------------


def test_edge_similarity_is_one_minus_angle_over_pi():
  x = jnp.asarray([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
  s = jnp.asarray([0, 0, 0, 0, 4])
  r = jnp.asarray([1, 2, 3, 0, 1])
  w = mmgcn.edge_similarity(x, s, r, cos_scale=1.0)
  np.testing.assert_allclose(w, [0.5, 0.0, 0.75, 1.0, 0.5], atol=1e-6)
  # The authors' scale keeps self-loops off arccos' singularity: finite weight and gradient.
  w_self = mmgcn.edge_similarity(x, s[3:4], r[3:4])
  np.testing.assert_allclose(w_self, 1 - math.acos(0.99999) / math.pi, rtol=1e-6)
  g = jax.grad(lambda x: mmgcn.edge_similarity(x, s, r).sum())(x)
  assert np.isfinite(np.asarray(g)).all()


def test_normalisation_is_d_half_a_d_half():
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(4, 4))
  a = a + a.T
  s, r = np.nonzero(np.ones((4, 4)))
  w = mmgcn.normalize_edges(jnp.asarray(a[s, r]), jnp.asarray(s), jnp.asarray(r), 4)
  d = a.sum(1)
  dense = np.zeros((4, 4))
  dense[s, r] = np.asarray(w)
  np.testing.assert_allclose(dense, a / np.sqrt(np.outer(d, d)), rtol=1e-5)


def test_gcnii_layer_paper_and_authors_forms():
  rng = np.random.default_rng(1)
  h, h0 = rng.normal(size=(1, 4, 3)), rng.normal(size=(1, 4, 3))
  s, r = np.nonzero(np.ones((4, 4)))
  weights = rng.uniform(size=len(s))
  a = np.zeros((4, 4))
  a[r, s] = weights  # receiver i sums over senders j
  hi = a @ h[0]
  theta = math.log(0.5 / 2 + 1)
  support = 0.9 * hi + 0.1 * h0[0]
  for concat in (False, True):
    layer = mmgcn.GCNIILayer(3, layer=2, concat_input=concat)
    args = [jnp.asarray(h), jnp.asarray(h0), tuple(jnp.asarray(v) for v in (s[None], r[None], weights[None]))]
    params = layer.init(jax.random.PRNGKey(0), *args)
    kernel = np.asarray(params['params']['kernel'])
    inputs = np.concatenate([hi, h0[0]], -1) if concat else support
    expected = theta * inputs @ kernel + (1 - theta) * support
    np.testing.assert_allclose(layer.apply(params, *args)[0], expected, rtol=1e-5, atol=1e-6)


# -- the model -----------------------------------------------------------------------------------


@pytest.mark.parametrize('message_passing', ['edges', 'blocks'])
def test_padding_and_batching_never_change_a_dialogues_logits(message_passing):
  dialogues = _dialogues([4, 7, 3])
  model = _model(message_passing=message_passing)
  alone = _batch(dialogues[:1], buckets=(4,))
  params = _init(model, alone)
  out_alone = _apply(model, params, alone)[0, :4]
  padded = _batch(dialogues, per_batch=4, buckets=(16,), shards=2, indices=[0, 1, 2])
  out_padded = _apply(model, params, padded)
  np.testing.assert_allclose(out_padded[0, :4], out_alone, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(out_padded)[~padded['turn_mask']] == 0)


@pytest.mark.parametrize('fusion,message_passing', [
    ('graph', 'edges'), ('graph', 'blocks'), ('early', 'blocks'), ('late', 'blocks'), ('gated', 'blocks'),
    pytest.param('late', 'edges', marks=pytest.mark.slow)])
def test_a_missing_modality_is_an_absent_node_not_a_zero_vector(fusion, message_passing):
  """Audio missing for every utterance == the model that does not use audio, same weights; a
  zero audio vector that is present changes MMGCN's result (its node still joins the degrees and
  the messages). In the baselines (early: one node per utterance of the concatenated encodings;
  late, gated: per-modality graphs) a zero input encodes to zeros, like an absent node, so there
  a constant vector stands in for it."""
  dialogues = _dialogues([5, 6])
  batch = _batch(dialogues)
  full = _model(fusion=fusion, message_passing=message_passing)
  params = _init(full, batch)
  missing = dict(batch, modality_mask=batch['modality_mask'] & np.asarray([False, True, True]))
  out_missing = _apply(full, params, missing)
  out_without = _apply(_model(fusion=fusion, use_modalities=('visual', 'text'),
                              message_passing=message_passing), params, batch)
  np.testing.assert_allclose(out_missing, out_without, rtol=1e-5, atol=1e-6)
  fill = 0.0 if fusion == 'graph' else 1.0
  zeros = dict(batch, audio=np.full_like(batch['audio'], fill))
  assert np.abs(np.asarray(_apply(full, params, zeros)) - np.asarray(out_missing)).max() > 1e-4


def test_per_utterance_missing_masks_only_that_node():
  dialogues = _dialogues([5])
  batch = _batch(dialogues)
  model = _model()
  params = _init(model, batch)
  _, w_full = _apply(model, params, batch, return_adjacency=True)
  mask = batch['modality_mask'].copy()
  mask[0, 2, 0] = False  # turn 2 has no audio
  _, w = _apply(model, params, dict(batch, modality_mask=mask), return_adjacency=True)
  g = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], batch['graph'])
  node = np.flatnonzero((g.nodes['utterance'] == 2) & (g.nodes['modality'] == 0) & g.nodes['real'])[0]
  touches = (g.senders == node) | (g.receivers == node)
  assert np.all(np.asarray(w)[0][touches] == 0) and np.all(np.asarray(w_full)[0][touches] > 0)
  assert np.all(np.asarray(w)[0][g.edges['real'] & ~touches] > 0)


@pytest.mark.parametrize('fusion', ['graph', pytest.param('gated', marks=pytest.mark.slow),
                                    pytest.param('early', marks=pytest.mark.slow),
                                    pytest.param('late', marks=pytest.mark.slow)])
def test_block_message_passing_equals_the_jraph_edge_list(fusion):
  """The two layouts of one graph: the same adjacency, logits and gradients, with per-utterance
  missing modalities and a padded batch split into two shards."""
  dialogues = _dialogues([5, 7, 3])
  batch = _batch(dialogues, per_batch=4, buckets=(8,), shards=2, indices=[0, 1, 2])
  rng = np.random.default_rng(4)
  batch['modality_mask'] = batch['modality_mask'] & (rng.uniform(size=batch['modality_mask'].shape) > 0.3)
  edges, blocks = _model(fusion=fusion), _model(fusion=fusion, message_passing='blocks')
  params = _init(edges, batch)
  out_e, w = _apply(edges, params, batch, return_adjacency=True)
  out_b, (intra, cross) = _apply(blocks, params, batch, return_adjacency=True)
  np.testing.assert_allclose(out_b, out_e, rtol=1e-5, atol=1e-6)
  # Every edge's weight sits at its place in the blocks; the blocks hold nothing else.
  g = jax.tree_util.tree_map(np.asarray, batch['graph'])
  total = 0.0
  for s in range(2):
    real = g.edges['real'][s]
    utt, mod = g.nodes['utterance'][s], g.nodes['modality'][s]
    snd, rcv = g.senders[s][real], g.receivers[s][real]
    b = s * 2 + utt[rcv] // 8
    t_r, t_s = utt[rcv] % 8, utt[snd] % 8
    same = mod[snd] == mod[rcv]
    got = np.where(same, np.asarray(intra)[b, mod[rcv], t_r, t_s], np.asarray(cross)[b, mod[rcv], mod[snd], t_r])
    np.testing.assert_allclose(got, np.asarray(w)[s][real], rtol=1e-5, atol=1e-7)
    total += float(np.asarray(w)[s][real].sum())
  np.testing.assert_allclose(float(np.asarray(intra).sum() + np.asarray(cross).sum()), total, rtol=1e-5)
  label = jnp.asarray(batch['label'])

  def loss(model):
    return lambda p: jnp.sum(mmgcn_method.class_loss('nll', _apply(model, p, batch), label) * batch['turn_mask'])

  for a, b in zip(jax.tree_util.tree_leaves(jax.grad(loss(edges))(params)),
                  jax.tree_util.tree_leaves(jax.grad(loss(blocks))(params))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_speaker_embedding_placement():
  batch = _batch(_dialogues([4]))
  swapped = dict(batch, speaker=1 - batch['speaker'])
  for nodes, changes in (('none', False), ('text', True), ('all', True)):
    model = _model(speaker_nodes=nodes)
    params = _init(model, batch)
    diff = np.abs(np.asarray(_apply(model, params, batch)) - np.asarray(_apply(model, params, swapped))).max()
    assert (diff > 1e-6) == changes, nodes


def test_late_and_gated_fusion_use_no_cross_modal_edges():
  batch = _batch(_dialogues([4]))
  for fusion, cross_on in (('graph', True), ('late', False), ('gated', False)):
    model = _model(fusion=fusion)
    params = _init(model, batch)
    _, w = _apply(model, params, batch, return_adjacency=True)
    cross = batch['graph'].edges['cross'][0] & batch['graph'].edges['real'][0]
    assert bool(np.all(np.asarray(w)[0][cross] > 0)) == cross_on and not np.any(np.asarray(w)[0][cross] < 0)
  params = _init(_model(fusion='late'), batch)
  assert {'gcn_audio', 'gcn_visual', 'gcn_text'} <= set(params)


# -- losses ----------------------------------------------------------------------------------------


def test_losses_equal_hand_computed_values():
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
  label = jnp.asarray([0, 2])
  p = np.exp(np.asarray(logits))
  p /= p.sum(-1, keepdims=True)
  py = p[[0, 1], [0, 2]]
  np.testing.assert_allclose(mmgcn_method.class_loss('nll', logits, label), -np.log(py), rtol=1e-6)
  w = np.asarray([0.5, 1.0, 2.0])
  np.testing.assert_allclose(mmgcn_method.class_loss('weighted_nll', logits, label, class_weights=w),
                             -w[[0, 2]] * np.log(py), rtol=1e-6)
  np.testing.assert_allclose(mmgcn_method.class_loss('focal', logits, label, focal_gamma=2.0),
                             -(1 - py) ** 2 * np.log(py), rtol=1e-6)
  logp = np.log(p)
  onehot = np.eye(3)[[0, 2]]
  authors = -np.mean((1 - onehot * logp) ** 2.5 * logp, axis=-1)
  np.testing.assert_allclose(mmgcn_method.class_loss('focal_authors', logits, label), authors, rtol=1e-6)


def test_inverse_frequency_weights_have_mean_one_on_the_training_labels():
  counts = np.asarray([10, 30, 60, 0])
  w = mmgcn_method.inverse_frequency_weights(counts)
  prior = counts / counts.sum()
  assert abs(float((prior * w).sum()) - 1.0) < 1e-6 and w[3] == 0
  np.testing.assert_allclose(w[:3] * prior[:3], np.full(3, 1 / 3), rtol=1e-6)


def test_parse_modalities():
  assert mmgcn_method.parse_modalities('tva') == MODS
  assert mmgcn_method.parse_modalities('al') == ('audio', 'text')
  with pytest.raises(ValueError, match='letters'):
    mmgcn_method.parse_modalities('ax')


# -- gradients (float64, finite differences) -------------------------------------------------------


def test_check_grads_gcn_layer_edge_weights_and_full_loss():
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(5, 4)))
    s, r = (jnp.asarray(v) for v in np.nonzero(np.ones((5, 5))))
    off = s != r  # self-loops sit on arccos' singularity (cos = 1): check away from it
    check_grads(jax.jit(lambda x: mmgcn.edge_similarity(x, s[off], r[off], cos_scale=1.0)), (x,),
                order=1, modes=['rev'])
    check_grads(jax.jit(lambda x: mmgcn.edge_similarity(x, s, r)), (x,), order=1, modes=['rev'])

    layer = mmgcn.GCNIILayer(4, layer=1, concat_input=True)
    h, h0 = x[None], jnp.asarray(rng.normal(size=(1, 5, 4)))
    w = jnp.asarray(rng.uniform(size=(1, len(s))))
    params = layer.init(jax.random.PRNGKey(0), h, h0, (s[None], r[None], w))
    params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params)
    check_grads(jax.jit(lambda p, h, w: layer.apply(p, h, h0, (s[None], r[None], w))), (params, h, w),
                order=1, modes=['rev'])

    batch = _batch(_dialogues([3, 4]))
    model = _model()
    params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), _init(model, batch))
    feats64 = {m: jnp.asarray(batch[m], jnp.float64) for m in MODS}
    label = jnp.asarray(batch['label'])

    def loss(params):
      logits = model.apply({'params': params}, feats64, batch['speaker'], batch['turn_mask'],
                           batch['modality_mask'], batch['graph'], deterministic=True)
      per = mmgcn_method.class_loss('weighted_nll', logits, label, class_weights=jnp.asarray([1.0, 2.0, 0.5]))
      return jnp.sum(per * batch['turn_mask']) / batch['turn_mask'].sum()

    check_grads(jax.jit(loss), (params,), order=1, modes=['rev'], atol=1e-5, rtol=1e-4)


def test_remat_gives_the_same_gradients():
  batch = _batch(_dialogues([3, 4]))
  plain, remat = _model(), _model(gcn_remat=True)
  params = _init(plain, batch)

  def grad(model):
    return jax.grad(lambda p: jnp.sum(_apply(model, p, batch) ** 2))(params)

  for a, b in zip(jax.tree_util.tree_leaves(grad(plain)), jax.tree_util.tree_leaves(grad(remat))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_all_pairs_of_modalities_fuse_in_gated_attention():
  fusion = mmgcn.GatedAttentionFusion(features=4, dropout=0.0)
  xs = [jnp.ones((2, 3, 5)) * k for k in range(3)]
  params = fusion.init(jax.random.PRNGKey(0), xs, deterministic=True)
  out = fusion.apply(params, xs, deterministic=True)
  assert out.shape == (2, 3, 12)
  assert {f'gate_{i}{j}' for i, j in itertools.combinations(range(3), 2)} <= set(params['params'])


# -- learning ----------------------------------------------------------------------------------------


def test_mmgcn_learns_a_planted_signal(tmp_path):
  """A toy dialogue directory (3 classes, chance 0.33; labels planted in audio and text): MMGCN
  with small dims reaches test WA >= 0.75 in 12 epochs, on complete data and with text missing."""
  import toy_data  # pylint: disable=g-import-not-at-top
  toy = toy_data.write_features_dir(tmp_path / 'toy', n=320, classes=3, dialogues=True)
  config = mmgcn_iemocap.get_config()
  config.data.features_dir = str(toy)
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.buckets = (4,)
  config.data.batch_size = config.data.eval_batch_size = 8
  config.data.prefetch = 0
  config.method.width, config.method.gcn_hidden, config.method.num_layers = 16, 16, 2
  config.optimizer.learning_rate = 3e-3
  config.train.num_epochs = 12
  config.eval.conditions, config.eval.rates = ('full', 'a'), ()
  config.analysis = ()
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  rows = {r['condition']: r['metrics'] for r in results['rows']}
  assert rows['full']['wa'] >= 0.75 and rows['a']['wa'] >= 0.5, rows
