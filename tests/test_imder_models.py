"""IMDer's networks: score U-Net, refinement RCAN, projections and MulT fusion head.

Shapes at the authors' sizes are checked with `jax.eval_shape` (tracing only, no compute), so the
full-size networks cost little here; numerics run on small widths. The numpy references follow
the authors' PyTorch formulas (layouts included), so they double as checks of the parameter map in
the IMDer parity notes: PyTorch Conv1d [out, in, k] and ConvTranspose1d [in, out, k] weights are
both `transpose(2, 1, 0)` of the Flax kernels, Linear weights the transposes of Dense kernels.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from mmer_jax.models import imder_head, imder_refine, mult, score_net

KEY = jax.random.PRNGKey(0)

SMALL_UNET = dict(channels=(8, 16), embed_dim=16, num_heads=2, attn_layers=1, enc_groups=(4, 8),
                  dec_groups=(8,))


def jit_init(module, *args, **kwargs):
  """module.init(KEY, *args, **kwargs) compiled (op-by-op init of these nets is much slower)."""
  return jax.jit(lambda key, *a: module.init(key, *a, **kwargs))(KEY, *args)


def jit_apply(module, variables, *args, **kwargs):
  return jax.jit(lambda v, *a: module.apply(v, *a, **kwargs))(variables, *args)


def shapes(tree):
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def to64(tree):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


# ---------------------------------------------------------------------------------------------
# numpy references written from the authors' PyTorch code (NCL convs, packed attention)


def ref_conv1d(x_ncl, w, b, stride, pad):
  """torch Conv1d: w [out, in, k]."""
  x = np.pad(x_ncl, ((0, 0), (0, 0), (pad, pad)))
  k = w.shape[-1]
  out_len = (x.shape[-1] - k) // stride + 1
  y = np.stack([np.einsum('bck,ock->bo', x[:, :, i * stride:i * stride + k], w)
                for i in range(out_len)], axis=-1)
  return y + (0 if b is None else b[None, :, None])


def ref_conv_transpose1d(x_ncl, w, b, stride, pad, output_padding):
  """torch ConvTranspose1d by its definition (scatter): w [in, out, k]."""
  batch, _, length = x_ncl.shape
  k = w.shape[-1]
  out_len = (length - 1) * stride - 2 * pad + k + output_padding
  y = np.zeros((batch, w.shape[1], out_len))
  for i in range(length):
    for j in range(k):
      o = i * stride - pad + j
      if 0 <= o < out_len:
        y[:, :, o] += np.einsum('bc,co->bo', x_ncl[:, :, i], w[:, :, j])
  return y + (0 if b is None else b[None, :, None])


def ref_layer_norm(x, p, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def ref_positions(x_lbe):
  """fairseq SinusoidalPositionalEmbedding(padding_idx=0) of x [L, B, E] (uses x[:, :, 0])."""
  length, _, dim = x_lbe.shape
  half = dim // 2
  freq = np.exp(np.arange(half) * -(math.log(10000) / (half - 1)))
  table = np.arange(length + 1)[:, None] * freq[None]
  table = np.concatenate([np.sin(table), np.cos(table)], axis=1)
  table[0] = 0.
  pos = np.where(x_lbe[:, :, 0] != 0, np.arange(1, length + 1)[:, None], 0)
  return table[pos]


def ref_transformer(p, x, x_k, heads, attn_mask):
  """MulT TransformerEncoder in the authors' [L, B, E] layout, weights in PyTorch layout."""
  dim = x.shape[-1]
  hd = dim // heads
  x = math.sqrt(dim) * x + ref_positions(x)
  if x_k is not None:
    x_k = math.sqrt(dim) * x_k + ref_positions(x_k)
  n_layers = len([k for k in p if k.startswith('layers_')])
  for li in range(n_layers):
    lp = p[f'layers_{li}']
    w = lp['self_attn']['in_proj_kernel'].T  # torch in_proj_weight [3E, E]
    bias = lp['self_attn']['in_proj_bias']
    residual = x
    q_in = ref_layer_norm(x, lp['layer_norms_0'])
    kv_in = q_in if x_k is None else ref_layer_norm(x_k, lp['layer_norms_0'])
    q = (q_in @ w[:dim].T + bias[:dim]) * hd ** -0.5
    k = kv_in @ w[dim:2 * dim].T + bias[dim:2 * dim]
    v = kv_in @ w[2 * dim:].T + bias[2 * dim:]
    lq, batch, _ = q.shape
    lk = k.shape[0]
    q = q.reshape(lq, batch * heads, hd).transpose(1, 0, 2)
    k = k.reshape(lk, batch * heads, hd).transpose(1, 0, 2)
    v = v.reshape(lk, batch * heads, hd).transpose(1, 0, 2)
    scores = q @ k.transpose(0, 2, 1)
    if attn_mask:
      scores = scores + np.triu(np.full((lq, lk), -np.inf), 1 + abs(lk - lq))[None]
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    weights = scores / scores.sum(-1, keepdims=True)
    attn = (weights @ v).transpose(1, 0, 2).reshape(lq, batch, dim)
    attn = attn @ lp['self_attn']['out_proj']['kernel'] + lp['self_attn']['out_proj']['bias']
    x = residual + attn
    residual = x
    h = ref_layer_norm(x, lp['layer_norms_1'])
    h = np.maximum(h @ lp['fc1']['kernel'] + lp['fc1']['bias'], 0)
    x = residual + h @ lp['fc2']['kernel'] + lp['fc2']['bias']
  return ref_layer_norm(x, p['layer_norm'])


