"""Tests for MMIN (models/mmin.py, methods/mmin.py, configs/mmin_*.py).

The CRA's own residual wiring is tested in test_models.py; here: the MMIN-level wiring (classifier
on the concatenated latents, imagined = CRA(student), cycle = backward net(imagined)), the masks
(what the student, the full target and the complement target may depend on), the loss terms and
the target switch, the variants, the frozen teacher under real train steps, the two-stage
`prepare`, and float64 gradient checks of the whole loss.

Model-level tests use utterance-level (MLP-encoded) toy features and numpy-drawn parameters
(compiling flax's ~100 random initialisers would dominate the run time); the train-step and
stage-1 tests use the `:smoke` config with tiny dims and short sequences.
"""

from __future__ import annotations

import functools
import json
import os

import jax
from jax.test_util import check_grads
import ml_collections
import numpy as np
import pytest
import toy_data

from configs import mmin_iemocap
from configs import mmin_msp_improv
from mmer_jax import checkpoint
from mmer_jax import methods
from mmer_jax import stages
from mmer_jax import train
from mmer_jax.data import schema
from mmer_jax.methods import mmin as mmin_method
from mmer_jax.models import cra
from mmer_jax.models import layers
from mmer_jax.models import mmin as mmin_model
from mmer_jax.models.encoders import ModalityEncoders

RNG = jax.random.PRNGKey(0)
DIMS = {'audio': 6, 'visual': 5, 'text': 7}
TOY_SPEC = schema.DatasetSpec(
    name='toy', task='classification',
    modalities={m: schema.ModalitySpec('utterance', d) for m, d in DIMS.items()},
    label_names=('a', 'b', 'c', 'd'))
MASK_A_MISSING = np.array([[False, True, True]] * 4)


def _random_params(model, *args, dtype=np.float32, seed=0, **kwargs):
  """Parameters shaped like `model.init`'s, drawn with numpy (see test_models._random_init)."""
  shapes = jax.eval_shape(functools.partial(model.init, **kwargs), RNG, *args)['params']
  gen = np.random.default_rng(seed)

  def draw(s):
    scale = 1. / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.1
    return (scale * gen.standard_normal(s.shape)).astype(dtype)

  return jax.tree_util.tree_map(draw, shapes)


def _toy_batch(seed=0, n=4, dtype=np.float32):
  gen = np.random.default_rng(seed)
  batch = {m: gen.standard_normal((n, d)).astype(dtype) for m, d in DIMS.items()}
  batch['label'] = np.arange(n, dtype=np.int32) % 4
  batch['modality_mask'] = np.ones((n, 3), bool)
  batch['example_mask'] = np.ones((n,), bool)
  return batch


def _small(config):
  """Tiny dims for every part of an MMIN config (structure unchanged)."""
  m = config.method
  m.encoders.embed_dim, m.encoders.num_filters, m.head.hidden = 8, 4, (8,)
  m.cra.num_blocks, m.cra.layers, m.ae.layers = 3, (16, 8, 4), (16, 12)
  m.classifier.hidden = (8,)
  return config


def _toy_config(**overrides):
  """The resolved main stage of the small `:smoke` config with `method` overrides."""
  config = _small(mmin_iemocap.get_config('smoke'))
  for k, v in overrides.items():
    setattr(config.method, k, v)
  return stages.main_stage(config)


def _toy_method(**overrides):
  return methods.create_method(_toy_config(**overrides), TOY_SPEC)


def _model(blocks=3, cycle=True):
  """An MMIN module with small parts (embed 8, CRA blocks x (16, 8, 4), classifier (8,))."""
  return mmin_model.MMIN(encoders=ModalityEncoders(embed_dim=8),
                         forward_net=cra.CascadeResidualAE(num_blocks=blocks, layers=(16, 8, 4)),
                         classifier=layers.MLPHead(hidden=(8,), num_outputs=4), cycle=cycle)


def _features(batch, modalities=tuple(DIMS)):
  return {m: batch[m] for m in modalities}


