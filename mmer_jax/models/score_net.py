"""IMDer's conditional score network: a time-dependent 1-D U-Net with cross-attention to a condition.

The score network s(x, t, condition) of IMDer's variance-exploding SDE (sigma = 25), reproduced
from the authors' `ScoreNet` (a Song-style U-Net made 1-D, with a MulT cross-attention at every
scale): Gaussian Fourier time features, four levels of convs (32, 64, 128, 256 channels) and
transposed convs with skips, the output divided by the VE marginal std.

Shapes: x [B, L, C] (channels last), t [B] (or a scalar), condition [B, L', channels[0]] or None.
L must be divisible by 8; other lengths raise a ValueError. The fixed Fourier frequencies live in
the variable collection `constants`: give the optimiser only `variables['params']`. Parameters
map one to one to the authors'. Under mixed precision the time features and the output
normalisation stay in at least float32, and so does the returned score.

The layers, lengths and precision: docs/imder.md#the-score-network-score_netpy.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import layers
from mmer_jax.models.mult import TransformerEncoder, torch_bias_init, torch_kernel_init, torch_linear

Array = jax.Array
Dtype = layers.Dtype


def marginal_prob_std(t: Array, sigma: float = 25.) -> Array:
  """Std of p_0t(x(t) | x(0)) under the VE SDE dx = sigma^t dw: sqrt((sigma^(2t) - 1) / (2 ln sigma))."""
  t = jnp.asarray(t)
  return jnp.sqrt((sigma ** (2. * t) - 1.) / (2. * math.log(sigma)))


class GaussianFourierProjection(nn.Module):
  """[sin(2 pi t W), cos(2 pi t W)]: t [B] -> [B, embed_dim], W ~ N(0, scale^2) fixed.

  W ([embed_dim // 2]) is a variable of the `constants` collection, not a parameter (see the
  module docstring); the authors' `embed.0.W` loads into it unchanged.
  """
  embed_dim: int = 256
  scale: float = 30.

  @nn.compact
  def __call__(self, t: Array) -> Array:
    w = self.variable('constants', 'W',
                      lambda: jax.random.normal(self.make_rng('params'), (self.embed_dim // 2,)) * self.scale)
    proj = t[:, None] * w.value[None, :].astype(t.dtype) * (2 * jnp.pi)
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class TimeEmbedding(nn.Module):
  """swish(Dense(GaussianFourierProjection(t))): t [B] -> [B, embed_dim] (the authors' `embed` + act).

  The Fourier features are computed in t's dtype (keep it float32 or wider); `dtype` is the
  Dense's compute dtype.
  """
  embed_dim: int = 256
  scale: float = 30.
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, t: Array) -> Array:
    h = GaussianFourierProjection(self.embed_dim, self.scale, name='fourier')(t)
    return nn.swish(torch_linear(self.embed_dim, self.embed_dim, dtype=self.dtype, name='dense')(h))


class UNetBlock(nn.Module):
  """One U-Net level: conv -> (+ cross-attention to the condition) -> (+ time) -> (GroupNorm, swish).

  conv: Conv1d(k=3, padding 1) with `stride`, or with `transpose` a ConvTranspose1d(k=3, padding 1,
  output_padding stride - 1), which maps L to stride * L. With a condition, `conv_cond` (the same
  kind of conv, from the condition's width; only if `cond_conv`) first brings the condition to
  this level, then h = h + attention(h, cond, cond). With `time`, h = h + Dense(embed) [B, 1, F].
  With `groups`, GroupNorm(groups, eps 1e-5) then swish; `groups=None` skips both (the output
  block). Returns (h [B, L_out, features], the condition as this level saw it, or None).

  Attributes:
    features: output channels (also the attention width).
    stride, transpose, use_bias: the conv (and conv_cond).
    cond_conv: whether this level convolves the condition before attending to it.
    time: whether the time embedding is added.
    groups: GroupNorm groups, or None for no norm and no activation.
    num_heads, attn_layers, attn_mask: the cross-attention TransformerEncoder (no dropout).
    dtype: compute dtype (None: promoted).
  """
  features: int
  stride: int = 1
  transpose: bool = False
  use_bias: bool = False
  cond_conv: bool = True
  time: bool = True
  groups: int | None = 32
  num_heads: int = 8
  attn_layers: int = 2
  attn_mask: bool = True
  dtype: Dtype | None = None

  def _conv(self, name: str, in_features: int):
    if self.transpose:
      # PyTorch's conv_transpose = correlation of the stride-dilated input, padded by
      # (k - 1 - p, k - 1 - p + output_padding), with the flipped kernel (transpose_kernel=True).
      return nn.ConvTranspose(self.features, (3,), strides=(self.stride,),
                              padding=((1, 1 + self.stride - 1),), transpose_kernel=True,
                              use_bias=self.use_bias, kernel_init=torch_kernel_init,
                              bias_init=torch_bias_init(self.features * 3), dtype=self.dtype,
                              name=name)
    return nn.Conv(self.features, (3,), strides=(self.stride,), padding=((1, 1),),
                   use_bias=self.use_bias, kernel_init=torch_kernel_init,
                   bias_init=torch_bias_init(in_features * 3), dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, h: Array, embed: Array | None, condition: Array | None = None):
    h = self._conv('conv', h.shape[-1])(h)
    if condition is not None:
      if self.cond_conv:
        condition = self._conv('conv_cond', condition.shape[-1])(condition)
      if condition.shape[-1] != self.features:
        raise ValueError(f'UNetBlock: the condition reaching the attention is {condition.shape[-1]} '
                         f'wide, the block {self.features}; the first level needs a condition as '
                         f'wide as channels[0]')
      attention = TransformerEncoder(self.num_heads, self.attn_layers, attn_mask=self.attn_mask,
                                     dtype=self.dtype, name='attention')
      h = h + attention(h, condition, condition, deterministic=True)
    if self.time:
      h = h + torch_linear(self.features, embed.shape[-1], dtype=self.dtype,
                           name='dense')(embed)[:, None, :]
    if self.groups is not None:
      h = nn.swish(nn.GroupNorm(num_groups=self.groups, epsilon=1e-5, use_fast_variance=False,
                                dtype=self.dtype, name='gnorm')(h))
    return h, condition


class ScoreNet(nn.Module):
  """IMDer's conditional score network: x [B, L, C], t [B], condition [B, L', channels[0]] -> [B, L, C].

  See the module docstring for the architecture, the length rule (L divisible by
  2^(len(channels)-1)) and the `constants` collection. Blocks are named down1..downN (encoder,
  N = len(channels)) and upN..up1 (decoder; upN is the first transposed conv, up1 the output).
  Without a condition the attentions are skipped (their parameters are only created when `init`
  sees a condition).

  Attributes:
    channels: encoder widths per level (authors: 32, 64, 128, 256).
    embed_dim, fourier_scale: time embedding (256, 30).
    sigma: the VE SDE's sigma (25) for the output normalisation.
    num_heads, attn_layers, attn_mask: every cross-attention (8 heads, 2 layers, masked).
    enc_groups: GroupNorm groups of down1..downN (4, 32, 32, 32).
    dec_groups: GroupNorm groups of upN..up2 (32, 32, 32); up1 has no norm.
    normalize_output: divide by marginal_prob_std(t, sigma) (the authors always do; False gives
      the raw U-Net output, for tests and analysis).
    dtype: compute dtype (None: promoted; module docstring); the score comes back in at least
      float32 whatever it is.
  """
  channels: Sequence[int] = (32, 64, 128, 256)
  embed_dim: int = 256
  fourier_scale: float = 30.
  sigma: float = 25.
  num_heads: int = 8
  attn_layers: int = 2
  attn_mask: bool = True
  enc_groups: Sequence[int] = (4, 32, 32, 32)
  dec_groups: Sequence[int] = (32, 32, 32)
  normalize_output: bool = True
  dtype: Dtype | None = None

  @staticmethod
  def length_multiple(num_levels: int = 4) -> int:
    """The sequence lengths the U-Net takes are the multiples of this (8 for four levels)."""
    return 2 ** (num_levels - 1)

  @nn.compact
  def __call__(self, x: Array, t: Array, condition: Array | None = None) -> Array:
    channels = tuple(self.channels)
    levels = len(channels)
    if levels < 2 or len(self.enc_groups) != levels or len(self.dec_groups) != levels - 1:
      raise ValueError(f'ScoreNet: need >= 2 channels, one enc_groups per level and one dec_groups '
                       f'per level but the last; got {channels}, {tuple(self.enc_groups)}, '
                       f'{tuple(self.dec_groups)}')
    if x.ndim != 3:
      raise ValueError(f'ScoreNet: x must be [B, L, C], got shape {x.shape}')
    batch, length, width = x.shape
    multiple = self.length_multiple(levels)
    if length % multiple:
      raise ValueError(f'ScoreNet: sequence length {length} is not a multiple of {multiple}: the '
                       f'{levels - 1} stride-2 convs and the transposed convs that double back only '
                       f'line up the skip connections for such lengths (the authors use 48); pad '
                       f'or broadcast the sequence (an utterance vector too) to such a length')
    if condition is not None and (condition.ndim != 3 or condition.shape[0] != batch
                                  or condition.shape[-1] != channels[0]):
      raise ValueError(f'ScoreNet: condition must be [B={batch}, L\', {channels[0]}], got {condition.shape}')
    t = jnp.broadcast_to(jnp.asarray(t, jnp.result_type(x.dtype, jnp.float32)), (batch,))
    x, condition = layers.cast_inputs((x, condition), self.dtype)  # t stays >= float32
    block = dict(num_heads=self.num_heads, attn_layers=self.attn_layers, attn_mask=self.attn_mask,
                 dtype=self.dtype)

    embed = TimeEmbedding(self.embed_dim, self.fourier_scale, self.dtype, name='embed')(t)
    h, cond, skips = x, condition, []
    for i, features in enumerate(channels, start=1):
      h, cond = UNetBlock(features, stride=1 if i == 1 else 2, cond_conv=i > 1,
                          groups=self.enc_groups[i - 1], name=f'down{i}', **block)(h, embed, cond)
      skips.append(h)
    for i in range(levels, 0, -1):
      if i < levels:
        h = jnp.concatenate([h, skips[i - 1]], axis=-1)
      if i > 1:
        h, cond = UNetBlock(channels[i - 2], stride=2, transpose=True, groups=self.dec_groups[levels - i],
                            name=f'up{i}', **block)(h, embed, cond)
      else:
        h, cond = UNetBlock(width, stride=1, transpose=True, use_bias=True, time=False, groups=None,
                            name='up1', **block)(h, embed, cond)
    h = h.astype(layers.stat_dtype(h.dtype))  # the score in >= float32 (module docstring)
    if self.normalize_output:
      h = h / marginal_prob_std(t, self.sigma).astype(h.dtype)[:, None, None]
    return h