def ref_group_norm(x_ncl, p, groups, eps=1e-5):
  batch, c, length = x_ncl.shape
  g = x_ncl.reshape(batch, groups, -1)
  g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
  return g.reshape(batch, c, length) * p['scale'][None, :, None] + p['bias'][None, :, None]


def nlc(x):
  return np.asarray(x).transpose(0, 2, 1)


def np_tree(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


# ---------------------------------------------------------------------------------------------
# score network


def test_marginal_prob_std_formula():
  t = jnp.array([0.1, 0.5, 1.0])
  want = np.sqrt((25. ** (2 * np.array([0.1, 0.5, 1.0])) - 1) / (2 * np.log(25.)))
  np.testing.assert_allclose(score_net.marginal_prob_std(t, 25.), want, rtol=1e-6)


def test_score_net_full_size_shapes_and_parameters():
  net = score_net.ScoreNet()
  x = jnp.zeros((2, 48, 32))
  cond = jnp.zeros((2, 48, 32))
  t = jnp.zeros((2,))
  variables = jax.eval_shape(net.init, KEY, x, t, cond)
  assert shapes(variables['constants']) == {'embed': {'fourier': {'W': (128,)}}}
  p = shapes(variables['params'])
  assert p['embed']['dense'] == {'kernel': (256, 256), 'bias': (256,)}
  assert p['down1']['conv'] == {'kernel': (3, 32, 32)}  # conv1, no bias
  assert 'conv_cond' not in p['down1']  # the first level attends to the raw condition
  assert p['down4']['conv_cond'] == {'kernel': (3, 128, 256)}
  assert p['up4']['conv'] == {'kernel': (3, 128, 256)}  # tconv4 [in 256, out 128, 3] transposed
  assert p['up3']['conv'] == {'kernel': (3, 64, 256)}  # tconv3 takes [h, h3]: 128 + 128
  assert p['up1']['conv'] == {'kernel': (3, 32, 64), 'bias': (32,)}  # tconv1 has a bias
  assert 'dense' not in p['up1'] and 'gnorm' not in p['up1']
  assert p['down1']['gnorm']['scale'] == (32,)
  attn = p['down2']['attention']
  assert sorted(attn) == ['layer_norm', 'layers_0', 'layers_1']
  assert attn['layers_0']['self_attn']['in_proj_kernel'] == (64, 192)
  assert attn['layers_0']['fc1']['kernel'] == (64, 256)
  out = jax.eval_shape(net.apply, variables, x, t, cond)
  assert out.shape == (2, 48, 32)
  # The condition's length is free (it has no skip connections).
  out = jax.eval_shape(net.apply, variables, x, t, jnp.zeros((2, 20, 32)))
  assert out.shape == (2, 48, 32)


@pytest.mark.parametrize('length', [50, 1, 12])
def test_score_net_rejects_lengths_the_unet_cannot_handle(length):
  net = score_net.ScoreNet()
  with pytest.raises(ValueError, match='multiple of 8'):
    jax.eval_shape(net.init, KEY, jnp.zeros((1, length, 32)), jnp.zeros((1,)), jnp.zeros((1, length, 32)))


def test_score_net_rejects_a_condition_of_the_wrong_width():
  net = score_net.ScoreNet()
  with pytest.raises(ValueError, match='condition'):
    jax.eval_shape(net.init, KEY, jnp.zeros((1, 48, 32)), jnp.zeros((1,)), jnp.zeros((1, 48, 64)))


def test_score_net_output_is_divided_by_the_marginal_std():
  x = jax.random.normal(KEY, (2, 4, 8))
  cond = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 8))
  t = jnp.array([0.05, 0.8])  # two times, one per sample
  net = score_net.ScoreNet(**SMALL_UNET)
  raw_net = score_net.ScoreNet(**SMALL_UNET, normalize_output=False)
  variables = jit_init(net, x, t, cond)
  out = jax.jit(net.apply)(variables, x, t, cond)
  raw = jax.jit(raw_net.apply)(variables, x, t, cond)
  std = np.sqrt((25. ** (2 * np.asarray(t)) - 1) / (2 * np.log(25.)))
  assert out.shape == x.shape and np.all(np.isfinite(out))
  np.testing.assert_allclose(np.asarray(out), np.asarray(raw) / std[:, None, None], rtol=1e-5, atol=1e-6)
  assert abs(std[0] - std[1]) > 1.  # the two samples are normalised differently
  # A scalar t is broadcast over the batch; the raw output depends on t (the time embedding).
  one = jax.jit(raw_net.apply)(variables, x, jnp.float32(0.8), cond)
  np.testing.assert_allclose(np.asarray(one[1]), np.asarray(raw[1]), rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(one[0]), np.asarray(raw[0]))


