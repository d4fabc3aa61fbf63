"""Fusion baselines over the per-modality encoders: early fusion, late fusion, gated attention.

Each is a composite of an `encoders` submodule (`encoders.ModalityEncoders`) and a `head`
submodule (`layers.MLPHead`; late fusion clones it per modality), both passed in by the caller.
All three take `(features, lengths, modality_mask, *, deterministic)`, `modality_mask` the boolean
[B, 3] mask in (audio, visual, text) order, and return outputs [B, C] (logits) or [B, 1]
(regression); with `return_aux=True` also `aux['embeddings']`, the per-modality embeddings the
fusion saw. A missing modality's input features are always zeroed; `missing_input`
('zero_embedding', default, or 'zero_features', the MMIN authors' baselines) says whether the
model is told what is missing.

Details: docs/baselines.md#fusion-modelsfusionpy.
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import layers

Array = jax.Array

MISSING_INPUTS = ('zero_embedding', 'zero_features')


class _FusionBase(nn.Module):
  """The shared parts: the encoders, the head, and how a missing modality is met.

  Attributes:
    encoders: a `ModalityEncoders` (parameter subtree `encoders`); its `modalities` are the model's.
    head: a `layers.MLPHead` with the task's `num_outputs` (subtree `head`, or `head_<m>` per
      modality for late fusion).
    missing_input: 'zero_embedding' | 'zero_features' (see the module docstring).
    dtype: compute dtype of the model's own layers (None: promoted).
  """
  encoders: nn.Module
  head: nn.Module
  missing_input: str = 'zero_embedding'
  dtype: layers.Dtype | None = None

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.encoders.modalities)

  def _encode(self, features, lengths, modality_mask, deterministic):
    """Per-modality embeddings with missing modalities' inputs and embeddings zeroed, and presence."""
    if self.missing_input not in MISSING_INPUTS:
      raise ValueError(f'missing_input: expected one of {MISSING_INPUTS}, got {self.missing_input!r}')
    batch = features[self.modalities[0]].shape[0]
    features = layers.mask_features(features, modality_mask, self.modalities)
    if self.missing_input == 'zero_features':
      modality_mask = None  # encode the zero-filled features as if they were present
    embeddings = self.encoders(features, lengths, deterministic=deterministic)
    present = {m: layers.modality_column(modality_mask, m, batch) for m in self.modalities}
    return layers.zero_missing(embeddings, present), present


class EarlyFusion(_FusionBase):
  """Encoders -> zero the missing modalities' embeddings -> concat (audio, visual, text) -> head.

  MMIN's full-modality baseline ("utt_fusion"). The authors concatenate in (audio, text, visual)
  order; we keep the library-wide (audio, visual, text) order. Output [B, num_outputs].
  """

  @nn.compact
  def __call__(self, features: Mapping[str, Array], lengths: Mapping[str, Array] | None = None,
               modality_mask: Array | None = None, *, deterministic: bool, return_aux: bool = False):
    embeddings, _ = self._encode(features, lengths, modality_mask, deterministic)
    fused = layers.joint(embeddings, self.modalities)
    outputs = self.head(fused, deterministic=deterministic)
    if return_aux:
      return outputs, {'embeddings': embeddings, 'fused': fused}
    return outputs


class LateFusion(_FusionBase):
  """One head per modality; the output is the mean of the heads over each sample's present modalities.

  Classification averages logits (not probabilities). A sample with no present modality (only
  padding rows should have that) gets zeros. Output [B, num_outputs]; `aux['head_outputs']` holds
  each modality's head output.
  """

  @nn.compact
  def __call__(self, features: Mapping[str, Array], lengths: Mapping[str, Array] | None = None,
               modality_mask: Array | None = None, *, deterministic: bool, return_aux: bool = False):
    embeddings, present = self._encode(features, lengths, modality_mask, deterministic)
    heads = {m: self.head.clone(parent=self, name=f'head_{m}')(embeddings[m], deterministic=deterministic)
             for m in self.modalities}
    weights = jnp.stack([present[m] for m in self.modalities], axis=1).astype(heads[self.modalities[0]].dtype)
    stacked = jnp.stack([heads[m] for m in self.modalities], axis=1)  # [B, M, C]
    total = jnp.einsum('bm,bmc->bc', weights, jnp.where(weights[..., None] > 0, stacked, 0.))
    outputs = total / jnp.maximum(weights.sum(axis=1, keepdims=True), 1.)
    if return_aux:
      return outputs, {'embeddings': embeddings, 'head_outputs': heads}
    return outputs


class GatedAttentionFusion(_FusionBase):
  """Gated attention over modalities (the gated-attention fusion baseline of the MMGCN paper).

  Per modality, a gated tanh unit g_m = sigmoid(W_m h_m) * tanh(V_m h_m) ([B, gate_dim]); a
  shared scorer s_m = w . g_m; attention a = softmax over the sample's present modalities
  (missing ones get -inf scores, so they have weight exactly 0); fused = sum_m a_m g_m -> head.

  The authors' MMGCN code fuses pairs instead (z_av = sigmoid(W [a, v, a*v]), h_av = z tanh(a') +
  (1 - z) tanh(v'), concatenated over the pairs a fixed modality subset has), which needs every
  sample to have the same modalities; this per-modality form handles per-sample masks and
  reduces to a gated unimodal model when one modality is present.

  Attributes (besides the shared ones): gate_dim (None -> the encoders' embed_dim).
  `aux['attention']` is [B, M].
  """
  gate_dim: int | None = None

  @nn.compact
  def __call__(self, features: Mapping[str, Array], lengths: Mapping[str, Array] | None = None,
               modality_mask: Array | None = None, *, deterministic: bool, return_aux: bool = False):
    embeddings, present = self._encode(features, lengths, modality_mask, deterministic)
    gate_dim = self.gate_dim or self.encoders.embed_dim
    scorer = nn.Dense(1, use_bias=False, dtype=self.dtype, name='score')
    gated, scores = [], []
    for m in self.modalities:
      h = embeddings[m]
      gate = nn.sigmoid(nn.Dense(gate_dim, dtype=self.dtype, name=f'gate_{m}')(h))
      g = gate * jnp.tanh(nn.Dense(gate_dim, dtype=self.dtype, name=f'value_{m}')(h))
      gated.append(g)
      scores.append(scorer(g)[:, 0])
    gated = jnp.stack(gated, axis=1)  # [B, M, G]
    scores = jnp.stack(scores, axis=1)  # [B, M]
    mask = jnp.stack([present[m] for m in self.modalities], axis=1)
    attention = layers.masked_softmax(scores.astype(layers.stat_dtype(scores.dtype)), mask, axis=1)
    fused = jnp.einsum('bm,bmg->bg', attention.astype(gated.dtype), gated)
    outputs = self.head(fused, deterministic=deterministic)
    if return_aux:
      return outputs, {'embeddings': embeddings, 'attention': attention, 'fused': fused}
    return outputs
