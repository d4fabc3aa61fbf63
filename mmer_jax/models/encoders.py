"""Per-modality utterance encoders: LSTM + max-pool, TextCNN, MLP, and a per-modality container.

These are MMIN's utterance encoders (Zhao, Li, Jin, ACL 2021), shared by every utterance-level
method and by the fusion baselines: `LSTMEncoder` (audio and visual sequences), `TextCNN` (text
sequences), `MLPEncoder` (utterance-level vectors [B, D]) and `ModalityEncoders`, one of them per
present modality, returning a dict of [B, E] embeddings.

Sequences are [B, T, D] with `lengths` [B]. By default padding never influences an output: padded
frames are zeroed before any computation and pooling only looks at valid positions;
`pool_padding=True` (`config.method.encoders.padding='included'`) reproduces the authors' pooling
over the padding.

Details: docs/baselines.md#encoders-modelsencoderspy.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.data.schema import MODALITIES
from mmer_jax.models import layers

Array = jax.Array
Dtype = Any

ENCODER_KINDS = ('lstm', 'textcnn', 'mlp')
PADDING = ('masked', 'included')  # ModalityEncoders.padding


def valid_mask(lengths: Array | None, max_len: int, batch: int) -> Array:
  """Boolean [B, T]: True for frames before each sequence's length (all True without lengths)."""
  if lengths is None:
    return jnp.ones((batch, max_len), bool)
  return jnp.arange(max_len)[None, :] < jnp.asarray(lengths)[:, None]


def zero_padding(x: Array, mask: Array) -> Array:
  """Replaces padded frames by zeros; `where` (not multiply) so NaN/inf garbage cannot leak."""
  return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))


def masked_max(x: Array, mask: Array, axis: int) -> Array:
  """Max of `x` over `axis` counting only positions where `mask` is True (-inf elsewhere).

  Rows with no valid position give -inf; callers decide what such rows mean.
  """
  return jnp.max(jnp.where(jnp.expand_dims(mask, -1), x, -jnp.inf), axis=axis)


def zero_lstm_carry(batch: int, hidden: int, dtype, param_dtype=None) -> tuple[Array, Array]:
  """An LSTM's initial (c, h) in the dtype the cell computes in.

  That is the promotion of the inputs' and the parameters' dtypes (what `OptimizedLSTMCell` does
  with `dtype=None`), so float64 inputs work with float32 parameters (float64 gradient checks) and
  bfloat16 inputs with float32 parameters; a carry in the parameters' dtype alone would change
  type inside the scan in the first case, one in the inputs' dtype alone in the second.
  """
  if param_dtype is not None:
    dtype = jnp.result_type(dtype, param_dtype)
  zeros = jnp.zeros((batch, hidden), dtype)
  return zeros, zeros