def test_score_net_dtypes_and_no_condition():
  x = jax.random.normal(KEY, (2, 4, 8))
  t = jnp.array([0.3, 0.6])
  net = score_net.ScoreNet(**SMALL_UNET)
  variables = jit_init(net, x, t)  # unconditional: no attention parameters
  assert 'attention' not in variables['params']['down1']
  assert jit_apply(net, variables, x, t).dtype == jnp.float32
  with jax.enable_x64(True):
    out = jit_apply(net, to64(variables), jnp.asarray(x, jnp.float64), jnp.asarray(t, jnp.float64))
    assert out.dtype == jnp.float64 and np.all(np.isfinite(out))
  # The Fourier frequencies are constants, not parameters: an optimiser over params never sees them.
  assert 'W' not in str(jax.tree_util.tree_structure(variables['params']))
  assert variables['constants']['embed']['fourier']['W'].shape == (8,)
  assert float(jnp.std(variables['constants']['embed']['fourier']['W'])) > 5.  # ~ N(0, 30^2)


def test_unet_convs_follow_pytorch_conv1d_and_conv_transpose1d():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, 4))  # [B, L, C]
  for transpose, stride, bias in [(False, 2, False), (True, 2, False), (True, 1, True), (False, 1, False)]:
    block = score_net.UNetBlock(5, stride=stride, transpose=transpose, use_bias=bias, time=False, groups=None)
    variables = block.init(KEY, jnp.asarray(x, jnp.float32), None)
    w_flax = np.asarray(variables['params']['conv']['kernel'], np.float64)
    torch_w = w_flax.transpose(2, 1, 0)  # Conv1d [out, in, k] / ConvTranspose1d [in, out, k]
    b = np.asarray(variables['params']['conv']['bias'], np.float64) if bias else None
    out, cond = block.apply(variables, jnp.asarray(x, jnp.float32), None)
    assert cond is None
    if transpose:
      want = ref_conv_transpose1d(nlc(x), torch_w, b, stride, 1, stride - 1)
      assert torch_w.shape == (4, 5, 3)
    else:
      want = ref_conv1d(nlc(x), torch_w, b, stride, 1)
      assert torch_w.shape == (5, 4, 3)
    np.testing.assert_allclose(np.asarray(out), nlc(want), rtol=1e-5, atol=1e-5)


def test_unet_block_matches_a_reference_of_the_authors_level():
  """conv -> conv_cond -> h += attn(h, cond) -> h += dense(embed) -> GroupNorm -> swish."""
  rng = np.random.default_rng(1)
  h = rng.normal(size=(2, 8, 4))
  cond = rng.normal(size=(2, 6, 4))
  embed = rng.normal(size=(2, 16))
  block = score_net.UNetBlock(8, stride=2, groups=4, num_heads=2, attn_layers=2)
  with jax.enable_x64(True):
    variables = to64(jit_init(block, jnp.asarray(h), jnp.asarray(embed), jnp.asarray(cond)))
    out, out_cond = jit_apply(block, variables, jnp.asarray(h), jnp.asarray(embed), jnp.asarray(cond))
  p = np_tree(variables['params'])
  h1 = ref_conv1d(nlc(h), p['conv']['kernel'].transpose(2, 1, 0), None, 2, 1)
  c1 = ref_conv1d(nlc(cond), p['conv_cond']['kernel'].transpose(2, 1, 0), None, 2, 1)
  attn = ref_transformer(p['attention'], h1.transpose(2, 0, 1), c1.transpose(2, 0, 1), 2, True)
  h1 = h1 + attn.transpose(1, 2, 0)
  h1 = h1 + (embed @ p['dense']['kernel'] + p['dense']['bias'])[..., None]
  h1 = ref_group_norm(h1, p['gnorm'], 4)
  h1 = h1 / (1 + np.exp(-h1))  # swish
  np.testing.assert_allclose(np.asarray(out_cond), nlc(c1), rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(np.asarray(out), nlc(h1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('transpose', [False, True])
def test_unet_block_gradients(transpose):
  with jax.enable_x64(True):
    h = jax.random.normal(KEY, (2, 4, 4), jnp.float64)
    embed = jax.random.normal(jax.random.PRNGKey(1), (2, 6), jnp.float64)
    cond = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 4), jnp.float64)
    block = score_net.UNetBlock(8, stride=2, transpose=transpose, groups=4, num_heads=2, attn_layers=1)
    variables = to64(jit_init(block, h, embed, cond))
    check_grads(jax.jit(lambda h, e, c: block.apply(variables, h, e, c)[0]), (h, embed, cond), order=1,
                modes=['rev'])


# ---------------------------------------------------------------------------------------------
# MulT transformer


def test_transformer_matches_a_reference_of_the_authors_encoder():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 5, 8))
  x_k = rng.normal(size=(2, 3, 8))
  x_k[0, 1, 0] = 0.  # a "padding" frame for the positional embedding (first feature exactly 0)
  enc = mult.TransformerEncoder(num_heads=2, layers=2, attn_mask=True)
  with jax.enable_x64(True):
    variables = to64(jit_init(enc, jnp.asarray(x), jnp.asarray(x_k), jnp.asarray(x_k)))
    cross = jit_apply(enc, variables, jnp.asarray(x), jnp.asarray(x_k), jnp.asarray(x_k))
    own = jit_apply(enc, variables, jnp.asarray(x))
  p = np_tree(variables['params'])
  want = ref_transformer(p, x.transpose(1, 0, 2), x_k.transpose(1, 0, 2), 2, True).transpose(1, 0, 2)
  np.testing.assert_allclose(np.asarray(cross), want, rtol=1e-9, atol=1e-9)
  want = ref_transformer(p, x.transpose(1, 0, 2), None, 2, True).transpose(1, 0, 2)
  np.testing.assert_allclose(np.asarray(own), want, rtol=1e-9, atol=1e-9)


