"""M3ER: the fusion losses against hand values and finite differences, the network's masking and
padding, the modality check and the proxy path, and learning on a toy directory."""


import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

from configs import m3er_iemocap
from mmer_jax import stages
from mmer_jax import train
from mmer_jax.data import schema
from mmer_jax.methods import m3er
from mmer_jax.models import m3er as m3er_model
from mmer_jax.ops import proxy as proxy_lib

MODS = ('audio', 'visual', 'text')
DIMS = (8, 7, 9)


# -- the fusion losses -----------------------------------------------------------------------------


def _probs():
  p = np.array([[[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]],
                [[0.2, 0.8], [0.5, 0.5], [0.6, 0.4]]])  # [B=2, M=3, C=2]
  return p, np.array([0, 1])


def test_loss_forms_equal_hand_computed_values():
  p, label = _probs()
  used = np.ones((2, 3), bool)
  beta = 2.0  # exponent beta / (M - 1) = 1
  py = np.array([[0.7, 0.4, 0.9], [0.8, 0.5, 0.4]])
  original = [-sum(np.prod([1 - py[b, j] for j in range(3) if j != i]) * np.log(py[b, i])
                   for i in range(3)) for b in range(2)]
  modified = [-sum(py[b, i] * np.log(py[b, i]) for i in range(3)) for b in range(2)]
  log_p = jnp.log(jnp.asarray(p))
  for form, expected in (('original', original), ('m3er', modified)):
    got = m3er.multiplicative_loss(log_p, jnp.asarray(label), used, beta=beta, form=form, num_modalities=3)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
  # An unused modality drops out of the sum and (original) of the products.
  used = np.array([[True, False, True], [True, True, True]])
  got = m3er.multiplicative_loss(log_p, jnp.asarray(label), used, beta=beta, form='original', num_modalities=3)
  first = -((1 - 0.9) * np.log(0.7) + (1 - 0.7) * np.log(0.9))
  np.testing.assert_allclose(got, [first, original[1]], rtol=1e-6)
  # beta / (M - 1) with beta = 1, M = 3: square roots.
  got = m3er.multiplicative_loss(log_p, jnp.asarray(label), np.ones((2, 3), bool), beta=1.0, form='m3er',
                                 num_modalities=3)
  np.testing.assert_allclose(got, [-sum(np.sqrt(py[b, i]) * np.log(py[b, i]) for i in range(3))
                                   for b in range(2)], rtol=1e-6)


def test_constant_weights_give_the_weighted_cross_entropy_gradient():
  """With the weights as constants (the training form), d loss / d log p_i^y = -w_i."""
  p, label = _probs()
  log_p = jnp.log(jnp.asarray(p))
  used = np.ones((2, 3), bool)
  grad = jax.grad(lambda lp: m3er.multiplicative_loss(
      lp, jnp.asarray(label), used, beta=2.0, form='m3er', num_modalities=3,
      weights_from=jax.lax.stop_gradient(lp)).sum())(log_p)
  py = np.take_along_axis(p, label[:, None, None], -1)[..., 0]
  np.testing.assert_allclose(np.take_along_axis(np.asarray(grad), label[:, None, None], -1)[..., 0],
                             -py, rtol=1e-6)


def test_check_grads_both_loss_forms_and_the_network():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 3, 4)))
    label = jnp.asarray([0, 2, 3])
    used = jnp.asarray([[True, True, True], [True, False, True], [False, True, True]])
    for form in m3er.LOSS_FORMS:
      fn = lambda z, form=form: m3er.multiplicative_loss(  # noqa: E731
          jax.nn.log_softmax(z), label, used, beta=2.0, form=form, num_modalities=3).sum()
      check_grads(fn, (logits,), order=1, modes=['rev'])
    net = m3er_model.M3ERNetwork(modalities=MODS, num_classes=4, lstm_hidden=4, memory_dim=6,
                                 attention_hidden=5, head_hidden=5)
    feats, lengths = _features(rng, batch=3, dtype=np.float64)
    params = net.init(jax.random.PRNGKey(0), feats, lengths, used)['params']
    params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params)

    def loss(params, audio):
      out = net.apply({'params': params}, {**feats, 'audio': audio}, lengths, used)
      return m3er.multiplicative_loss(jax.nn.log_softmax(out), label, used, beta=2.0, form='m3er',
                                      num_modalities=3).sum()
    check_grads(jax.jit(loss), (params, feats['audio']), order=1, modes=['rev'], atol=1e-5, rtol=1e-4)


# -- the network -----------------------------------------------------------------------------------