class PairedBiasLSTMCell(nn.RNNCellBase):
  """An LSTM cell in PyTorch's parameter layout: gates (i, f, g, o) = W_ih x + b_ih + W_hh h + b_hh.

  The two biases are redundant in the forward pass, but each is a parameter of its own, so an
  optimiser such as Adam moves their sum about twice as far per step as the single bias of
  `nn.OptimizedLSTMCell` (the same equations otherwise). Used with `biases=2` to reproduce the
  authors' PyTorch training step exactly (`mmer_jax/parity`). Dense-default initialisation.
  """
  features: int
  param_dtype: Dtype = jnp.float32
  dtype: Dtype | None = None  # compute dtype of the products (the carry keeps its own)

  @nn.compact
  def __call__(self, carry, inputs):
    c, h = carry
    dense = functools.partial(nn.Dense, 4 * self.features, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    z = dense(name='input')(inputs) + dense(name='hidden')(h)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
    h = nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h

  def initialize_carry(self, rng, input_shape):
    del rng
    return zero_lstm_carry(input_shape[0], self.features, jnp.float32, self.param_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class LSTMEncoder(nn.Module):
  """1-layer unidirectional LSTM over [B, T, D] frames, max-pooled over the valid frames -> [B, hidden].

  MMIN's acoustic/visual encoder. The recurrence is one `nn.RNN` scan of an `OptimizedLSTMCell`
  (a single XLA while loop, no per-step Python); on CPU this measured faster than hoisting the
  input projection out of the scan. `seq_lengths` freezes the carry after each sequence's end. The
  LSTM is causal, so outputs at valid steps never see later (padding) frames; the max-pool then
  ignores the padded steps, so padding cannot change the embedding. A sequence of length 0 (e.g.
  an all-padding row) gets a zero embedding instead of -inf.

  Attributes:
    hidden: LSTM state size = embedding size.
    unroll: scan unroll factor (1 was fastest on CPU; worth trying 2-8 on accelerators).
    param_dtype: parameter dtype (the carry takes the promoted input/parameter dtype).
    pool_padding: run over the (zeroed) padded frames and max-pool over every frame, as the
      authors' code does (see the module docstring).
    biases: 1 (`nn.OptimizedLSTMCell`) or 2 (`PairedBiasLSTMCell`, PyTorch's b_ih and b_hh).
    dtype: compute dtype of the cell's products (None: promoted); with bfloat16 the carry
      stays float32 (the promotion with the parameters), the embedding is cast to `dtype`.
  """
  hidden: int = 128
  unroll: int = 1
  param_dtype: Dtype = jnp.float32
  pool_padding: bool = False
  biases: int = 1
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None, *, deterministic: bool = True) -> Array:
    """x: [B, T, D]; lengths: int [B] or None (all valid); `deterministic` is unused (no dropout)."""
    del deterministic
    x = layers.cast_inputs(x, self.dtype)
    batch, max_len = x.shape[:2]
    mask = valid_mask(lengths, max_len, batch)
    x = zero_padding(x, mask)
    if self.biases not in (1, 2):
      raise ValueError(f'method.encoders.lstm_biases: expected 1 or 2, got {self.biases!r}')
    cell_type = nn.OptimizedLSTMCell if self.biases == 1 else PairedBiasLSTMCell
    cell = cell_type(self.hidden, param_dtype=self.param_dtype, dtype=self.dtype, name='lstm')
    carry = zero_lstm_carry(batch, self.hidden, x.dtype, self.param_dtype)
    outputs = nn.RNN(cell, unroll=self.unroll)(  # [B, T, H]
        x, initial_carry=carry, seq_lengths=None if self.pool_padding else lengths)
    if self.pool_padding:
      return layers.cast_inputs(jnp.max(outputs, axis=1), self.dtype)
    pooled = masked_max(outputs, mask, axis=1)
    pooled = jnp.where(mask.any(axis=1, keepdims=True), pooled, jnp.zeros((), pooled.dtype))
    return layers.cast_inputs(pooled, self.dtype)


class TextCNN(nn.Module):
  """Conv1d per kernel size + ReLU + max-pool over valid windows, concat, dropout, Dense + ReLU.

  MMIN's lexical encoder: 'VALID' convolutions as in the authors' code (a window of size k starts
  at positions 0..length-k), so with kernels (3, 4, 5) x 128 filters the pooled vector has 384
  features, followed by dropout and Dense(out_dim) + ReLU.

  Padding: frames beyond `lengths` are zeroed, and only windows that start at or before
  `length - k` enter the max-pool (the others are set to -inf before the pool), so padding never
  changes the output. A sequence shorter than a kernel (length < k) is treated as right
  zero-padded to k frames: exactly one window, starting at 0, is pooled, covering its real frames
  and zeros. The time axis is zero-padded to at least max(kernel_sizes) for the same reason.

  Attributes:
    num_filters: output channels per kernel size.
    kernel_sizes: temporal kernel sizes.
    out_dim: embedding size.
    dropout: dropout rate on the pooled features (MMIN: 0.5).
    pool_padding: max-pool over every window, those over the (zeroed) padding included, as the
      authors' code does.
    dtype: compute dtype (None: promoted); parameters stay float32.
  """
  num_filters: int = 128
  kernel_sizes: Sequence[int] = (3, 4, 5)
  out_dim: int = 128
  dropout: float = 0.5
  pool_padding: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None, *, deterministic: bool) -> Array:
    """x: [B, T, D]; lengths: int [B] or None (all valid) -> [B, out_dim]."""
    x = layers.cast_inputs(x, self.dtype)
    batch, max_len = x.shape[:2]
    mask = valid_mask(lengths, max_len, batch)
    x = zero_padding(x, mask)
    widest = max(self.kernel_sizes)
    if max_len < widest:
      x = jnp.pad(x, ((0, 0), (0, widest - max_len), (0, 0)))
    lengths = mask.sum(axis=1)  # also covers lengths=None
    if self.pool_padding:
      lengths = jnp.full_like(lengths, x.shape[1])
    pooled = []
    for k in self.kernel_sizes:
      h = nn.relu(nn.Conv(self.num_filters, (k,), padding='VALID', dtype=self.dtype,
                          name=f'conv_{k}')(x))
      num_windows = jnp.maximum(lengths - k + 1, 1)  # >= 1: short sequences keep window 0
      windows = jnp.arange(h.shape[1])[None, :] < num_windows[:, None]
      pooled.append(masked_max(h, windows, axis=1))
    h = jnp.concatenate(pooled, axis=-1)
    h = layers.Dropout(self.dropout)(h, deterministic=deterministic)
    return nn.relu(nn.Dense(self.out_dim, dtype=self.dtype, name='embed')(h))


