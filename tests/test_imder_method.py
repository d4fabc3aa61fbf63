"""IMDer's method: per-sample masks, what is recovered and what is kept, determinism, gradients."""

import sys
import pathlib

import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs import imder_mosi  # noqa: E402
from mmer_jax import methods  # noqa: E402
from mmer_jax.data import schema  # noqa: E402
from mmer_jax.methods import imder as imder_method  # noqa: E402
from mmer_jax.models import imder as imder_model  # noqa: E402

B = 6
LEVELS = {'audio': 'sequence', 'visual': 'sequence', 'text': 'sequence'}


def _spec(levels=None):
  levels = levels or LEVELS
  dims = {'audio': 5, 'visual': 7, 'text': 9}
  return schema.DatasetSpec('toy', 'regression', {
      m: schema.ModalitySpec(level, dims[m], 6 if level == 'sequence' else None)
      for m, level in levels.items()}, label_range=(-3.0, 3.0))


def _method(variant='imder', recovery='diffusion', levels=None, **method_fields):
  config = imder_mosi.get_config('smoke')
  m = config.method
  m.variant, m.recovery = variant, recovery
  m.d_model, m.num_heads, m.score_channels, m.score_attn_layers = 8, 2, (8, 16), 1
  m.time_embed_dim, m.refine_blocks, m.refine_reduction = 8, 1, 4
  m.utterance_tokens = 4
  for k in imder_model.DROPOUTS:
    m[k] = 0.0
  m.num_steps = m.train_num_steps = 3
  for k, v in method_fields.items():
    m[k] = v
  return methods.create_method(config, _spec(levels))


def _batch(spec, seed=0, mask=None):
  rng = np.random.default_rng(seed)
  batch = {}
  for n, s in spec.modalities.items():
    shape = (B, s.max_len, s.dim) if s.level == 'sequence' else (B, s.dim)
    batch[n] = jnp.asarray(rng.normal(size=shape) + 0.5, jnp.float32)
  if mask is None:  # every pattern with at least one modality, then complete
    mask = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], bool)
  batch['modality_mask'] = jnp.asarray(mask)
  batch['label'] = jnp.asarray(rng.uniform(-3, 3, size=B), jnp.float32)
  batch['index'] = jnp.arange(B) + 10
  batch['example_mask'] = jnp.ones(B, bool)
  return batch


def _complete(method, train):
  return jax.jit(lambda p, b, r: method.complete(p, b, r, train=train))


def _project(method):
  return jax.jit(method.project)


@pytest.fixture(scope='module')
def setup():
  method = _method()
  batch = _batch(method.spec)
  params = method.init(jax.random.key(0), batch)
  return method, batch, params


def test_present_modalities_are_never_replaced_and_missing_ones_are(setup):
  method, batch, params = setup
  proj = _project(method)(params, batch)
  filled, _ = _complete(method, False)(params, batch, jax.random.key(3))
  mask = np.asarray(batch['modality_mask'])
  for n in method.modalities:
    col = imder_method.INDEX[n]
    present = mask[:, col]
    np.testing.assert_array_equal(np.asarray(filled[n])[present], np.asarray(proj[n])[present])
    recovered = np.asarray(filled[n])[~present]
    assert not np.allclose(recovered, np.asarray(proj[n])[~present]), n
    assert np.all(np.isfinite(recovered)) and np.abs(recovered).max() > 0, n


@pytest.mark.slow  # compiles IMDer for a minute or more (-m slow)
def test_zeros_recovery_and_pretrain_zero_fill_the_missing_projections(setup):
  _, batch, _ = setup
  for variant, recovery in (('imder', 'zeros'), ('pretrain', 'diffusion')):
    method = _method(variant, recovery)
    params = method.init(jax.random.key(0), batch)
    proj = _project(method)(params, batch)
    filled, terms = _complete(method, True)(params, batch, jax.random.key(3))
    mask = np.asarray(batch['modality_mask'])
    for n in method.modalities:
      present = mask[:, imder_method.INDEX[n]]
      np.testing.assert_array_equal(np.asarray(filled[n])[~present], 0.0)
      np.testing.assert_array_equal(np.asarray(filled[n])[present], np.asarray(proj[n])[present])
    assert float(jnp.abs(terms['score']).sum() + jnp.abs(terms['rec']).sum()) == 0.0


