"""Tests for the IMDer parity harness (mmer_jax/parity/imder.py).

Without PyTorch: the weight map gives exactly the names and shapes of the authors' IMDER state
dict (written below from their `trains/singleTask/model/{scoremodel,rcan,imder}.py` and
`trains/subNets/transformers_encoder/`) and round-trips every tensor; the layouts compute
PyTorch's Linear / Conv1d / ConvTranspose1d (written in numpy); and the noise the harness feeds
to the authors' Euler-Maruyama loop and loss is the noise our sampler and loss use (a numpy
rendering of their loops against ours). With torch: the noise feeding itself; with torch and a
checkout of mdswyz/IMDer named by MMER_AUTHORS_IMDER, the full parity run (skipped otherwise).
"""

from __future__ import annotations

import importlib.util
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.diffusion import sde as sde_lib
from mmer_jax.parity import imder as parity
from test_imder_models import ref_conv1d, ref_conv_transpose1d  # numpy PyTorch layers

MOSI_DIMS = (768, 5, 20)  # their config.json: datasetCommonParams.mosi.aligned.feature_dims
_HAS_TORCH = importlib.util.find_spec('torch') is not None


# -- the authors' state dict, written from their code -------------------------------------------


def _transformer(prefix, dim, layers):
  """MulT TransformerEncoder(embed_dim=dim, layers): parameters (buffers version and
  embed_positions._float_tensor left out)."""
  out = {}
  for i in range(layers):
    p = f'{prefix}.layers.{i}'
    out.update({f'{p}.self_attn.in_proj_weight': (3 * dim, dim), f'{p}.self_attn.in_proj_bias': (3 * dim,),
                f'{p}.self_attn.out_proj.weight': (dim, dim), f'{p}.self_attn.out_proj.bias': (dim,),
                f'{p}.fc1.weight': (4 * dim, dim), f'{p}.fc1.bias': (4 * dim,),
                f'{p}.fc2.weight': (dim, 4 * dim), f'{p}.fc2.bias': (dim,)})
    for j in (0, 1):
      out.update({f'{p}.layer_norms.{j}.weight': (dim,), f'{p}.layer_norms.{j}.bias': (dim,)})
  out.update({f'{prefix}.layer_norm.weight': (dim,), f'{prefix}.layer_norm.bias': (dim,)})
  return out


def _score_net(p):
  """scoremodel.ScoreNet(channels=[32, 64, 128, 256], embed_dim=256)."""
  c = (32, 64, 128, 256)
  out = {f'{p}.embed.0.W': (128,), f'{p}.embed.1.weight': (256, 256), f'{p}.embed.1.bias': (256,),
         f'{p}.conv1.weight': (32, 32, 3)}
  for i in (2, 3, 4):
    out[f'{p}.conv{i}.weight'] = out[f'{p}.conv{i}_cond.weight'] = (c[i - 1], c[i - 2], 3)
  for i in (1, 2, 3, 4):
    out.update(_transformer(f'{p}.attention_{i}', c[i - 1], 2))
    out.update({f'{p}.dense{i}.dense.weight': (c[i - 1], 256), f'{p}.dense{i}.dense.bias': (c[i - 1],),
                f'{p}.gnorm{i}.weight': (c[i - 1],), f'{p}.gnorm{i}.bias': (c[i - 1],)})
  # ConvTranspose1d weights are [in, out, k]; tconv3/2/1 read [h, skip] (twice the width).
  out[f'{p}.tconv4.weight'] = out[f'{p}.tconv4_cond.weight'] = (256, 128, 3)
  out[f'{p}.tconv3.weight'], out[f'{p}.tconv3_cond.weight'] = (256, 64, 3), (128, 64, 3)
  out[f'{p}.tconv2.weight'], out[f'{p}.tconv2_cond.weight'] = (128, 32, 3), (64, 32, 3)
  out[f'{p}.tconv1.weight'], out[f'{p}.tconv1_cond.weight'] = (64, 32, 3), (32, 32, 3)
  out[f'{p}.tconv1.bias'] = out[f'{p}.tconv1_cond.bias'] = (32,)
  for j, dense, width in ((4, 5, 128), (3, 6, 64), (2, 7, 32)):
    out.update(_transformer(f'{p}.attention_t{j}', width, 2))
    out.update({f'{p}.dense{dense}.dense.weight': (width, 256), f'{p}.dense{dense}.dense.bias': (width,),
                f'{p}.tgnorm{j}.weight': (width,), f'{p}.tgnorm{j}.bias': (width,)})
  out.update(_transformer(f'{p}.attention_t1', 32, 2))
  return out