def test_positions_and_future_mask():
  x = np.ones((1, 4, 6))
  x[0, 2, 0] = 0.
  emb = np.asarray(mult.sinusoidal_positions(jnp.asarray(x[..., 0]), 6))
  np.testing.assert_allclose(emb, ref_positions(x.transpose(1, 0, 2)).transpose(1, 0, 2), atol=1e-6)
  assert np.all(emb[0, 2] == 0)
  mask = np.asarray(mult.future_mask(3, 5))
  np.testing.assert_array_equal(mask, np.isinf(np.triu(np.full((3, 5), -np.inf), 3)))
  assert not mask[:, 0].any()  # no query ever loses every key


def test_cross_attention_gradients():
  with jax.enable_x64(True):
    x = jax.random.normal(KEY, (2, 4, 8), jnp.float64)
    x_k = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 8), jnp.float64)
    enc = mult.TransformerEncoder(num_heads=2, layers=1, attn_mask=True)
    variables = to64(jit_init(enc, x, x_k, x_k))
    check_grads(jax.jit(lambda q, k: enc.apply(variables, q, k, k)), (x, x_k), order=1, modes=['rev'])


def test_attention_rejects_keys_of_another_width():
  enc = mult.TransformerEncoder(num_heads=2, layers=1)
  with pytest.raises(ValueError, match='wide'):
    jax.eval_shape(enc.init, KEY, jnp.zeros((1, 4, 8)), jnp.zeros((1, 4, 6)), jnp.zeros((1, 4, 6)))


# ---------------------------------------------------------------------------------------------
# projections and fusion head


DIMS = {'mosi': {'text': 768, 'audio': 5, 'visual': 20}, 'mosei': {'text': 768, 'audio': 74, 'visual': 35}}


@pytest.mark.parametrize('dataset,nlevels,num_outputs', [('mosi', 4, 1), ('mosei', 6, 1), ('mosi', 4, 3)])
def test_projections_and_head_full_size_shapes(dataset, nlevels, num_outputs):
  features = {m: jnp.zeros((3, 50, d)) for m, d in DIMS[dataset].items()}
  proj = imder_head.IMDerProjections()
  pv = jax.eval_shape(lambda k, f: proj.init(k, f, deterministic=True), KEY, features)
  assert shapes(pv['params']) == {
      'proj_l': {'kernel': (3, 768, 32)}, 'proj_a': {'kernel': (3, DIMS[dataset]['audio'], 32)},
      'proj_v': {'kernel': (3, DIMS[dataset]['visual'], 32)}}
  projected = jax.eval_shape(lambda v, f: proj.apply(v, f, deterministic=True), pv, features)
  assert {m: a.shape for m, a in projected.items()} == {m: (3, 48, 32) for m in features}
  head = imder_head.IMDerFusionHead(num_outputs=num_outputs, nlevels=nlevels)
  hv = jax.eval_shape(lambda k, x: head.init(k, x, deterministic=True), KEY, projected)
  p = shapes(hv['params'])
  assert len([k for k in p['trans_l_with_a'] if k.startswith('layers_')]) == nlevels
  assert len([k for k in p['trans_v_mem'] if k.startswith('layers_')]) == max(nlevels, 3)
  assert p['trans_a_mem']['layers_0']['self_attn']['in_proj_kernel'] == (64, 192)
  assert p['proj1']['kernel'] == (192, 192) and p['out_layer']['kernel'] == (192, num_outputs)
  out, aux = jax.eval_shape(lambda v, x: head.apply(v, x, deterministic=True, return_aux=True), hv, projected)
  assert out.shape == (3, num_outputs)
  assert aux['fused'].shape == (3, 192) and aux['text'].shape == (3, 64)


