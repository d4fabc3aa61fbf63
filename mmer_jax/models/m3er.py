"""M3ER's classification network (Mittal et al., AAAI 2020): per-modality LSTMs, a gated memory
updated by attention at every step, and one classifier head per modality.

One single-layer LSTM (32) per modality over its frames; a memory (128) updated at every step in
the style of the Memory Fusion Network (`MemoryFusionCell`); per modality a head on [its last
LSTM output; the memory], whose probabilities the multiplicative fusion losses combine
(`methods/m3er.py`). A modality that does not take part (`used` False) is absent, not zero: the
result equals the model without it. Padding never changes an output. Under mixed precision the
recurrent state is carried in at least float32.

The network and the choices the paper leaves open: docs/m3er.md#the-network-in-code-modelsm3erpy.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.models import layers

Array = jax.Array


def _mlp(x: Array, hidden: int, out: int, name: str, dtype=None) -> Array:
  """Dense(hidden) -> ReLU -> Dense(out): the small nets of the memory's attention and gates."""
  x = nn.relu(nn.Dense(hidden, dtype=dtype, name=f'{name}_hidden')(x))
  return nn.Dense(out, dtype=dtype, name=f'{name}_out')(x)


class MemoryFusionCell(nn.Module):
  """One time step: every modality's LSTM, then the attention-gated memory update.

  carry: (cells {m: [B, H]}, outputs {m: [B, H]}, memory [B, S]); inputs per step: the LSTMs'
  input projections {m: [B, 4H]}, which modalities have a frame at this step {m: [B]}, and
  `used` [B, M] (fixed over the steps).
  """
  modalities: Sequence[str]
  lstm_hidden: int = 32
  memory_dim: int = 128
  attention_hidden: int = 64
  dtype: layers.Dtype | None = None  # compute dtype of the products (the carry keeps its own)

  @nn.compact
  def __call__(self, carry, pregates, valid, used):
    cells, outputs, memory = carry
    mlp = lambda x, out, name: _mlp(x, self.attention_hidden, out, name, self.dtype)  # noqa: E731
    new_cells, new_outputs, previous, current = {}, {}, [], []
    for i, m in enumerate(self.modalities):
      z = pregates[m] + nn.Dense(4 * self.lstm_hidden, use_bias=False, dtype=self.dtype,
                                 name=f'recurrent_{m}')(outputs[m])
      gi, gf, gg, go = jnp.split(z, 4, axis=-1)
      c = nn.sigmoid(gf) * cells[m] + nn.sigmoid(gi) * jnp.tanh(gg)
      h = nn.sigmoid(go) * jnp.tanh(c)
      keep = valid[m][:, None]
      new_cells[m] = jnp.where(keep, c, cells[m])
      new_outputs[m] = jnp.where(keep, h, outputs[m])
      on = used[:, i:i + 1].astype(h.dtype)  # an absent modality never reaches the memory
      previous.append(outputs[m] * on)
      current.append(new_outputs[m] * on)
    delta = jnp.concatenate(previous + current, axis=-1)  # [B, 2 M H]
    scores = mlp(delta, delta.shape[-1], 'attention')
    attention = nn.softmax(scores.astype(layers.stat_dtype(scores.dtype)), axis=-1)
    attended = delta * attention.astype(delta.dtype)
    proposal = jnp.tanh(mlp(attended, self.memory_dim, 'proposal'))
    both = jnp.concatenate([attended, memory], axis=-1)
    retain = nn.sigmoid(mlp(both, self.memory_dim, 'retain_gate'))
    update = nn.sigmoid(mlp(both, self.memory_dim, 'update_gate'))
    any_valid = jnp.any(jnp.stack([valid[m] for m in self.modalities], -1), -1, keepdims=True)
    memory = jnp.where(any_valid, retain * memory + update * proposal, memory)
    return (new_cells, new_outputs, memory), None


class M3ERNetwork(nn.Module):
  """Per-modality LSTMs + attention-gated memory + per-modality heads -> logits [B, M, C].

  Attributes:
    modalities: the modalities in the library's (audio, visual, text) order.
    num_classes: C.
    lstm_hidden, memory_dim: 32 and 128 in the paper.
    attention_hidden: hidden width of the attention, proposal and gate nets (the paper: unset).
    head_hidden: 64 in the paper (160 -> 64).
    dropout: before each head's output layer.
    dtype: compute dtype (None: promoted; module docstring); the features are cast to it.
  """
  modalities: Sequence[str]
  num_classes: int
  lstm_hidden: int = 32
  memory_dim: int = 128
  attention_hidden: int = 64
  head_hidden: int = 64
  dropout: float = 0.0
  dtype: layers.Dtype | None = None

  @nn.compact
  def __call__(self, features: Mapping[str, Array], lengths: Mapping[str, Array] | None,
               used: Array, *, deterministic: bool = True) -> Array:
    """features {m: [B, T_m, D_m] or [B, D_m]}; lengths {m: [B]} (None: every frame valid);
    used bool [B, M] in `modalities` order. Returns per-modality logits [B, M, C]."""
    features = layers.cast_inputs({m: features[m] for m in self.modalities}, self.dtype)
    first = features[self.modalities[0]]
    batch = first.shape[0]
    seqs = {m: features[m] if features[m].ndim == 3 else features[m][:, None, :] for m in self.modalities}
    steps = max(x.shape[1] for x in seqs.values())
    pregates, valid = {}, {}
    for m in self.modalities:
      x = seqs[m]
      n = x.shape[1]
      if lengths is not None and m in lengths and features[m].ndim == 3:
        length = jnp.asarray(lengths[m])
      else:
        length = jnp.full((batch,), n, jnp.int32)
      mask = jnp.arange(n)[None, :] < length[:, None]
      x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))  # padding cannot leak
      z = nn.Dense(4 * self.lstm_hidden, dtype=self.dtype, name=f'input_{m}')(x)
      pregates[m] = jnp.pad(z, ((0, 0), (0, steps - n), (0, 0)))
      valid[m] = jnp.arange(steps)[None, :] < length[:, None]
    # The state's dtype: the products' promoted dtype, and at least float32 (module docstring).
    dtype = layers.stat_dtype(jnp.result_type(*[pregates[m].dtype for m in self.modalities]))
    zeros = jnp.zeros((batch, self.lstm_hidden), dtype)
    carry = ({m: zeros for m in self.modalities}, {m: zeros for m in self.modalities},
             jnp.zeros((batch, self.memory_dim), dtype))
    used = jnp.asarray(used, bool)
    scan = nn.scan(MemoryFusionCell, variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(1, 1, nn.broadcast), out_axes=1)
    (_, outputs, memory), _ = scan(
        modalities=tuple(self.modalities), lstm_hidden=self.lstm_hidden, memory_dim=self.memory_dim,
        attention_hidden=self.attention_hidden, dtype=self.dtype, name='memory_fusion')(
            carry, pregates, valid, used)
    logits = []
    for m in self.modalities:
      x = jnp.concatenate([outputs[m], memory], axis=-1)  # 32 + 128 = 160
      x = nn.relu(nn.Dense(self.head_hidden, dtype=self.dtype, name=f'head_{m}_hidden')(x))
      x = layers.Dropout(self.dropout)(x, deterministic=deterministic)
      logits.append(nn.Dense(self.num_classes, dtype=self.dtype, name=f'head_{m}_out')(x))
    return jnp.stack(logits, axis=1)
