"""Tests for MMIN's parity harness (mmer_jax/parity/mmin.py): the weight map, the permutation.

Without PyTorch: the map from our MMIN parameters to the authors' state_dict names and shapes
(read from their `models/networks/*.py`) round-trips exactly. With torch installed and a checkout
of AIM3-RUC/MMIN named by MMER_AUTHORS_MMIN, the full parity run must pass (skipped otherwise).
The harness's shared parts: test_layouts.py (each layout against PyTorch's equations written in
numpy), test_tolerances.py (the comparison), test_checkout.py.
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


def test_joint_permutation_maps_their_order_to_ours():
  # theirs: (audio, text, visual) blocks of 2
  theirs = np.array(['a0', 'a1', 't0', 't1', 'v0', 'v1'])
  perm = mmin_parity.joint_permutation(('audio', 'visual', 'text'), 2)
  assert list(theirs[perm]) == ['a0', 'a1', 'v0', 'v1', 't0', 't1']


_REPO = os.environ.get('MMER_AUTHORS_MMIN')
_WHY = ('needs PyTorch (pip install -e .[parity])' if importlib.util.find_spec('torch') is None
        else 'needs a checkout of AIM3-RUC/MMIN (master) named by MMER_AUTHORS_MMIN' if not _REPO else '')


@pytest.mark.skipif(bool(_WHY), reason=_WHY or 'runs')
def test_full_parity_with_the_authors_code():
  report = mmin_parity.run(_REPO, precisions=('float32', 'float64'), seed=0, batch_size=8)
  bad = {p: [k for k, v in report[p].items() if not v['ok']] for p in ('float32', 'float64')}
  assert report['ok'], bad
