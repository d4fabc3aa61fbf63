"""The MulT transformer encoder (Tsai et al., ACL 2019) as the IMDer authors use it: in the fusion
head (`imder_head.py`) and, as cross-attention to the condition, at every scale of the score
network (`score_net.py`).

`TransformerEncoder` (`MultiheadAttention`, `TransformerEncoderLayer`): pre-LayerNorm layers,
sinusoidal positions (a frame whose first feature is 0 gets none), a final LayerNorm, the authors'
shifted causal mask and four dropouts. Inside, the layers run feature-first [E, B, L] so every
dense product is a row-major matmul on XLA:CPU; inputs and outputs are batch-first [B, L, C].
Parameter names and initialisation are the authors' (PyTorch's defaults, MulT's Xavier), so a
state dict maps one to one. Details, layouts and the parity mapping: docs/imder.md#model-code.
"""

from __future__ import annotations

import math
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import layers as layers_lib

Array = jax.Array
Dtype = layers_lib.Dtype

# PyTorch's default weight init for Linear / Conv1d / ConvTranspose1d: kaiming_uniform(a=sqrt(5)),
# i.e. uniform(+-1/sqrt(fan_in)); Flax's fan_in for a [k, in, out] kernel (or a transposed
# [k, out, in] one) is the same product PyTorch computes.
torch_kernel_init = nn.initializers.variance_scaling(1. / 3., 'fan_in', 'uniform')


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init: uniform(+-1/sqrt(fan_in)), fan_in of the layer's weight."""
  bound = 1. / math.sqrt(fan_in) if fan_in > 0 else 0.

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_conv1d(features: int, kernel_size: int, in_features: int, *, stride: int = 1,
                 padding: int = 0, use_bias: bool = True, dtype: Dtype | None = None,
                 name: str | None = None) -> nn.Conv:
  """A PyTorch-style Conv1d (zero padding `padding` each side) over channels-last [B, L, C]."""
  return nn.Conv(features, (kernel_size,), strides=(stride,), padding=((padding, padding),),
                 use_bias=use_bias, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(in_features * kernel_size), dtype=dtype, name=name)


def torch_linear(features: int, in_features: int, *, dtype: Dtype | None = None,
                 name: str | None = None) -> nn.Dense:
  """A Dense with PyTorch's default nn.Linear initialisation."""
  return nn.Dense(features, kernel_init=torch_kernel_init, bias_init=torch_bias_init(in_features),
                  dtype=dtype, name=name)


def _layer_norm(name: str, dtype: Dtype | None = None) -> nn.LayerNorm:
  # PyTorch's eps, and the two-pass variance PyTorch computes (statistics in >= float32).
  return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype, name=name)


def _xavier_dense(features: int, name: str, dtype: Dtype | None = None) -> nn.Dense:
  # MulT's `Linear`: Xavier-uniform weight, zero bias.
  return nn.Dense(features, kernel_init=nn.initializers.xavier_uniform(),
                  bias_init=nn.initializers.zeros, dtype=dtype, name=name)


def sinusoidal_positions(first_feature: Array, embed_dim: int) -> Array:
  """fairseq/MulT sinusoidal positional embedding [B, L, embed_dim] for padding index 0.

  `first_feature` is [B, L], the inputs' first channel: frames where it is exactly 0 are padding
  (zero embedding); the others get positions 1..L. Features are [sin(p f_0..f_{h-1}),
  cos(p f_0..f_{h-1})] (halves, not interleaved) with f_i = exp(-i log(10000) / (h - 1)),
  h = embed_dim // 2, and a zero last column when embed_dim is odd.
  """
  dtype = jnp.float32
  if jnp.issubdtype(first_feature.dtype, jnp.floating):
    dtype = jnp.promote_types(first_feature.dtype, jnp.float32)  # float32 at least, float64 kept
  length = first_feature.shape[1]
  half = embed_dim // 2
  step = math.log(10000) / (half - 1) if half > 1 else 0.
  freqs = jnp.exp(jnp.arange(half, dtype=dtype) * -step)
  present = first_feature != 0
  positions = jnp.where(present, jnp.arange(1, length + 1, dtype=dtype)[None, :], 0)
  angles = positions[..., None] * freqs
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if embed_dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 0), (0, 1)))
  return jnp.where(present[..., None], emb, jnp.zeros((), dtype))


