"""Small layers and mask helpers shared by every model: the MLP head, masked softmax, masks.

`modality_mask` is the boolean [B, 3] mask in (audio, visual, text) order (True = present) that
`missing.py` draws; these helpers turn it into per-modality columns and mask-consistent inputs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.data.schema import MODALITIES

Array = jax.Array


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

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    for i, features in enumerate(self.hidden):
      x = nn.relu(nn.Dense(features, name=f'dense_{i}')(x))
      x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.Dense(self.num_outputs, name='out')(x)
