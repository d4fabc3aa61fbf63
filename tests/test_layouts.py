"""parity/layouts.py: each PyTorch <-> Flax layout computes PyTorch's equations (in numpy)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.models import encoders
from mmer_jax.parity import layouts


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
