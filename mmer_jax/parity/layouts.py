"""PyTorch <-> Flax layouts of the layers the authors' networks use (numpy in, numpy out).

  nn.Linear        weight [out, in], bias [out]        Dense kernel [in, out], bias [out]
  nn.LSTM (1 layer) weight_ih [4H, D], weight_hh [4H, H], bias_ih, bias_hh [4H], gates (i, f, g, o)
                   OptimizedLSTMCell: ii/if/ig/io kernel [D, H] (no bias), hi/hf/hg/ho kernel
                   [H, H] + bias [H]; the same gates and equations. PyTorch's two biases add up
                   to Flax's one: to Flax b = bias_ih + bias_hh; back, bias_ih = b, bias_hh = 0.
                   A gradient maps with `gradient=True`: d/db = d/dbias_ih (= d/dbias_hh).
                   With `lstm_biases=2` (`PairedBiasLSTMCell`) the layout is PyTorch's own:
                   input/hidden Dense kernels [D, 4H] / [H, 4H] and biases [4H], one to one.
  nn.Conv2d over (time, features) with a full-width kernel [O, 1, k, D] (a 1-D convolution over
                   time, the authors' TextCNN)   Conv kernel [k, D, O], bias [O]
"""

from __future__ import annotations

import numpy as np

LSTM_GATES = ('i', 'f', 'g', 'o')  # PyTorch's order of the 4H rows


def linear_to_flax(weight, bias) -> dict:
  return {'kernel': np.asarray(weight).T.copy(), 'bias': np.asarray(bias).copy()}


def linear_from_flax(p) -> dict:
  return {'weight': np.asarray(p['kernel']).T.copy(), 'bias': np.asarray(p['bias']).copy()}


def lstm_to_flax(weight_ih, weight_hh, bias_ih, bias_hh, *, gradient: bool = False) -> dict:
  w_ih, w_hh = np.split(np.asarray(weight_ih), 4), np.split(np.asarray(weight_hh), 4)
  bias = np.asarray(bias_ih) if gradient else np.asarray(bias_ih) + np.asarray(bias_hh)
  b = np.split(bias, 4)
  out = {}
  for k, gate in enumerate(LSTM_GATES):
    out[f'i{gate}'] = {'kernel': w_ih[k].T.copy()}
    out[f'h{gate}'] = {'kernel': w_hh[k].T.copy(), 'bias': b[k].copy()}
  return out


def lstm_from_flax(p) -> dict:
  w_ih = np.concatenate([np.asarray(p[f'i{g}']['kernel']).T for g in LSTM_GATES])
  w_hh = np.concatenate([np.asarray(p[f'h{g}']['kernel']).T for g in LSTM_GATES])
  b = np.concatenate([np.asarray(p[f'h{g}']['bias']) for g in LSTM_GATES])
  return {'weight_ih_l0': w_ih, 'weight_hh_l0': w_hh, 'bias_ih_l0': b, 'bias_hh_l0': np.zeros_like(b)}


def paired_lstm_to_flax(weight_ih, weight_hh, bias_ih, bias_hh) -> dict:
  return {'input': linear_to_flax(weight_ih, bias_ih), 'hidden': linear_to_flax(weight_hh, bias_hh)}


def paired_lstm_from_flax(p) -> dict:
  i, h = linear_from_flax(p['input']), linear_from_flax(p['hidden'])
  return {'weight_ih_l0': i['weight'], 'weight_hh_l0': h['weight'], 'bias_ih_l0': i['bias'],
          'bias_hh_l0': h['bias']}


def time_conv_to_flax(weight, bias) -> dict:
  return {'kernel': np.asarray(weight)[:, 0].transpose(1, 2, 0).copy(), 'bias': np.asarray(bias).copy()}


def time_conv_from_flax(p) -> dict:
  return {'weight': np.asarray(p['kernel']).transpose(2, 0, 1)[:, None].copy(),
          'bias': np.asarray(p['bias']).copy()}
