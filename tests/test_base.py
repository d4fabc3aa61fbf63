"""Tests for methods/base.py: the per-example keys of `example_rngs`."""

from __future__ import annotations

import jax
import numpy as np

from mmer_jax.methods import base


def test_example_rngs_depend_on_the_example_not_the_batch():
  rng = jax.random.PRNGKey(3)
  a = np.asarray(base.example_rngs(rng, {'index': np.array([4, 7, 9, -1])}))
  b = np.asarray(base.example_rngs(rng, {'index': np.array([9, 4])}))
  np.testing.assert_array_equal(a[0], b[1])
  np.testing.assert_array_equal(a[2], b[0])
  assert not np.array_equal(a[0], a[1])
  c = np.asarray(base.example_rngs(jax.random.PRNGKey(4), {'index': np.array([4])}))
  assert not np.array_equal(a[0], c[0])  # and on the evaluation's key