# ---------------------------------------------------------------------------------------------
# Model wiring and masks
# ---------------------------------------------------------------------------------------------


def test_mmin_wiring_classifier_reads_all_latents_and_imagined_is_cra_of_student():
  model = _model(blocks=3)
  batch = _toy_batch()
  mask = np.array([[True, False, True], [False, True, False], [True, True, True], [False, False, True]])
  params = _random_params(model, _features(batch), None, mask, deterministic=True)
  assert set(params) == {'encoders', 'teacher', 'forward_net', 'backward_net', 'classifier'}
  assert params['classifier']['dense_0']['kernel'].shape == (3 * 4, 8)  # blocks x latent
  out = model.apply({'params': params}, _features(batch), None, mask, deterministic=True)

  # Student: the encoders' embeddings in (audio, visual, text) order, missing ones zero.
  emb = layers.mask_features(_features(batch), mask, tuple(DIMS))
  enc = ModalityEncoders(embed_dim=8).apply({'params': params['encoders']}, emb, deterministic=True)
  want = np.concatenate([np.where(mask[:, i:i + 1], enc[m], 0.) for i, m in enumerate(DIMS)], -1)
  np.testing.assert_allclose(out['student'], want, atol=1e-6)
  assert out['student'].shape == (4, 24)

  # imagined, latents = CRA(student); logits = classifier(latents); cycle = backward CRA(imagined).
  net = cra.CascadeResidualAE(num_blocks=3, layers=(16, 8, 4))
  imagined, latents = net.apply({'params': params['forward_net']}, out['student'])
  np.testing.assert_allclose(out['imagined'], imagined, atol=1e-5)
  np.testing.assert_allclose(out['latents'], latents, atol=1e-5)
  assert out['latents'].shape == (4, 12)
  head = layers.MLPHead((8,), 4, 0.5)
  np.testing.assert_allclose(out['logits'], head.apply({'params': params['classifier']}, latents,
                                                       deterministic=True), atol=1e-5)
  cycle, _ = net.apply({'params': params['backward_net']}, out['imagined'])
  np.testing.assert_allclose(out['cycle'], cycle, atol=1e-5)
  # The teacher sees the full input (a separate set of encoders).
  full = ModalityEncoders(embed_dim=8).apply({'params': params['teacher']}, _features(batch),
                                             deterministic=True)
  np.testing.assert_allclose(out['teacher_full'], np.concatenate([full[m] for m in DIMS], -1), atol=1e-6)