def future_mask(query_len: int, key_len: int) -> Array:
  """Boolean [L_q, L_k]: True where MulT's `buffered_future_mask` puts -inf (key hidden).

  Key j is hidden from query i when j >= i + 1 + |L_k - L_q|; no row is ever fully hidden.
  """
  i = jnp.arange(query_len)[:, None]
  j = jnp.arange(key_len)[None, :]
  return j >= i + 1 + abs(key_len - query_len)


def _scores(q: Array, k: Array) -> Array:
  """[..., Lq, hd] x [..., Lk, hd] -> [..., Lq, Lk] (q k^T per leading index)."""
  return jnp.einsum('...qd,...kd->...qk', q, k)


def _mix(w: Array, v: Array) -> Array:
  """[..., Lq, Lk] x [..., Lk, hd] -> [..., Lq, hd] (w v per leading index)."""
  return jnp.einsum('...qk,...kd->...qd', w, v)


def _materialized_t(x: Array) -> Array:
  """x with its last two axes swapped, as a copy: the barrier keeps XLA from folding the
  transpose into the product that reads it (XLA:CPU runs a product whose operand is contracted
  over its rows as a generic dot_general, several times slower than its fast kernels)."""
  return jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2))


def _softmax(scores: Array, bias: Array | None) -> Array:
  """Softmax over the last axis in at least float32 (`bias`: 0 / -inf added first), cast back."""
  s = scores.astype(layers_lib.stat_dtype(scores.dtype))
  if bias is not None:
    s = s + bias.astype(s.dtype)
  s = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
  return (s / jnp.sum(s, axis=-1, keepdims=True)).astype(scores.dtype)


@jax.custom_vjp
def attend(q: Array, k: Array, v: Array, bias: Array | None, keep: Array | None) -> Array:
  """softmax(q k^T + bias) (* keep) v over [..., L, hd] queries, keys and values (heads and batch
  leading).

  `bias` [Lq, Lk] is 0 or -inf (the mask), `keep` [..., Lq, Lk] the dropout's scale mask (0 or
  1 / (1 - rate)) or None. The products of the plain expression; the backward is written out so
  that every product is a row-major batched matmul with no [Lq, Lk] transpose: the key and value
  gradients are computed transposed (q^T dS, dO^T W: [hd, Lk]) from small transposed copies of
  q and dO, and the softmax' backward is one reduction and one elementwise pass. XLA's autodiff
  of the plain expression contracts the [Lq, Lk] weights over their rows instead, which XLA:CPU
  runs as generic dot_generals or behind transposes of the weights.
  """
  return _attend_fwd(q, k, v, bias, keep)[0]


def _attend_fwd(q, k, v, bias, keep):
  weights = _softmax(_scores(q, k), bias)
  dropped = weights if keep is None else weights * keep.astype(weights.dtype)
  return _mix(dropped, v), (q, k, v, weights, keep)


def _attend_bwd(residuals, grad):
  q, k, v, weights, keep = residuals
  keep = None if keep is None else keep.astype(weights.dtype)
  dropped = weights if keep is None else weights * keep
  # (dO^T W)^T; the barriers keep XLA from rewriting transpose(dot) as a dot contracting W's rows.
  grad_v = jnp.swapaxes(jax.lax.optimization_barrier(_mix(_materialized_t(grad), dropped)), -1, -2)
  grad_weights = _scores(grad, v)
  if keep is not None:
    grad_weights = grad_weights * keep
  stat = layers_lib.stat_dtype(weights.dtype)
  w, gw = weights.astype(stat), grad_weights.astype(stat)
  grad_scores = (w * (gw - jnp.sum(gw * w, axis=-1, keepdims=True))).astype(q.dtype)
  grad_q = _mix(grad_scores, k)
  grad_k = jnp.swapaxes(jax.lax.optimization_barrier(_mix(_materialized_t(q), grad_scores)), -1, -2)
  return grad_q, grad_k, grad_v, None, None


attend.defvjp(_attend_fwd, _attend_bwd)


# Inside the transformer, activations are feature-first [E, B, L] (the features on the slowest
# axis, the tokens contiguous): every Dense is then W^T x, a plain matmul in the forward and in
# both gradients (the kernel gradient contracts the tokens, the last axis of both operands),
# where batch-first [B, L, E] makes XLA:CPU transpose an activation-sized operand for every
# kernel gradient. LayerNorm reduces over axis 0. The heads of the attention are gathered from
# the feature-first projections with one small transpose.


