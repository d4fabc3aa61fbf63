"""MMGCN's fused GCN stack (one scan over folded kernels) against the layer-by-layer GCNII layers:
the same parameters give the same logits and gradients, in both layer forms and both message
passing layouts; unrolling, remat and dropout keep it a proper GCNII stack."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.models import mmgcn
from test_mmgcn import MODS, _batch, _dialogues, _init, _model


@functools.partial(jax.jit, static_argnums=0)
def _loss(model, params, batch):
  logits = model.apply({'params': params}, {m: batch[m] for m in MODS}, batch['speaker'],
                       batch['turn_mask'], batch['modality_mask'], batch['graph'], deterministic=True)
  return jnp.sum(jnp.tanh(logits) * jnp.arange(logits.shape[-1]))


@pytest.mark.parametrize('concat_input,message_passing,fusion', [
    (False, 'blocks', 'graph'), (True, 'blocks', 'graph'), (True, 'edges', 'graph'),
    (False, 'blocks', 'late')])
def test_fused_stack_equals_the_layer_by_layer_stack(concat_input, message_passing, fusion):
  batch = _batch(_dialogues([5, 3, 7]), per_batch=4, indices=[0, 1, 2])
  kw = dict(gcn_layers=6, gcn_concat_input=concat_input, message_passing=message_passing, fusion=fusion)
  fused, layered = _model(gcn_fused=True, **kw), _model(gcn_fused=False, **kw)
  params = _init(layered, batch)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(_init(fused, batch))
  np.testing.assert_allclose(_loss(fused, params, batch), _loss(layered, params, batch), rtol=1e-5)
  grads = [jax.grad(_loss, argnums=1)(m, params, batch) for m in (fused, layered)]
  for a, b in zip(*map(jax.tree_util.tree_leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_folded_kernels_give_the_gcnii_layer():
  """(A h) P + h0 Q equals GCNIILayer's output for one layer of each form."""
  rng = np.random.default_rng(0)
  hi, h0 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  for concat in (False, True):
    kernel = rng.normal(size=(8 if concat else 4, 4))
    theta = np.log(0.5 / 3 + 1)
    support = 0.9 * hi + 0.1 * h0
    inputs = np.concatenate([hi, h0], -1) if concat else support
    expected = theta * inputs @ kernel + (1 - theta) * support
    p, q = mmgcn.fold_identity(jnp.asarray(np.stack([kernel] * 3)), alpha=0.1, lamda=0.5,
                               concat_input=concat)
    np.testing.assert_allclose(hi @ np.asarray(p[2]) + h0 @ np.asarray(q[2]), expected, rtol=1e-5)


def test_unroll_and_remat_do_not_change_the_numbers():
  batch = _batch(_dialogues([4, 6]))
  base = _model(gcn_layers=5)
  params = _init(base, batch)
  want = jax.grad(_loss, argnums=1)(base, params, batch)
  for model in (_model(gcn_layers=5, gcn_unroll=True), _model(gcn_layers=5, gcn_unroll=2),
                _model(gcn_layers=5, gcn_remat=True)):
    got = jax.grad(_loss, argnums=1)(model, params, batch)
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_fused_dropout_draws_a_mask_per_layer_and_a_traced_rate_works():
  h = jnp.ones((1000,))
  key = jax.random.PRNGKey(0)
  out = mmgcn.dropout(h, 0.4, key)
  kept = np.asarray(out) != 0
  assert 0.5 < kept.mean() < 0.7 and np.allclose(np.asarray(out)[kept], 1 / 0.6)
  np.testing.assert_array_equal(mmgcn.dropout(h, jnp.asarray(0.4), key), out)
  assert mmgcn.dropout(h, 0.4, None) is h and mmgcn.dropout(h, 0.0, key) is h
  batch = _batch(_dialogues([4, 6]))
  model = _model(gcn_layers=3, dropout=0.5)
  params = _init(model, batch)
  apply = lambda seed: model.apply(
      {'params': params}, {m: batch[m] for m in MODS}, batch['speaker'], batch['turn_mask'],
      batch['modality_mask'], batch['graph'], deterministic=False,
      rngs={'dropout': jax.random.PRNGKey(seed)})
  assert not np.allclose(apply(0), apply(1))
  np.testing.assert_array_equal(apply(2), apply(2))