def _features(rng, batch=4, dtype=np.float32):
  feats = {'audio': rng.normal(size=(batch, 7, 5)), 'visual': rng.normal(size=(batch, 4, 3)),
           'text': rng.normal(size=(batch, 6))}
  feats = {k: jnp.asarray(v, dtype) for k, v in feats.items()}
  lengths = {'audio': jnp.asarray([7, 3, 1, 5][:batch]), 'visual': jnp.asarray([4, 4, 2, 1][:batch])}
  return feats, lengths


def _net():
  return m3er_model.M3ERNetwork(modalities=MODS, num_classes=3, lstm_hidden=8, memory_dim=12,
                                attention_hidden=6, head_hidden=7)


def test_network_padding_never_changes_an_output():
  rng = np.random.default_rng(1)
  feats, lengths = _features(rng)
  used = jnp.ones((4, 3), bool)
  net = _net()
  params = net.init(jax.random.PRNGKey(0), feats, lengths, used)
  out = net.apply(params, feats, lengths, used)
  padded = {**feats, 'audio': jnp.concatenate([feats['audio'], 1e3 * jnp.ones((4, 5, 5))], 1)}
  valid = jnp.arange(12)[None, :, None] < lengths['audio'][:, None, None]
  padded['audio'] = jnp.where(valid, padded['audio'], 7.0)  # garbage after each length
  np.testing.assert_allclose(net.apply(params, padded, lengths, used), out, rtol=1e-5, atol=1e-6)
  assert out.shape == (4, 3, 3)


def test_an_unused_modality_is_absent_not_zero():
  """The heads of the used modalities do not depend on an unused one's features at all."""
  rng = np.random.default_rng(2)
  feats, lengths = _features(rng)
  used = jnp.asarray([[True, False, True]] * 4)
  net = _net()
  params = net.init(jax.random.PRNGKey(0), feats, lengths, used)
  out = net.apply(params, feats, lengths, used)
  other = {**feats, 'visual': feats['visual'] * 100 + 3}
  changed = net.apply(params, other, lengths, used)
  np.testing.assert_allclose(changed[:, [0, 2]], out[:, [0, 2]], rtol=1e-6)


# -- the method: check and proxies -----------------------------------------------------------------


def _method(**overrides):
  config = m3er_iemocap.get_config('smoke')
  with config.unlocked():
    for key, value in overrides.items():
      config.method[key] = value
  config = stages.main_stage(config)
  spec = schema.DatasetSpec(
      name='planted', task='classification', label_names=('a', 'b', 'c'),
      modalities={m: schema.ModalitySpec(level='utterance', dim=d) for m, d in zip(MODS, DIMS)})
  return m3er.M3ERMethod(config, spec)


def _planted(n, seed):
  """Three modalities that see one shared 6-d latent through fixed maps, plus a little noise."""
  rng = np.random.default_rng(seed)
  maps = np.random.default_rng(99)
  z = rng.normal(size=(n, 6))
  out = {}
  for m, d in zip(MODS, DIMS):
    out[m] = (z @ maps.normal(size=(6, d)) + 0.2 * rng.normal(size=(n, d))).astype(np.float32)
  return out


def _fitted_params(method, train_vectors):
  stats = {'vectors': train_vectors, 'lengths': {m: np.ones(len(train_vectors['audio'])) for m in MODS}}
  return {m3er.FITTED: method._fitted_from(stats)}  # pylint: disable=protected-access


def _batch(vectors, mask=None):
  n = len(vectors['audio'])
  return {**{m: jnp.asarray(v) for m, v in vectors.items()},
          'modality_mask': jnp.ones((n, 3), bool) if mask is None else jnp.asarray(mask),
          'example_mask': jnp.ones(n, bool), 'label': jnp.zeros(n, jnp.int32),
          'index': jnp.arange(n)}


@pytest.mark.parametrize('statistic', ['correlation', 'typicality'])
def test_the_check_finds_a_modality_replaced_by_noise(statistic):
  # Clean pairs agree closely here; a random 6-d vector rarely reaches 0.8.
  method = _method(cca_components=6, check_statistic=statistic, tau=0.8, typicality_tau=4.0,
                   modality_check=True)
  params = _fitted_params(method, _planted(2000, 0))
  test = _planted(300, 1)
  noised = np.random.default_rng(5).integers(0, 3, size=300)
  for i, m in enumerate(MODS):
    rows = noised == i
    test[m][rows] = 10 * np.random.default_rng(i).normal(size=(rows.sum(), test[m].shape[1]))
  effective = np.asarray(method.modality_check(params, _batch(test))['effective'])
  found = ~effective
  truth = np.eye(3, dtype=bool)[noised]
  precision = (found & truth).sum() / found.sum()
  recall = (found & truth).sum() / truth.sum()
  assert precision >= 0.9 and recall >= 0.9, (precision, recall)
  assert effective.any(-1).all()  # never leaves a sample nothing


