"""Tests for the parity harness (mmer_jax/parity): the weight map, the layouts, the comparison.

Without PyTorch: the map from our MMIN parameters to the authors' state_dict names and shapes
(read from their `models/networks/*.py`) round-trips exactly, and each layout conversion is
checked against PyTorch's equations written in numpy. With torch installed and a checkout of
AIM3-RUC/MMIN named by MMER_AUTHORS_MMIN, the full parity run must pass (skipped otherwise).
"""

from __future__ import annotations

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax import train
from mmer_jax.models import encoders
from mmer_jax.parity import tolerances
from mmer_jax.parity import layouts
from mmer_jax.parity import mmin as mmin_parity

H = 128  # the authors' embedding size, as in configs/mmin_iemocap.py


def _their_shapes(dims, blocks=5):
  """The authors' state_dict names and shapes for CAP_mmin.sh's networks (their code, read)."""
  shapes = {}
  for net, dim in (('netA', dims['audio']), ('netV', dims['visual'])):
    shapes[net] = {'rnn.weight_ih_l0': (4 * H, dim), 'rnn.weight_hh_l0': (4 * H, H),
                   'rnn.bias_ih_l0': (4 * H,), 'rnn.bias_hh_l0': (4 * H,)}
  shapes['netL'] = {**{f'conv{i + 1}.weight': (128, 1, k, dims['text']) for i, k in enumerate((3, 4, 5))},
                    **{f'conv{i + 1}.bias': (128,) for i in range(3)},
                    'embd.0.weight': (H, 384), 'embd.0.bias': (H,)}
  ae = {'transition.0.weight': (384, 384), 'transition.0.bias': (384,),
        'transition.2.weight': (384, 384), 'transition.2.bias': (384,)}
  for k in range(blocks):
    for i, (o, n) in enumerate(((256, 384), (128, 256), (64, 128))):
      ae[f'encoder_{k}.{2 * i}.weight'], ae[f'encoder_{k}.{2 * i}.bias'] = (o, n), (o,)
    for i, (o, n) in enumerate(((128, 64), (256, 128), (384, 256))):
      ae[f'decoder_{k}.{2 * i}.weight'], ae[f'decoder_{k}.{2 * i}.bias'] = (o, n), (o,)
  shapes['netAE'] = shapes['netAE_cycle'] = ae
  shapes['netC'] = {'module.0.weight': (128, 320), 'module.0.bias': (128,), 'module.3.weight': (128, 128),
                    'module.3.bias': (128,), 'fc_out.weight': (4, 128), 'fc_out.bias': (4,)}
  for net in ('netA', 'netV', 'netL'):
    shapes[f'teacher.{net}'] = shapes[net]
  return shapes


@pytest.fixture(scope='module')
def parity_setup():
  config = mmin_parity.parity_config(batch_size=4)
  run = train.Run(config, devices=jax.devices()[:1])
  batch = mmin_parity.parity_batch(run, seed=0)
  params = mmin_parity.jittered_params(run, batch, seed=0)
  return config, run, batch, params


def test_weight_map_names_shapes_and_round_trip(parity_setup):
  config, run, _, params = parity_setup
  modalities = run.method.modalities
  entries = mmin_parity.entries_for(config, modalities)
  perm = mmin_parity.joint_permutation(modalities, H)
  theirs = mmin_parity.to_authors(params, entries, perm)
  dims = {m: run.spec.modalities[m].dim for m in modalities}
  assert {n: {k: v.shape for k, v in sd.items()} for n, sd in theirs.items()} == _their_shapes(dims)
  back = mmin_parity.from_authors(theirs, entries, perm, lstm_biases=2)
  assert set(back) == set(params) - {'teacher_tables'}
  for path, leaf in jax.tree_util.tree_flatten_with_path(back)[0]:
    ours = params
    for k in path:
      ours = ours[k.key]
    np.testing.assert_array_equal(leaf, ours)  # exact, leaf by leaf
  assert len(jax.tree_util.tree_leaves(back)) == len(jax.tree_util.tree_leaves(params))


def test_weight_map_with_one_lstm_bias_round_trips():
  cell = nn.OptimizedLSTMCell(4)
  p = cell.init(jax.random.PRNGKey(0), cell.initialize_carry(jax.random.PRNGKey(1), (2, 3)),
                jnp.ones((2, 3)))['params']
  p = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.1, p)
  torch_layout = layouts.lstm_from_flax(p)
  assert torch_layout['weight_ih_l0'].shape == (16, 3) and torch_layout['weight_hh_l0'].shape == (16, 4)
  back = layouts.lstm_to_flax(*(torch_layout[k] for k in ('weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0')))
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, jax.tree_util.tree_map(np.asarray, p))


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _torch_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
  """PyTorch's nn.LSTM equations (its documentation), gates i, f, g, o."""
  i, f, g, o = np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
  c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
  return _sigmoid(o) * np.tanh(c), c


