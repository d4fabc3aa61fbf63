"""MMIN's cascade residual autoencoder (CRA) and the plain-autoencoder ablation (MMIN-AE).

MMIN (Zhao, Li, Jin, ACL 2021) imagines the embeddings of missing modalities from the available
ones: the concatenated utterance embeddings x = [h_a, h_v, h_t] (384 = 3 x 128, missing ones
zero) go through a cascade of residual autoencoders whose latents are the joint representation
the classifier reads, and whose output is trained towards a frozen teacher's embeddings of the
missing modalities (forward imagination) and back (backward/cycle imagination).
`CascadeResidualAE` follows the authors' `ResidualAE` (with its transition layer), `PlainAE`
their `SimpleFcAE`.

The blocks, the cascade and the transition: docs/mmin.md#the-modules.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import layers as layers_lib

Array = jax.Array


class ResidualAEBlock(nn.Module):
  """One autoencoder block of the cascade: x [B, D] -> (reconstruction [B, D], latent [B, layers[-1]]).

  Encoder Dense(layers[0]) ... Dense(layers[-1]) with LeakyReLU (+ dropout) between layers and a
  linear latent; decoder mirrors it, Dense(layers[-2]) ... Dense(D), with ReLU (+ dropout) between
  layers and a linear output. D is inferred from the input.
  """
  layers: Sequence[int] = (256, 128, 64)
  dropout: float = 0.0
  dtype: layers_lib.Dtype | None = None  # compute dtype (None: promoted); parameters float32

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> tuple[Array, Array]:
    h = x = layers_lib.cast_inputs(x, self.dtype)
    for i, features in enumerate(self.layers):
      h = nn.Dense(features, dtype=self.dtype, name=f'enc_{i}')(h)
      if i < len(self.layers) - 1:
        h = nn.leaky_relu(h, negative_slope=0.01)
        h = layers_lib.Dropout(self.dropout)(h, deterministic=deterministic)
    latent = h
    for i, features in enumerate(tuple(reversed(self.layers[:-1]))):
      h = nn.relu(nn.Dense(features, dtype=self.dtype, name=f'dec_{i}')(h))
      h = layers_lib.Dropout(self.dropout)(h, deterministic=deterministic)
    reconstruction = nn.Dense(x.shape[-1], dtype=self.dtype, name=f'dec_{len(self.layers) - 1}')(h)
    return reconstruction, latent


class CascadeResidualAE(nn.Module):
  """MMIN's CRA: x [B, D] -> (imagined [B, D], latents [B, num_blocks * layers[-1]]).

  Block k (named `block_{k}`) receives x + sum of the earlier blocks' outputs; the imagined
  embedding is transition(x + sum of all block outputs) (see the module docstring). The input of
  every block is sown into the 'intermediates' collection as `block_inputs` (free unless that
  collection is mutable), which the wiring test uses.

  Attributes:
    num_blocks: blocks in the cascade (MMIN: 5).
    layers: encoder widths of each block (MMIN: (256, 128, 64)); D is inferred from x.
    dropout: dropout inside the blocks (MMIN: 0).
    transition: apply the authors' Dense(D) ReLU Dense(D) to the residual stream.
    dtype: compute dtype (None: promoted); the residual stream runs in it too.
  """
  num_blocks: int = 5
  layers: Sequence[int] = (256, 128, 64)
  dropout: float = 0.0
  transition: bool = True
  dtype: layers_lib.Dtype | None = None

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> tuple[Array, Array]:
    stream = x = layers_lib.cast_inputs(x, self.dtype)
    latents = []
    for k in range(self.num_blocks):
      self.sow('intermediates', 'block_inputs', stream)
      out, latent = ResidualAEBlock(tuple(self.layers), self.dropout, dtype=self.dtype,
                                    name=f'block_{k}')(stream, deterministic=deterministic)
      stream = stream + out
      latents.append(latent)
    imagined = stream
    if self.transition:
      dim = x.shape[-1]
      dense = lambda name: nn.Dense(dim, dtype=self.dtype, name=name)  # noqa: E731
      imagined = dense('transition_1')(nn.relu(dense('transition_0')(imagined)))
    return imagined, jnp.concatenate(latents, axis=-1)


class PlainAE(nn.Module):
  """MMIN-AE ablation: one autoencoder, x [B, D] -> (imagined [B, D], latent [B, layers[-1]]).

  Same call interface as `CascadeResidualAE`, so MMIN can swap it in; the classifier's input is
  layers[-1] wide instead of num_blocks * layers[-1]. Activations follow the authors' SimpleFcAE:
  LeakyReLU after every encoder layer (the latent included), LeakyReLU between decoder layers and
  a ReLU on the output (`output_relu`; note it keeps the imagined embedding non-negative).
  """
  layers: Sequence[int] = (256, 128, 64)
  dropout: float = 0.0
  output_relu: bool = True
  dtype: layers_lib.Dtype | None = None  # compute dtype (None: promoted); parameters float32

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> tuple[Array, Array]:
    h = x = layers_lib.cast_inputs(x, self.dtype)
    for i, features in enumerate(self.layers):
      h = nn.leaky_relu(nn.Dense(features, dtype=self.dtype, name=f'enc_{i}')(h), negative_slope=0.01)
      h = layers_lib.Dropout(self.dropout)(h, deterministic=deterministic)
    latent = h
    widths = (*reversed(self.layers[:-1]), x.shape[-1])
    for i, features in enumerate(widths):
      h = nn.Dense(features, dtype=self.dtype, name=f'dec_{i}')(h)
      if i < len(widths) - 1:
        h = nn.leaky_relu(h, negative_slope=0.01)
        h = layers_lib.Dropout(self.dropout)(h, deterministic=deterministic)
    if self.output_relu:
      h = nn.relu(h)
    return h, latent
