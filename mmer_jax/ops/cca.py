"""Canonical correlation analysis in closed form, and M3ER's per-sample agreement score.

M3ER (Mittal et al., AAAI 2020) checks whether two modalities of a sample agree ("modality
check"): both are projected on the canonical directions fitted on the training set. `fit_cca` is
the textbook closed form (a relative ridge, inverse square roots by `eigh`, one SVD) in numpy
float64 on the whole training set at once, with the signs of the directions fixed so that a refit
gives the same checkpoint. The fit is a dict of float32 numpy arrays (`mean_x`, `mean_y`,
`proj_x`, `proj_y`, `correlations`), so it can sit in a parameter tree. `project`,
`sample_correlation` and `typicality` are jax.numpy, jit-able and batched over any leading axes,
their matmuls at HIGHEST precision.

The formulas, and why not scikit-learn's CCA: docs/m3er.md#cca-in-closed-form-opsccapy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Cca = dict  # {'mean_x', 'mean_y', 'proj_x', 'proj_y', 'correlations'}

_HIGHEST = jax.lax.Precision.HIGHEST
_EPS = 1e-12  # guards the score's divisions: a zero vector scores 0, not nan


def check_paired(x, y, *, names: tuple[str, str] = ('x', 'y'),
                 min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """x [N, dx] and y [N, dy] as float64 numpy arrays, or a ValueError naming what is wrong."""
  out = []
  for name, a in zip(names, (x, y)):
    a = np.asarray(a, np.float64)
    if a.ndim != 2:
      raise ValueError(f'{name} must be [N, d_{name}] (one row per sample), got shape {a.shape}')
    if not np.all(np.isfinite(a)):
      raise ValueError(f'{name} [N, d_{name}] has non-finite values (nan or inf) at rows '
                       f'{np.flatnonzero(~np.all(np.isfinite(a), axis=1))[:5].tolist()}...')
    out.append(a)
  x, y = out
  if len(x) != len(y):
    raise ValueError(f'{names[0]} and {names[1]} must hold the same samples row by row: '
                     f'{names[0]} has shape {x.shape}, {names[1]} {y.shape}')
  if len(x) < min_samples:
    raise ValueError(f'too few samples: {names[0]} and {names[1]} have {len(x)} rows, '
                     f'need at least {min_samples}')
  return x, y


def _ridged(cov: np.ndarray, ridge: float, name: str) -> np.ndarray:
  """cov + ridge * trace(cov) / d * I (a ridge relative to the mean variance)."""
  scale = np.trace(cov) / len(cov)
  if scale <= 0:
    raise ValueError(f'{name} has no variance: every row is the same')
  return cov + ridge * scale * np.eye(len(cov))


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
  """C^-1/2 of a symmetric positive (semi)definite matrix, eigenvalues floored at eps * max."""
  vals, vecs = np.linalg.eigh(cov)
  vals = np.maximum(vals, np.finfo(np.float64).eps * len(cov) * vals.max())
  return (vecs / np.sqrt(vals)) @ vecs.T


def fit_cca(x, y, num_components: int = 100, ridge: float = 1e-4) -> Cca:
  """Canonical directions of paired features x [N, dx], y [N, dy] (see the module docstring).

  Args:
    x: [N, dx] features of one modality, one row per training sample.
    y: [N, dy] features of the other modality, the same samples in the same order.
    num_components: at most this many pairs of directions (fewer when dx, dy or N - 1 is smaller).
    ridge: added to each covariance as ridge * trace(C) / d * I (relative to the mean variance).

  Returns:
    {'mean_x' [dx], 'mean_y' [dy], 'proj_x' [dx, k], 'proj_y' [dy, k], 'correlations' [k]},
    float32 numpy arrays, correlations in decreasing order.
  """
  if int(num_components) != num_components or num_components < 1:
    raise ValueError(f'num_components must be a positive integer, got {num_components!r}')
  if not ridge >= 0:
    raise ValueError(f'ridge must be >= 0, got {ridge!r}')
  x, y = check_paired(x, y)
  n, dx = x.shape
  dy = y.shape[1]
  k = min(int(num_components), dx, dy, n - 1)
  mean_x, mean_y = x.mean(0), y.mean(0)
  xc, yc = x - mean_x, y - mean_y
  cxx = _ridged(xc.T @ xc / (n - 1), ridge, 'x')
  cyy = _ridged(yc.T @ yc / (n - 1), ridge, 'y')
  cxy = xc.T @ yc / (n - 1)
  wx, wy = _inverse_sqrt(cxx), _inverse_sqrt(cyy)
  u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
  proj_x, proj_y = wx @ u[:, :k], wy @ vt[:k].T
  rows = np.argmax(np.abs(proj_x), axis=0)
  sign = np.where(proj_x[rows, np.arange(k)] < 0, -1.0, 1.0)
  f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
  return {'mean_x': f32(mean_x), 'mean_y': f32(mean_y), 'proj_x': f32(proj_x * sign),
          'proj_y': f32(proj_y * sign), 'correlations': f32(s[:k])}


def _variates(cca: Cca, features: Array, which: str) -> Array:
  if which not in ('x', 'y'):
    raise ValueError(f"which must be 'x' or 'y', got {which!r}")
  mean, proj = cca[f'mean_{which}'], cca[f'proj_{which}']
  return jnp.matmul(features - mean, proj, precision=_HIGHEST)


def project(cca: Cca, x: Array, y: Array) -> tuple[Array, Array]:
  """Canonical variates u = (x - mean_x) @ proj_x and v = (y - mean_y) @ proj_y, both [..., k]."""
  return _variates(cca, x, 'x'), _variates(cca, y, 'y')


def sample_correlation(cca: Cca, x: Array, y: Array, weighting: str = 'canonical') -> Array:
  """Per-sample agreement of x [..., dx] and y [..., dy] in the canonical space: [...] in [-1, 1].

  weighting='none': the Pearson correlation of the two k-vectors u and v, across components (the
  paper's literal reading). Every component counts the same, including those whose canonical
  correlation is ~0: on them u and v are unrelated even for a clean pair, so with many
  components the score of clean pairs sinks towards 0.

  weighting='canonical': the cosine of u and v in the metric weighted by the canonical
  correlations, sum_k rho_k u_k v_k / sqrt(sum_k rho_k u_k^2 * sum_k rho_k v_k^2): the noise
  directions (rho ~ 0) get no weight, the shared ones the most.

  A zero vector (or, for 'none', a constant one) scores 0.
  """
  u, v = project(cca, x, y)
  if weighting == 'none':
    u = u - jnp.mean(u, axis=-1, keepdims=True)
    v = v - jnp.mean(v, axis=-1, keepdims=True)
    w = jnp.ones_like(cca['correlations'])
  elif weighting == 'canonical':
    w = jnp.maximum(jnp.asarray(cca['correlations']), 0.)
  else:
    raise ValueError(f"weighting must be 'canonical' or 'none', got {weighting!r}")
  num = jnp.sum(w * u * v, axis=-1)
  den2 = jnp.sum(w * u * u, axis=-1) * jnp.sum(w * v * v, axis=-1)
  return num * jax.lax.rsqrt(jnp.maximum(den2, _EPS ** 2))


def typicality(cca: Cca, features: Array, which: str = 'x') -> Array:
  """Mean squared canonical variate, mean_k u_k^2 [...], of features of modality `which`.

  The variates are whitened on the training set, so this is about 1 for training-like inputs and
  large for inputs off the training distribution (noise-corrupted, zero-filled): a tie-break when
  two modality pairs agree about as well.
  """
  return jnp.mean(jnp.square(_variates(cca, features, which)), axis=-1)
