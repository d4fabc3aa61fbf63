"""IMDer's refinement network: residual channel-attention blocks over a recovered projection.

After reverse diffusion recovers a missing modality's projected sequence, IMDer refines it with a
small RCAN-style network (residual channel attention, after Zhang et al., ECCV 2018, made 1-D),
reproduced from the authors' `rec_l` / `rec_a` / `rec_v`: `ChannelAttention` (their CALayer),
`RCAB`, `ResidualGroup` (their Group) and `RefineNet` (1x1 conv, the group, 1x1 conv back).
Layout [B, L, C] in and out (channels last), any L >= 1; parameter names map one to one to
theirs. Every module takes `dtype`, the compute dtype; parameters stay float32.

The blocks and the name map: docs/imder.md#the-refinement-network-imder_refinepy.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import layers
from mmer_jax.models.mult import torch_conv1d

Array = jax.Array
Dtype = layers.Dtype


class ChannelAttention(nn.Module):
  """x * sigmoid(up(relu(down(mean_t x)))): per-channel gates from the time-averaged input."""
  reduction: int = 16
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    squeezed = channels // self.reduction
    if squeezed < 1:
      raise ValueError(f'ChannelAttention: {channels} channels // reduction {self.reduction} is 0')
    y = jnp.mean(x, axis=1, keepdims=True)  # AdaptiveAvgPool1d(1): [B, 1, C]
    y = nn.relu(torch_conv1d(squeezed, 1, channels, dtype=self.dtype, name='down')(y))
    y = nn.sigmoid(torch_conv1d(channels, 1, squeezed, dtype=self.dtype, name='up')(y))
    return x * y


class RCAB(nn.Module):
  """Residual channel-attention block: x + res_scale * CA(conv2(relu(conv1(x))))."""
  reduction: int = 16
  res_scale: float = 1.
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    h = nn.relu(torch_conv1d(channels, 3, channels, padding=1, dtype=self.dtype, name='conv1')(x))
    h = torch_conv1d(channels, 3, channels, padding=1, dtype=self.dtype, name='conv2')(h)
    h = ChannelAttention(self.reduction, self.dtype, name='ca')(h)
    return h * self.res_scale + x


class ResidualGroup(nn.Module):
  """x + conv(RCAB_{n-1}(... RCAB_0(x))): the authors' `Group`."""
  num_blocks: int = 20
  reduction: int = 16
  res_scale: float = 1.
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = x
    for i in range(self.num_blocks):
      h = RCAB(self.reduction, self.res_scale, self.dtype, name=f'block_{i}')(h)
    channels = x.shape[-1]
    return torch_conv1d(channels, 3, channels, padding=1, dtype=self.dtype, name='conv')(h) + x


class RefineNet(nn.Module):
  """Refines a recovered projection [B, L, C] -> [B, L, C] (the authors' rec_l / rec_a / rec_v).

  Attributes:
    hidden_factor: the group runs at hidden_factor * C channels (authors: 2, i.e. 64 for C = 32).
    num_blocks: RCABs in the group (20).
    reduction: channel-attention reduction (16: 64 -> 4 -> 64).
    res_scale: scale of each RCAB's residual branch (1.0).
    dtype: compute dtype (None: promoted); the input is cast to it.
  """
  hidden_factor: int = 2
  num_blocks: int = 20
  reduction: int = 16
  res_scale: float = 1.
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if x.ndim != 3:
      raise ValueError(f'RefineNet: expected [B, L, C], got shape {x.shape}')
    x = layers.cast_inputs(x, self.dtype)
    channels = x.shape[-1]
    hidden = self.hidden_factor * channels
    h = torch_conv1d(hidden, 1, channels, dtype=self.dtype, name='conv_in')(x)
    h = ResidualGroup(self.num_blocks, self.reduction, self.res_scale, self.dtype, name='group')(h)
    return torch_conv1d(channels, 1, hidden, dtype=self.dtype, name='conv_out')(h)