@pytest.mark.parametrize('biases', [1, 2])
def test_lstm_layouts_compute_pytorchs_equations(biases):
  rng = np.random.default_rng(0)
  d, hid, batch = 3, 4, 2
  w_ih, w_hh = rng.standard_normal((4 * hid, d)), rng.standard_normal((4 * hid, hid))
  b_ih, b_hh = rng.standard_normal(4 * hid), rng.standard_normal(4 * hid)
  x, h, c = rng.standard_normal((batch, d)), rng.standard_normal((batch, hid)), rng.standard_normal((batch, hid))
  want_h, want_c = _torch_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh)
  if biases == 1:
    cell, p = nn.OptimizedLSTMCell(hid, param_dtype=jnp.float64), layouts.lstm_to_flax(w_ih, w_hh, b_ih, b_hh)
  else:
    cell = encoders.PairedBiasLSTMCell(hid, param_dtype=jnp.float64)
    p = layouts.paired_lstm_to_flax(w_ih, w_hh, b_ih, b_hh)
  with jax.enable_x64(True):
    (new_c, new_h), _ = cell.apply({'params': p}, (jnp.asarray(c), jnp.asarray(h)), jnp.asarray(x))
  np.testing.assert_allclose(new_h, want_h, rtol=1e-12)
  np.testing.assert_allclose(new_c, want_c, rtol=1e-12)


def test_time_conv_layout_is_pytorchs_full_width_conv2d():
  rng = np.random.default_rng(1)
  out, k, d, t = 5, 3, 4, 7
  w, b = rng.standard_normal((out, 1, k, d)), rng.standard_normal(out)
  x = rng.standard_normal((2, t, d))
  # Conv2d over [B, 1, T, D] with a [k, D] kernel, no padding: out[b, o, s] = sum w[o,0] * x[b, s:s+k] + b
  want = np.stack([np.einsum('okd,bkd->bo', w[:, 0], x[:, s:s + k]) + b for s in range(t - k + 1)], axis=1)
  with jax.enable_x64(True):
    got = nn.Conv(out, (k,), padding='VALID', param_dtype=jnp.float64).apply(
        {'params': layouts.time_conv_to_flax(w, b)}, jnp.asarray(x))
  np.testing.assert_allclose(got, want, rtol=1e-12)
  back = layouts.time_conv_from_flax(layouts.time_conv_to_flax(w, b))
  np.testing.assert_array_equal(back['weight'], w)


def test_joint_permutation_maps_their_order_to_ours():
  # theirs: (audio, text, visual) blocks of 2
  theirs = np.array(['a0', 'a1', 't0', 't1', 'v0', 'v1'])
  perm = mmin_parity.joint_permutation(('audio', 'visual', 'text'), 2)
  assert list(theirs[perm]) == ['a0', 'a1', 'v0', 'v1', 't0', 't1']


def test_difference_is_relative_to_the_largest_magnitude():
  d = tolerances.difference([1.0, 1e-9], [1.0 + 1e-6, 0.0], tolerance=1e-5)
  assert d['max_abs'] == pytest.approx(1e-6) and d['max_rel'] == pytest.approx(1e-6 / (1 + 1e-6))
  assert d['ok']
  assert not tolerances.difference([2.0], [1.0], tolerance=0.5)['ok']
  assert not tolerances.difference([np.nan], [1.0], tolerance=0.5)['ok']
  with pytest.raises(ValueError, match='shapes differ'):
    tolerances.difference(np.zeros(2), np.zeros(3), 1.0)
  rep = tolerances.report('x', {'float32': {'a': {'ok': True}}, 'float64': {'b': {'ok': False}}})
  assert rep['ok'] is False


def test_missing_checkout_is_a_clear_error(tmp_path):
  from mmer_jax.parity import checkout  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit, match='lacks'):
    with checkout.on_path(str(tmp_path), mmin_parity.REQUIRED):
      pass


_REPO = os.environ.get('MMER_AUTHORS_MMIN')
_WHY = ('needs PyTorch (pip install -e .[parity])' if importlib.util.find_spec('torch') is None
        else 'needs a checkout of AIM3-RUC/MMIN (master) named by MMER_AUTHORS_MMIN' if not _REPO else '')


@pytest.mark.skipif(bool(_WHY), reason=_WHY or 'runs')
def test_full_parity_with_the_authors_code():
  report = mmin_parity.run(_REPO, precisions=('float32', 'float64'), seed=0, batch_size=8)
  bad = {p: [k for k, v in report[p].items() if not v['ok']] for p in ('float32', 'float64')}
  assert report['ok'], bad