def _rec(p):
  """nn.Sequential(Conv1d(32, 64, 1), rcan.Group(64, num_blocks=20, reduction=16), Conv1d(64, 32, 1))."""
  out = {f'{p}.0.weight': (64, 32, 1), f'{p}.0.bias': (64,), f'{p}.2.weight': (32, 64, 1), f'{p}.2.bias': (32,),
         f'{p}.1.body.20.weight': (64, 64, 3), f'{p}.1.body.20.bias': (64,)}
  for i in range(20):
    b = f'{p}.1.body.{i}.body'
    out.update({f'{b}.0.weight': (64, 64, 3), f'{b}.0.bias': (64,), f'{b}.2.weight': (64, 64, 3),
                f'{b}.2.bias': (64,), f'{b}.3.conv_du.0.weight': (4, 64, 1), f'{b}.3.conv_du.0.bias': (4,),
                f'{b}.3.conv_du.2.weight': (64, 4, 1), f'{b}.3.conv_du.2.bias': (64,)})
  return out


def their_imder(dims, nlevels):
  """imder.IMDER(args) with use_bert False, d = 32, regression (output_dim 1)."""
  out = {}
  for m, d in zip('lav', dims):
    out.update(_score_net(f'score_{m}'))
    out.update(_rec(f'rec_{m}'))
    out[f'proj_{m}.weight'] = (32, d, 3)  # bias=False
    for n in 'lav':
      if n != m:
        out.update(_transformer(f'trans_{m}_with_{n}', 32, nlevels))
    out.update(_transformer(f'trans_{m}_mem', 64, max(nlevels, 3)))
  for pair in ('lv', 'la', 'va'):
    out[f'cat_{pair}.weight'], out[f'cat_{pair}.bias'] = (32, 64, 1), (32,)
  for name, width in (('proj1', 192), ('proj2', 192), ('out_layer', 1)):
    out[f'{name}.weight'], out[f'{name}.bias'] = (width, 192), (width,)
  return out


@pytest.fixture(scope='module')
def full_variables():
  """Our variables at the authors' sizes (MOSI), every leaf distinct random numbers (traced
  shapes, no network computed)."""
  shapes = jax.eval_shape(lambda k: parity.init_variables(k, feature_dims=MOSI_DIMS, nlevels=4),
                          jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def test_weight_map_gives_the_authors_names_and_shapes(full_variables):
  theirs = parity.to_authors(full_variables)
  assert {k: v.shape for k, v in theirs.items()} == their_imder(MOSI_DIMS, nlevels=4)


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_weight_map_round_trips_exactly(full_variables):
  theirs = parity.to_authors(full_variables)
  _assert_trees_equal(parity.from_authors(theirs), full_variables)
  # Their buffers (and a missing gradient, None) are skipped.
  with_buffers = {**theirs, 'score_a.attention_1.version': np.ones(1), 'trans_l_mem.embed_positions._float_tensor':
                  np.ones(1), 'score_l.embed.0.W': None}
  back = parity.from_authors(with_buffers)
  assert 'score_text' not in back['constants']


@pytest.mark.parametrize('module,theirs', [('score_audio', 'score_a'), ('refine_visual', 'rec_v'),
                                           ('cat_lv', 'cat_lv')])
def test_weight_map_of_one_submodule(full_variables, module, theirs):
  """Their submodule's own names (model.score_a.named_parameters()) map to our module alone."""
  full = parity.to_authors(full_variables)
  sub = {k.removeprefix(theirs + '.'): v for k, v in full.items() if k.startswith(theirs + '.')}
  back = parity.from_authors(sub, module)
  want = {c: full_variables[c][module] for c in full_variables if module in full_variables[c]}
  _assert_trees_equal(back, want)
  with pytest.raises(KeyError):
    parity.from_authors({'bogus.weight': np.ones((2, 2))}, module)


def test_fourier_frequencies_map_to_the_constants_collection():
  assert parity.our_path('score_v.embed.0.W') == ('constants', ('score_visual', 'embed', 'fourier', 'W'))
  assert parity.authors_name('constants', ('score_text', 'embed', 'fourier', 'W')) == 'score_l.embed.0.W'
  assert parity.our_path('score_a.dense5.dense.weight') == ('params', ('score_audio', 'up4', 'dense', 'kernel'))
  assert parity.our_path('score_a.tgnorm2.weight') == ('params', ('score_audio', 'up2', 'gnorm', 'scale'))
  assert parity.our_path('score_a.attention_t1.version') is None
  assert parity.our_path('rec_l.1.body.20.bias') == ('params', ('refine_text', 'group', 'conv', 'bias'))


# -- layouts: PyTorch's layers in numpy ---------------------------------------------------------


def test_layouts_compute_pytorchs_layers():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 6, 4))  # ours [B, L, C]
  with jax.enable_x64(True):
    # Linear [out, in]
    w, b = rng.standard_normal((5, 4)), rng.standard_normal(5)
    got = nn.Dense(5, param_dtype=jnp.float64).apply(
        {'params': {'kernel': parity.to_torch_layout(w), 'bias': b}}, x)
    np.testing.assert_allclose(got, x @ w.T + b, rtol=1e-12)
    # Conv1d [out, in, k], stride 2, padding 1 (the U-Net's down convs)
    w = rng.standard_normal((5, 4, 3))
    got = nn.Conv(5, (3,), strides=(2,), padding=((1, 1),), param_dtype=jnp.float64).apply(
        {'params': {'kernel': parity.to_torch_layout(w), 'bias': b}}, x)
    np.testing.assert_allclose(got, parity.ncl(ref_conv1d(parity.ncl(x), w, b, 2, 1)), rtol=1e-12)
    # ConvTranspose1d [in, out, k], stride 2, padding 1, output_padding 1 (the up convs)
    w = rng.standard_normal((4, 5, 3))
    got = nn.ConvTranspose(5, (3,), strides=(2,), padding=((1, 2),), transpose_kernel=True,
                           param_dtype=jnp.float64).apply(
        {'params': {'kernel': parity.to_torch_layout(w), 'bias': b}}, x)
    np.testing.assert_allclose(got, parity.ncl(ref_conv_transpose1d(parity.ncl(x), w, b, 2, 1, 1)), rtol=1e-12)
  for shape in ((3,), (3, 4), (3, 4, 5)):
    a = rng.standard_normal(shape)
    np.testing.assert_array_equal(parity.to_torch_layout(parity.to_torch_layout(a)), a)


