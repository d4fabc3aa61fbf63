"""M3ER's proxy features: regenerate a sample's ineffective modality j from its effective one i.

M3ER (Mittal et al., AAAI 2020) replaces a modality that failed the modality check by a proxy:
the K training samples of modality i nearest to the query, the ridge coefficients that best
rebuild the query from them, and the same coefficients applied to those neighbours mapped to j by
a ridge linear map fitted on the training pairs. `regenerate` does this for a batch at once under
jit (one distance matmul, `lax.top_k`, a batched K x K solve, HIGHEST precision);
`regenerate_numpy_loop` is the same algorithm one sample at a time in numpy (the reference). A
bank may be padded to a fixed size: `bank_mask` [N] keeps padding rows from counting.

The formulas and the padding: docs/m3er.md#proxy-regeneration-opsproxypy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmer_jax.ops import cca as cca_lib

Array = jax.Array
LinearMap = dict  # {'kernel': [Di, Dj], 'bias': [Dj]}

_HIGHEST = jax.lax.Precision.HIGHEST
_TINY = 1e-12  # keeps the solve regular when every neighbour is the zero vector


def fit_linear_map(source, target, ridge: float = 1e-3) -> LinearMap:
  """T(a) = a @ kernel + bias, ridge least squares of target [N, Dj] on source [N, Di].

  Numpy float64 on the centred data (so the bias is not shrunk): kernel = (S + ridge *
  trace(S) / Di * I)^-1 Xc^T Yc with S = Xc^T Xc, bias = mean(target) - mean(source) @ kernel.
  The ridge is relative to the mean variance of the source, as in `cca.fit_cca`.

  Returns:
    {'kernel': [Di, Dj], 'bias': [Dj]}, float32 numpy arrays.
  """
  if not ridge >= 0:
    raise ValueError(f'ridge must be >= 0, got {ridge!r}')
  x, y = cca_lib.check_paired(source, target, names=('source', 'target'))
  mean_x, mean_y = x.mean(0), y.mean(0)
  xc, yc = x - mean_x, y - mean_y
  s = xc.T @ xc
  scale = np.trace(s) / len(s)
  if scale <= 0:
    raise ValueError('source has no variance: every row is the same')
  kernel = np.linalg.solve(s + ridge * scale * np.eye(len(s)), xc.T @ yc)
  bias = mean_y - mean_x @ kernel
  return {'kernel': kernel.astype(np.float32), 'bias': bias.astype(np.float32)}


def _check_static(num_neighbors: int, ridge: float, bank_rows: int) -> None:
  if int(num_neighbors) != num_neighbors or not 1 <= num_neighbors <= bank_rows:
    raise ValueError(f'num_neighbors must be an integer in [1, {bank_rows}] (the bank rows), '
                     f'got {num_neighbors!r}')
  if isinstance(ridge, (int, float)) and not ridge > 0:
    raise ValueError(f'ridge must be > 0 (the K x K solve needs it), got {ridge!r}')


def _solve_coefficients(neighbours: Array, query: Array, ridge) -> Array:
  """w [B, K] with (G + ridge * (trace(G) / K + tiny) I) w = N q, G = N N^T; N [B, K, D]."""
  k = neighbours.shape[-2]
  gram = jnp.einsum('bkd,bld->bkl', neighbours, neighbours, precision=_HIGHEST)
  rhs = jnp.einsum('bkd,bd->bk', neighbours, query, precision=_HIGHEST)
  scale = jnp.trace(gram, axis1=-2, axis2=-1) / k + _TINY
  gram = gram + (ridge * scale)[:, None, None] * jnp.eye(k, dtype=gram.dtype)
  return spd_solve(gram, rhs)


def spd_solve(a: Array, b: Array) -> Array:
  """x [B, K] with a x = b for symmetric positive definite a [B, K, K]: Cholesky, then the two
  triangular solves, unrolled over the (small, static) K in plain jnp ops.

  Not `jnp.linalg.solve`: on CPU its batched LAPACK kernel spreads the batch over XLA's intra-op
  thread pool and waits for it, and two such solves running at once (one per source modality)
  deadlocked a 2-thread pool (jaxlib 0.10.2, seen in training runs). Plain ops cannot, and they
  compile the same way on every backend.
  """
  k = a.shape[-1]
  chol = [[None] * k for _ in range(k)]  # chol[i][j], i >= j: [B]
  for j in range(k):
    diag = a[:, j, j] - sum((chol[j][m] ** 2 for m in range(j)), jnp.zeros_like(a[:, j, j]))
    chol[j][j] = jnp.sqrt(diag)
    for i in range(j + 1, k):
      off = a[:, i, j] - sum((chol[i][m] * chol[j][m] for m in range(j)), jnp.zeros_like(diag))
      chol[i][j] = off / chol[j][j]
  y = []
  for i in range(k):  # L y = b
    y.append((b[:, i] - sum((chol[i][m] * y[m] for m in range(i)), jnp.zeros_like(b[:, i]))
              ) / chol[i][i])
  x = [None] * k
  for i in reversed(range(k)):  # L^T x = y
    x[i] = (y[i] - sum((chol[m][i] * x[m] for m in range(i + 1, k)), jnp.zeros_like(y[i]))
            ) / chol[i][i]
  return jnp.stack(x, axis=-1)


def _nearest(query: Array, bank: Array, num_neighbors: int, ridge,
             bank_mask: Array | None) -> tuple[Array, Array, Array]:
  """(indices [B, K], weights [B, K], neighbours [B, K, D]): see `neighbour_coefficients`."""
  _check_static(num_neighbors, ridge, bank.shape[0])
  bank_sq = jnp.sum(jnp.square(bank), axis=-1)
  score = 2 * jnp.matmul(query, bank.T, precision=_HIGHEST) - bank_sq  # ||q||^2 - distance
  if bank_mask is not None:
    score = jnp.where(bank_mask, score, -jnp.inf)
  _, indices = jax.lax.top_k(score, num_neighbors)
  neighbours = bank[indices]
  if bank_mask is not None:
    neighbours = jnp.where(bank_mask[indices][..., None], neighbours, 0)
  return indices, _solve_coefficients(neighbours, query, ridge), neighbours


def neighbour_coefficients(query: Array, bank: Array, *, num_neighbors: int = 10,
                           ridge: float = 1e-3,
                           bank_mask: Array | None = None) -> tuple[Array, Array]:
  """The K nearest bank rows of each query and the coefficients that rebuild it from them.

  Args:
    query: [B, D] features of the effective modality.
    bank: [N, D] the training set's features of the same modality.
    num_neighbors: K (static under jit).
    ridge: lam, relative to the neighbours' mean squared norm.
    bank_mask: optional [N] bool, False for padding rows that must never be chosen.

  Returns:
    (indices [B, K] int32 into the bank, nearest first; weights [B, K], 0 for a padding row that
    had to be taken because fewer than K rows are real).
  """
  indices, weights, _ = _nearest(query, bank, num_neighbors, ridge, bank_mask)
  return indices, weights


def rebuild(query: Array, bank: Array, *, num_neighbors: int = 10, ridge: float = 1e-3,
            bank_mask: Array | None = None) -> tuple[Array, Array]:
  """(sum_k w_k n_k [B, Di], sum_k w_k [B, 1]): each query rebuilt from its K nearest bank rows.

  The part of `regenerate` that does not depend on the target modality, so one rebuild serves
  every target (`map_rebuilt`).
  """
  _, weights, neighbours = _nearest(query, bank, num_neighbors, ridge, bank_mask)
  rebuilt = jnp.einsum('bk,bkd->bd', weights, neighbours, precision=_HIGHEST)
  return rebuilt, jnp.sum(weights, axis=-1, keepdims=True)


def map_rebuilt(rebuilt: Array, weight_sum: Array, linear_map: LinearMap) -> Array:
  """sum_k w_k T(n_k) = (sum_k w_k n_k) @ kernel + (sum_k w_k) bias: the mapped partners."""
  return (jnp.matmul(rebuilt, linear_map['kernel'], precision=_HIGHEST)
          + weight_sum * linear_map['bias'])


@functools.partial(jax.jit, static_argnames=('num_neighbors',))
def regenerate(query: Array, bank: Array, linear_map: LinearMap, *, num_neighbors: int = 10,
               ridge: float = 1e-3, bank_mask: Array | None = None) -> Array:
  """Proxy features of modality j [B, Dj] for queries of modality i [B, Di] (module docstring).

  `bank` [N, Di] holds the training set's modality-i features, `linear_map` = fit_linear_map(
  bank, the paired modality-j features). Compiled once per shape and num_neighbors.
  """
  rebuilt, weight_sum = rebuild(query, bank, num_neighbors=num_neighbors, ridge=ridge,
                                bank_mask=bank_mask)
  return map_rebuilt(rebuilt, weight_sum, linear_map)


def regenerate_numpy_loop(query, bank, linear_map: LinearMap, *, num_neighbors: int = 10,
                          ridge: float = 1e-3, bank_mask=None) -> np.ndarray:
  """`regenerate`, one sample at a time in plain numpy: the reference for tests and benchmarks.

  Computes in the inputs' dtype (float32 inputs: float32 throughout, like the compiled version).
  """
  query, bank = np.asarray(query), np.asarray(bank)
  _check_static(num_neighbors, ridge, bank.shape[0])
  k = num_neighbors
  kernel, bias = np.asarray(linear_map['kernel']), np.asarray(linear_map['bias'])
  dtype = np.result_type(query, bank, kernel)
  bank_sq = np.sum(np.square(bank), axis=-1)
  valid = np.ones(len(bank), bool) if bank_mask is None else np.asarray(bank_mask, bool)
  out = np.empty((len(query), kernel.shape[1]), dtype)
  for b, q in enumerate(query):
    score = np.where(valid, 2 * (bank @ q) - bank_sq, -np.inf)
    top = np.argpartition(-score, k - 1)[:k]
    top = top[np.argsort(-score[top], kind='stable')]
    nbrs = np.where(valid[top][:, None], bank[top], 0).astype(dtype)
    gram = nbrs @ nbrs.T
    scale = np.trace(gram) / k + _TINY
    w = np.linalg.solve(gram + dtype.type(ridge * scale) * np.eye(k, dtype=dtype), nbrs @ q)
    out[b] = (w @ nbrs) @ kernel + w.sum() * bias
  return out