def _to_feature_first(x: Array) -> Array:
  return jnp.transpose(x, (2, 0, 1))  # [B, L, E] -> [E, B, L]


def _to_batch_first(x: Array) -> Array:
  return jnp.transpose(x, (1, 2, 0))  # [E, B, L] -> [B, L, E]


class FeatureFirstDense(nn.Module):
  """nn.Dense over feature-first [E, ...] inputs -> [features, ...]: the same `kernel` [E,
  features] and `bias` [features] (names, shapes, initialisation), computed as kernel^T x."""
  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.xavier_uniform()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', self.kernel_init, (x.shape[0], self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = _materialized_t(kernel) @ x.reshape(x.shape[0], -1)
    return (y + bias[:, None]).reshape((self.features,) + x.shape[1:])


def _xavier_dense_ff(features: int, name: str, dtype: Dtype | None = None) -> FeatureFirstDense:
  # MulT's `Linear` (Xavier-uniform weight, zero bias) over feature-first inputs.
  return FeatureFirstDense(features, dtype=dtype, name=name)


def _layer_norm_ff(name: str, dtype: Dtype | None = None) -> nn.LayerNorm:
  # `_layer_norm` over feature-first [E, B, L]: the same scale and bias [E].
  return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, reduction_axes=0, feature_axes=0,
                      dtype=dtype, name=name)


def _dropout_ff(rate: float, x: Array, deterministic: bool, length: int | None = None) -> Array:
  """`Dropout(rate)` of a feature-first [F, B, L] activation with the mask the batch-first
  [B, L, F] one draws (the same rng stream); the module is created (and named) in any case.
  x of one position ([F, B, 1]) out of `length`: the last position's mask of the full one."""
  dropout = layers_lib.Dropout(rate)
  if deterministic or (not isinstance(rate, jax.Array) and rate == 0):
    return x
  length = length or x.shape[-1]
  shape = x.shape[1:2] + (length,) + x.shape[:1]
  scale = dropout(jnp.ones(shape, x.dtype), deterministic=False)[:, length - x.shape[-1]:]
  return x * _to_feature_first(scale)