# -- the noise fed to their loops is the noise ours uses -----------------------------------------


def _their_std(t, sigma=parity.SIGMA):
  return np.sqrt((sigma ** (2 * t) - 1.) / 2. / np.log(sigma))


def _toy_network(x, t, c):
  """A conditional 'score' that uses all three inputs (numpy and jnp alike)."""
  return -x / (1. + t[:, None, None]) + 0.3 * c * c


def test_em_noise_is_what_our_sampler_uses():
  """Their loop (scoremodel.Euler_Maruyama_sampler, in numpy) fed the harness's noise in the
  order it asks for it equals our sampler with perturbed_condition_score."""
  batch, steps = 3, 6
  with jax.enable_x64(True):
    condition = np.random.default_rng(2).standard_normal((batch, 8, 4))
    noise = parity.em_noise(jax.random.PRNGKey(3), condition, steps, np.float64)
    sde = sde_lib.VESDE(parity.SIGMA)
    ours = jax.jit(lambda c, i, s: parity.em_sample(_toy_network, sde, c, i, s, noise['cond_key']))(
        condition, noise['init'], noise['steps'])
  times = np.linspace(1., parity.EM_EPS, steps)
  np.testing.assert_allclose(noise['times'], times, rtol=1e-15)
  step = times[0] - times[1]
  x = noise['init'] * _their_std(np.ones(batch))[:, None, None]
  for i, s in enumerate(times):  # their loop: randn for the condition, randn_like for the step
    t = np.full(batch, s)
    g = parity.SIGMA ** t
    cond = condition + noise['conditions'][i] * _their_std(t)[:, None, None]
    mean = x + (g ** 2)[:, None, None] * _toy_network(x, t, cond) * step
    x = mean + np.sqrt(step) * g[:, None, None] * noise['steps'][i]
  np.testing.assert_allclose(np.asarray(ours), mean, rtol=1e-11, atol=1e-11)


def test_score_loss_is_the_mean_of_their_loss_fn():
  """scoremodel.loss_fn in numpy (the condition perturbed with the sample's z) at our t, z."""
  rng = np.random.default_rng(4)
  x, condition = rng.standard_normal((2, 3, 8, 4))
  with jax.enable_x64(True):
    sde = sde_lib.VESDE(parity.SIGMA)
    from mmer_jax.diffusion import losses  # pylint: disable=g-import-not-at-top
    t, z = losses.draw_perturbation(jax.random.PRNGKey(5), jnp.asarray(x), sde, eps=parity.DSM_EPS)
    ours = parity.score_loss(_toy_network, sde, jnp.asarray(x), t, z, jnp.asarray(condition))
  t, z = np.asarray(t), np.asarray(z)
  std = _their_std(t)[:, None, None]
  score = _toy_network(x + z * std, t, condition + z * std)
  want = np.mean(np.sum((score * std + z) ** 2, axis=(1, 2)))
  np.testing.assert_allclose(float(ours), want, rtol=1e-12)
  assert math.isfinite(want)


