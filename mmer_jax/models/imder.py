"""IMDer's networks in one module: projections, conditions, score and refinement nets, fusion head.

The method (`methods/imder.py`) owns the diffusion (which SDE, which sampler, which losses); this
module only holds the parameters and the pure pieces it calls, each exposed as a method for
`apply(..., method=IMDer.<piece>)`: `project`, `conditions`, `score_of`, `refine_of` and `fuse`.
The per-modality score and refinement networks are stacked on a leading modality axis (`score`,
`refine`). `init_all` touches every piece once, so `init` creates all the parameters. Any two or
three of the library's modalities. The parameters and `constants` stay float32 under mixed
precision, and the scores come back in at least float32.

The pieces: docs/imder.md#the-whole-model-imderpy.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import imder_head
from mmer_jax.models import imder_refine
from mmer_jax.models import layers
from mmer_jax.models import mult
from mmer_jax.models import score_net

Array = jax.Array

# The authors' fusion convs: the modality they condition, and the pair they fuse, in that order.
PAIR_CONDITIONS = {'audio': ('cat_lv', 'text', 'visual'),
                   'visual': ('cat_la', 'text', 'audio'),
                   'text': ('cat_va', 'visual', 'audio')}
DROPOUTS = ('attn_dropout', 'attn_dropout_a', 'attn_dropout_v', 'relu_dropout', 'res_dropout',
            'embed_dropout', 'output_dropout')
SEQUENCE_KERNEL = 3  # the authors' conv1d_kernel_size_{l,a,v}


class UtteranceTokens(nn.Module):
  """[B, D] -> [B, tokens, d]: an utterance vector spread over `tokens` learned tokens."""
  tokens: int
  d: int
  dtype: layers.Dtype | None = None  # compute dtype (None: promoted)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = layers.cast_inputs(x, self.dtype)
    h = mult.torch_linear(self.tokens * self.d, x.shape[-1], dtype=self.dtype, name='dense')(x)
    return h.reshape(x.shape[:-1] + (self.tokens, self.d))


class Projections(nn.Module):
  """Every modality to [B, L, d]: sequences by the authors' Conv1d (`conv/proj_<l|a|v>`), the
  `utterance_level` vectors by `UtteranceTokens` (`tokens_<modality>`). One subtree, so one
  `init_from` path restores (and one trainable-mask prefix freezes) all of it."""
  d: int
  utterance_level: Sequence[str] = ()
  utterance_tokens: int = 8
  text_dropout: float = 0.
  dtype: layers.Dtype | None = None  # compute dtype (None: promoted)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], *, deterministic: bool) -> dict[str, Array]:
    sequences = {m: x for m, x in features.items() if m not in self.utterance_level}
    out = {}
    if sequences:
      out.update(imder_head.IMDerProjections(
          self.d, {m: SEQUENCE_KERNEL for m in sequences}, self.text_dropout, self.dtype,
          name='conv')(sequences, deterministic=deterministic))
    for m in self.utterance_level:
      if m in features:
        out[m] = UtteranceTokens(self.utterance_tokens, self.d, self.dtype, name=f'tokens_{m}')(
            features[m])
    return out


class IMDer(nn.Module):
  """All of IMDer's parameters; see the module docstring for the pieces.

  Attributes:
    modalities: the dataset's modalities (2 or 3 of 'audio', 'visual', 'text').
    utterance_level: the modalities given as one vector per utterance ([B, D]).
    d_model, num_heads, nlevels, mem_levels: the fusion head (32, 8, 4 | 6, 3).
    num_outputs: 1 (regression) or the number of classes.
    dropouts: the head's dropout rates by name (`DROPOUTS`); text_dropout on the text input.
    attn_mask: MulT's causal mask, in the head and in the score networks' attentions.
    sigma: the VE SDE's sigma (the score networks divide by its marginal std).
    score_channels, time_embed_dim, score_attn_layers: the score U-Nets (32, 64, 128, 256; 256;
      2 layers in each cross-attention); GroupNorm groups 4 at the first level, 32 after (or
      the width, where narrower).
    refine_blocks, refine_reduction: the refinement networks (20 RCABs, 16).
    utterance_tokens: tokens an utterance vector is spread over (a multiple of 8).
    dtype: compute dtype of every piece (module docstring).
  """
  modalities: Sequence[str]
  utterance_level: Sequence[str] = ()
  d_model: int = 32
  num_heads: int = 8
  nlevels: int = 4
  mem_levels: int = 3
  num_outputs: int = 1
  dropouts: Mapping[str, float] | None = None
  text_dropout: float = 0.
  attn_mask: bool = True
  sigma: float = 25.
  score_channels: Sequence[int] = (32, 64, 128, 256)
  time_embed_dim: int = 256
  score_attn_layers: int = 2
  refine_blocks: int = 20
  refine_reduction: int = 16
  utterance_tokens: int = 8
  dtype: layers.Dtype | None = None

  def setup(self):
    self.projections = Projections(self.d_model, tuple(self.utterance_level),
                                   self.utterance_tokens, self.text_dropout, self.dtype)
    # A dict of submodules is named <attribute>_<key>: cat_lv, cat_la, cat_va.
    self.cat = {PAIR_CONDITIONS[m][0].removeprefix('cat_'): imder_head.PairCondition(self.d_model,
                                                                                       self.dtype)
                for m in self.modalities
                if all(o in self.modalities for o in PAIR_CONDITIONS[m][1:])}
    # One score network and one refinement network per modality, stacked on a leading modality
    # axis (in `modalities` order) and vmapped: one compiled network instead of one per modality,
    # and all modalities' draws in one call. Parameters: score/... and refine/... of [M, ...].
    stacked = dict(variable_axes={'params': 0, 'constants': 0}, split_rngs={'params': True},
                   in_axes=0, out_axes=0, axis_size=len(self.modalities))
    self.score = nn.vmap(score_net.ScoreNet, **stacked)(**self.score_net_kwargs())
    self.refine = nn.vmap(imder_refine.RefineNet, **stacked)(
        num_blocks=self.refine_blocks, reduction=self.refine_reduction, dtype=self.dtype)
    self.head = imder_head.IMDerFusionHead(
        num_outputs=self.num_outputs, num_heads=self.num_heads, nlevels=self.nlevels,
        mem_layers=self.mem_levels, attn_mask=self.attn_mask, dtype=self.dtype,
        **dict(self.dropouts or {}))

  def score_net_kwargs(self) -> dict:
    """The keyword arguments of one modality's `ScoreNet` (the stacked `score` holds M of them)."""
    return dict(channels=tuple(self.score_channels), embed_dim=self.time_embed_dim,
                sigma=self.sigma, num_heads=self.num_heads, attn_layers=self.score_attn_layers,
                attn_mask=self.attn_mask, enc_groups=_groups(self.score_channels, first=4),
                dec_groups=_groups(self.score_channels[:-1][::-1], first=32), dtype=self.dtype)

  def project(self, features: Mapping[str, Array], *, deterministic: bool = True):
    """Modality -> its projection [B, L, d] (every modality of `features`)."""
    return self.projections(features, deterministic=deterministic)

  def conditions(self, proj: Mapping[str, Array], mask: Array, index: Mapping[str, int]):
    """Modality -> [B, L, d]: each sample's condition for recovering that modality.

    mask [B, 3] says which modalities each sample has (`index`: a modality's column). Where a
    sample has both other modalities it is their fusion, else the one it has (zeros when it has
    neither: such a sample has nothing to condition on and is never trained or evaluated).
    """
    out = {}
    for m in self.modalities:
      others = [o for o in PAIR_CONDITIONS[m][1:] if o in self.modalities]
      has = {o: mask[:, index[o]][:, None, None] for o in others}
      single = jnp.zeros_like(proj[m])
      for o in reversed(others):  # the first of the pair wins when both are there (overridden)
        single = jnp.where(has[o], proj[o], single)
      pair = PAIR_CONDITIONS[m][0].removeprefix('cat_')
      if pair in self.cat:
        first, second = others
        fused = self.cat[pair](proj[first], proj[second])
        out[m] = jnp.where(has[first] & has[second], fused, single)
      else:
        out[m] = single
    return out

  def score_of(self, x: Array, t: Array, condition: Array) -> Array:
    """Every modality's score: x [M, B, L, d], t [M, B], condition [M, B, L, d] -> [M, B, L, d]."""
    return self.score(x, t, condition)

  def refine_of(self, x: Array) -> Array:
    """Every modality's refinement: [M, B, L, d] -> [M, B, L, d]."""
    return self.refine(x)

  def fuse(self, proj: Mapping[str, Array], *, deterministic: bool) -> Array:
    """The fusion head's outputs [B, num_outputs] for the completed projections."""
    return self.head(dict(proj), deterministic=deterministic)

  def init_all(self, features: Mapping[str, Array], mask: Array, index: Mapping[str, int]):
    """Runs every piece once (for `init`): projections, conditions, scores, refiners, head."""
    proj = self.project(features)
    padded = pad_to_common_length(proj, score_net.ScoreNet.length_multiple(len(self.score_channels)))
    conditions = self.conditions(padded, mask, index)
    stack = lambda d: jnp.stack([d[m] for m in self.modalities])  # noqa: E731
    x = stack(padded)
    self.refine_of(self.score_of(x, jnp.ones(x.shape[:2]), stack(conditions)))
    return self.fuse(proj, deterministic=True)


def pad_to_common_length(proj: Mapping[str, Array], multiple: int) -> dict[str, Array]:
  """Every projection zero-padded at the end to one length, the smallest multiple of `multiple`
  (the score U-Net's) that holds the longest: the score networks, the fusion convs and the
  stacked draws need one length. Nothing changes when all are already that long (aligned_50)."""
  longest = max(x.shape[1] for x in proj.values())
  common = -(-longest // multiple) * multiple
  return {n: jnp.pad(x, ((0, 0), (0, common - x.shape[1]), (0, 0))) for n, x in proj.items()}


def _groups(channels: Sequence[int], *, first: int) -> tuple[int, ...]:
  """The authors' GroupNorm groups per level, `first` then 32, capped at each level's width."""
  return tuple(min(first if i == 0 else 32, c) for i, c in enumerate(channels))