def test_projections_utterance_level_and_identity():
  proj = imder_head.IMDerProjections(kernel_sizes={'audio': 1})
  feats = {'audio': jnp.ones((2, 74)), 'visual': jnp.ones((2, 10, 32))}
  variables = proj.init(KEY, feats, deterministic=True)
  out = proj.apply(variables, feats, deterministic=True)
  assert out['audio'].shape == (2, 1, 32)
  np.testing.assert_array_equal(out['visual'], feats['visual'])  # already d wide: unchanged
  assert 'proj_v' not in variables['params']
  with pytest.raises(ValueError, match='kernel size 1'):
    imder_head.IMDerProjections().init(KEY, {'text': jnp.ones((2, 768))}, deterministic=True)


def small_head_inputs(dtype=jnp.float32, length=3):
  keys = jax.random.split(KEY, 3)
  return {m: jax.random.normal(k, (2, length + i, 8), dtype) for i, (m, k) in
          enumerate(zip(('text', 'audio', 'visual'), keys))}


SMALL_HEAD = dict(num_heads=2, nlevels=1, mem_layers=1)


@pytest.fixture(scope='module')
def small_head():
  """A small head with dropout everywhere, its variables, and its compiled apply (aux included)."""
  projected = small_head_inputs()
  head = imder_head.IMDerFusionHead(num_outputs=4, embed_dropout=0.3, attn_dropout=0.3, output_dropout=0.3,
                                    **SMALL_HEAD)
  variables = jit_init(head, projected, deterministic=True)
  apply = jax.jit(lambda v, x, key, deterministic: head.apply(
      v, x, deterministic=deterministic, return_aux=True, rngs={'dropout': key}), static_argnums=3)
  return head, variables, apply, projected


def test_fusion_head_small_forward_regression_and_classification(small_head):
  head, variables, apply, projected = small_head
  out, aux = apply(variables, projected, KEY, True)
  assert out.shape == (2, 4) and np.all(np.isfinite(out))
  fused = np.asarray(aux['fused'])
  np.testing.assert_array_equal(fused, np.concatenate([aux['text'], aux['audio'], aux['visual']], -1))
  # The residual output block: out_layer(h + proj2(relu(proj1(h)))).
  p = np_tree(variables['params'])
  h = np.maximum(fused @ p['proj1']['kernel'] + p['proj1']['bias'], 0)
  h = fused + h @ p['proj2']['kernel'] + p['proj2']['bias']
  np.testing.assert_allclose(out, h @ p['out_layer']['kernel'] + p['out_layer']['bias'], rtol=1e-5, atol=1e-5)
  # Regression (one output) and utterance-level inputs (length-1 sequences): shapes.
  head1 = imder_head.IMDerFusionHead(num_outputs=1, **SMALL_HEAD)
  v1 = jax.eval_shape(lambda k, x: head1.init(k, x, deterministic=True), KEY, projected)
  assert jax.eval_shape(lambda v, x: head1.apply(v, x, deterministic=True), v1, projected).shape == (2, 1)
  one = {m: x[:, :1] for m, x in projected.items()}
  assert jax.eval_shape(lambda v, x: head.apply(v, x, deterministic=True), variables, one).shape == (2, 4)


def test_fusion_head_dropout_only_when_not_deterministic(small_head):
  _, variables, apply, projected = small_head
  a, _ = apply(variables, projected, jax.random.PRNGKey(5), True)
  b, _ = apply(variables, projected, jax.random.PRNGKey(6), True)
  np.testing.assert_array_equal(a, b)
  c, _ = apply(variables, projected, jax.random.PRNGKey(5), False)
  d, _ = apply(variables, projected, jax.random.PRNGKey(6), False)
  assert not np.allclose(c, d) and not np.allclose(a, c)


def test_fusion_head_gradients():
  with jax.enable_x64(True):
    projected = small_head_inputs(jnp.float64, length=2)
    head = imder_head.IMDerFusionHead(num_outputs=2, **SMALL_HEAD)
    variables = to64(jit_init(head, projected, deterministic=True))
    names = ('text', 'audio', 'visual')
    check_grads(jax.jit(lambda *xs: head.apply(variables, dict(zip(names, xs)), deterministic=True)),
                tuple(projected[m] for m in names), order=1, modes=['rev'])