@pytest.mark.skipif(not _HAS_TORCH, reason='needs PyTorch (pip install -e .[parity])')
def test_fed_noise_and_the_uniform_preimage():
  import torch  # pylint: disable=g-import-not-at-top
  a, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
  with parity.fed_noise(torch, randn=[a], randn_like=[b]):
    np.testing.assert_array_equal(torch.randn(2, 3).numpy(), a)
    np.testing.assert_array_equal(torch.randn_like(torch.ones(2, 3)).numpy(), b)
  with pytest.raises(AssertionError, match='unused'):
    with parity.fed_noise(torch, randn=[a]):
      pass
  with pytest.raises(AssertionError, match='the harness has'):
    with parity.fed_noise(torch, randn=[a]):
      torch.randn(3, 2)
  for dtype in (np.float32, np.float64):
    t = np.random.default_rng(6).uniform(parity.DSM_EPS, 1., 1000).astype(dtype)
    t[:3] = (parity.DSM_EPS, 1., 0.5)
    u = parity.uniform_preimage(torch, t, parity.DSM_EPS, dtype)
    np.testing.assert_array_equal((torch.from_numpy(u) * (1. - parity.DSM_EPS) + parity.DSM_EPS).numpy(), t)


# -- the full check --------------------------------------------------------------------------------

_REPO = os.environ.get('MMER_AUTHORS_IMDER')
_WHY = ('needs PyTorch (pip install -e .[parity])' if not _HAS_TORCH
        else 'needs a checkout of mdswyz/IMDer named by MMER_AUTHORS_IMDER' if not _REPO else '')


@pytest.mark.skipif(bool(_WHY), reason=_WHY or 'runs')
def test_full_parity_with_the_authors_code():
  report = parity.run(_REPO, precisions=('float32', 'float64'), seed=0, batch_size=8)
  bad = {p: [k for k, v in report[p].items() if not v['ok']] for p in ('float32', 'float64')}
  assert report['ok'], bad


def test_composite_layout_stacks_the_per_modality_networks():
  """The parity layout (score_<m>, refine_<m>) and models/imder.py's stacked one are the same
  variables: same structure and shapes after `to_composite`, and a round trip is exact."""
  from mmer_jax.methods import imder as imder_method  # pylint: disable=g-import-not-at-top
  from mmer_jax.models import imder as imder_model  # pylint: disable=g-import-not-at-top
  from mmer_jax.models import imder_refine, score_net  # pylint: disable=g-import-not-at-top
  modalities = ('audio', 'visual', 'text')
  small = dict(score_channels=(4, 8), time_embed_dim=4, refine_blocks=1, refine_reduction=2)
  model = imder_model.IMDer(modalities=modalities, d_model=4, num_heads=2, nlevels=1, **small)
  features = {m: jnp.zeros((1, 6, 3)) for m in modalities}
  composite = jax.eval_shape(lambda k: model.init(
      k, features, jnp.ones((1, 3), bool), imder_method.INDEX,
      method=imder_model.IMDer.init_all), jax.random.key(0))
  x = jnp.zeros((1, 4, 4))
  score = score_net.ScoreNet((4, 8), 4, num_heads=2, enc_groups=(4, 8), dec_groups=(4,))
  refine = imder_refine.RefineNet(num_blocks=1, reduction=2)
  per = {'params': {}, 'constants': {}}
  for m in modalities:
    v = jax.eval_shape(lambda k: score.init(k, x, jnp.ones((1,)), x), jax.random.key(0))
    per['params'][f'score_{m}'], per['constants'][f'score_{m}'] = v['params'], v['constants']
    per['params'][f'refine_{m}'] = jax.eval_shape(lambda k: refine.init(k, x), jax.random.key(0))['params']
  zeros = lambda t: jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), t)  # noqa: E731
  stacked = parity.to_composite(zeros(per), modalities)
  shapes = lambda t: jax.tree_util.tree_map(lambda a: tuple(a.shape), t)  # noqa: E731
  for collection in ('params', 'constants'):
    for kind in ('score', 'refine'):
      if kind in stacked[collection]:
        assert shapes(stacked[collection][kind]) == shapes(composite[collection][kind])
  rng = np.random.default_rng(0)
  filled = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape), zeros(per))
  back = parity.from_composite(parity.to_composite(filled, modalities), modalities)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, filled)