class MultiheadAttention(nn.Module):
  """MulT's multi-head attention with a packed input projection.

  q, k, v = x W_q + b_q, x_k W_k + b_k, x_v W_v + b_v with W = `in_proj_kernel` [E, 3E] split in
  (q, k, v) column thirds (PyTorch's `in_proj_weight` [3E, E] transposed); q is scaled by
  head_dim^-0.5; heads are contiguous head_dim slices of E; the softmax runs in at least float32;
  dropout on the attention weights; then `out_proj`. Keys and values must be E wide (the packed
  projection has no separate key width), which is why the score network convolves its condition
  to each scale's width before attending to it.

  Layout: batch-first [B, L, E] in and out, or with `feature_first` [E, B, L] (what
  `TransformerEncoderLayer` passes; see above). Where the keys and values are one array (and
  the queries too, for self-attention) one matmul projects them with the packed kernel's
  columns; the heads are gathered with one transpose ([B, H, L, hd]) and `attend` runs the
  products and the softmax. The same sums as the plain expression, up to float rounding.

  Attributes:
    num_heads: heads (E must be divisible by it).
    attn_dropout: dropout rate on the attention weights.
    dtype: compute dtype (None: promoted); the softmax runs in at least float32.
    feature_first: inputs and output are [E, B, L] instead of [B, L, E].
  """
  num_heads: int
  attn_dropout: float = 0.
  dtype: Dtype | None = None
  feature_first: bool = False

  @nn.compact
  def __call__(self, query: Array, key: Array, value: Array, mask: Array | None = None, *,
               deterministic: bool = True, query_length: int | None = None) -> Array:
    """query [B, Lq, E], key/value [B, Lk, E] (or [E, B, L] each), mask bool [Lq, Lk] (True =
    hidden) -> [B, Lq, E] (or [E, B, Lq]). `query_length`: the queries are the last Lq of that
    many (the attention dropout draws the full mask and keeps its last rows)."""
    same_kv = key is value
    same_qkv = same_kv and query is key
    if not self.feature_first:
      query, key, value = _to_feature_first(query), _to_feature_first(key), _to_feature_first(value)
    embed_dim = query.shape[0]
    if key.shape[0] != embed_dim or value.shape[0] != embed_dim:
      raise ValueError(f'MultiheadAttention: keys/values must be {embed_dim} wide like the queries; '
                       f'got {key.shape[0]} and {value.shape[0]}')
    if key.shape[1:] != value.shape[1:]:
      raise ValueError(f'MultiheadAttention: key {key.shape} and value {value.shape} differ')
    if embed_dim % self.num_heads:
      raise ValueError(f'embed_dim {embed_dim} is not divisible by num_heads {self.num_heads}')
    head_dim = embed_dim // self.num_heads
    kernel = self.param('in_proj_kernel', nn.initializers.xavier_uniform(), (embed_dim, 3 * embed_dim))
    bias = self.param('in_proj_bias', nn.initializers.zeros, (3 * embed_dim,))
    query, key, value, kernel, bias = nn.dtypes.promote_dtype(query, key, value, kernel, bias,
                                                              dtype=self.dtype)

    def project(x, first, parts):  # [E, B, L] -> parts x [B, H, L, hd], one matmul, one transpose
      sl = slice(first * embed_dim, (first + parts) * embed_dim)
      y = _materialized_t(kernel[:, sl]) @ x.reshape(embed_dim, -1) + bias[sl][:, None]
      y = y.reshape((parts, self.num_heads, head_dim) + x.shape[1:])
      return list(jnp.transpose(y, (0, 3, 1, 4, 2)))

    if same_qkv:  # self-attention: one matmul for q, k and v
      q, k, v = project(query, 0, 3)
    else:
      (q,) = project(query, 0, 1)
      if same_kv:
        k, v = project(key, 1, 2)
      else:
        (k,), (v,) = project(key, 1, 1), project(value, 2, 1)
    q = q * jnp.asarray(head_dim ** -0.5, q.dtype)
    attn_bias = None
    if mask is not None:
      attn_bias = jnp.where(mask, -jnp.inf, 0.).astype(layers_lib.stat_dtype(q.dtype))
    keep = None
    dropout = layers_lib.Dropout(self.attn_dropout)
    if not deterministic and (isinstance(self.attn_dropout, jax.Array) or self.attn_dropout > 0):
      # The dropout's scale mask for the [B, H, Lq, Lk] weights (the rng stream `Dropout` of
      # the weights draws).
      rows = query_length or q.shape[-2]
      keep = dropout(jnp.ones(q.shape[:-2] + (rows, k.shape[-2]), q.dtype), deterministic=False)
      keep = keep[..., rows - q.shape[-2]:, :]
    out = attend(q, k, v, attn_bias, keep)  # [B, H, Lq, hd]
    out = jnp.transpose(out, (1, 3, 0, 2)).reshape((embed_dim,) + out.shape[:1] + out.shape[2:3])
    out = _xavier_dense_ff(embed_dim, 'out_proj', self.dtype)(out)
    return out if self.feature_first else _to_batch_first(out)


class TransformerEncoderLayer(nn.Module):
  """One MulT encoder layer: pre-LayerNorm attention and a 4E ReLU feed-forward, both residual.

  x = x + drop_res(attn(LN0(x), LN0(x_k), LN0(x_v)))   (the same LN0 normalises queries, keys
  and values; self-attention when x_k is None), then x = x + drop_res(fc2(drop_relu(relu(fc1(
  LN1(x)))))). Feature-first [E, B, L] in and out (see `FeatureFirstDense`). With `last_only`
  only the last query position is computed and returned ([E, B, 1]; it still attends to every
  key), with the dropout masks of the full computation.
  """
  num_heads: int
  attn_dropout: float = 0.
  relu_dropout: float = 0.
  res_dropout: float = 0.
  attn_mask: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array, x_k: Array | None = None, x_v: Array | None = None, *,
               deterministic: bool = True, last_only: bool = False) -> Array:
    embed_dim, length = x.shape[0], x.shape[-1]
    norm0 = _layer_norm_ff('layer_norms_0', self.dtype)
    if x_k is None:  # self-attention: the keys and values are every position of LN0(x)
      x_k = x_v = norm0(x)
      query = x_k[..., -1:] if last_only else x_k
    else:
      query = norm0(x[..., -1:] if last_only else x)
      if x_k is x_v:
        x_k = x_v = norm0(x_k)
      else:
        x_k, x_v = norm0(x_k), norm0(x_v)
    residual = x[..., -1:] if last_only else x
    mask = None
    if self.attn_mask:
      mask = future_mask(length, x_k.shape[-1])
      mask = mask[-1:] if last_only else mask
    x = MultiheadAttention(self.num_heads, self.attn_dropout, self.dtype, feature_first=True,
                           name='self_attn')(query, x_k, x_v, mask, deterministic=deterministic,
                                             query_length=length)
    x = residual + _dropout_ff(self.res_dropout, x, deterministic, length)
    residual = x
    x = _layer_norm_ff('layer_norms_1', self.dtype)(x)
    x = nn.relu(_xavier_dense_ff(4 * embed_dim, 'fc1', self.dtype)(x))
    x = _dropout_ff(self.relu_dropout, x, deterministic, length)
    x = _xavier_dense_ff(embed_dim, 'fc2', self.dtype)(x)
    return residual + _dropout_ff(self.res_dropout, x, deterministic, length)