def test_pair_condition():
  cond = imder_head.PairCondition()
  a, b = jnp.ones((2, 48, 32)), jnp.zeros((2, 48, 32))
  variables = cond.init(KEY, a, b)
  assert shapes(variables['params']) == {'conv': {'kernel': (1, 64, 32), 'bias': (32,)}}
  assert cond.apply(variables, a, b).shape == (2, 48, 32)


# ---------------------------------------------------------------------------------------------
# refinement network


def test_refine_full_size_shapes():
  net = imder_refine.RefineNet()
  x = jnp.zeros((2, 48, 32))
  p = shapes(jax.eval_shape(net.init, KEY, x)['params'])
  assert p['conv_in'] == {'kernel': (1, 32, 64), 'bias': (64,)}
  assert p['conv_out'] == {'kernel': (1, 64, 32), 'bias': (32,)}
  assert len([k for k in p['group'] if k.startswith('block_')]) == 20
  assert p['group']['block_19']['ca'] == {'down': {'kernel': (1, 64, 4), 'bias': (4,)},
                                          'up': {'kernel': (1, 4, 64), 'bias': (64,)}}
  assert p['group']['conv'] == {'kernel': (3, 64, 64), 'bias': (64,)}
  assert jax.eval_shape(net.apply, jax.eval_shape(net.init, KEY, x), x).shape == x.shape