@pytest.mark.slow  # compiles IMDer for a minute or more (-m slow)
def test_score_and_rec_terms_follow_each_samples_mask(setup):
  method, batch, params = setup
  loss = jax.jit(method.loss)
  _, aux = loss(params, batch, jax.random.key(5))
  score, rec = np.asarray(aux['score']), np.asarray(aux['rec'])
  complete = np.asarray(batch['modality_mask']).all(-1)
  assert np.all(score[complete] == 0) and np.all(rec[complete] == 0)
  assert np.all(score[~complete] > 0) and np.all(rec[~complete] > 0)
  # A modality the data itself lacks (observed False) has no target: no term for it.
  observed = np.ones((B, 3), bool)
  observed[3, 2] = False  # example 3 misses text, and the data has no text for it
  with_gap = {**batch, 'observed_mask': jnp.asarray(observed)}
  _, aux_gap = loss(params, with_gap, jax.random.key(5))
  assert float(aux_gap['score'][3]) == 0.0 and float(aux_gap['rec'][3]) == 0.0
  np.testing.assert_allclose(np.asarray(aux_gap['score'])[:3], score[:3], rtol=1e-6)
  # One example's mask does not change another's loss.
  other = np.asarray(batch['modality_mask']).copy()
  other[0] = [1, 1, 1]
  loss_a, _ = loss(params, batch, jax.random.key(5))
  loss_b, _ = loss(params, {**batch, 'modality_mask': jnp.asarray(other)}, jax.random.key(5))
  np.testing.assert_allclose(np.asarray(loss_a)[1:], np.asarray(loss_b)[1:], rtol=1e-5, atol=1e-5)


def test_predictions_do_not_depend_on_the_batch(setup):
  method, batch, params = setup
  predict = jax.jit(method.predict)
  whole = np.asarray(predict(params, batch, jax.random.key(7)))
  halves = [np.asarray(predict(params, {k: v[s] for k, v in batch.items()}, jax.random.key(7)))
            for s in (slice(0, 3), slice(3, 6))]
  reordered = np.asarray(predict(params, {k: v[::-1] for k, v in batch.items()},
                                 jax.random.key(7)))[::-1]
  np.testing.assert_allclose(np.concatenate(halves), whole, atol=2e-5)
  np.testing.assert_allclose(reordered, whole, atol=2e-5)
  assert not np.allclose(whole, np.asarray(predict(params, batch, jax.random.key(8))))


@pytest.mark.slow  # compiles IMDer for a minute or more (-m slow)
def test_conditions_fuse_two_available_modalities_else_take_the_one():
  model = imder_model.IMDer(modalities=('audio', 'visual', 'text'), d_model=4, num_heads=2,
                            score_channels=(4, 8), time_embed_dim=4, refine_blocks=1,
                            refine_reduction=2)
  rng = np.random.default_rng(0)
  proj = {n: jnp.asarray(rng.normal(size=(4, 4, 4)), jnp.float32) for n in model.modalities}
  mask = jnp.asarray([[0, 1, 1], [0, 1, 0], [0, 0, 1], [1, 1, 1]], bool)  # audio missing in 0-2
  index = imder_method.INDEX
  features = {n: jnp.zeros((4, 6, 3)) for n in model.modalities}
  variables = model.init(jax.random.key(0), features, mask, index,
                         method=imder_model.IMDer.init_all)
  cond = model.apply(variables, proj, mask, index, method=imder_model.IMDer.conditions)
  fused = model.apply(variables, proj['text'], proj['visual'],
                      method=lambda m, a, b: m.cat['lv'](a, b))  # audio's pair: (text, visual)
  np.testing.assert_allclose(cond['audio'][0], fused[0], rtol=1e-6)
  np.testing.assert_array_equal(cond['audio'][1], proj['visual'][1])
  np.testing.assert_array_equal(cond['audio'][2], proj['text'][2])


@pytest.mark.slow  # compiles IMDer for a minute or more (-m slow)
def test_utterance_vectors_and_mixed_lengths_run():
  levels = {'audio': 'sequence', 'visual': 'utterance', 'text': 'utterance'}
  method = _method(levels=levels)
  batch = _batch(method.spec)
  params = method.init(jax.random.key(0), batch)
  assert params['params']['projections']['tokens_text']['dense']['kernel'].shape == (9, 4 * 8)
  filled, _ = _complete(method, False)(params, batch, jax.random.key(1))
  assert filled['audio'].shape == (B, 4, 8) and filled['text'].shape == (B, 4, 8)
  loss, _ = jax.jit(method.loss)(params, batch, jax.random.key(2))
  assert loss.shape == (B,) and np.all(np.isfinite(np.asarray(loss)))


def test_masks_freeze_projections_and_average_only_score_networks(setup):
  method, _, params = setup
  flags = jax.tree_util.tree_leaves_with_path(method.trainable_mask(params))
  for path, flag in flags:
    keys = [getattr(p, 'key', '') for p in path]
    assert flag == (keys[0] == 'params' and keys[1] != 'projections'), keys
  ema = jax.tree_util.tree_leaves_with_path(method.ema_mask(params))
  assert {tuple(getattr(p, 'key', '') for p in path[:2]) for path, f in ema if f} == {
      ('params', 'score')}


