"""bc-LSTM: a bidirectional contextual LSTM over the turns of a dialogue (Poria et al., ACL 2017).

The conversational baseline: every utterance is first encoded on its own (per modality, a Dense +
ReLU + dropout, zeroed where the modality is missing), the encodings are concatenated, and a
bidirectional LSTM over the turns of each dialogue gives every utterance its context in both
directions before a per-turn classifier: logits [B, L, C]. It is the single-level ("flat")
variant of the paper's hierarchical model. Takes dialogue batches (`data/pipeline.py`); padding
never changes a real turn's logits.

The model, the variant and the padding: docs/baselines.md#bc-lstm-modelsbclstmpy.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.data.schema import MODALITIES
from mmer_jax.models import encoders
from mmer_jax.models import layers

Array = jax.Array
Dtype = Any


class BCLSTM(nn.Module):
  """bc-LSTM over dialogues -> per-turn outputs [B, L, num_outputs].

  Attributes:
    modalities: present modalities (subset of ('audio', 'visual', 'text'), order kept).
    utterance_dim: size of each modality's Dense + ReLU utterance feature.
    lstm_hidden: LSTM state size per direction (the context vector is 2 * lstm_hidden).
    dense_dim: size of the Dense + ReLU layer after the LSTM.
    dropout: dropout after the utterance features, the LSTM and the dense layer.
    num_outputs: classes (logits) or 1 (regression).
    param_dtype: parameter dtype (the carry takes the promoted input/parameter dtype).
    dtype: compute dtype (None: promoted; `layers` docstring); the features are cast to it.
  """
  modalities: Sequence[str] = MODALITIES
  utterance_dim: int = 100
  lstm_hidden: int = 100
  dense_dim: int = 100
  dropout: float = 0.5
  num_outputs: int = 6
  param_dtype: Dtype = jnp.float32
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, features: Mapping[str, Array], turn_mask: Array, modality_mask: Array | None = None,
               *, deterministic: bool) -> Array:
    """features: name -> [B, L, D]; turn_mask: bool [B, L]; modality_mask: bool [B, L, 3] or [B, 3]."""
    turn_mask = jnp.asarray(turn_mask, bool)
    batch, num_turns = turn_mask.shape
    if modality_mask is None:
      modality_mask = jnp.ones((batch, num_turns, len(MODALITIES)), bool)
    modality_mask = jnp.asarray(modality_mask, bool)
    if modality_mask.ndim == 2:
      modality_mask = jnp.broadcast_to(modality_mask[:, None, :], (batch, num_turns, modality_mask.shape[-1]))

    features = layers.cast_inputs({m: features[m] for m in self.modalities}, self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    utterances = []
    for m in self.modalities:
      present = (turn_mask & modality_mask[..., MODALITIES.index(m)])[..., None]
      x = jnp.where(present, features[m], jnp.zeros((), features[m].dtype))
      u = nn.relu(dense(self.utterance_dim, name=f'utterance_{m}')(x))
      utterances.append(jnp.where(present, u, jnp.zeros((), u.dtype)))
    u = jnp.concatenate(utterances, axis=-1)
    u = layers.Dropout(self.dropout)(u, deterministic=deterministic)

    lengths = turn_mask.sum(axis=1).astype(jnp.int32)

    def lstm(name):  # the cell holds the parameters, named after the direction
      return nn.RNN(nn.OptimizedLSTMCell(self.lstm_hidden, param_dtype=self.param_dtype,
                                         dtype=self.dtype, name=name))

    carry = encoders.zero_lstm_carry(batch, self.lstm_hidden, u.dtype, self.param_dtype)
    context = nn.Bidirectional(lstm('lstm_forward'), lstm('lstm_backward'))(
        u, initial_carry=(carry, carry), seq_lengths=lengths)
    context = layers.Dropout(self.dropout)(context, deterministic=deterministic)
    h = nn.relu(dense(self.dense_dim, name='dense')(context))
    h = layers.Dropout(self.dropout)(h, deterministic=deterministic)
    logits = dense(self.num_outputs, name='classifier')(h)
    return jnp.where(turn_mask[..., None], logits, jnp.zeros((), logits.dtype))