def test_refine_matches_a_reference_and_takes_length_one():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 5, 4))
  net = imder_refine.RefineNet(num_blocks=2, reduction=4)
  with jax.enable_x64(True):
    variables = to64(jit_init(net, jnp.asarray(x)))
    out = jit_apply(net, variables, jnp.asarray(x))
    one = jit_apply(net, variables, jnp.asarray(x[:, :1]))
  assert one.shape == (2, 1, 4)
  p = np_tree(variables['params'])

  def conv(z, q, pad):
    return ref_conv1d(z, q['kernel'].transpose(2, 1, 0), q['bias'], 1, pad)

  h = conv(nlc(x), p['conv_in'], 0)
  g = h
  for i in range(2):
    q = p['group'][f'block_{i}']
    r = conv(np.maximum(conv(g, q['conv1'], 1), 0), q['conv2'], 1)
    y = r.mean(-1, keepdims=True)
    y = 1 / (1 + np.exp(-conv(np.maximum(conv(y, q['ca']['down'], 0), 0), q['ca']['up'], 0)))
    g = r * y + g
  h = conv(g, p['group']['conv'], 1) + h
  np.testing.assert_allclose(np.asarray(out), nlc(conv(h, p['conv_out'], 0)), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# the parameter map: every tensor of the authors' IMDER state dict (BERT aside) has exactly one
# place in our variables, with the layout rule of the IMDer parity notes


def torch_transformer(prefix, dim, layers):
  out = {f'{prefix}.version': (1,), f'{prefix}.embed_positions._float_tensor': (1,)}  # buffers
  for i in range(layers):
    pre = f'{prefix}.layers.{i}'
    out.update({f'{pre}.self_attn.in_proj_weight': (3 * dim, dim),
                f'{pre}.self_attn.in_proj_bias': (3 * dim,),
                f'{pre}.self_attn.out_proj.weight': (dim, dim), f'{pre}.self_attn.out_proj.bias': (dim,),
                f'{pre}.fc1.weight': (4 * dim, dim), f'{pre}.fc1.bias': (4 * dim,),
                f'{pre}.fc2.weight': (dim, 4 * dim), f'{pre}.fc2.bias': (dim,)})
    out.update({f'{pre}.layer_norms.{j}.{w}': (dim,) for j in (0, 1) for w in ('weight', 'bias')})
  out.update({f'{prefix}.layer_norm.weight': (dim,), f'{prefix}.layer_norm.bias': (dim,)})
  return out


def torch_score_net(prefix):
  """Names and shapes of the authors' ScoreNet state dict, written from their __init__."""
  c = (32, 64, 128, 256)
  out = {f'{prefix}.embed.0.W': (128,), f'{prefix}.embed.1.weight': (256, 256),
         f'{prefix}.embed.1.bias': (256,)}
  out[f'{prefix}.conv1.weight'] = (32, 32, 3)
  for i in (2, 3, 4):
    out[f'{prefix}.conv{i}.weight'] = out[f'{prefix}.conv{i}_cond.weight'] = (c[i - 1], c[i - 2], 3)
  for i in (1, 2, 3, 4):
    out.update(torch_transformer(f'{prefix}.attention_{i}', c[i - 1], 2))
    out.update({f'{prefix}.dense{i}.dense.weight': (c[i - 1], 256),
                f'{prefix}.dense{i}.dense.bias': (c[i - 1],),
                f'{prefix}.gnorm{i}.weight': (c[i - 1],), f'{prefix}.gnorm{i}.bias': (c[i - 1],)})
  out[f'{prefix}.tconv4.weight'] = out[f'{prefix}.tconv4_cond.weight'] = (256, 128, 3)
  out[f'{prefix}.tconv3.weight'], out[f'{prefix}.tconv3_cond.weight'] = (256, 64, 3), (128, 64, 3)
  out[f'{prefix}.tconv2.weight'], out[f'{prefix}.tconv2_cond.weight'] = (128, 32, 3), (64, 32, 3)
  out[f'{prefix}.tconv1.weight'], out[f'{prefix}.tconv1_cond.weight'] = (64, 32, 3), (32, 32, 3)
  out[f'{prefix}.tconv1.bias'] = out[f'{prefix}.tconv1_cond.bias'] = (32,)
  for j, dense, width in ((4, 5, 128), (3, 6, 64), (2, 7, 32)):
    out.update(torch_transformer(f'{prefix}.attention_t{j}', width, 2))
    out.update({f'{prefix}.dense{dense}.dense.weight': (width, 256),
                f'{prefix}.dense{dense}.dense.bias': (width,),
                f'{prefix}.tgnorm{j}.weight': (width,), f'{prefix}.tgnorm{j}.bias': (width,)})
  out.update(torch_transformer(f'{prefix}.attention_t1', 32, 2))
  return out


def torch_imder(dims, nlevels):
  out = {}
  for m in 'lav':
    out.update(torch_score_net(f'score_{m}'))
    out[f'proj_{m}.weight'] = (32, dims[m], 3)
    out[f'rec_{m}.0.weight'], out[f'rec_{m}.0.bias'] = (64, 32, 1), (64,)
    for i in range(20):
      pre = f'rec_{m}.1.body.{i}.body'
      out.update({f'{pre}.0.weight': (64, 64, 3), f'{pre}.0.bias': (64,), f'{pre}.2.weight': (64, 64, 3),
                  f'{pre}.2.bias': (64,), f'{pre}.3.conv_du.0.weight': (4, 64, 1),
                  f'{pre}.3.conv_du.0.bias': (4,),
                  f'{pre}.3.conv_du.2.weight': (64, 4, 1), f'{pre}.3.conv_du.2.bias': (64,)})
    out[f'rec_{m}.1.body.20.weight'], out[f'rec_{m}.1.body.20.bias'] = (64, 64, 3), (64,)
    out[f'rec_{m}.2.weight'], out[f'rec_{m}.2.bias'] = (32, 64, 1), (32,)
    for n in 'lav':
      if n != m:
        out.update(torch_transformer(f'trans_{m}_with_{n}', 32, nlevels))
    out.update(torch_transformer(f'trans_{m}_mem', 64, max(nlevels, 3)))
  for pair in ('lv', 'la', 'va'):
    out[f'cat_{pair}.weight'], out[f'cat_{pair}.bias'] = (32, 64, 1), (32,)
  for name, width in (('proj1', 192), ('proj2', 192), ('out_layer', 1)):
    out[f'{name}.weight'], out[f'{name}.bias'] = (width, 192), (width,)
  return out


def transformer_target(parts):
  """Path inside our TransformerEncoder and layout rule, or None for the authors' buffers."""
  if parts[0] in ('version', 'embed_positions'):
    return None
  if parts[0] == 'layer_norm':
    return ('layer_norm', {'weight': 'scale', 'bias': 'bias'}[parts[1]]), 'copy'
  layer, rest = f'layers_{parts[1]}', parts[2:]
  if rest[0] == 'self_attn' and rest[1] == 'in_proj_weight':
    return (layer, 'self_attn', 'in_proj_kernel'), 'T'
  if rest[0] == 'self_attn' and rest[1] == 'in_proj_bias':
    return (layer, 'self_attn', 'in_proj_bias'), 'copy'
  if rest[0] == 'layer_norms':
    return (layer, f'layer_norms_{rest[1]}', {'weight': 'scale', 'bias': 'bias'}[rest[2]]), 'copy'
  linear = tuple(rest[:-1])  # self_attn.out_proj, fc1, fc2
  if rest[-1] == 'weight':
    return (layer, *linear, 'kernel'), 'T'
  return (layer, *linear, 'bias'), 'copy'


def leaf(parts, kind):
  if parts[-1] == 'bias':
    return 'bias', 'copy'
  return 'kernel', kind


def flax_target(name):
  """(module, collection, path, rule) for one tensor of the authors' IMDER state dict."""
  parts = name.split('.')
  top, rest = parts[0], parts[1:]
  if top.startswith('score_'):
    head, tail = rest[0], rest[1:]
    if head == 'embed':
      if tail[0] == '0':
        return top, 'constants', ('embed', 'fourier', 'W'), 'copy'
      key, rule = leaf(tail, 'T')
      return top, 'params', ('embed', 'dense', key), rule
    if match := re.fullmatch(r'(t?)conv(\d)(_cond)?', head):
      level = ('up' if match[1] else 'down') + match[2]
      key, rule = leaf(tail, 'conv')
      return top, 'params', (level, 'conv_cond' if match[3] else 'conv', key), rule
    if match := re.fullmatch(r'dense(\d)', head):
      n = int(match[1])
      level = f'down{n}' if n <= 4 else f'up{9 - n}'
      key, rule = leaf(tail, 'T')
      return top, 'params', (level, 'dense', key), rule
    if match := re.fullmatch(r'(t?)gnorm(\d)', head):
      level = ('up' if match[1] else 'down') + match[2]
      return top, 'params', (level, 'gnorm', {'weight': 'scale', 'bias': 'bias'}[tail[0]]), 'copy'
    match = re.fullmatch(r'attention_(t?)(\d)', head)
    target = transformer_target(tail)
    if target is None:
      return None
    level = ('up' if match[1] else 'down') + match[2]
    return top, 'params', (level, 'attention', *target[0]), target[1]
  if top.startswith('trans_'):
    target = transformer_target(rest)
    return None if target is None else ('head', 'params', (top, *target[0]), target[1])
  if top in ('proj1', 'proj2', 'out_layer'):
    key, rule = leaf(rest, 'T')
    return 'head', 'params', (top, key), rule
  if top.startswith('proj_'):
    return 'proj', 'params', (top, 'kernel'), 'conv'
  if top.startswith('cat_'):
    key, rule = leaf(rest, 'conv')
    return top, 'params', ('conv', key), rule
  if top.startswith('rec_'):
    key, rule = leaf(rest, 'conv')
    if rest[0] == '0':
      return top, 'params', ('conv_in', key), rule
    if rest[0] == '2':
      return top, 'params', ('conv_out', key), rule
    i = int(rest[2])
    if i == 20:
      return top, 'params', ('group', 'conv', key), rule
    sub = {'0': ('conv1',), '2': ('conv2',)}.get(rest[4]) or ('ca', {'0': 'down', '2': 'up'}[rest[6]])
    return top, 'params', ('group', f'block_{i}', *sub, key), rule
  raise KeyError(name)


RULES = {'copy': lambda s: s, 'T': lambda s: s[::-1], 'conv': lambda s: s[::-1]}  # conv: transpose(2, 1, 0)


def flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = tuple(v.shape)
  return out


def test_authors_state_dict_maps_one_to_one_onto_our_variables():
  dims = {'l': 768, 'a': 5, 'v': 20}
  ours = {}
  score = jax.eval_shape(score_net.ScoreNet().init, KEY, jnp.zeros((1, 48, 32)), jnp.zeros((1,)),
                         jnp.zeros((1, 48, 32)))
  refine = jax.eval_shape(imder_refine.RefineNet().init, KEY, jnp.zeros((1, 48, 32)))
  pair = jax.eval_shape(imder_head.PairCondition().init, KEY, jnp.zeros((1, 48, 32)), jnp.zeros((1, 48, 32)))
  features = {'text': jnp.zeros((1, 50, 768)), 'audio': jnp.zeros((1, 50, 5)),
              'visual': jnp.zeros((1, 50, 20))}
  proj = jax.eval_shape(lambda k: imder_head.IMDerProjections().init(k, features, deterministic=True), KEY)
  projected = {m: jnp.zeros((1, 48, 32)) for m in features}
  head = jax.eval_shape(lambda k: imder_head.IMDerFusionHead().init(k, projected, deterministic=True), KEY)
  for m in 'lav':
    ours[f'score_{m}'], ours[f'rec_{m}'] = score, refine
  for p in ('lv', 'la', 'va'):
    ours[f'cat_{p}'] = pair
  ours['proj'], ours['head'] = proj, head
  expected = {(module, col) + path: shape for module, variables in ours.items()
              for col in variables for path, shape in flat(variables[col]).items()}
  mapped = {}
  for name, shape in torch_imder(dims, nlevels=4).items():
    target = flax_target(name)
    if target is None:
      assert name.endswith(('.version', '._float_tensor'))
      continue
    module, col, path, rule = target
    key = (module, col) + path
    assert key not in mapped, f'{name} and another tensor both map to {key}'
    mapped[key] = RULES[rule](shape)
  assert set(mapped) == set(expected), (sorted(set(mapped) - set(expected))[:5],
                                        sorted(set(expected) - set(mapped))[:5])
  bad = {k: (mapped[k], expected[k]) for k in mapped if mapped[k] != expected[k]}
  assert not bad, list(bad.items())[:5]