def test_masks_student_ignores_missing_inputs_targets_see_what_they_should():
  model = _model(blocks=2)
  batch = _toy_batch()
  params = _random_params(model, _features(batch), None, MASK_A_MISSING, deterministic=True)
  def run(features):
    return model.apply({'params': params}, features, None, MASK_A_MISSING, deterministic=True)

  base = run(_features(batch))
  audio_changed = dict(_features(batch), audio=batch['audio'] + 3.)
  text_changed = dict(_features(batch), text=batch['text'] - 2.)
  out_a, out_t = run(audio_changed), run(text_changed)
  # Audio is missing: its features change neither the student nor anything computed from it ...
  for key in ('student', 'imagined', 'latents', 'logits', 'cycle'):
    np.testing.assert_array_equal(out_a[key], base[key])
  np.testing.assert_array_equal(base['student'][:, :8], 0.)  # the missing slot is zero
  # ... but do change the paper's target (the teacher sees the full input) ...
  assert not np.allclose(out_a['teacher_full'][:, :8], base['teacher_full'][:, :8])
  np.testing.assert_array_equal(out_a['teacher_full'][:, 8:], base['teacher_full'][:, 8:])
  # ... and the complement target depends on the missing modalities' features only.
  assert not np.allclose(out_a['teacher_complement'], base['teacher_complement'])
  np.testing.assert_array_equal(out_t['teacher_complement'], base['teacher_complement'])
  assert not np.allclose(out_t['student'], base['student'])
  # Available slots of the complement target hold teacher(zero input), the missing slot the
  # teacher's embedding of the real features (the authors' X * (1 - mask) input).
  zero_input = {m: np.zeros_like(v) for m, v in _features(batch).items()}
  np.testing.assert_allclose(base['teacher_complement'][:, 8:],
                             run(zero_input)['teacher_full'][:, 8:], atol=1e-6)
  np.testing.assert_allclose(base['teacher_complement'][:, :8], base['teacher_full'][:, :8], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Method: loss terms, targets, variants
# ---------------------------------------------------------------------------------------------


def _method_params(method, batch, seed=0, dtype=np.float32):
  return _random_params(method.model, _features(batch), None, batch['modality_mask'], dtype=dtype,
                        seed=seed, deterministic=True)


@pytest.mark.parametrize('target', ['full', 'complement'])
def test_loss_terms_and_target_switch(target):
  method = _toy_method(teacher_target=target)
  batch = dict(_toy_batch(), modality_mask=MASK_A_MISSING)
  params = _method_params(method, batch)
  rng = jax.random.PRNGKey(3)
  loss, aux = method.loss(params, batch, rng)
  assert loss.shape == (4,) and set(aux) == {'accuracy', 'ce', 'fwd_mse', 'cycle_mse'}
  out = method._apply(params, batch, rng, teacher_targets=('full', 'complement'))  # same dropout
  want_fwd = np.mean((out['imagined'] - out[f'teacher_{target}']) ** 2, axis=-1)
  other = 'complement' if target == 'full' else 'full'
  assert not np.allclose(want_fwd, np.mean((out['imagined'] - out[f'teacher_{other}']) ** 2, axis=-1))
  want_cycle = np.mean((out['cycle'] - out['student']) ** 2, axis=-1)
  np.testing.assert_allclose(aux['fwd_mse'], want_fwd, rtol=1e-5)
  np.testing.assert_allclose(aux['cycle_mse'], want_cycle, rtol=1e-5)
  np.testing.assert_allclose(loss, aux['ce'] + 4.0 * want_fwd + 2.0 * want_cycle, rtol=1e-5)
  # Audio is missing: its features reach the loss only through the forward target.
  _, aux_a = method.loss(params, dict(batch, audio=batch['audio'] + 3.), rng)
  np.testing.assert_array_equal(aux_a['ce'], aux['ce'])
  np.testing.assert_array_equal(aux_a['cycle_mse'], aux['cycle_mse'])
  assert not np.allclose(aux_a['fwd_mse'], aux['fwd_mse'])


def test_variants_resolve_build_and_give_finite_losses():
  batch = dict(_toy_batch(), index=np.arange(4, dtype=np.int32))
  expected = {'mmin': ('mmin', 'patterns'), 'mmin_ae': ('mmin', 'patterns'),
              'mmin_nocycle': ('mmin', 'patterns'), 'full_baseline': ('early_fusion', 'none'),
              'augmented': ('early_fusion', 'patterns_and_full')}
  trees = {}
  for variant, (name, train_missing) in expected.items():
    config = _toy_config(variant=variant)
    assert (config.method.name, config.method.variant, config.train.missing) == (name, variant, train_missing)
    method = methods.create_method(config, TOY_SPEC)
    params = _method_params(method, batch)
    trees[variant] = set(params)
    loss, aux = method.loss(params, batch, jax.random.PRNGKey(1))
    assert loss.shape == (4,) and np.isfinite(loss).all(), variant
    logits = method.predict(params, batch, jax.random.PRNGKey(2))
    assert logits.shape == (4, 4) and np.isfinite(logits).all(), variant
    if variant == 'mmin_nocycle':
      assert 'cycle_mse' not in aux
  assert trees['mmin'] == {'encoders', 'teacher', 'forward_net', 'backward_net', 'classifier'}
  assert trees['mmin_nocycle'] == {'encoders', 'teacher', 'forward_net', 'classifier'}
  assert trees['full_baseline'] == trees['augmented'] == {'encoders', 'head'}
  # The comparison rows are plain early fusion: no MMIN field is left in their method config.
  assert set(_toy_config(variant='augmented').method) == {'name', 'variant', 'encoders', 'head',
                                                          'missing_input'}
  # MMIN-AE: a plain AE (no blocks, no transition) whose latent feeds the classifier.
  method = _toy_method(variant='mmin_ae')
  params = _method_params(method, batch)
  assert set(params['forward_net']) == {'enc_0', 'enc_1', 'dec_0', 'dec_1'}
  assert params['classifier']['dense_0']['kernel'].shape == (12, 8)
  assert _toy_config(variant='augmented', augmented_missing='patterns').train.missing == 'patterns'
  with pytest.raises(ValueError, match='variant'):
    _toy_method(variant='nonsense')
  with pytest.raises(ValueError, match='teacher_target'):
    _toy_method(teacher_target='nonsense')
  with pytest.raises(ValueError, match='resolve the config first'):
    mmin_method.MMINMethod(_raw_variant('augmented'), TOY_SPEC)


def _raw_variant(variant):
  config = _small(mmin_iemocap.get_config('smoke'))
  config.method.variant = variant
  return config


def test_share_weights_uses_one_net_for_both_directions():
  method = _toy_method(share_weights=True)
  batch = dict(_toy_batch(), modality_mask=MASK_A_MISSING)
  params = _method_params(method, batch)
  assert 'backward_net' not in params and 'forward_net' in params
  out = method._apply(params, batch)
  net = cra.CascadeResidualAE(num_blocks=3, layers=(16, 8, 4))
  cycle, _ = net.apply({'params': params['forward_net']}, out['imagined'])
  np.testing.assert_allclose(out['cycle'], cycle, atol=1e-5)
  # The MSP config shares the weights and uses its own loss weights.
  config = mmin_msp_improv.get_config('smoke')
  assert config.method.share_weights and config.method.fwd_weight == 2.0
  assert config.method.cycle_weight == 0.5 and config.train.select_metric == 'valid/macro_f1'


def test_configs_and_resolved_stages():
  config = mmin_iemocap.get_config(None)
  assert config.method.name == 'mmin' and config.method.variant == 'mmin'
  assert config.method.teacher_target == 'complement' and not config.method.share_weights
  assert (config.method.ce_weight, config.method.fwd_weight, config.method.cycle_weight) == (1.0, 4.0, 2.0)
  opt = config.optimizer
  assert (opt.learning_rate, opt.b1, opt.weight_decay, opt.schedule) == (2e-4, 0.5, 0.0, 'linear_decay')
  assert (opt.constant_epochs, config.train.num_epochs, config.data.batch_size) == (30, 60, 128)
  resolved = stages.resolve(config)
  assert list(resolved.stages) == ['stage1'] and resolved.stage_name == 'mmin'
  stage1 = resolved.stages.stage1  # a complete config: early fusion with stage 1's optimiser
  assert (stage1.method.name, stage1.method.variant, stage1.train.missing) == ('early_fusion',
                                                                               'full_baseline', 'none')
  assert (stage1.train.num_epochs, stage1.optimizer.constant_epochs) == (20, 10)
  assert (stage1.optimizer.learning_rate, stage1.optimizer.b1, stage1.optimizer.clip_norm) == (2e-4, 0.9, 0.5)
  assert stage1.data == resolved.data and stage1.seed == resolved.seed and not stage1.stages
  assert stage1.method.encoders == resolved.method.encoders and stage1.analysis == ()
  assert resolved.init_from.stage == 'stage1' and dict(resolved.init_from.params) == {
      'encoders': 'encoders', 'teacher': 'encoders'}
  assert stages.resolve(resolved).to_dict() == resolved.to_dict()  # idempotent
  # The full-modality baseline row is exactly stage 1.
  alone = mmin_iemocap.get_config(None)
  alone.method.variant = 'full_baseline'
  alone = stages.resolve(alone)
  assert not alone.stages and alone.init_from.workdir is None
  want = stage1.to_dict()
  got = alone.to_dict()
  for key in ('stage_name', 'analysis'):
    want.pop(key), got.pop(key)
  assert got == want
  # A shared field overridden on the command line reaches every stage.
  config.seed, config.data.options.fold = 3, 4
  resolved = stages.resolve(config)
  assert resolved.stages.stage1.seed == 3 and resolved.stages.stage1.data.options.fold == 4
  msp = stages.resolve(mmin_msp_improv.get_config(None))
  assert msp.data.name == 'msp_improv_4' and msp.optimizer.learning_rate == 5e-4
  assert msp.stages.stage1.data.batch_size == 64 and msp.stages.stage1.optimizer.learning_rate == 5e-4
  for module in (mmin_iemocap, mmin_msp_improv):
    smoke = stages.resolve(module.get_config('smoke'))
    assert smoke.stages.stage1.train.num_epochs == smoke.train.num_epochs == 2
    assert smoke.stages.stage1.data.batch_size == smoke.data.batch_size
  # pretrained_workdir replaces stage 1 by that run.
  config = mmin_iemocap.get_config(None)
  config.method.pretrained_workdir = '/some/run'
  resolved = stages.resolve(config)
  assert not resolved.stages and resolved.init_from.stage is None
  assert resolved.init_from.workdir == '/some/run'


def test_model_selection_conditions():
  six = ('a', 'v', 't', 'av', 'at', 'vt')
  for variant in ('mmin', 'mmin_ae', 'mmin_nocycle', 'augmented'):
    assert _toy_method(variant=variant).valid_conditions == six  # the authors' pooled valid set
  assert _toy_method(variant='full_baseline').valid_conditions == ('full',)
  # The early-fusion rows meet a missing modality as the paper's baselines: zero-filled features.
  assert _toy_method(variant='full_baseline').model.missing_input == 'zero_features'
  assert _toy_method(variant='augmented', missing_input='zero_embedding').model.missing_input == \
      'zero_embedding'
  config = _small(mmin_iemocap.get_config('smoke'))
  config.train.valid_conditions = ('full', 't')
  resolved = stages.resolve(config)
  assert methods.create_method(resolved, TOY_SPEC).valid_conditions == ('full', 't')
  # Stage 1 selects on complete data, whatever the main stage does.
  assert methods.create_method(resolved.stages.stage1, TOY_SPEC).valid_conditions == ('full',)


def test_trainable_mask_freezes_only_the_teacher_and_its_tables():
  method = _toy_method()
  params = _method_params(method, _toy_batch())
  params['teacher_tables'] = {'full': np.zeros((4, 24), np.float32)}
  mask = method.trainable_mask(params)
  assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
  for key, sub in mask.items():
    assert all(v == (key not in ('teacher', 'teacher_tables')) for v in jax.tree_util.tree_leaves(sub)), key


# ---------------------------------------------------------------------------------------------
# Gradients (float64)
# ---------------------------------------------------------------------------------------------


def test_check_grads_full_loss(x64):
  """The whole MMIN loss (CE + forward + cycle, dropout on) against finite differences.

  Its targets are stop_gradient'ed, so the gradient `jax.grad` gives at p0 is the derivative of
  the surrogate p -> loss(p, targets computed at p0) (`target_params=p0`): first that equality,
  then check_grads of the surrogate (where finite differences apply).
  """
  del x64
  method = _toy_method()
  batch = _toy_batch(dtype=np.float64)
  batch['modality_mask'] = np.array([[True, False, False], [False, True, True],
                                     [True, False, True], [False, False, True]])
  p0 = _method_params(method, batch, dtype=np.float64, seed=2)
  rng = jax.random.PRNGKey(7)

  def real(p):
    return method.loss(p, batch, rng)[0].mean()

  def surrogate(p):
    return method.loss(p, batch, rng, target_params=p0)[0].mean()

  g_real = jax.jit(jax.grad(real))(p0)
  g_sur = jax.jit(jax.grad(surrogate))(p0)
  for a, b in zip(jax.tree_util.tree_leaves(g_real), jax.tree_util.tree_leaves(g_sur)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  # The teacher gets no gradient (its outputs are stop_gradient'ed in the model).
  assert not any(np.any(g) for g in jax.tree_util.tree_leaves(g_real['teacher']))
  check_grads(jax.jit(surrogate), (p0,), order=1, modes=('fwd', 'rev'), eps=1e-5, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Train steps and the two stages (smoke data)
# ---------------------------------------------------------------------------------------------


def _smoke_config(tmp, **method):
  """The `:smoke` config, tiny dims, on a toy feature directory: audio sequences (LSTM) and
  utterance-level text (MLP), so also a dataset with two of the three modalities."""
  config = _small(mmin_iemocap.get_config('smoke'))
  config.data.data_dir = str(tmp / 'data')
  config.data.features_dir = str(toy_data.write_features_dir(tmp / 'toy', n=60, classes=4))
  config.data.options = ml_collections.ConfigDict()  # the synthetic sizes do not apply
  config.eval.rates = (0.0, 0.5)
  config.train.log_every_steps = 100
  for k, v in method.items():
    setattr(config.method, k, v)
  return config


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  run = train.Run(stages.main_stage(_smoke_config(tmp_path_factory.mktemp('smoke'))))
  assert run.method.modalities == ('audio', 'text')
  return run


def test_teacher_is_frozen_under_train_steps(smoke_run):
  run = smoke_run
  assert run.config.train.missing == 'patterns'
  batches = list(run.train_batches(0))[:3]
  params = _random_params(run.method.model, {m: batches[0][m] for m in run.method.modalities},
                          batches[0]['lengths'], batches[0]['modality_mask'], deterministic=True)
  params = run.method.fit(params, run.eval_batches('train'))
  before = jax.tree_util.tree_map(np.array, params)
  state = run.to_devices(run.init_state(params))
  for batch in batches:
    state, metrics = run.train_step(state, run.place(batch))
    assert np.isfinite(float(metrics['loss'])) and {'ce', 'fwd_mse', 'cycle_mse'} <= set(metrics)
  after = jax.device_get(run.from_devices(state).params)
  for key in ('teacher', 'teacher_tables'):
    for a, b in zip(jax.tree_util.tree_leaves(before[key]), jax.tree_util.tree_leaves(after[key])):
      np.testing.assert_array_equal(a, b)  # bit-identical
  for key in ('encoders', 'forward_net', 'backward_net', 'classifier'):
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(before[key]), jax.tree_util.tree_leaves(after[key]))), key


@pytest.mark.parametrize('target', ['full', 'complement'])
def test_cached_teacher_targets_equal_the_in_graph_teacher(smoke_run, target):
  run = smoke_run
  config = ml_collections.ConfigDict(run.config.to_dict())
  config.method.teacher_target = target
  method = mmin_method.MMINMethod(config, run.spec)
  assert method.cache_teacher  # the default for both targets
  batch = list(run.train_batches(3))[-1]  # shuffled, ends in padding rows
  # The step draws a pattern per example; here audio-only and text-only alternate.
  only_audio, only_text = np.array([True, False, False]), np.array([False, False, True])
  rows = np.arange(len(batch['index']))
  batch = dict(batch, modality_mask=np.where((rows % 2 == 0)[:, None], only_audio, only_text))
  params = _random_params(method.model, {m: batch[m] for m in method.modalities},
                          batch['lengths'], batch['modality_mask'], deterministic=True)
  fitted = method.fit(params, run.eval_batches('train'))
  tables = fitted['teacher_tables']
  assert set(tables) == {'full': {'full'}, 'complement': {'full', 'zero'}}[target]
  num_train = run.streams.num_examples('train')
  assert all(t.shape == (num_train, 2 * 8) for t in tables.values())
  assert set(method.trainable_mask(fitted)) == set(fitted)
  valid = batch['example_mask']
  assert not valid.all()
  from_cache = np.asarray(method.cached_target(tables, batch))
  assert not from_cache[~valid].any()  # zeros on padding rows
  in_graph = method._apply(params, batch, teacher_targets=(target,))[f'teacher_{target}']
  np.testing.assert_allclose(from_cache[valid], np.asarray(in_graph)[valid], rtol=1e-5, atol=1e-6)
  # The loss (and so the gradient) is the same with the fitted tables.
  rng = jax.random.PRNGKey(5)
  with_cache, _ = method.loss(fitted, batch, rng)
  without, _ = method.loss(params, batch, rng)
  np.testing.assert_allclose(np.asarray(with_cache)[valid], np.asarray(without)[valid], rtol=1e-5)
  # Swapping the two tables changes the complement target (the test can fail).
  if target == 'complement':
    swapped = {'full': tables['zero'], 'zero': tables['full']}
    assert not np.allclose(np.asarray(method.cached_target(swapped, batch))[valid], from_cache[valid])
  with pytest.raises(ValueError, match='every example once'):
    method.fit(params, lambda: [batch])


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_stages_stage1_alone_then_mmin_starts_from_its_encoders(tmp_path, monkeypatch):
  config = _smoke_config(tmp_path)
  workdir = str(tmp_path / 'run')
  with pytest.raises(FileNotFoundError, match='run it first'):
    train.train_and_evaluate(config, workdir, stage='mmin')  # stage 1 has not run
  train.train_and_evaluate(config, workdir, stage='stage1')  # one stage alone
  stage1 = os.path.join(workdir, 'stage1')
  assert os.path.exists(os.path.join(stage1, 'results.json'))
  assert not os.path.exists(os.path.join(workdir, 'mmin')) and not os.path.exists(
      os.path.join(workdir, 'results.json'))
  with open(os.path.join(stage1, 'config.json'), encoding='utf-8') as f:
    stage1_config = json.load(f)
  assert stage1_config['method']['name'] == 'early_fusion'
  assert stage1_config['method']['variant'] == 'full_baseline' and stage1_config['train']['missing'] == 'none'
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    top = json.load(f)  # what runs: the resolved main stage and its complete stage 1
  assert top['train']['missing'] == 'patterns' and top['stages']['stage1']['method']['name'] == 'early_fusion'

  # The main stage's first state: stage 1's best encoders in the student and the teacher, fresh
  # imagination nets and classifier (as in the authors' code), the teacher's tables fitted.
  plan = stages.plan(stages.resolve(config), workdir)
  assert [(s.name, s.workdir) for s in plan] == [('stage1', stage1), ('mmin', os.path.join(workdir, 'mmin'))]
  run = train.Run(plan[-1].config)
  params = run.init_params()
  best = checkpoint.restore_params(checkpoint.create_managers(stage1)[1])
  assert _leaves_equal(best['encoders'], params['encoders'])
  assert _leaves_equal(best['encoders'], params['teacher'])
  fresh = run.method.init(jax.random.split(jax.random.PRNGKey(config.seed))[0],
                          next(iter(run.train_batches(0))))
  assert not _leaves_equal(fresh['encoders'], params['encoders'])
  for key in ('forward_net', 'backward_net', 'classifier'):
    assert _leaves_equal(fresh[key], params[key]), key
  assert set(params['teacher_tables']) == {'full', 'zero'}

  # A finished stage is skipped; a mismatching encoder setting is a clear error.
  calls = []
  monkeypatch.setattr(train, 'train_stage', lambda c, w, **k: calls.append(w) or {'rows': []})
  monkeypatch.setattr(train, 'publish_final_results', lambda *a: None)
  train.train_and_evaluate(config, workdir)
  assert calls == [os.path.join(workdir, 'mmin')]
  monkeypatch.undo()
  bad = _smoke_config(tmp_path)
  bad.method.encoders.embed_dim = 6
  bad_plan = stages.plan(stages.resolve(bad), workdir)
  with pytest.raises(ValueError, match='does not fit'):
    train.Run(bad_plan[-1].config).init_params()
  # pretrained_workdir: the same start from another run's stage 1, no stage 1 of its own.
  other = _smoke_config(tmp_path)
  other.method.pretrained_workdir = stage1
  other_plan = stages.plan(stages.resolve(other), str(tmp_path / 'other'))
  assert len(other_plan) == 1
  assert _leaves_equal(train.Run(other_plan[0].config).init_params(), params)
