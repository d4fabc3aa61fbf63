"""Tests for models/encoders.py, fusion.py, bclstm.py and cra.py: shapes, padding and mask
invariance, the CRA residual wiring, and float64 gradient checks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from mmer_jax.models import bclstm, cra, encoders, fusion, layers

RNG = jax.random.key(0)


def _normal(seed, shape, dtype=np.float32):
  """Test data from numpy: jitted model calls are the only compilations a test pays for."""
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _with_garbage(x, lengths, seed, extra=0):
  """x with its padding frames (>= length) replaced by garbage (incl. NaN) and `extra` appended."""
  x = np.array(x)
  if extra:
    x = np.concatenate([x, np.zeros((x.shape[0], extra) + x.shape[2:], x.dtype)], axis=1)
  garbage = 100. * _normal(seed, x.shape)
  garbage[..., 0] = np.nan
  pad = np.arange(x.shape[1])[None, :] >= np.asarray(lengths)[:, None]
  x[pad] = garbage[pad]
  return x


def _alone(x, i, n, shape):
  """A batch of `shape` whose row 0 holds the first n frames of x[i] and is otherwise zero."""
  out = np.zeros(shape, x.dtype)
  out[0, :n] = x[i, :n]
  return out


def _jitted(model, **static):
  """(init, apply) of `model`: `init` draws random parameters of the right shapes and names (see
  `_random_init`), `apply` is compiled, with keyword arguments such as `deterministic` fixed.

  Eager `apply` re-traces and re-compiles the RNN scans on every call; jit keeps the tests fast.
  """
  return (functools.partial(_random_init, model, **static),
          jax.jit(functools.partial(model.apply, **static)))


def _random_init(model, rng, *args, dtype=None, **kwargs):
  """Parameters with the tree, shapes and dtypes of `model.init`, drawn with numpy.

  Tracing `init` (`jax.eval_shape`) costs nothing, while compiling it (one threefry per parameter)
  took most of this file's run time; the tests need some parameters, not flax's initialisers.
  Kernels are N(0, 1 / fan_in), biases N(0, 0.1^2) (non-zero, so no unit sits at a ReLU kink).
  """
  del rng
  shapes = jax.eval_shape(functools.partial(model.init, **kwargs), RNG, *args)
  gen = np.random.default_rng(0)

  def draw(s):
    scale = 1. / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.1
    return (scale * gen.standard_normal(s.shape)).astype(dtype or s.dtype)

  return jax.tree_util.tree_map(draw, shapes)


def _finite_grads(apply, params, *args):
  """Whether d(sum of outputs)/d(params) is finite everywhere."""
  grads = jax.jit(jax.grad(lambda p, *a: apply(p, *a).sum()))(params, *args)
  return all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------


def test_lstm_encoder_valid_frames_and_padding_invariance():
  init, apply = _jitted(encoders.LSTMEncoder(hidden=8))
  x = _normal(1, (4, 7, 5))
  lengths = np.array([7, 3, 1, 0], np.int32)
  params = init(RNG, x, lengths)
  assert set(params['params']) == {'lstm'}
  out = np.asarray(apply(params, x, lengths))
  assert out.shape == (4, 8)
  np.testing.assert_array_equal(out[3], 0.)  # empty sequence -> zero embedding
  # Row i equals the encoder run on its valid frames alone (max over the valid steps only).
  for i, n in enumerate([7, 3, 1]):
    alone = apply(params, _alone(x, i, n, (4, 12, 5)), np.array([n, 0, 0, 0]))
    np.testing.assert_allclose(np.asarray(alone)[0], out[i], atol=1e-6)
  # Garbage (NaN included) in the padding frames, and more padding frames: same outputs ...
  for extra, seed in ((0, 3), (5, 4)):
    np.testing.assert_allclose(apply(params, _with_garbage(x, lengths, seed, extra), lengths), out, atol=1e-6)
  # ... and garbage cannot reach the gradients either.
  assert _finite_grads(apply, params, _with_garbage(x, lengths, seed=9, extra=5), lengths)


def test_textcnn_valid_windows_short_sequences_and_padding_invariance():
  model = encoders.TextCNN(num_filters=6, kernel_sizes=(3, 4, 5), out_dim=7, dropout=0.5)
  init, apply = _jitted(model, deterministic=True)
  x = _normal(4, (5, 9, 3))
  lengths = np.array([9, 5, 4, 2, 0], np.int32)
  params = init(RNG, x, lengths)
  assert params['params']['conv_5']['kernel'].shape == (5, 3, 6)
  assert params['params']['embed']['kernel'].shape == (18, 7)
  out = np.asarray(apply(params, x, lengths))
  assert out.shape == (5, 7) and np.isfinite(out).all() and (out >= 0).all()
  # A row equals the encoder run on its valid frames alone; sequences shorter than a kernel
  # behave as if right zero-padded to the kernel size.
  for i, n in enumerate([9, 5, 4, 2]):
    alone = apply(params, _alone(x, i, n, (5, 12, 3)), np.array([n, 0, 0, 0, 0]))
    np.testing.assert_allclose(np.asarray(alone)[0], out[i], atol=1e-5)
  # An input whose time axis is shorter than the widest kernel works and agrees.
  short = apply(params, x[:, :2], np.minimum(lengths, 2))
  np.testing.assert_allclose(np.asarray(short)[3], out[3], atol=1e-5)
  # Garbage (NaN included) in padding frames, and more padding frames: same outputs and finite grads.
  for extra, seed in ((0, 6), (3, 7)):
    np.testing.assert_allclose(apply(params, _with_garbage(x, lengths, seed, extra), lengths), out, atol=1e-6)
  assert _finite_grads(apply, params, _with_garbage(x, lengths, seed=11, extra=3), lengths)
  # Dropout is active in training mode.
  train = jax.jit(functools.partial(model.apply, deterministic=False))(
      params, x, lengths, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(train, out)


def test_mlp_encoder_shape():
  model = encoders.MLPEncoder(hidden=(16,), out_dim=8, dropout=0.1)
  init, apply = _jitted(model, deterministic=True)
  x = _normal(7, (3, 10))
  params = init(RNG, x)
  out = np.asarray(apply(params, x))
  assert out.shape == (3, 8) and (out >= 0).all()
  assert set(params['params']) == {'dense_0', 'dense_1'}


def test_modality_encoders_kinds():
  feats = {'audio': _normal(1, (2, 5, 4)), 'visual': _normal(2, (2, 6, 3)), 'text': _normal(3, (2, 7, 5))}
  lengths = {'audio': np.array([5, 2]), 'visual': np.array([6, 1]), 'text': np.array([7, 3])}
  model = encoders.ModalityEncoders(embed_dim=8, num_filters=4)
  params = jax.eval_shape(functools.partial(model.init, deterministic=True), RNG, feats, lengths)
  out = jax.eval_shape(functools.partial(model.apply, deterministic=True), params, feats, lengths)
  assert {k: v.shape for k, v in out.items()} == {m: (2, 8) for m in ('audio', 'visual', 'text')}
  assert set(params['params']['audio']) == {'lstm'}
  assert set(params['params']['text']) == {'conv_3', 'conv_4', 'conv_5', 'embed'}
  # Explicit kinds name the same encoders as the rank-based choice.
  explicit = encoders.ModalityEncoders(embed_dim=8, num_filters=4, kinds=('lstm', 'lstm', 'textcnn'))
  shapes = jax.eval_shape(functools.partial(explicit.init, deterministic=True), RNG, feats, lengths)
  assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(params)
  # Utterance-level features get MLPs; kinds that do not fit the input rank are rejected.
  utt = {'audio': _normal(4, (2, 9)), 'text': _normal(5, (2, 6))}
  model = encoders.ModalityEncoders(modalities=('audio', 'text'), embed_dim=8, kinds='mlp')
  shapes = jax.eval_shape(functools.partial(model.init, deterministic=True), RNG, utt)
  out = jax.eval_shape(functools.partial(model.apply, deterministic=True), shapes, utt)
  assert out['text'].shape == (2, 8)
  with pytest.raises(ValueError, match='rank'):
    bad = encoders.ModalityEncoders(modalities=('audio',), kinds='lstm')
    jax.eval_shape(functools.partial(bad.init, deterministic=True), RNG, utt)
  with pytest.raises(ValueError, match='unknown encoder kind'):
    encoders.resolve_kinds(('audio',), ('gru',))


# ---------------------------------------------------------------------------------------------
# Fusion baselines
# ---------------------------------------------------------------------------------------------

_NAMES = ('audio', 'visual', 'text')


def _fusion(cls, modalities=_NAMES, kinds=None, num_outputs=3, embed_dim=8):
  """A fusion model with small encoders and head, passed in as submodules."""
  return cls(encoders=encoders.ModalityEncoders(modalities=modalities, embed_dim=embed_dim, kinds=kinds,
                                                num_filters=4, dropout=0.2),
             head=layers.MLPHead(hidden=(16,), num_outputs=num_outputs, dropout=0.2))


def _fusion_batch():
  feats = {'audio': _normal(11, (4, 6, 5)), 'visual': _normal(12, (4, 5, 3)), 'text': _normal(13, (4, 7, 4))}
  lengths = {'audio': np.array([6, 3, 2, 5]), 'visual': np.array([5, 5, 1, 2]),
             'text': np.array([7, 2, 4, 6])}
  mask = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 1, 0]], bool)
  return feats, lengths, mask


@pytest.mark.parametrize('cls', [fusion.EarlyFusion, fusion.LateFusion, fusion.GatedAttentionFusion])
def test_fusion_masked_modalities_do_not_matter(cls):
  feats, lengths, mask = _fusion_batch()
  model = _fusion(cls)
  init, apply = _jitted(model, deterministic=True, return_aux=True)
  params = init(RNG, feats, lengths, mask)
  out, aux = jax.tree_util.tree_map(np.asarray, apply(params, feats, lengths, mask))
  assert out.shape == (4, 3)
  for i, m in enumerate(_NAMES):  # the embeddings of missing modalities are zero
    np.testing.assert_array_equal(aux['embeddings'][m][~mask[:, i]], 0.)
  # Replace every masked-out modality's features with garbage (NaN included): same outputs.
  changed = {}
  for i, m in enumerate(_NAMES):
    garbage = 1e3 * _normal(20 + i, feats[m].shape)
    garbage[..., 0] = np.nan
    changed[m] = np.where(mask[:, i, None, None], feats[m], garbage)
  np.testing.assert_array_equal(apply(params, changed, lengths, mask)[0], out)
  if cls is not fusion.LateFusion:  # (late fusion shares early fusion's input masking)
    assert _finite_grads(lambda *a: apply(*a)[0], params, changed, lengths, mask)
  if cls is fusion.EarlyFusion:  # training mode (dropout) runs
    train = jax.jit(functools.partial(model.apply, deterministic=False))(
        params, feats, lengths, mask, rngs={'dropout': jax.random.key(2)})
    assert train.shape == (4, 3) and np.isfinite(np.asarray(train)).all()
  if cls is fusion.LateFusion:
    # The output is the mean of the heads of each sample's available modalities.
    for b in range(4):
      expected = np.mean([aux['head_outputs'][m][b] for i, m in enumerate(_NAMES) if mask[b, i]], axis=0)
      np.testing.assert_allclose(out[b], expected, rtol=1e-6, atol=1e-6)
  if cls is fusion.GatedAttentionFusion:
    np.testing.assert_allclose(aux['attention'].sum(axis=1), 1., rtol=1e-6)
    np.testing.assert_array_equal(aux['attention'][~mask], 0.)
    # An all-missing (padding) row gives finite outputs.
    assert np.isfinite(np.asarray(apply(params, feats, lengths, np.zeros((4, 3), bool))[0])).all()


def test_late_fusion_heads_see_only_their_modality():
  feats = {'audio': _normal(1, (3, 10)), 'visual': _normal(2, (3, 7)), 'text': _normal(3, (3, 12))}
  mask = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1]], bool)
  init, apply = _jitted(_fusion(fusion.LateFusion, kinds='mlp'), deterministic=True)
  params = init(RNG, feats, None, mask)
  out = np.asarray(apply(params, feats, None, mask))
  # Sample 2 has only text: its output is the text head alone, as in a text-only model.
  _, text_only = _jitted(_fusion(fusion.LateFusion, modalities=('text',), kinds='mlp'), deterministic=True)
  sub = {'params': {'encoders': {'text': params['params']['encoders']['text']},
                    'head_text': params['params']['head_text']}}
  np.testing.assert_allclose(np.asarray(text_only(sub, feats, None, mask))[2], out[2], rtol=1e-6, atol=1e-6)


def test_early_fusion_utterance_level_regression():
  feats = {'audio': _normal(1, (3, 10)), 'visual': _normal(2, (3, 7)), 'text': _normal(3, (3, 12))}
  model = _fusion(fusion.EarlyFusion, kinds='mlp', num_outputs=1)
  mask = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1]], bool)
  params = jax.eval_shape(functools.partial(model.init, deterministic=True), RNG, feats, None, mask)
  out, aux = jax.eval_shape(functools.partial(model.apply, deterministic=True, return_aux=True),
                            params, feats, None, mask)
  assert out.shape == (3, 1) and aux['fused'].shape == (3, 24)
  assert set(params['params']) == {'encoders', 'head'}


# ---------------------------------------------------------------------------------------------
# bc-LSTM
# ---------------------------------------------------------------------------------------------


def test_bclstm_padding_invariance_and_context():
  b, l = 3, 6
  feats = {'audio': _normal(31, (b, l, 5)), 'visual': _normal(32, (b, l, 4)), 'text': _normal(33, (b, l, 6))}
  lengths = np.array([6, 4, 2])
  turn_mask = np.arange(l)[None, :] < lengths[:, None]
  modality_mask = np.random.default_rng(34).random((b, l, 3)) < 0.7
  modality_mask[..., 2] = True
  model = bclstm.BCLSTM(utterance_dim=8, lstm_hidden=6, dense_dim=8, num_outputs=4)
  init, apply = _jitted(model, deterministic=True)
  params = init(RNG, feats, turn_mask, modality_mask)
  assert {'lstm_forward', 'lstm_backward'} <= set(params['params'])
  ref = np.asarray(apply(params, feats, turn_mask, modality_mask))
  assert ref.shape == (3, 6, 4)
  np.testing.assert_array_equal(ref[~turn_mask], 0.)
  # Garbage (NaN included) in padded turns, three more padded turns and an all-padding dialogue.
  noisy = {m: _with_garbage(x, lengths, seed=40 + i, extra=3) for i, (m, x) in enumerate(feats.items())}
  noisy = {m: np.concatenate([x, 1e3 * _normal(50, (1,) + x.shape[1:])]) for m, x in noisy.items()}
  big_turn_mask = np.zeros((4, 9), bool)
  big_turn_mask[:3, :6] = turn_mask
  big_mod_mask = np.ones((4, 9, 3), bool)
  big_mod_mask[:3, :6] = modality_mask
  out = np.asarray(apply(params, noisy, big_turn_mask, big_mod_mask))
  np.testing.assert_allclose(out[:3, :6][turn_mask], ref[turn_mask], atol=1e-6)
  np.testing.assert_array_equal(out[3], 0.)
  assert _finite_grads(apply, params, noisy, big_turn_mask, big_mod_mask)
  # Features of a modality that is masked for an utterance do not matter either.
  changed = {m: np.where(modality_mask[..., i:i + 1], x, 1e3) for i, (m, x) in enumerate(feats.items())}
  np.testing.assert_array_equal(apply(params, changed, turn_mask, modality_mask), ref)
  # Context flows both ways inside a dialogue and never across dialogues.
  def bumped(turn):
    text = feats['text'].copy()
    text[0, turn] += 3.
    return np.asarray(apply(params, dict(feats, text=text), turn_mask, modality_mask))
  last, first = bumped(5), bumped(0)
  assert not np.allclose(last[0, 0], ref[0, 0])  # backward direction
  assert not np.allclose(first[0, 5], ref[0, 5])  # forward direction
  np.testing.assert_array_equal(first[1:], ref[1:])
  # A [B, 3] modality mask is broadcast over the turns.
  per_dialogue = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1]], bool)
  np.testing.assert_array_equal(
      apply(params, feats, turn_mask, per_dialogue),
      apply(params, feats, turn_mask, np.broadcast_to(per_dialogue[:, None], (3, 6, 3))))


# ---------------------------------------------------------------------------------------------
# CRA
# ---------------------------------------------------------------------------------------------


def test_residual_ae_block_structure():
  block = cra.ResidualAEBlock(layers=(256, 128, 64))
  init, apply = _jitted(block)
  x = _normal(60, (2, 384))
  params = init(RNG, x)['params']
  shapes = {k: v['kernel'].shape for k, v in params.items()}
  assert shapes == {'enc_0': (384, 256), 'enc_1': (256, 128), 'enc_2': (128, 64),
                    'dec_0': (64, 128), 'dec_1': (128, 256), 'dec_2': (256, 384)}
  recon, latent = jax.tree_util.tree_map(np.asarray, apply({'params': params}, x))
  assert recon.shape == (2, 384) and latent.shape == (2, 64)
  # Linear latent and linear output: both take negative values.
  assert (latent < 0).any() and (recon < 0).any()


@pytest.mark.parametrize('transition', [True, False])
def test_cascade_residual_wiring(transition):
  model = cra.CascadeResidualAE(num_blocks=5, layers=(32, 16, 8), transition=transition)
  _, apply = _jitted(model, mutable=['intermediates'])
  x = _normal(61, (3, 24))
  params = _random_init(model, RNG, x)['params']
  (imagined, latents), state = jax.tree_util.tree_map(np.asarray, apply({'params': params}, x))
  assert imagined.shape == (3, 24) and latents.shape == (3, 5 * 8)
  block_inputs = state['intermediates']['block_inputs']
  assert len(block_inputs) == 5
  # Re-run each block from its own parameter subtree on the manually accumulated stream.
  _, block = _jitted(cra.ResidualAEBlock(layers=(32, 16, 8)))
  stream = x
  for k in range(5):
    # Block k's input is x + the sum of the outputs of the blocks before it.
    np.testing.assert_allclose(block_inputs[k], stream, rtol=1e-5, atol=1e-5)
    out, latent = jax.tree_util.tree_map(np.asarray, block({'params': params[f'block_{k}']}, stream))
    np.testing.assert_allclose(latents[:, 8 * k:8 * (k + 1)], latent, rtol=1e-5, atol=1e-5)
    stream = stream + out
  if transition:  # imagined = transition(x + sum of all block outputs)
    w0, w1 = (jax.tree_util.tree_map(np.asarray, params[f'transition_{i}']) for i in range(2))
    stream = np.maximum(stream @ w0['kernel'] + w0['bias'], 0.) @ w1['kernel'] + w1['bias']
  else:
    assert 'transition_0' not in params
  np.testing.assert_allclose(imagined, stream, rtol=1e-5, atol=1e-5)


def test_plain_ae():
  model = cra.PlainAE(layers=(32, 16, 8))
  x = _normal(62, (3, 24))
  params = jax.eval_shape(model.init, RNG, x)
  assert params['params']['enc_2']['kernel'].shape == (16, 8)
  assert params['params']['dec_2']['kernel'].shape == (32, 24)
  init, apply = _jitted(model)
  recon, latent = jax.tree_util.tree_map(np.asarray, apply(init(RNG, x), x))
  assert recon.shape == (3, 24) and latent.shape == (3, 8)
  assert (recon >= 0).all()  # the authors' ReLU on the output


# ---------------------------------------------------------------------------------------------
# Float64 gradient checks
# ---------------------------------------------------------------------------------------------


def _check(f, args):
  # eps well below the default keeps the finite differences from straddling ReLU kinks.
  check_grads(jax.jit(f), args, order=1, modes=('fwd', 'rev'), atol=1e-5, rtol=1e-5, eps=1e-6)


def test_grads_lstm_encoder(x64):
  model = encoders.LSTMEncoder(hidden=3, param_dtype=jnp.float64)
  x = _normal(70, (2, 4, 3), np.float64)
  lengths = np.array([4, 2])
  params = _random_init(model, RNG, x, lengths)
  _check(lambda p, x: model.apply(p, x, lengths), (params, x))
  # float64 inputs also run with float32 parameters (the carry takes the promoted dtype).
  model32 = encoders.LSTMEncoder(hidden=3)
  params32 = jax.eval_shape(model32.init, RNG, x, lengths)
  assert jax.eval_shape(model32.apply, params32, x, lengths).dtype == jnp.float64


def test_grads_textcnn(x64):
  model = encoders.TextCNN(num_filters=2, kernel_sizes=(2, 3), out_dim=3)
  x = _normal(71, (2, 5, 3), np.float64)
  lengths = np.array([5, 2])
  params = _random_init(model, RNG, x, lengths, deterministic=True, dtype=np.float64)
  _check(lambda p, x: model.apply(p, x, lengths, deterministic=True), (params, x))


def test_grads_cascade_residual_ae(x64):
  model = cra.CascadeResidualAE(num_blocks=2, layers=(6, 4, 2))
  x = _normal(72, (2, 9), np.float64)
  params = _random_init(model, RNG, x, dtype=np.float64)
  _check(lambda p, x: model.apply(p, x), (params, x))


def test_grads_bclstm(x64):
  model = bclstm.BCLSTM(modalities=('audio', 'text'), utterance_dim=3, lstm_hidden=2, dense_dim=3,
                        num_outputs=2, param_dtype=jnp.float64)
  feats = {'audio': _normal(73, (2, 3, 2), np.float64), 'text': _normal(74, (2, 3, 3), np.float64)}
  turn_mask = np.array([[True, True, True], [True, True, False]])
  params = _random_init(model, RNG, feats, turn_mask, deterministic=True)
  _check(lambda p, f: model.apply(p, f, turn_mask, deterministic=True), (params, feats))