@pytest.mark.slow  # compiles IMDer for a minute or more (-m slow)
def test_the_full_loss_has_the_gradients_of_its_finite_differences():
  with jax.enable_x64(True):
    method = _method(num_heads=2)
    batch = _batch(method.spec)
    batch = {k: (v.astype(jnp.float64) if v.dtype == jnp.float32 else v) for k, v in batch.items()}
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                    method.init(jax.random.key(0), batch))
    target = jax.tree_util.tree_map(jnp.array, params)
    key = jax.random.key(4)

    def total(p):
      return jnp.sum(method.gradcheck_loss(p, batch, key, target_params=target)[0])

    trainable = {'params': {k: v for k, v in params['params'].items() if k != 'projections'}}

    def of_trainable(t):
      return total({'params': {**params['params'], **t['params']},
                    'constants': params['constants']})

    jtu.check_grads(jax.jit(of_trainable), (trainable,), order=1, modes=('rev',), atol=1e-5, rtol=1e-5,
                    eps=1e-6)


def _one_pattern(batch, missing_columns):
  """(the batch with every row missing `missing_columns`, the same with `pattern_missing`)."""
  mask = np.ones((B, 3), bool)
  mask[:, list(missing_columns)] = False
  uniform = {**batch, 'modality_mask': jnp.asarray(mask)}
  columns = jnp.tile(jnp.asarray(missing_columns, jnp.int32), (B, 1))
  return uniform, {**uniform, 'pattern_missing': columns}


@pytest.mark.parametrize('missing_columns', [(0,), (0, 2)], ids=['missing_a', 'missing_at'])
def test_a_one_pattern_batch_gives_the_packed_slots_results(setup, missing_columns):
  """`pattern_missing` (train.mask_draw='host_grouped') runs only the batch's missing modalities'
  networks on all rows: the loss terms and the predictions equal those of the packed-slot path
  (ops/slots.py) example by example."""
  method, batch, params = setup
  uniform, grouped = _one_pattern(batch, missing_columns)
  loss = jax.jit(method.loss)
  packed, packed_aux = loss(params, uniform, jax.random.key(5))
  ours, aux = loss(params, grouped, jax.random.key(5))
  assert np.all(np.asarray(aux['score']) > 0) and np.all(np.asarray(aux['rec']) > 0)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(packed), rtol=2e-5)
  for key in ('task', 'score', 'rec'):
    np.testing.assert_allclose(np.asarray(aux[key]), np.asarray(packed_aux[key]), rtol=2e-5)
  predict = jax.jit(method.predict)
  np.testing.assert_allclose(np.asarray(predict(params, grouped, jax.random.key(7))),
                             np.asarray(predict(params, uniform, jax.random.key(7))), atol=2e-5)


@pytest.mark.slow  # compiles both IMDer training paths' gradients in float64 (minutes)
def test_a_one_pattern_batch_gives_the_packed_slots_gradients():
  with jax.enable_x64(True):
    method = _method(num_heads=2)
    batch = {k: (v.astype(jnp.float64) if v.dtype == jnp.float32 else v)
             for k, v in _batch(method.spec).items()}
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                    method.init(jax.random.key(0), batch))
    uniform, grouped = _one_pattern(batch, (1,))
    grad = jax.jit(jax.grad(lambda p, b: method.loss(p, b, jax.random.key(5))[0].sum()))
    ours, packed = grad(params, grouped), grad(params, uniform)
    for (path, g), ref in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves(packed)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-9,
                                 atol=1e-12 * (np.abs(ref).max() + 1.0), err_msg=jax.tree_util.keystr(path))


def test_a_complete_one_pattern_batch_runs_no_recovery(setup):
  method, batch, params = setup
  complete = {**batch, 'modality_mask': jnp.ones((B, 3), bool),
              'pattern_missing': jnp.zeros((B, 0), jnp.int32)}
  filled, terms = _complete(method, True)(params, complete, jax.random.key(3))
  proj = _project(method)(params, complete)
  for n in method.modalities:
    np.testing.assert_array_equal(np.asarray(filled[n]), np.asarray(proj[n]))
  assert float(jnp.abs(terms['score']).sum() + jnp.abs(terms['rec']).sum()) == 0.0
  text = jax.jit(lambda p, b, r: method.loss(p, b, r)).lower(params, complete, jax.random.key(3)).as_text()
  assert 'while' not in text and 'conditional' not in text  # no sampler loop, no chunk branch


def test_grid_predictions_do_not_depend_on_grouping_or_batch_size(setup):
  """A split predicted in batches of one pattern (`group_patterns`, what IMDer's evaluation does)
  gives each example the prediction of the packed path, at any batch size."""
  from mmer_jax import evaluate
  method, batch, params = setup
  predict = jax.jit(method.predict)

  def batches(size):
    host = {k: np.asarray(v) for k, v in batch.items()}
    for start in range(0, B, size):
      yield {k: v[start: start + size] for k, v in host.items()}

  run = lambda size, group: evaluate.predict_split(  # noqa: E731
      lambda p, b: predict(p, b, jax.random.key(7)), params, batches(size), available=np.ones(3, bool),
      group_patterns=group)
  plain, _, mask = run(B, False)
  for size in (B, 3):
    grouped, _, grouped_mask = run(size, True)
    np.testing.assert_array_equal(grouped_mask, mask)
    np.testing.assert_allclose(grouped[mask], plain[mask], atol=2e-5, err_msg=f'batch {size}')
