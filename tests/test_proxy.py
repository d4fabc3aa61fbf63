"""ops/proxy.py: M3ER's proxy features, regenerated from the nearest training samples."""

import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.ops import proxy


def _bank(n=300, di=12, dj=7, seed=0):
  rng = np.random.default_rng(seed)
  source = rng.standard_normal((n, di)).astype(np.float32) + 1.
  a = rng.standard_normal((di, dj)).astype(np.float32)
  c = rng.standard_normal(dj).astype(np.float32)
  return source, source @ a + c, a, c


@pytest.mark.parametrize('k', [1, 5, 10])
def test_batched_regenerate_equals_the_numpy_loop(k):
  source, target, _, _ = _bank()
  rng = np.random.default_rng(1)
  target = target + rng.standard_normal(target.shape).astype(np.float32)
  tmap = proxy.fit_linear_map(source, target)
  query = rng.standard_normal((33, 12)).astype(np.float32) + 1.
  got = proxy.regenerate(query, source, tmap, num_neighbors=k, ridge=1e-2)
  ref = proxy.regenerate_numpy_loop(query, source, tmap, num_neighbors=k, ridge=1e-2)
  assert got.shape == ref.shape == (33, 7) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
  idx, w = proxy.neighbour_coefficients(query, source, num_neighbors=k, ridge=1e-2)
  assert idx.shape == w.shape == (33, k)
  d2 = np.sum((query[:, None] - source[None]) ** 2, -1)
  np.testing.assert_array_equal(idx, np.argsort(d2, axis=1)[:, :k])


def test_a_bank_row_with_one_neighbour_gives_its_mapped_partner():
  source, target, _, _ = _bank()
  tmap = proxy.fit_linear_map(source, target + np.random.default_rng(2).random(target.shape))
  rows = np.array([0, 17, 299])
  got = proxy.regenerate(source[rows], source, tmap, num_neighbors=1, ridge=1e-6)
  expected = source[rows] @ tmap['kernel'] + tmap['bias']
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_planted_linear_relation_is_recovered():
  source, target, a, c = _bank(n=400)
  tmap = proxy.fit_linear_map(source[:300], target[:300], ridge=1e-8)
  np.testing.assert_allclose(tmap['kernel'], a, atol=1e-3)
  np.testing.assert_allclose(tmap['bias'], c, atol=1e-3)
  # held-out queries in the span of their neighbours (K > D) are rebuilt, then mapped. The
  # coefficients need not sum to 1 (no such constraint in M3ER), so the bias enters scaled by
  # sum(w): the relation is recovered exactly when it is linear (c = 0).
  target = source @ a
  tmap = proxy.fit_linear_map(source[:300], target[:300], ridge=1e-8)
  got = proxy.regenerate(source[300:], source[:300], tmap, num_neighbors=30, ridge=1e-6)
  np.testing.assert_allclose(got, target[300:], atol=1e-4 * np.abs(target).max())


def test_bank_mask_excludes_rows():
  source, target, _, _ = _bank()
  tmap = proxy.fit_linear_map(source, target)
  query = source[:20]
  mask = np.ones(len(source), bool)
  mask[:20] = False  # each query's own row, and any other of the first 20
  idx, _ = proxy.neighbour_coefficients(query, source, num_neighbors=4, bank_mask=mask)
  assert np.all(np.asarray(idx) >= 20)
  got = proxy.regenerate(query, source, tmap, num_neighbors=4, bank_mask=mask)
  ref = proxy.regenerate_numpy_loop(query, source, tmap, num_neighbors=4, bank_mask=mask)
  np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
  # fewer real rows than K: the padding rows fill in with weight 0 and add nothing
  few = np.zeros(len(source), bool)
  few[[3, 8]] = True
  idx, w = proxy.neighbour_coefficients(query, source, num_neighbors=4, bank_mask=few)
  assert np.all(np.isin(np.asarray(idx)[:, :2], [3, 8])) and np.all(np.asarray(w)[:, 2:] == 0)
  got = proxy.regenerate(query, source, tmap, num_neighbors=4, bank_mask=few)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(
      got, proxy.regenerate_numpy_loop(query, source, tmap, num_neighbors=4, bank_mask=few),
      rtol=1e-3, atol=1e-3 * np.abs(got).max())


def test_proxy_rejects_bad_arguments():
  source, target, _, _ = _bank(n=20)
  tmap = proxy.fit_linear_map(source, target)
  with pytest.raises(ValueError, match='num_neighbors'):
    proxy.regenerate(source, source, tmap, num_neighbors=21)
  with pytest.raises(ValueError, match='ridge must be > 0'):
    proxy.regenerate_numpy_loop(source, source, tmap, num_neighbors=2, ridge=0.)
  with pytest.raises(ValueError, match='same samples'):
    proxy.fit_linear_map(source, target[:-1])