class MLPEncoder(nn.Module):
  """Dense + ReLU + dropout for each of `hidden` and then `out_dim`: [B, D] -> [B, out_dim].

  The encoder for utterance-level feature vectors (MMIN's FcEncoder shape: every layer, the last
  included, is followed by ReLU and dropout).
  """
  hidden: Sequence[int] = ()
  out_dim: int = 128
  dropout: float = 0.3
  dtype: Dtype | None = None  # compute dtype (None: promoted); parameters stay float32

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None, *, deterministic: bool) -> Array:
    """x: [B, D] (or [..., D]); `lengths` is accepted for a uniform interface and ignored."""
    del lengths
    x = layers.cast_inputs(x, self.dtype)
    for i, features in enumerate((*self.hidden, self.out_dim)):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f'dense_{i}')(x))
      x = layers.Dropout(self.dropout)(x, deterministic=deterministic)
    return x


def resolve_kinds(modalities: Sequence[str], kinds, ranks: Mapping[str, int] | None = None) -> dict[str, str]:
  """The encoder kind per modality from an explicit spec, or from the input ranks if `kinds` is None.

  `kinds` may be None (rank 3 -> 'textcnn' for text, 'lstm' otherwise; rank 2 -> 'mlp'), one kind
  for every modality ('mlp'), a tuple aligned with `modalities`, or a mapping name -> kind.
  """
  if kinds is None:
    if ranks is None:
      raise ValueError('kinds=None needs the input ranks to choose encoders')
    out = {}
    for m in modalities:
      if ranks[m] == 3:
        out[m] = 'textcnn' if m == 'text' else 'lstm'
      elif ranks[m] == 2:
        out[m] = 'mlp'
      else:
        raise ValueError(f'{m}: expected [B, D] or [B, T, D] features, got rank {ranks[m]}')
  elif isinstance(kinds, str):
    out = {m: kinds for m in modalities}
  elif isinstance(kinds, Mapping):
    out = {m: kinds[m] for m in modalities}
  else:
    kinds = tuple(kinds)
    if len(kinds) != len(modalities):
      raise ValueError(f'kinds {kinds} must align with modalities {tuple(modalities)}')
    out = dict(zip(modalities, kinds))
  for m, kind in out.items():
    if kind not in ENCODER_KINDS:
      raise ValueError(f'{m}: unknown encoder kind {kind!r}; expected one of {ENCODER_KINDS}')
    if ranks is not None:
      want = 2 if kind == 'mlp' else 3
      if ranks[m] != want:
        raise ValueError(f'{m}: a {kind!r} encoder needs rank-{want} features, got rank {ranks[m]}')
  return out


