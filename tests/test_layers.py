"""models/layers.py: `Dropout` is flax's for a Python rate and takes a traced (vmapped) one."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.models import layers


def _dropout(module, x, key, deterministic=False):
  return module.apply({}, x, deterministic=deterministic, rngs={'dropout': key})


@pytest.mark.parametrize('rate', [0.0, 0.3, 0.5, 1.0])
def test_dropout_is_flax_dropout_for_a_python_rate(rate):
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 16))
  key = jax.random.PRNGKey(3)
  ours = _dropout(layers.Dropout(rate), x, key)
  np.testing.assert_array_equal(ours, _dropout(nn.Dropout(rate), x, key))
  # A traced rate draws the same mask (and rate 0 keeps everything, rate 1 nothing).
  traced = jax.jit(lambda r: _dropout(layers.Dropout(r), x, key))(jnp.float32(rate))
  np.testing.assert_allclose(traced, ours, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(traced) == 0, np.asarray(ours) == 0)


def test_dropout_takes_vmapped_rates():
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 32))
  key = jax.random.PRNGKey(5)
  rates = jnp.array([0.0, 0.25, 0.5, 1.0])
  out = jax.vmap(lambda r: _dropout(layers.Dropout(r), x, key))(rates)
  np.testing.assert_array_equal(out[0], x)
  np.testing.assert_array_equal(out[3], 0.0)
  for i in (1, 2):  # the kept share is near 1 - rate, the kept values scaled by 1 / (1 - rate)
    kept = np.asarray(out[i]) != 0
    assert abs(kept.mean() - (1 - rates[i])) < 0.05
    np.testing.assert_allclose(np.asarray(out[i])[kept], np.asarray(x)[kept] / (1 - rates[i]),
                               rtol=1e-6)
  # Deterministic: the input itself; rate 1: finite gradients.
  np.testing.assert_array_equal(
      jax.vmap(lambda r: _dropout(layers.Dropout(r), x, key, deterministic=True))(rates)[2], x)
  grad = jax.grad(lambda x: _dropout(layers.Dropout(jnp.float32(1.0)), x, key).sum())(x)
  assert bool(jnp.isfinite(grad).all())


def test_a_model_takes_a_traced_dropout_rate():
  """A model built inside a vmap over its dropout rate (a hyperparameter sweep) trains; the
  auto-names and the parameters are those of the Python-rate model."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
  head = layers.MLPHead(hidden=(16, 16), num_outputs=3, dropout=0.5)
  params = head.init(jax.random.PRNGKey(1), x, deterministic=True)
  key = jax.random.PRNGKey(2)

  def apply(rate):
    return head.clone(dropout=rate).apply(params, x, deterministic=False, rngs={'dropout': key})
  out = jax.vmap(apply)(jnp.array([0.5, 0.0]))
  np.testing.assert_allclose(out[0], apply(0.5), rtol=1e-6)
  np.testing.assert_allclose(out[1], head.apply(params, x, deterministic=True), rtol=1e-6)