class TransformerEncoder(nn.Module):
  """MulT's TransformerEncoder over batch-first [B, L, E]: self- or cross-modal attention.

  x = sqrt(E) x_in + positions(x_in), embedding dropout (keys and values the same way, from their
  own inputs), `layers` pre-LN layers (the keys/values are the embedded inputs at every layer, not
  updated), then a final LayerNorm. E is the input width. Returns [B, L_q, E], or with
  `last_only` the last position's [B, E] alone (the last layer then computes that position
  only: what the fusion head's memories keep). The layers run feature-first [E, B, L] inside
  (`FeatureFirstDense`); one transpose in, one out.

  Attributes:
    num_heads, layers: heads per attention, number of layers.
    attn_dropout, relu_dropout, res_dropout, embed_dropout: the four MulT dropout rates.
    attn_mask: the causal/shifted mask of `future_mask` in every layer.
    dtype: compute dtype (None: promoted); the inputs are cast to it.
  """
  num_heads: int
  layers: int
  attn_dropout: float = 0.
  relu_dropout: float = 0.
  res_dropout: float = 0.
  embed_dropout: float = 0.
  attn_mask: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x_in: Array, x_in_k: Array | None = None, x_in_v: Array | None = None, *,
               deterministic: bool = True, last_only: bool = False) -> Array:
    """x_in [B, Lq, E]; x_in_k, x_in_v [B, Lk, E] (both or neither); deterministic: no dropout."""
    if (x_in_k is None) != (x_in_v is None):
      raise ValueError('TransformerEncoder: give both x_in_k and x_in_v, or neither')
    same_kv = x_in_k is x_in_v
    x_in, x_in_k, x_in_v = layers_lib.cast_inputs((x_in, x_in_k, x_in_v), self.dtype)
    embed_dim = x_in.shape[-1]
    if x_in_k is not None and (x_in_k.shape[-1] != embed_dim or x_in_v.shape[-1] != embed_dim):
      raise ValueError(f'TransformerEncoder: keys/values must be {embed_dim} wide like the queries '
                       f'(one packed projection); got {x_in_k.shape[-1]} and {x_in_v.shape[-1]}')
    dropout = layers_lib.Dropout(self.embed_dropout)

    def embed(z):
      z = math.sqrt(embed_dim) * z + sinusoidal_positions(z[..., 0], embed_dim).astype(z.dtype)
      return _to_feature_first(dropout(z, deterministic=deterministic))

    x = embed(x_in)
    x_k = x_v = None
    if x_in_k is not None:
      no_dropout = deterministic or (not isinstance(self.embed_dropout, jax.Array)
                                     and self.embed_dropout == 0)
      if same_kv and no_dropout:  # one array: embedded once, so one matmul projects k and v
        x_k = x_v = embed(x_in_k)
      else:
        x_k, x_v = embed(x_in_k), embed(x_in_v)
    for i in range(self.layers):
      x = TransformerEncoderLayer(self.num_heads, self.attn_dropout, self.relu_dropout,
                                  self.res_dropout, self.attn_mask, self.dtype, name=f'layers_{i}')(
          x, x_k, x_v, deterministic=deterministic, last_only=last_only and i == self.layers - 1)
    x = _layer_norm_ff('layer_norm', self.dtype)(x[..., -1:] if last_only else x)
    return jnp.transpose(x[..., -1]) if last_only else _to_batch_first(x)