class ModalityEncoders(nn.Module):
  """One encoder per present modality -> dict name -> [B, embed_dim] embeddings.

  Submodules are named after the modality (`params['audio']`, ...), so MMIN can copy a trained
  full-modality model's encoders into its own and use them as the frozen teacher.

  Attributes:
    modalities: present modalities, a subset of ('audio', 'visual', 'text') (order kept).
    embed_dim: embedding size of every modality (LSTM hidden, TextCNN and MLP output).
    kinds: None (choose by input rank: sequence -> LSTM for audio/visual and TextCNN for text,
      utterance level -> MLP), one kind for all ('mlp'), a tuple aligned with `modalities`
      (e.g. ('lstm', 'lstm', 'textcnn')) or a mapping name -> kind.
    dropout: dropout of the TextCNN and MLP encoders (the LSTM has none, as in MMIN).
    num_filters, kernel_sizes: TextCNN convolutions.
    mlp_hidden: hidden sizes of the MLP encoders.
    param_dtype: parameter dtype of the LSTM encoders.
    padding: 'masked' (padded frames never reach an output) or 'included' (the authors' way:
      the LSTM and TextCNN pools run over the zeroed padding too).
    lstm_biases: 1, or 2 for PyTorch's pair of LSTM biases (`PairedBiasLSTMCell`).
    dtype: compute dtype of every encoder (None: promoted; `layers` module docstring); the
      features are cast to it at the entry, the parameters stay `param_dtype`.
  """
  modalities: Sequence[str] = MODALITIES
  embed_dim: int = 128
  kinds: Any = None
  dropout: float = 0.5
  num_filters: int = 128
  kernel_sizes: Sequence[int] = (3, 4, 5)
  mlp_hidden: Sequence[int] = ()
  param_dtype: Dtype = jnp.float32
  padding: str = 'masked'
  lstm_biases: int = 1
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, features: Mapping[str, Array], lengths: Mapping[str, Array] | None = None, *,
               deterministic: bool) -> dict[str, Array]:
    """features: name -> [B, D] or [B, T, D]; lengths: name -> int [B] for sequence modalities."""
    missing = [m for m in self.modalities if m not in features]
    if missing:
      raise ValueError(f'features lack modalities {missing}; have {sorted(features)}')
    if self.padding not in PADDING:
      raise ValueError(f'method.encoders.padding: expected one of {PADDING}, got {self.padding!r}')
    pool_padding = self.padding == 'included'
    lengths = lengths or {}
    features = layers.cast_inputs({m: features[m] for m in self.modalities}, self.dtype)
    kinds = resolve_kinds(self.modalities, self.kinds, {m: features[m].ndim for m in self.modalities})
    out = {}
    for m in self.modalities:
      kind = kinds[m]
      if kind == 'lstm':
        encoder = LSTMEncoder(self.embed_dim, param_dtype=self.param_dtype, pool_padding=pool_padding,
                              biases=self.lstm_biases, dtype=self.dtype, name=m)
      elif kind == 'textcnn':
        encoder = TextCNN(self.num_filters, tuple(self.kernel_sizes), self.embed_dim, self.dropout,
                          pool_padding=pool_padding, dtype=self.dtype, name=m)
      else:
        encoder = MLPEncoder(tuple(self.mlp_hidden), self.embed_dim, self.dropout, dtype=self.dtype,
                             name=m)
      out[m] = encoder(features[m], lengths.get(m), deterministic=deterministic)
    return out
