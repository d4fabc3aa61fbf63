"""ops/cca.py: closed-form CCA and M3ER's modality check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.ops import cca


def _paired(n=500, dx=6, dy=5, shared=3, seed=0, offset=0.):
  """x, y with `shared` planted latent directions of decreasing strength, plus private noise."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, shared)) * np.linspace(2., .7, shared)
  x = z @ rng.standard_normal((shared, dx)) + rng.standard_normal((n, dx))
  y = z @ rng.standard_normal((shared, dy)) + rng.standard_normal((n, dy))
  return x + offset, y - offset


def _corr(a, b):
  return float(np.corrcoef(a, b)[0, 1])


def test_fit_cca_agrees_with_sklearn():
  cross_decomposition = pytest.importorskip('sklearn.cross_decomposition')
  x, y = _paired()
  ref = cross_decomposition.CCA(n_components=3, scale=False, max_iter=5000, tol=1e-12).fit(x, y)
  xs, ys = ref.transform(x, y)
  fit = cca.fit_cca(x, y, num_components=3, ridge=1e-8)
  u, v = map(np.asarray, cca.project(fit, x.astype(np.float32), y.astype(np.float32)))
  for k in range(3):
    assert abs(_corr(xs[:, k], ys[:, k]) - fit['correlations'][k]) < 1e-3
    assert abs(_corr(u[:, k], v[:, k]) - fit['correlations'][k]) < 1e-3
    assert abs(_corr(u[:, k], xs[:, k])) > 0.999
    assert abs(_corr(v[:, k], ys[:, k])) > 0.999


def test_training_variates_are_whitened_with_diagonal_cross_covariance():
  x, y = _paired(n=2000, dx=8, dy=7)
  fit = cca.fit_cca(x, y, num_components=100, ridge=1e-7)
  k = len(fit['correlations'])
  assert k == 7 and fit['proj_x'].shape == (8, 7) and fit['proj_y'].shape == (7, 7)
  assert np.all(np.diff(fit['correlations']) <= 0) and np.all(fit['correlations'] >= 0)
  u, v = map(np.asarray, cca.project(fit, x, y))
  cov = np.cov(np.concatenate([u, v], 1).T)
  np.testing.assert_allclose(cov[:k, :k], np.eye(k), atol=1e-5)  # up to the ridge and float32
  np.testing.assert_allclose(cov[k:, k:], np.eye(k), atol=1e-5)
  np.testing.assert_allclose(cov[:k, k:], np.diag(fit['correlations']), atol=1e-5)
  # the default ridge shrinks a direction of variance s by s / (s + ridge * mean variance)
  u = np.asarray(cca.project(cca.fit_cca(x, y), x, y)[0])
  np.testing.assert_allclose(np.cov(u.T), np.eye(k), atol=3e-3)


def test_number_of_components_is_capped_by_dims_and_samples():
  x, y = _paired(n=4, dx=6, dy=5)
  assert cca.fit_cca(x, y, num_components=100)['correlations'].shape == (3,)  # N - 1
  x, y = _paired(n=50, dx=6, dy=5)
  assert cca.fit_cca(x, y, num_components=2)['proj_x'].shape == (6, 2)


def test_a_constant_offset_changes_only_the_means():
  x, y = _paired()
  a, b = cca.fit_cca(x, y), cca.fit_cca(*_paired(offset=50.))
  for key in ('proj_x', 'proj_y', 'correlations'):
    np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(b['mean_x'] - a['mean_x'], 50., rtol=1e-5)
  x2, y2 = _paired(seed=1)
  for weighting in ('canonical', 'none'):
    np.testing.assert_allclose(cca.sample_correlation(a, x2, y2, weighting),
                               cca.sample_correlation(b, x2 + 50., y2 - 50., weighting), atol=1e-4)


def test_sample_correlation_separates_matched_pairs_from_noise():
  x, y = _paired(n=2000, dx=10, dy=8, shared=3)
  fit = cca.fit_cca(x[:1500], y[:1500])
  rng = np.random.default_rng(5)
  noise = rng.standard_normal(y[1500:].shape) * y.std(0) + y.mean(0)
  matched = np.asarray(cca.sample_correlation(fit, x[1500:], y[1500:]))
  unrelated = np.asarray(cca.sample_correlation(fit, x[1500:], noise))
  assert matched.mean() > 0.6 and abs(unrelated.mean()) < 0.1
  assert np.all(np.abs(matched) <= 1 + 1e-6)
  flat = np.asarray(cca.sample_correlation(fit, x[1500:], y[1500:], weighting='none'))
  assert flat.mean() < matched.mean()  # the noise directions dilute the unweighted score
  typical = np.asarray(cca.typicality(fit, y[1500:], which='y')).mean()
  assert 0.8 < typical < 1.2
  assert np.asarray(cca.typicality(fit, y[1500:] + 5 * noise, which='y')).mean() > 5 * typical


def test_zero_variates_score_zero_not_nan():
  x, y = _paired()
  fit = cca.fit_cca(x, y)
  for weighting in ('canonical', 'none'):
    score = cca.sample_correlation(fit, fit['mean_x'][None], y[:1], weighting)
    assert np.asarray(score).tolist() == [0.]


def test_cca_functions_are_batched_and_jit_able():
  x, y = _paired()
  fit = jax.tree.map(jnp.asarray, cca.fit_cca(x, y, num_components=4))
  xb = jnp.asarray(x[:24].reshape(2, 12, 6), jnp.float32)
  yb = jnp.asarray(y[:24].reshape(2, 12, 5), jnp.float32)
  u, v = jax.jit(cca.project)(fit, xb, yb)
  assert u.shape == v.shape == (2, 12, 4)
  score = jax.jit(cca.sample_correlation, static_argnames='weighting')(fit, xb, yb)
  assert score.shape == (2, 12)
  np.testing.assert_allclose(score.reshape(-1), cca.sample_correlation(fit, x[:24], y[:24]),
                             atol=1e-5)
  assert jax.jit(cca.typicality, static_argnames='which')(fit, yb, which='y').shape == (2, 12)


@pytest.mark.parametrize('x, y, match', [
    (np.zeros((10, 3)), np.zeros((9, 2)), 'same samples'),
    (np.zeros((1, 3)), np.zeros((1, 2)), 'too few samples'),
    (np.full((10, 3), np.nan), np.zeros((10, 2)), r'x \[N, d_x\] has non-finite'),
    (np.zeros(10), np.zeros((10, 2)), r'x must be \[N, d_x\]'),
    (np.ones((10, 3)), np.random.default_rng(0).random((10, 2)), 'x has no variance'),
])
def test_fit_cca_rejects_bad_input(x, y, match):
  with pytest.raises(ValueError, match=match):
    cca.fit_cca(x, y)
