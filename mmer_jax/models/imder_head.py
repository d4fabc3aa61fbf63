"""IMDer's projections, pair conditions and MulT-style fusion head (docs/imder.md#model-code).

`IMDerProjections`: Conv1d (kernel 3, no padding, no bias) from each modality to d = 32 channels
(50 frames become 48). `PairCondition`: the 1x1 Conv1d merging two available modalities into one
condition. `IMDerFusionHead`: six cross-modal transformers, three self-attention memories over the
concatenated pairs, the last time step of each and a residual block before `out_layer`. Inputs
and outputs are channels-last, batch-first [B, L, C]; parameter names are the authors' so a
PyTorch state dict maps one to one. The transformer itself is `mult.py`.
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import layers as layers_lib
from mmer_jax.models.mult import TransformerEncoder, torch_conv1d, torch_linear

Array = jax.Array
Dtype = layers_lib.Dtype
# The authors' modality letters and our modality names.
LETTERS = {'text': 'l', 'audio': 'a', 'visual': 'v'}


class IMDerProjections(nn.Module):
  """Per-modality Conv1d (no padding, no bias) to `d` channels: [B, L, D_m] -> [B, L - k + 1, d].

  Submodules `proj_l`, `proj_a`, `proj_v` (text, audio, visual). As in the authors' code, a
  modality whose width already is `d` passes through unchanged (no parameters), and the text is
  dropped out (`text_dropout`) before its projection. A rank-2 utterance-level input [B, D] is
  treated as a length-1 sequence; its kernel size must then be 1.

  Attributes:
    d: common width (32).
    kernel_sizes: mapping modality -> kernel size (authors: 3 for all).
    text_dropout: dropout rate on the text features (authors: 0.0).
    dtype: compute dtype (None: promoted); the features are cast to it.
  """
  d: int = 32
  kernel_sizes: Mapping[str, int] | None = None
  text_dropout: float = 0.
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, features: Mapping[str, Array], *, deterministic: bool) -> dict[str, Array]:
    """features: any of 'text', 'audio', 'visual' -> [B, L, D] or [B, D]; returns the same keys."""
    kernel_sizes = {'text': 3, 'audio': 3, 'visual': 3, **(self.kernel_sizes or {})}
    features = layers_lib.cast_inputs(dict(features), self.dtype)
    out = {}
    for m, x in features.items():
      if m not in LETTERS:
        raise ValueError(f'IMDerProjections: unknown modality {m!r}; expected {tuple(LETTERS)}')
      if x.ndim == 2:
        x = x[:, None, :]
      if x.ndim != 3:
        raise ValueError(f'{m}: expected [B, L, D] or [B, D] features, got shape {x.shape}')
      if m == 'text':
        x = layers_lib.Dropout(self.text_dropout)(x, deterministic=deterministic)
      if x.shape[-1] == self.d:
        out[m] = x
        continue
      k = kernel_sizes[m]
      if x.shape[1] < k:
        raise ValueError(f'{m}: {x.shape[1]} frame(s) but the unpadded projection has kernel {k}; '
                         f'use kernel size 1 for utterance-level inputs')
      out[m] = torch_conv1d(self.d, k, x.shape[-1], use_bias=False, dtype=self.dtype,
                            name=f'proj_{LETTERS[m]}')(x)
    return out


class PairCondition(nn.Module):
  """1x1 Conv1d (with bias) over two concatenated modalities: [B, L, d] x 2 -> [B, L, d].

  The authors' `cat_lv`, `cat_la`, `cat_va`, which turn two available modalities into the
  condition of the third's score network; their concatenation orders are (text, visual),
  (text, audio) and (visual, audio) respectively: pass `first`, `second` in that order.
  """
  d: int = 32
  dtype: Dtype | None = None  # compute dtype (None: promoted); the inputs are cast to it

  @nn.compact
  def __call__(self, first: Array, second: Array) -> Array:
    x = layers_lib.cast_inputs(jnp.concatenate([first, second], axis=-1), self.dtype)
    return torch_conv1d(self.d, 1, x.shape[-1], dtype=self.dtype, name='conv')(x)


class IMDerFusionHead(nn.Module):
  """MulT-style fusion of the projected modalities (all three, or two) -> [B, num_outputs].

  For each target modality m (text l, audio a, visual v) and each other modality n,
  `trans_m_with_n` attends from m to n ([B, L, d]); the two results are concatenated ([B, L, 2d]),
  passed through the self-attention `trans_m_mem`, and its last time step is m's feature. The
  features are concatenated in (text, audio, visual) order (the authors' order, not the library's
  (audio, visual, text)) to [B, 6d], then out_layer(h + proj2(dropout(relu(proj1(h))))). With two
  modalities (a dataset that has only two, e.g. audio + visual) each attends to the other, its
  memory runs over [B, L, d] and the fused vector is [B, 2d]; the same names.

  Attention-weight dropout per transformer, as in the authors' `get_network`: trans_l_with_a and
  trans_v_with_a use `attn_dropout_a`, trans_l_with_v and trans_a_with_v `attn_dropout_v`, the
  rest (trans_a_with_l, trans_v_with_l and the three memories) `attn_dropout`. The memories have
  max(nlevels, mem_layers) layers (the authors ask for 3, but with nlevels 4 / 6 get nlevels).
  Defaults are the authors' MOSI settings; for MOSEI they use nlevels 6 and every dropout 0.

  Attributes:
    num_outputs: 1 for regression (MOSI/MOSEI), C for classification logits.
    num_heads, nlevels, mem_layers: heads and layers of the transformers.
    attn_dropout, attn_dropout_a, attn_dropout_v, relu_dropout, res_dropout, embed_dropout,
      output_dropout: dropout rates (`output_dropout` in the residual output block).
    attn_mask: MulT's causal mask in every transformer (the authors' config sets it).
    dtype: compute dtype (None: promoted); the projections are cast to it.
  """
  num_outputs: int = 1
  num_heads: int = 8
  nlevels: int = 4
  mem_layers: int = 3
  attn_dropout: float = 0.
  attn_dropout_a: float = 0.2
  attn_dropout_v: float = 0.
  relu_dropout: float = 0.
  res_dropout: float = 0.
  embed_dropout: float = 0.2
  output_dropout: float = 0.
  attn_mask: bool = True
  dtype: Dtype | None = None

  def _transformer(self, name: str, attn_dropout: float, num_layers: int) -> TransformerEncoder:
    return TransformerEncoder(self.num_heads, num_layers, attn_dropout, self.relu_dropout,
                              self.res_dropout, self.embed_dropout, self.attn_mask, self.dtype,
                              name=name)

  @nn.compact
  def __call__(self, projected: Mapping[str, Array], *, deterministic: bool, return_aux: bool = False):
    """projected: 'text', 'audio', 'visual' -> [B, L_m, d] (the same d; L_m may differ, >= 1).

    Returns [B, num_outputs], or (outputs, aux) with aux 'text'/'audio'/'visual' ([B, 2d], each
    modality's last-step feature, the authors' Feature_t/a/v) and 'fused' ([B, 6d], Feature_f).
    """
    projected = layers_lib.cast_inputs(dict(projected), self.dtype)
    unknown = sorted(set(projected) - set(LETTERS))
    order = [m for m in ('text', 'audio', 'visual') if m in projected]
    if unknown or len(order) < 2:
      raise ValueError(f'IMDerFusionHead needs two or three of text, audio, visual; got '
                       f'{sorted(projected)}')
    widths = {projected[m].shape[-1] for m in order}
    if len(widths) != 1:
      raise ValueError(f'IMDerFusionHead: the projected modalities must share one width, got {widths}')
    dropout_for = {'a': self.attn_dropout_a, 'v': self.attn_dropout_v, 'l': self.attn_dropout}
    mem_layers = max(self.nlevels, self.mem_layers)
    features = {}
    for m in order:
      x = projected[m]
      lm = LETTERS[m]
      crossed = []
      for n in order:
        if n == m:
          continue
        ln = LETTERS[n]
        trans = self._transformer(f'trans_{lm}_with_{ln}', dropout_for[ln], self.nlevels)
        crossed.append(trans(x, projected[n], projected[n], deterministic=deterministic))
      h = self._transformer(f'trans_{lm}_mem', self.attn_dropout, mem_layers)(
          jnp.concatenate(crossed, axis=-1), deterministic=deterministic, last_only=True)
      features[m] = h
    fused = jnp.concatenate([features[m] for m in order], axis=-1)
    combined = fused.shape[-1]
    h = nn.relu(torch_linear(combined, combined, dtype=self.dtype, name='proj1')(fused))
    h = layers_lib.Dropout(self.output_dropout)(h, deterministic=deterministic)
    h = torch_linear(combined, combined, dtype=self.dtype, name='proj2')(h) + fused
    outputs = torch_linear(self.num_outputs, combined, dtype=self.dtype, name='out_layer')(h)
    if return_aux:
      return outputs, {**features, 'fused': fused}
    return outputs
