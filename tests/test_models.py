"""Tests for models/encoders.py, fusion.py, bclstm.py and cra.py: shapes, padding and mask
invariance, the CRA residual wiring, and float64 gradient checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from mmer_jax.models import bclstm, cra, encoders, fusion

RNG = jax.random.key(0)


def _normal(seed, shape, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, dtype)


def _with_garbage(x, lengths, seed, extra=0):
  """x with its padding frames (>= length) replaced by garbage (incl. NaN) and `extra` appended."""
  x = np.array(x)
  b, t = x.shape[:2]
  if extra:
    x = np.concatenate([x, np.zeros((b, extra) + x.shape[2:], x.dtype)], axis=1)
  garbage = 100. * np.asarray(_normal(seed, x.shape))
  garbage[..., 0] = np.nan
  pad = np.arange(x.shape[1])[None, :] >= np.asarray(lengths)[:, None]
  x[pad] = garbage[pad]
  return jnp.asarray(x)


@pytest.fixture
def x64():
  """Enables float64 for one test and restores the previous setting afterwards."""
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', previous)


def _to64(tree):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------


def test_lstm_encoder_shape_and_valid_frames_only():
  model = encoders.LSTMEncoder(hidden=8)
  x = _normal(1, (4, 7, 5))
  lengths = jnp.array([7, 3, 1, 0], jnp.int32)
  params = model.init(RNG, x, lengths)
  out = model.apply(params, x, lengths)
  assert out.shape == (4, 8)
  np.testing.assert_array_equal(out[3], 0.)  # empty sequence -> zero embedding
  # Each row equals the encoder run on its valid frames alone (max over valid steps only).
  for i, n in enumerate([7, 3, 1]):
    alone = model.apply(params, x[i:i + 1, :n], jnp.array([n]))
    np.testing.assert_allclose(out[i], alone[0], atol=1e-6)
  assert set(params['params']) == {'lstm'}


def test_lstm_encoder_padding_invariance():
  model = encoders.LSTMEncoder(hidden=8)
  x = _normal(2, (3, 6, 4))
  lengths = jnp.array([6, 2, 4], jnp.int32)
  params = model.init(RNG, x, lengths)
  ref = model.apply(params, x, lengths)
  for extra in (0, 5):
    noisy = _with_garbage(x, lengths, seed=3 + extra, extra=extra)
    np.testing.assert_allclose(model.apply(params, noisy, lengths), ref, atol=1e-6)
  # Garbage (even NaN) in padding cannot reach the gradients either.
  noisy = _with_garbage(x, lengths, seed=9, extra=2)
  grads = jax.grad(lambda p: model.apply(p, noisy, lengths).sum())(params)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))


def test_textcnn_shape_and_short_sequences():
  model = encoders.TextCNN(num_filters=6, kernel_sizes=(3, 4, 5), out_dim=7, dropout=0.5)
  x = _normal(4, (5, 9, 3))
  lengths = jnp.array([9, 5, 4, 2, 0], jnp.int32)
  params = model.init(RNG, x, lengths, deterministic=True)
  out = model.apply(params, x, lengths, deterministic=True)
  assert out.shape == (5, 7)
  assert bool(jnp.isfinite(out).all()) and bool((out >= 0).all())
  assert params['params']['conv_5']['kernel'].shape == (5, 3, 6)
  assert params['params']['embed']['kernel'].shape == (18, 7)
  # A row equals the encoder run on its valid frames alone; sequences shorter than a kernel
  # (and inputs shorter than the widest kernel) behave as if right zero-padded.
  for i, n in enumerate([9, 5, 4, 2]):
    alone = model.apply(params, x[i:i + 1, :n], jnp.array([n]), deterministic=True)
    np.testing.assert_allclose(out[i], alone[0], atol=1e-5)
  short = x[3:4, :2]
  padded = jnp.pad(short, ((0, 0), (0, 3), (0, 0)))
  np.testing.assert_allclose(model.apply(params, short, jnp.array([2]), deterministic=True),
                             model.apply(params, padded, jnp.array([5]), deterministic=True), atol=1e-5)
  # Dropout is active in training mode.
  train = model.apply(params, x, lengths, deterministic=False, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(train, out)


def test_textcnn_padding_invariance():
  model = encoders.TextCNN(num_filters=6, kernel_sizes=(3, 4, 5), out_dim=7)
  x = _normal(5, (4, 8, 3))
  lengths = jnp.array([8, 5, 3, 1], jnp.int32)
  params = model.init(RNG, x, lengths, deterministic=True)
  ref = model.apply(params, x, lengths, deterministic=True)
  for extra in (0, 6):
    noisy = _with_garbage(x, lengths, seed=6 + extra, extra=extra)
    np.testing.assert_allclose(model.apply(params, noisy, lengths, deterministic=True), ref, atol=1e-6)
  noisy = _with_garbage(x, lengths, seed=11, extra=1)
  grads = jax.grad(lambda p: model.apply(p, noisy, lengths, deterministic=True).sum())(params)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))


def test_mlp_encoder_shape():
  model = encoders.MLPEncoder(hidden=(16,), out_dim=8, dropout=0.1)
  x = _normal(7, (3, 10))
  params = model.init(RNG, x, deterministic=True)
  out = model.apply(params, x, deterministic=True)
  assert out.shape == (3, 8) and bool((out >= 0).all())


def test_modality_encoders_kinds():
  feats = {'audio': _normal(1, (2, 5, 4)), 'visual': _normal(2, (2, 6, 3)), 'text': _normal(3, (2, 7, 5))}
  lengths = {'audio': jnp.array([5, 2]), 'visual': jnp.array([6, 1]), 'text': jnp.array([7, 3])}
  model = encoders.ModalityEncoders(embed_dim=8, num_filters=4)
  params = model.init(RNG, feats, lengths, deterministic=True)
  out = model.apply(params, feats, lengths, deterministic=True)
  assert {k: v.shape for k, v in out.items()} == {m: (2, 8) for m in ('audio', 'visual', 'text')}
  assert set(params['params']['audio']) == {'lstm'}
  assert set(params['params']['text']) == {'conv_3', 'conv_4', 'conv_5', 'embed'}
  # Explicit kinds agree with the inferred ones; utterance-level features get MLPs.
  explicit = encoders.ModalityEncoders(embed_dim=8, num_filters=4, kinds=('lstm', 'lstm', 'textcnn'))
  np.testing.assert_allclose(explicit.apply(params, feats, lengths, deterministic=True)['text'], out['text'])
  utt = {'audio': _normal(4, (2, 9)), 'text': _normal(5, (2, 6))}
  model = encoders.ModalityEncoders(modalities=('audio', 'text'), embed_dim=8, kinds='mlp')
  params = model.init(RNG, utt, deterministic=True)
  assert model.apply(params, utt, deterministic=True)['text'].shape == (2, 8)
  with pytest.raises(ValueError, match='rank'):
    encoders.ModalityEncoders(modalities=('audio',), kinds='lstm').init(RNG, utt, deterministic=True)


# ---------------------------------------------------------------------------------------------
# Fusion baselines
# ---------------------------------------------------------------------------------------------

_FUSION_KW = dict(embed_dim=8, num_filters=4, hidden=(16,), num_outputs=3, encoder_dropout=0.2, dropout=0.2)


def _fusion_batch():
  feats = {'audio': _normal(11, (4, 6, 5)), 'visual': _normal(12, (4, 5, 3)), 'text': _normal(13, (4, 7, 4))}
  lengths = {'audio': jnp.array([6, 3, 2, 5]), 'visual': jnp.array([5, 5, 1, 2]),
             'text': jnp.array([7, 2, 4, 6])}
  mask = jnp.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 1, 0]], bool)
  return feats, lengths, mask


@pytest.mark.parametrize('cls', [fusion.EarlyFusion, fusion.LateFusion, fusion.GatedAttentionFusion])
def test_fusion_masked_modalities_do_not_matter(cls):
  feats, lengths, mask = _fusion_batch()
  model = cls(**_FUSION_KW)
  params = model.init(RNG, feats, lengths, mask, deterministic=True)
  out = model.apply(params, feats, lengths, mask, deterministic=True)
  assert out.shape == (4, 3)
  # Replace every masked-out modality's features with garbage (NaN included): same outputs.
  changed = {}
  for i, m in enumerate(('audio', 'visual', 'text')):
    garbage = np.array(1e3 * _normal(20 + i, feats[m].shape))
    garbage[0, 0, 0] = np.nan
    keep = np.asarray(mask[:, i])[:, None, None]
    changed[m] = jnp.where(keep, feats[m], garbage)
  np.testing.assert_array_equal(model.apply(params, changed, lengths, mask, deterministic=True), out)
  grads = jax.grad(lambda p: model.apply(p, changed, lengths, mask, deterministic=True).sum())(params)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))
  # Training mode runs with a dropout key.
  train = model.apply(params, feats, lengths, mask, deterministic=False, rngs={'dropout': jax.random.key(2)})
  assert train.shape == (4, 3)
  _, aux = model.apply(params, feats, lengths, mask, deterministic=True, return_aux=True)
  np.testing.assert_array_equal(aux['embeddings']['audio'][2:], 0.)


def test_late_fusion_is_mean_over_available_heads():
  feats, lengths, mask = _fusion_batch()
  model = fusion.LateFusion(**_FUSION_KW)
  params = model.init(RNG, feats, lengths, mask, deterministic=True)
  out, aux = model.apply(params, feats, lengths, mask, deterministic=True, return_aux=True)
  heads = aux['head_outputs']
  for b in range(4):
    present = [m for i, m in enumerate(('audio', 'visual', 'text')) if mask[b, i]]
    expected = np.mean([np.asarray(heads[m][b]) for m in present], axis=0)
    np.testing.assert_allclose(out[b], expected, rtol=1e-6, atol=1e-6)
  # A head only sees its own modality: the text head of the full sample matches a text-only model.
  text_only = fusion.LateFusion(modalities=('text',), **_FUSION_KW)
  sub = {'params': {'encoders': {'text': params['params']['encoders']['text']},
                    'head_text': params['params']['head_text']}}
  np.testing.assert_allclose(text_only.apply(sub, feats, lengths, mask, deterministic=True)[2], out[2],
                             rtol=1e-6, atol=1e-6)


def test_gated_attention_weights_cover_available_only():
  feats, lengths, mask = _fusion_batch()
  model = fusion.GatedAttentionFusion(**_FUSION_KW)
  params = model.init(RNG, feats, lengths, mask, deterministic=True)
  _, aux = model.apply(params, feats, lengths, mask, deterministic=True, return_aux=True)
  att = np.asarray(aux['attention'])
  np.testing.assert_allclose(att.sum(axis=1), 1., rtol=1e-6)
  np.testing.assert_array_equal(att[~np.asarray(mask)], 0.)
  # An all-missing (padding) row gives finite outputs.
  out = model.apply(params, feats, lengths, jnp.zeros((4, 3), bool), deterministic=True)
  assert bool(jnp.isfinite(out).all())


def test_early_fusion_utterance_level_regression():
  feats = {'audio': _normal(1, (3, 10)), 'visual': _normal(2, (3, 7)), 'text': _normal(3, (3, 12))}
  model = fusion.EarlyFusion(embed_dim=8, kinds='mlp', hidden=(16,), num_outputs=1)
  mask = jnp.array([[1, 0, 1], [1, 1, 1], [0, 0, 1]], bool)
  params = model.init(RNG, feats, None, mask, deterministic=True)
  out, aux = model.apply(params, feats, None, mask, deterministic=True, return_aux=True)
  assert out.shape == (3, 1) and aux['fused'].shape == (3, 24)


# ---------------------------------------------------------------------------------------------
# bc-LSTM
# ---------------------------------------------------------------------------------------------


def _dialogue_batch():
  b, l = 3, 6
  feats = {'audio': _normal(31, (b, l, 5)), 'visual': _normal(32, (b, l, 4)), 'text': _normal(33, (b, l, 6))}
  turns = jnp.array([6, 4, 2])
  turn_mask = jnp.arange(l)[None, :] < turns[:, None]
  modality_mask = jax.random.bernoulli(jax.random.key(34), 0.7, (b, l, 3)).at[..., 2].set(True)
  return feats, turn_mask, modality_mask


def test_bclstm_padding_invariance():
  feats, turn_mask, modality_mask = _dialogue_batch()
  model = bclstm.BCLSTM(utterance_dim=8, lstm_hidden=6, dense_dim=8, num_outputs=4)
  params = model.init(RNG, feats, turn_mask, modality_mask, deterministic=True)
  ref = model.apply(params, feats, turn_mask, modality_mask, deterministic=True)
  assert ref.shape == (3, 6, 4)
  np.testing.assert_array_equal(ref[~np.asarray(turn_mask)], 0.)
  lengths = turn_mask.sum(1)
  # Garbage in padded turns, more padded turns, and an extra all-padding dialogue.
  extra_turns, pad_dialogue = 3, 1
  noisy = {m: _with_garbage(x, lengths, seed=40 + i, extra=extra_turns) for i, (m, x) in enumerate(feats.items())}
  noisy = {m: jnp.concatenate([x, 1e3 * _normal(50, (pad_dialogue,) + x.shape[1:])]) for m, x in noisy.items()}
  big_turn_mask = jnp.zeros((3 + pad_dialogue, 6 + extra_turns), bool).at[:3, :6].set(turn_mask)
  big_mod_mask = jnp.ones((3 + pad_dialogue, 6 + extra_turns, 3), bool).at[:3, :6].set(modality_mask)
  out = model.apply(params, noisy, big_turn_mask, big_mod_mask, deterministic=True)
  real = np.asarray(turn_mask)
  np.testing.assert_allclose(np.asarray(out[:3, :6])[real], np.asarray(ref)[real], atol=1e-6)
  np.testing.assert_array_equal(out[3], 0.)
  # Features of a masked modality of an utterance do not matter either.
  changed = {m: jnp.where(modality_mask[..., i:i + 1], x, 1e3) for i, (m, x) in enumerate(feats.items())}
  np.testing.assert_array_equal(model.apply(params, changed, turn_mask, modality_mask, deterministic=True), ref)


def test_bclstm_context_is_bidirectional():
  feats, turn_mask, modality_mask = _dialogue_batch()
  model = bclstm.BCLSTM(utterance_dim=8, lstm_hidden=6, dense_dim=8, num_outputs=4)
  params = model.init(RNG, feats, turn_mask, modality_mask, deterministic=True)
  ref = model.apply(params, feats, turn_mask, modality_mask, deterministic=True)
  # Changing the last real turn of dialogue 0 changes its first turn (backward context) ...
  changed = dict(feats, text=feats['text'].at[0, 5].add(3.))
  out = model.apply(params, changed, turn_mask, modality_mask, deterministic=True)
  assert not np.allclose(out[0, 0], ref[0, 0])
  # ... and changing the first turn changes the last (forward context); other dialogues untouched.
  changed = dict(feats, text=feats['text'].at[0, 0].add(3.))
  out = model.apply(params, changed, turn_mask, modality_mask, deterministic=True)
  assert not np.allclose(out[0, 5], ref[0, 5])
  np.testing.assert_array_equal(out[1:], ref[1:])


# ---------------------------------------------------------------------------------------------
# CRA
# ---------------------------------------------------------------------------------------------


def test_residual_ae_block_structure():
  block = cra.ResidualAEBlock(layers=(256, 128, 64))
  x = _normal(60, (2, 384))
  params = block.init(RNG, x)['params']
  shapes = {k: v['kernel'].shape for k, v in params.items()}
  assert shapes == {'enc_0': (384, 256), 'enc_1': (256, 128), 'enc_2': (128, 64),
                    'dec_0': (64, 128), 'dec_1': (128, 256), 'dec_2': (256, 384)}
  recon, latent = block.apply({'params': params}, x)
  assert recon.shape == (2, 384) and latent.shape == (2, 64)
  # Linear latent and linear output: both take negative values.
  assert bool((latent < 0).any()) and bool((recon < 0).any())


@pytest.mark.parametrize('transition', [True, False])
def test_cascade_residual_wiring(transition):
  model = cra.CascadeResidualAE(num_blocks=5, layers=(32, 16, 8), transition=transition)
  x = _normal(61, (3, 24))
  params = model.init(RNG, x)['params']
  (imagined, latents), state = model.apply({'params': params}, x, mutable=['intermediates'])
  assert imagined.shape == (3, 24) and latents.shape == (3, 5 * 8)
  block_inputs = state['intermediates']['block_inputs']
  assert len(block_inputs) == 5
  block = cra.ResidualAEBlock(layers=(32, 16, 8))
  stream, outputs = x, []
  for k in range(5):
    # Block k's input is x + the sum of the outputs of the blocks before it.
    expected_input = x + sum(outputs) if outputs else x
    np.testing.assert_allclose(block_inputs[k], expected_input, rtol=1e-6, atol=1e-6)
    out, latent = block.apply({'params': params[f'block_{k}']}, block_inputs[k])
    np.testing.assert_allclose(latents[:, 8 * k:8 * (k + 1)], latent, rtol=1e-6, atol=1e-6)
    outputs.append(out)
  stream = x + sum(outputs)
  if transition:
    w0, w1 = params['transition_0'], params['transition_1']
    stream = jax.nn.relu(stream @ w0['kernel'] + w0['bias']) @ w1['kernel'] + w1['bias']
  else:
    assert 'transition_0' not in params
  np.testing.assert_allclose(imagined, stream, rtol=1e-5, atol=1e-5)


def test_plain_ae():
  model = cra.PlainAE(layers=(32, 16, 8))
  x = _normal(62, (3, 24))
  params = model.init(RNG, x)
  recon, latent = model.apply(params, x)
  assert recon.shape == (3, 24) and latent.shape == (3, 8)
  assert bool((recon >= 0).all())  # the authors' ReLU on the output


# ---------------------------------------------------------------------------------------------
# Float64 gradient checks
# ---------------------------------------------------------------------------------------------


def _check(f, args):
  check_grads(f, args, order=1, modes=('fwd', 'rev'), atol=1e-5, rtol=1e-5)


def test_grads_lstm_encoder(x64):
  model = encoders.LSTMEncoder(hidden=3, param_dtype=jnp.float64)
  x = _normal(70, (2, 4, 3), jnp.float64)
  lengths = jnp.array([4, 2])
  params = model.init(RNG, x, lengths)
  _check(lambda p, x: model.apply(p, x, lengths), (params, x))


def test_grads_textcnn(x64):
  model = encoders.TextCNN(num_filters=2, kernel_sizes=(2, 3), out_dim=3)
  x = _normal(71, (2, 5, 3), jnp.float64)
  lengths = jnp.array([5, 2])
  params = _to64(model.init(RNG, x, lengths, deterministic=True))
  _check(lambda p, x: model.apply(p, x, lengths, deterministic=True), (params, x))


def test_grads_cascade_residual_ae(x64):
  model = cra.CascadeResidualAE(num_blocks=2, layers=(6, 4, 2))
  x = _normal(72, (2, 9), jnp.float64)
  params = _to64(model.init(RNG, x))
  _check(lambda p, x: model.apply(p, x), (params, x))


def test_grads_bclstm(x64):
  model = bclstm.BCLSTM(modalities=('audio', 'text'), utterance_dim=3, lstm_hidden=2, dense_dim=3,
                        num_outputs=2, param_dtype=jnp.float64)
  feats = {'audio': _normal(73, (2, 3, 2), jnp.float64), 'text': _normal(74, (2, 3, 3), jnp.float64)}
  turn_mask = jnp.array([[True, True, True], [True, True, False]])
  params = model.init(RNG, feats, turn_mask, deterministic=True)
  _check(lambda p, f: model.apply(p, f, turn_mask, deterministic=True), (params, feats))
