"""Small layers and mask helpers shared by every model: the MLP head, masked softmax, masks,
dropout with a traced rate, and the compute-dtype helpers of mixed precision.

`modality_mask` is the boolean [B, 3] mask in (audio, visual, text) order (True = present) that
`missing.py` draws; these helpers turn it into per-modality columns and mask-consistent inputs.

Mixed precision (`config.precision`, docs/training.md): every model takes a `dtype` attribute,
the dtype its activations and matmuls are computed in (Flax's `dtype`), and keeps its parameters
in float32 (`param_dtype`). `dtype=None`, the default, is Flax's own rule: compute in the
promotion of the inputs' and the parameters' dtypes (float32 in training, float64 in the float64
gradient check). A model casts its floating inputs to `dtype` at its entry (`cast_inputs`);
softmax and normalisation statistics are computed in at least float32 (`stat_dtype`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.data.schema import MODALITIES

Array = jax.Array
Dtype = Any


def cast_inputs(tree, dtype: Dtype | None):
  """The floating arrays of `tree` cast to the compute dtype (unchanged for `dtype=None`);
  integer and boolean leaves (lengths, masks) are left as they are."""
  if dtype is None:
    return tree

  def cast(x):
    x = jnp.asarray(x)
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree_util.tree_map(cast, tree)


def stat_dtype(dtype) -> Dtype:
  """The dtype of softmax / normalisation statistics for values of `dtype`: at least float32
  (bfloat16 values get float32 statistics, float64 ones keep float64)."""
  return jnp.promote_types(dtype, jnp.float32)


class Dropout(nn.Dropout):
  """`nn.Dropout` that also takes a traced rate (a jax Array, e.g. a vmapped hyperparameter).

  For a Python (or NumPy) rate it is `nn.Dropout` itself: the same output for the same rng.
  For a jax Array it skips `nn.Dropout`'s Python comparisons (`rate == 0.0`, `rate == 1.0`),
  which a tracer cannot answer, and always draws the mask: keep with probability 1 - rate,
  scale by 1 / (1 - rate), so rate 0 keeps everything and rate 1 gives zeros (with finite
  gradients). `deterministic` stays a Python bool. The class keeps the name `Dropout`, so
  auto-named instances are `Dropout_0`, ... as before and draw the same rngs.
  """

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng: jax.Array | None = None):
    if not isinstance(self.rate, jax.Array):
      return super().__call__(inputs, deterministic, rng)
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    if deterministic:
      return inputs
    keep_prob = 1.0 - self.rate
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    broadcast_shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      broadcast_shape[dim] = 1
    mask = jax.random.bernoulli(rng, p=keep_prob, shape=broadcast_shape)
    mask = jnp.broadcast_to(mask, inputs.shape)
    safe = jnp.where(keep_prob > 0, keep_prob, 1.0)  # rate 1: no mask bit is set; no 0/0 in grads
    return jax.lax.select(mask, inputs / safe.astype(inputs.dtype), jnp.zeros_like(inputs))


def modality_column(mask: Array | None, name: str, batch: int) -> Array:
  """Boolean [B]: whether `name` is present per sample (all True without a mask)."""
  if mask is None:
    return jnp.ones((batch,), bool)
  return jnp.asarray(mask, bool)[..., MODALITIES.index(name)]


def mask_features(features: Mapping[str, Array], mask: Array | None, modalities: Sequence[str]) -> dict:
  """Zeroes the input features of each sample's missing modalities (mask-consistent inputs).

  `where`, not a product, so NaN garbage in a missing modality cannot leak into values or gradients.
  """
  out = {}
  for m in modalities:
    x = features[m]
    present = modality_column(mask, m, x.shape[0])
    present = present.reshape(present.shape + (1,) * (x.ndim - 1))
    out[m] = jnp.where(present, x, jnp.zeros((), x.dtype))
  return out


def zero_missing(embeddings: Mapping[str, Array], present: Mapping[str, Array]) -> dict:
  """Replaces the [B, E] embedding of each sample's missing modalities by exact zeros."""
  return {m: jnp.where(present[m][:, None], e, jnp.zeros((), e.dtype)) for m, e in embeddings.items()}


def joint(embeddings: Mapping[str, Array], modalities: Sequence[str]) -> Array:
  """Concatenates per-modality embeddings in `modalities` order: [B, len(modalities) * E]."""
  return jnp.concatenate([embeddings[m] for m in modalities], axis=-1)


def masked_softmax(scores: Array, mask: Array, axis: int = -1) -> Array:
  """Softmax over the positions where `mask` is True; masked positions get exactly 0.

  A row with no True position gives all zeros (not NaN), and no NaN reaches the gradients.
  """
  low = jnp.finfo(scores.dtype).min
  scores = jnp.where(mask, scores, low)
  scores = scores - jax.lax.stop_gradient(jnp.max(scores, axis=axis, keepdims=True))
  weights = jnp.where(mask, jnp.exp(scores), 0.)
  return weights / jnp.maximum(weights.sum(axis=axis, keepdims=True), jnp.finfo(scores.dtype).tiny)


class MLPHead(nn.Module):
  """Dense + ReLU + dropout per hidden size, then Dense(num_outputs): MMIN's FcClassifier shape."""
  hidden: Sequence[int] = (128, 128)
  num_outputs: int = 4
  dropout: float = 0.5
  dtype: Dtype | None = None  # compute dtype (module docstring); parameters stay float32

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    x = cast_inputs(x, self.dtype)
    for i, features in enumerate(self.hidden):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f'dense_{i}')(x))
      x = Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name='out')(x)