def test_the_check_keeps_the_most_typical_modality_when_all_fail():
  method = _method(cca_components=6, check_statistic='correlation', tau=2.0, modality_check=True)
  params = _fitted_params(method, _planted(500, 0))
  test = _planted(8, 1)
  test['visual'] = test['visual'] * 50  # far off the training data
  effective = np.asarray(method.modality_check(params, _batch(test))['effective'])
  assert (effective.sum(-1) == 1).all() and not effective[:, 1].any()


def test_without_the_check_every_present_modality_is_effective():
  method = _method(cca_components=6, modality_check=False, tau=2.0)
  params = _fitted_params(method, _planted(200, 0))
  mask = np.array([[True, True, False], [True, True, True]])
  out = method.modality_check(params, _batch(_planted(2, 1), mask))
  np.testing.assert_array_equal(out['effective'], mask)


def test_a_missing_modality_is_regenerated_from_the_effective_ones():
  method = _method(cca_components=6, modality_check=False, proxy=True, num_neighbors=4)
  train_vectors = _planted(400, 0)
  params = _fitted_params(method, train_vectors)
  test = _planted(5, 1)
  mask = np.array([[True, False, False]] * 5)  # only audio: visual and text from audio alone
  inputs = method.prepare(params, _batch(test, mask))
  np.testing.assert_array_equal(inputs['used'], np.ones((5, 3), bool))
  np.testing.assert_array_equal(inputs['regenerated'], ~mask)
  fitted = params[m3er.FITTED]
  for m in ('visual', 'text'):
    expected = proxy_lib.regenerate(jnp.asarray(test['audio']), fitted['bank']['audio'],
                                    fitted['maps'][m3er.map_name('audio', m)], num_neighbors=4,
                                    ridge=method.config.method.proxy_ridge)
    np.testing.assert_allclose(inputs['features'][m], expected, rtol=1e-4, atol=1e-5)
  # The proxy is closer to the true modality than the training mean is.
  err = np.mean((np.asarray(inputs['features']['text']) - test['text']) ** 2)
  assert err < np.mean((train_vectors['text'].mean(0) - test['text']) ** 2)
  # Without proxies the missing modalities stay absent (exact zeros).
  plain = _method(cca_components=6, modality_check=False, proxy=False).prepare(params, _batch(test, mask))
  np.testing.assert_array_equal(plain['used'], mask)
  assert not np.asarray(plain['features']['text']).any()


def test_variants_set_the_three_switches_unless_given():
  config = m3er_iemocap.get_config('smoke')
  with config.unlocked():
    config.method.variant = 'no_proxy'
  resolved = stages.resolve(config)
  assert (resolved.method.loss, resolved.method.modality_check, resolved.method.proxy) == ('m3er', True, False)
  config = m3er_iemocap.get_config('smoke')
  with config.unlocked():
    config.method.variant = 'original_mult'
    config.method.proxy = True
  resolved = stages.resolve(config)
  assert (resolved.method.loss, resolved.method.modality_check, resolved.method.proxy) == ('original', False, True)
  config = m3er_iemocap.get_config('smoke')
  with config.unlocked():
    config.method.variant = 'mmin'
  with pytest.raises(ValueError, match='variant'):
    stages.resolve(config)


# -- learning --------------------------------------------------------------------------------------


def test_m3er_learns_a_planted_signal(tmp_path):
  """A toy directory (3 classes, chance 0.33; labels planted in audio and text): M3ER with small
  sizes reaches test WA >= 0.75 in 15 epochs, complete and with text missing (regenerated)."""
  import toy_data  # pylint: disable=g-import-not-at-top
  toy = toy_data.write_features_dir(tmp_path / 'toy', n=300, classes=3)
  config = m3er_iemocap.get_config()
  config.data.name = 'features_dir'
  config.data.features_dir = str(toy)
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.standardize = True
  config.data.batch_size = 32
  config.data.eval_batch_size = 64
  config.data.prefetch = 0
  m = config.method
  m.lstm_hidden, m.memory_dim, m.attention_hidden, m.head_hidden = 8, 16, 8, 16
  m.cca_components, m.num_neighbors = 4, 5
  config.optimizer.learning_rate = 3e-3
  config.train.num_epochs = 15
  config.train.patience = None
  config.eval.conditions, config.eval.rates, config.eval.noise_fractions = ('full', 'a'), (), (0.5,)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  rows = {r['condition']: r['metrics'] for r in results['rows']}
  assert rows['full']['wa'] >= 0.75 and rows['a']['wa'] >= 0.6, rows
  assert 'noise=0.5' in rows
