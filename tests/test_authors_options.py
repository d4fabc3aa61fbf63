"""The config options that reproduce the authors' MMIN code where ours departs on purpose.

`method.encoders.padding='included'` (LSTM/TextCNN pools over the zero padding),
`method.encoders.lstm_biases=2` (PyTorch's pair of LSTM biases), `optimizer.clip_groups`
(per-network clipping), `method.missing_slot='encoded_zeros'` and
`method.imagination_reduction='sum'`. Each is tested to do what it says and to differ from the
default where it should; the parity harness (test_parity.py) checks them against the authors'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmer_jax import optim
from mmer_jax.models import encoders

import test_mmin


def _sequences(seed=0, b=3, t=9, d=4):
  gen = np.random.default_rng(seed)
  x = gen.standard_normal((b, t, d)).astype(np.float32)
  lengths = np.array([9, 5, 6])
  x = np.where(np.arange(t)[None, :, None] < lengths[:, None, None], x, 0).astype(np.float32)
  return x, lengths


@pytest.mark.parametrize('module', [encoders.LSTMEncoder(hidden=5), encoders.TextCNN(4, (2, 3), 5, 0.0)],
                         ids=['lstm', 'textcnn'])
def test_included_padding_pools_over_the_zero_padding(module):
  x, lengths = _sequences()
  x = -np.abs(x)  # negative frames, non-negative kernels, positive biases: zero (padding) frames
  params = module.init(jax.random.PRNGKey(0), x, lengths, deterministic=True)  # give the largest
  params = jax.tree_util.tree_map_with_path(  # responses, which only the included pools see
      lambda path, p: p + 3.0 if path[-1].key == 'bias' else jnp.abs(p), params)
  included = module.clone(pool_padding=True)
  got = included.apply(params, x, lengths, deterministic=True)
  # = running over the zero-padded batch as if every frame were valid (the authors' code) ...
  np.testing.assert_allclose(got, module.apply(params, x, None, deterministic=True), rtol=1e-6)
  # ... which differs from the masked default for the padded rows, not for the full one.
  masked = module.apply(params, x, lengths, deterministic=True)
  np.testing.assert_allclose(got[0], masked[0], rtol=1e-6)
  assert not np.allclose(got[1:], masked[1:])


def test_paired_lstm_biases_encoder_runs_and_has_pytorchs_layout():
  x, lengths = _sequences()
  enc = encoders.LSTMEncoder(hidden=5, biases=2)
  params = enc.init(jax.random.PRNGKey(0), x, lengths)['params']
  shapes = jax.tree_util.tree_map(np.shape, params['lstm'])
  assert shapes == {'input': {'kernel': (4, 20), 'bias': (20,)}, 'hidden': {'kernel': (5, 20), 'bias': (20,)}}
  assert np.isfinite(enc.apply({'params': params}, x, lengths)).all()
  with pytest.raises(ValueError, match='lstm_biases'):
    encoders.LSTMEncoder(hidden=5, biases=3).init(jax.random.PRNGKey(0), x, lengths)


def test_clip_groups_clip_each_named_subtree_on_its_own():
  grads = {'a': {'w': jnp.full((4,), 3.0)}, 'b': jnp.full((2,), 0.1), 'c': jnp.full((1,), 10.0)}
  tx = optim.clip_by_group_norm(1.0, ('a', 'b'))
  out, _ = tx.update(grads, tx.init(grads), grads)
  assert float(optax.global_norm(out['a'])) == pytest.approx(1.0)  # clipped from 6
  np.testing.assert_allclose(out['b'], grads['b'])  # under the bound: untouched
  assert float(optax.global_norm(out['c'])) == pytest.approx(1.0)  # the rest, its own group
  glob, _ = optax.clip_by_global_norm(1.0).update(grads, None)
  assert not np.allclose(glob['b'], out['b'])  # one global norm would scale b too
  with pytest.raises(ValueError, match='name no parameter'):
    bad = optim.clip_by_group_norm(1.0, ('a', 'typo'))
    bad.init(grads)


def test_missing_slot_encoded_zeros_keeps_the_encoders_output_for_zeros():
  batch = dict(test_mmin._toy_batch(), modality_mask=test_mmin.MASK_A_MISSING)
  ours = test_mmin._toy_method()
  theirs = test_mmin._toy_method(missing_slot='encoded_zeros')
  params = test_mmin._method_params(ours, batch)
  s_ours = np.asarray(ours._apply(params, batch, teacher_targets=())['student'])
  s_theirs = np.asarray(theirs._apply(params, batch, teacher_targets=())['student'])
  e = s_ours.shape[-1] // 3
  assert not s_ours[:, :e].any()  # audio missing: exact zero
  zeros = dict(batch, audio=np.zeros_like(batch['audio']))
  enc = ours.model.encoders.apply({'params': params['encoders']}, {m: zeros[m] for m in ours.modalities},
                                  deterministic=True)
  np.testing.assert_allclose(s_theirs[:, :e], enc['audio'], rtol=1e-6)
  assert np.abs(s_theirs[:, :e]).max() > 0
  np.testing.assert_array_equal(s_ours[:, e:], s_theirs[:, e:])
  with pytest.raises(ValueError, match='missing_slot'):
    test_mmin._toy_method(missing_slot='nope')


def test_sum_reduction_is_the_dims_times_the_mean():
  batch = dict(test_mmin._toy_batch(), modality_mask=test_mmin.MASK_A_MISSING)
  mean = test_mmin._toy_method()
  total = test_mmin._toy_method(imagination_reduction='sum', fwd_weight=0.1, cycle_weight=0.1)
  params = test_mmin._method_params(mean, batch)
  _, a = mean.loss(params, batch, None)
  loss, b = total.loss(params, batch, None)
  dims = 3 * 8
  np.testing.assert_allclose(b['fwd_mse'], dims * a['fwd_mse'], rtol=1e-5)
  np.testing.assert_allclose(b['cycle_mse'], dims * a['cycle_mse'], rtol=1e-5)
  np.testing.assert_allclose(loss, b['ce'] + 0.1 * b['fwd_mse'] + 0.1 * b['cycle_mse'], rtol=1e-5)
  with pytest.raises(ValueError, match='imagination_reduction'):
    test_mmin._toy_method(imagination_reduction='max')
