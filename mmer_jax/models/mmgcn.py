"""MMGCN (Hu et al., ACL 2021): a deep graph convolution over the modalities of a conversation.

Each utterance becomes one node per modality; within a dialogue every pair of nodes of one
modality is connected (self-loops included) and an utterance's nodes are connected across
modalities. The edge weights are computed here from the node features, `1 - arccos(cos_sim(x_i,
x_j)) / pi`, so gradients flow through them, and normalised symmetrically, `D^-1/2 A D^-1/2`. A
deep GCN with initial residual and identity mapping (GCNII) propagates over the graph; the
classifier sees each utterance's modality nodes, concatenated. A node is absent (sends and
receives nothing, counts in no degree) when its turn is padding or its modality is missing or
unused: the graph without that node. Dialogue batches (`data/pipeline.py`).

The model, its two message-passing layouts and the shapes: docs/mmgcn.md#what-it-is.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from mmer_jax.data.schema import MODALITIES
from mmer_jax.models import encoders
from mmer_jax.models import layers

Array = jax.Array

FUSIONS = ('graph', 'early', 'late', 'gated')
SPEAKER_NODES = ('none', 'text', 'all')


def edge_similarity(x: Array, senders: Array, receivers: Array, *, cos_scale: float = 0.99999) -> Array:
  """MMGCN's edge weight `1 - arccos(cos_sim(x_s, x_r)) / pi` for every edge of one graph.

  x: node features [N, D]; senders, receivers: [E]. The cosine is scaled by `cos_scale` < 1 (the
  authors' 0.99999) after clipping to [-1, 1]: arccos has an infinite derivative at +-1, which
  every self-loop would hit. A zero vector has cosine 0 with everything (no division by zero).
  """
  unit = _unit(x)
  return angular_similarity(jnp.sum(unit[senders] * unit[receivers], axis=-1), cos_scale)


def _unit(x: Array) -> Array:
  """x / |x| over the last axis; a zero vector stays zero (cosine 0 with everything)."""
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def angular_similarity(cos: Array, cos_scale: float) -> Array:
  """`1 - arccos(cos) / pi` of cosines clipped to [-1, 1] and scaled by `cos_scale`."""
  return 1.0 - jnp.arccos(jnp.clip(cos, -1.0, 1.0) * cos_scale) / math.pi


def _inverse_sqrt_degree(degree: Array) -> Array:
  """1 / sqrt(d), and 0 for nodes of degree 0 (absent ones)."""
  return jnp.where(degree > 0, jax.lax.rsqrt(jnp.where(degree > 0, degree, 1.0)), 0.0)


def normalize_edges(weights: Array, senders: Array, receivers: Array, num_nodes: int) -> Array:
  """`D^-1/2 A D^-1/2` on an edge list: each weight divided by sqrt(d_sender d_receiver), with
  d the weighted degree (row sums of A). Nodes of degree 0 (absent ones) contribute nothing."""
  degree = jraph.segment_sum(weights, receivers, num_nodes)
  inv_sqrt = _inverse_sqrt_degree(degree)
  return weights * inv_sqrt[senders] * inv_sqrt[receivers]


def propagate(h: Array, senders: Array, receivers: Array, weights: Array) -> Array:
  """`A h` on an edge list: sum over incoming edges of weight * sender features. h [N, D]."""
  return jraph.segment_sum(h[senders] * weights[:, None], receivers, h.shape[0])


def propagate_edges(h: Array, adjacency: tuple[Array, Array, Array]) -> Array:
  """`propagate` on each shard's graph: h [S, N, D]; adjacency (senders, receivers, normalised
  weights), each [S, E]."""
  senders, receivers, weights = adjacency
  return jax.vmap(propagate)(h, senders, receivers, weights)


def block_similarity(x: Array, present: Array, *, cos_scale: float = 0.99999,
                     cross_modal_weight: float = 1.0, cross_modal: bool = True) -> tuple[Array, Array]:
  """MMGCN's weighted adjacency of a dialogue batch in blocks, normalised `D^-1/2 A D^-1/2`.

  x: node features [B, M, L, D] (dialogue, modality, turn); present [B, M, L]. Within a
  (dialogue, modality) every pair of turns is an edge, so that block is dense: `intra`
  [B, M, L, L], intra[b, m, i, j] the weight of the edge (m, j) -> (m, i). Across modalities only
  the same turn is joined: `cross` [B, M, M, L], cross[b, m, a, t] the weight of (a, t) -> (m, t)
  (zero for a == m). The same numbers as `edge_similarity` + `normalize_edges` on the jraph edge
  list of `data/graphs.py` (tested), with dense products in place of gathers and scatters.
  """
  m = x.shape[1]
  unit = _unit(x)
  intra_on = present[..., :, None] & present[..., None, :]
  intra_cos = jnp.einsum('bmid,bmjd->bmij', unit, unit)
  intra = jnp.where(intra_on, angular_similarity(intra_cos, cos_scale), 0.0)
  cross_on = present[:, :, None, :] & present[:, None, :, :] & ~jnp.eye(m, dtype=bool)[None, :, :, None]
  cross_on = cross_on & cross_modal
  cross_cos = jnp.einsum('bmtd,batd->bmat', unit, unit)
  cross = jnp.where(cross_on, angular_similarity(cross_cos, cos_scale) * cross_modal_weight, 0.0)
  degree = intra.sum(-1) + cross.sum(2)  # [B, M, L]: row sums of A
  inv_sqrt = _inverse_sqrt_degree(degree)
  intra = intra * inv_sqrt[..., :, None] * inv_sqrt[..., None, :]
  cross = cross * inv_sqrt[:, :, None, :] * inv_sqrt[:, None, :, :]
  return intra, cross


def propagate_blocks(h: Array, adjacency: tuple[Array, Array]) -> Array:
  """`A h` in blocks (`block_similarity`): h [B, M, L, D].

  The cross-modal part sums M scaled copies of h elementwise: as an einsum it is a contraction
  over M <= 3 batched over (B, L), which XLA's CPU backend runs as thousands of 3 x 3 products
  with transposes around them (~20x slower, forward and backward, for an IEMOCAP batch)."""
  intra, cross = adjacency
  across = sum(cross[:, :, a, :, None] * h[:, None, a] for a in range(cross.shape[2]))
  return jnp.einsum('bmij,bmjd->bmid', intra, h) + across


PROPAGATE = {'edges': propagate_edges, 'blocks': propagate_blocks}


def _uniform(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


class GCNIILayer(nn.Module):
  """One GCNII layer (layer index `layer` >= 1), before its activation.

  s = (1 - alpha) A h + alpha h0 (initial residual); theta = ln(lambda / layer + 1).
  Paper form (identity mapping): out = (1 - theta) s + theta s W.
  `concat_input=True` (the authors' `variant=True`): out = (1 - theta) s + theta [A h, h0] W.
  `message_passing`: how A h is computed from `adjacency`, 'edges' (`propagate_edges`) or
  'blocks' (`propagate_blocks`).
  """
  features: int
  layer: int
  alpha: float = 0.1
  lamda: float = 0.5
  concat_input: bool = False
  message_passing: str = 'edges'
  dtype: layers.Dtype | None = None  # compute dtype of the product with the kernel (None: promoted)

  @nn.compact
  def __call__(self, h: Array, h0: Array, adjacency: tuple) -> Array:
    """h, h0: node features, [S, N, D] ('edges') or [B, M, L, D] ('blocks')."""
    theta = layer_theta(self.layer, self.lamda)
    hi = PROPAGATE[self.message_passing](h, adjacency)
    support = (1.0 - self.alpha) * hi + self.alpha * h0
    inputs = jnp.concatenate([hi, h0], axis=-1) if self.concat_input else support
    kernel = self.param('kernel', _uniform(1.0 / math.sqrt(self.features)),
                        (inputs.shape[-1], self.features))
    if self.dtype is not None:
      inputs, kernel, support = nn.dtypes.promote_dtype(inputs, kernel, support, dtype=self.dtype)
    return theta * (inputs @ kernel) + (1.0 - theta) * support


def layer_theta(layer: int, lamda: float) -> float:
  """GCNII's identity-mapping strength of layer `layer` >= 1: ln(lambda / layer + 1)."""
  return math.log(lamda / layer + 1.0)


def fold_identity(kernels: Array, *, alpha: float, lamda: float, concat_input: bool) -> tuple[Array, Array]:
  """The GCNII layers' kernels folded with their identity mapping and initial residual into two
  matrices per layer, so that layer l's output (before its ReLU) is `(A h) P_l + h0 Q_l`.

  kernels [K, D_in, D] (layer l = 1..K at index l - 1; D_in = 2 D for `concat_input`). Paper form:
  (1 - theta) s + theta s W with s = (1 - alpha) A h + alpha h0, i.e. W' = theta W + (1 - theta) I,
  P = (1 - alpha) W', Q = alpha W'. Authors' form: (1 - theta) s + theta [A h, h0] W, i.e.
  P = theta W_top + (1 - theta)(1 - alpha) I, Q = theta W_bottom + (1 - theta) alpha I.
  """
  num_layers, _, d = kernels.shape
  theta = jnp.asarray([layer_theta(l, lamda) for l in range(1, num_layers + 1)], kernels.dtype)
  theta = theta[:, None, None]
  eye = jnp.eye(d, dtype=kernels.dtype)
  if concat_input:
    top, bottom = kernels[:, :d], kernels[:, d:]
    return (theta * top + (1 - theta) * (1 - alpha) * eye,
            theta * bottom + (1 - theta) * alpha * eye)
  folded = theta * kernels + (1 - theta) * eye
  return (1 - alpha) * folded, alpha * folded


def dropout(x: Array, rate, key: Array | None) -> Array:
  """Inverted dropout as `layers.Dropout` draws it (the same mask for the same key), as a plain
  function for use inside `lax.scan`; `key` None or a Python rate of 0 keeps everything. The rate
  may be traced (a vmapped hyperparameter)."""
  traced = isinstance(rate, jax.Array)
  if key is None or (not traced and rate == 0.0):
    return x
  if not traced and rate == 1.0:
    return jnp.zeros_like(x)
  keep_prob = 1.0 - rate
  mask = jax.random.bernoulli(key, p=keep_prob, shape=x.shape)
  safe = jnp.where(keep_prob > 0, keep_prob, 1.0) if traced else keep_prob
  return jax.lax.select(mask, x / jnp.asarray(safe, x.dtype), jnp.zeros_like(x))


class _Kernel(nn.Module):
  """A GCNII layer's kernel alone (the parameter `layer_<l>/kernel` of `GCNIILayer`), for the
  fused stack, which computes the layers itself."""
  shape: tuple[int, int]

  @nn.compact
  def __call__(self) -> Array:
    return self.param('kernel', _uniform(1.0 / math.sqrt(self.shape[1])), self.shape)


class DeepGCN(nn.Module):
  """The authors' GCNII stack: dropout -> Dense + ReLU (h0) -> `num_layers` x (dropout -> GCNII
  layer -> ReLU) -> dropout; the output is [input, h] (their `use_residue`).

  `fused` (default) computes the layers as one `lax.scan` over their stacked, folded kernels
  (`fold_identity`): per layer one propagation, one [N, D] x [D, D] product and an add, the
  initial residual's products for all layers at once, `h0 [Q_1 .. Q_K]`, before the loop. The same
  parameters (`layer_<l>/kernel`) and the same numbers as `fused=False`, the layer-by-layer
  `GCNIILayer`s (tested), but not the same dropout masks: each layer's key is split from one
  `make_rng('dropout')` instead of drawn by its own Dropout module. `unroll`: layers per scan
  iteration (`lax.scan(unroll=...)`; True: all).
  """
  hidden: int = 100
  num_layers: int = 4
  dropout: float = 0.4
  alpha: float = 0.1
  lamda: float = 0.5
  concat_input: bool = False
  remat: bool = False  # recompute each layer in the backward pass (memory of deep stacks)
  message_passing: str = 'edges'
  dtype: layers.Dtype | None = None  # compute dtype (None: promoted); parameters float32
  fused: bool = True
  unroll: int | bool = 1

  @nn.compact
  def __call__(self, x: Array, adjacency: tuple, *, deterministic: bool) -> Array:
    """x: node inputs, [S, N, D] ('edges') or [B, M, L, D] ('blocks'); adjacency: see GCNIILayer."""
    x = layers.Dropout(self.dropout)(x, deterministic=deterministic)
    h0 = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name='input')(x))
    h = self._fused(h0, adjacency, deterministic) if self.fused else self._layers(h0, adjacency, deterministic)
    h = layers.Dropout(self.dropout)(h, deterministic=deterministic)
    return jnp.concatenate([x, h], axis=-1)

  def _layers(self, h0: Array, adjacency: tuple, deterministic: bool) -> Array:
    layer_cls = nn.remat(GCNIILayer) if self.remat else GCNIILayer
    h = h0
    for i in range(1, self.num_layers + 1):
      h = layers.Dropout(self.dropout)(h, deterministic=deterministic)
      h = nn.relu(layer_cls(self.hidden, i, self.alpha, self.lamda, self.concat_input,
                            self.message_passing, dtype=self.dtype, name=f'layer_{i}')(h, h0, adjacency))
    return h

  def _fused(self, h0: Array, adjacency: tuple, deterministic: bool) -> Array:
    width = 2 * self.hidden if self.concat_input else self.hidden
    kernels = jnp.stack([_Kernel((width, self.hidden), name=f'layer_{i}')()
                         for i in range(1, self.num_layers + 1)])
    p, q = fold_identity(kernels, alpha=self.alpha, lamda=self.lamda, concat_input=self.concat_input)
    if self.dtype is not None:
      h0, p, q = nn.dtypes.promote_dtype(h0, p, q, dtype=self.dtype)
    residual = jnp.einsum('...d,kde->k...e', h0, q)  # h0 Q_l of every layer, [K, ..., D]
    keys = None
    if not deterministic:
      keys = jax.random.split(self.make_rng('dropout'), self.num_layers)
    propagate_fn = PROPAGATE[self.message_passing]
    rate = self.dropout

    def layer(h, xs):
      p_l, residual_l, key = xs
      h = dropout(h, rate, key)
      return nn.relu(propagate_fn(h, adjacency) @ p_l + residual_l), None

    if self.remat:
      layer = jax.checkpoint(layer)
    h, _ = jax.lax.scan(layer, h0, (p, residual, keys), unroll=self.unroll)
    return h


class GatedAttentionFusion(nn.Module):
  """The authors' `MMGatedAttention` ('general'), for any number of modalities: each modality
  mapped by tanh(Dense); each pair (i, j) fused by a gate z = sigmoid(Dense(1)([x_i, x_j,
  x_i * x_j])) into z h_i + (1 - z) h_j; the pairs concatenated (one modality: its tanh map)."""
  features: int = 100
  dropout: float = 0.5
  dtype: layers.Dtype | None = None  # compute dtype (None: promoted); parameters float32

  @nn.compact
  def __call__(self, xs: Sequence[Array], *, deterministic: bool) -> Array:
    xs = [layers.Dropout(self.dropout)(x, deterministic=deterministic) for x in xs]
    hs = [jnp.tanh(nn.Dense(self.features, dtype=self.dtype, name=f'transform_{i}')(x))
          for i, x in enumerate(xs)]
    if len(xs) == 1:
      return hs[0]
    fused = []
    for i in range(len(xs)):
      for j in range(i + 1, len(xs)):
        z = nn.sigmoid(nn.Dense(1, dtype=self.dtype, name=f'gate_{i}{j}')(
            jnp.concatenate([xs[i], xs[j], xs[i] * xs[j]], -1)))
        fused.append(z * hs[i] + (1.0 - z) * hs[j])
    return jnp.concatenate(fused, axis=-1)


class MMGCN(nn.Module):
  """MMGCN and its fusion baselines on one set of encoders -> logits [B, L, num_classes].

  Attributes:
    modalities: the dataset's modalities in library order; graph node `modality` k is
      `modalities[k]`.
    use_modalities: the subset the model uses (the paper's a / v / t / at / av / vt / avt rows).
    width: encoder output size (200): audio and visual a Dense, text a Dense and a 2-layer
      bidirectional LSTM (width / 2 per direction) over the dialogue's turns.
    fusion: 'graph' (MMGCN: one graph over all modalities, one GCN), 'early' (encoder outputs
      concatenated into one node per utterance), 'late' (one GCN per modality over its own nodes,
      outputs concatenated) or 'gated' (as 'late', fused by gated attention).
    speaker_nodes: which nodes get the speaker embedding: 'none', 'text' (the authors' code) or
      'all'.
    num_speakers: speaker slots (a dialogue's later speakers share the last).
    gcn_*: the DeepGCN's hidden size, depth, alpha, lambda, layer form, remat, and whether its
      layers run fused (one scan over folded kernels, `DeepGCN`) and how far that scan unrolls.
    cross_modal_weight: gamma, the factor on cross-modal edge weights (1: the authors' code).
    cos_scale: see `edge_similarity`.
    dropout: dropout in the text LSTM, the GCN and before the classifier.
    message_passing: 'edges' (the batch's jraph graph: gathers and segment sums over its edge
      list) or 'blocks' (MMGCN's graph is a complete graph within each (dialogue, modality) and
      one edge per turn across modalities: dense per-dialogue products, `block_similarity`; the
      same numbers, no graph needed, about 20x faster on a CPU).
    dtype: compute dtype (None: promoted; `layers` docstring). The edge weights (cosines,
      arccos, degrees) are computed in at least float32 from the node features and then cast to
      `dtype` for the propagation: `cos_scale` 0.99999 is 1.0 in bfloat16, where arccos has an
      infinite derivative.
  """
  modalities: Sequence[str] = MODALITIES
  use_modalities: Sequence[str] = MODALITIES
  num_classes: int = 6
  width: int = 200
  fusion: str = 'graph'
  speaker_nodes: str = 'text'
  num_speakers: int = 2
  gcn_hidden: int = 100
  gcn_layers: int = 4
  gcn_alpha: float = 0.1
  gcn_lambda: float = 0.5
  gcn_concat_input: bool = False
  gcn_remat: bool = False
  gcn_fused: bool = True
  gcn_unroll: int | bool = 1
  cross_modal_weight: float = 1.0
  cos_scale: float = 0.99999
  dropout: float = 0.4
  gated_features: int = 100
  message_passing: str = 'edges'
  dtype: layers.Dtype | None = None

  def setup(self):
    if self.fusion not in FUSIONS:
      raise ValueError(f'fusion: expected one of {FUSIONS}, got {self.fusion!r}')
    if self.message_passing not in PROPAGATE:
      raise ValueError(f'message_passing: expected one of {tuple(PROPAGATE)}, got {self.message_passing!r}')
    if self.speaker_nodes not in SPEAKER_NODES:
      raise ValueError(f'speaker_nodes: expected one of {SPEAKER_NODES}, got {self.speaker_nodes!r}')
    unknown = set(self.use_modalities) - set(self.modalities)
    if unknown:
      raise ValueError(f'use_modalities {sorted(unknown)} are not among the dataset\'s {list(self.modalities)}')

  def _gcn(self, name: str) -> DeepGCN:
    return DeepGCN(hidden=self.gcn_hidden, num_layers=self.gcn_layers, dropout=self.dropout,
                   alpha=self.gcn_alpha, lamda=self.gcn_lambda, concat_input=self.gcn_concat_input,
                   remat=self.gcn_remat, message_passing=self.message_passing, dtype=self.dtype,
                   fused=self.gcn_fused, unroll=self.gcn_unroll, name=name)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], speaker: Array, turn_mask: Array,
               modality_mask: Array, graph: jraph.GraphsTuple | None = None, *, deterministic: bool,
               return_adjacency: bool = False):
    """Logits [B, L, num_classes]; with `return_adjacency` also the normalised adjacency the GCN
    used: edge weights [S, E] ('edges') or (intra, cross) blocks ('blocks'). `graph` is needed
    by 'edges' only."""
    turn_mask = jnp.asarray(turn_mask, bool)
    batch, num_turns = turn_mask.shape
    modality_mask = jnp.asarray(modality_mask, bool)
    if modality_mask.ndim == 2:
      modality_mask = jnp.broadcast_to(modality_mask[:, None], (batch, num_turns, modality_mask.shape[-1]))
    features = layers.cast_inputs({name: features[name] for name in self.modalities}, self.dtype)
    mods = tuple(self.modalities)
    m = len(mods)
    # present[b, t, k]: utterance (b, t) has modality k and the model uses it.
    used = jnp.asarray([name in self.use_modalities for name in mods])
    present = (turn_mask[..., None] & modality_mask[..., [MODALITIES.index(n) for n in mods]] & used)

    # Encoders -> [B, L, M, width].
    speaker_vec = nn.Embed(self.num_speakers, self.width, dtype=self.dtype, name='speaker_embedding')(
        jnp.clip(speaker, 0, self.num_speakers - 1))
    encoded = []
    for k, name in enumerate(mods):
      have = present[..., k:k + 1]
      x = jnp.where(have, features[name], 0.0)
      x = nn.Dense(self.width, dtype=self.dtype, name=f'encoder_{name}')(x)
      if name == 'text':
        x = self._context_lstm(x, turn_mask, deterministic)
      if self.speaker_nodes == 'all' or (self.speaker_nodes == 'text' and name == 'text'):
        x = x + speaker_vec
      encoded.append(jnp.where(have, x, 0.0))
    table = jnp.stack(encoded, axis=2)  # [B, L, M, width]
    if self.fusion == 'early':
      fused = nn.Dense(self.width, dtype=self.dtype, name='early_fusion')(
          table.reshape(batch, num_turns, -1))
      table = jnp.zeros_like(table).at[:, :, 0].set(fused)
      present = jnp.zeros_like(present).at[..., 0].set(present.any(-1))

    if self.message_passing == 'blocks':
      grid, adjacency = self._blocks(table, present, deterministic)
    else:
      grid, adjacency = self._edges(table, present, graph, deterministic)
    if self.fusion == 'early':
      utterance = grid[:, :, 0]
    elif self.fusion == 'gated':
      utterance = GatedAttentionFusion(self.gated_features, dtype=self.dtype, name='gated_attention')(
          [grid[:, :, k] for k in range(m)], deterministic=deterministic)
    else:
      utterance = grid.reshape(batch, num_turns, -1)
    utterance = layers.Dropout(self.dropout)(utterance, deterministic=deterministic)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(nn.relu(utterance))
    logits = jnp.where(turn_mask[..., None], logits, 0.0)
    if return_adjacency:
      return logits, adjacency
    return logits

  def _blocks(self, table: Array, present: Array, deterministic: bool):
    """GCN outputs on the turn grid [B, L, M, F] with block message passing."""
    x = jnp.swapaxes(table, 1, 2)  # [B, M, L, width]
    node_present = jnp.swapaxes(present, 1, 2)
    kw = dict(cos_scale=self.cos_scale, cross_modal_weight=self.cross_modal_weight)
    similarity_x = x.astype(layers.stat_dtype(x.dtype))  # edge weights in >= float32 (docstring)
    if self.fusion in ('graph', 'early'):
      adjacency = block_similarity(similarity_x, node_present, **kw)
      out = self._gcn('gcn')(x, layers.cast_inputs(adjacency, self.dtype), deterministic=deterministic)
    else:  # one GCN per modality over its own block, no cross-modal edges
      adjacency = block_similarity(similarity_x, node_present, cross_modal=False, **kw)
      intra, cross = layers.cast_inputs(adjacency, self.dtype)
      out = jnp.concatenate([
          self._gcn(f'gcn_{name}')(x[:, k:k + 1], (intra[:, k:k + 1], cross[:, k:k + 1, k:k + 1]),
                                   deterministic=deterministic)
          for k, name in enumerate(self.modalities)], axis=1)
    out = jnp.where(node_present[..., None], out, 0.0)
    return jnp.swapaxes(out, 1, 2), adjacency

  def _edges(self, table: Array, present: Array, graph: jraph.GraphsTuple, deterministic: bool):
    """GCN outputs on the turn grid [B, L, M, F] with jraph edge-list message passing."""
    batch, num_turns, m = present.shape
    # Per shard: node inputs gathered from the shard's [B_s * L * M] slots.
    shards = graph.senders.shape[0]
    table = table.reshape(shards, -1, table.shape[-1])
    present_slots = present.reshape(shards, -1)
    slot = graph.nodes['utterance'] * m + graph.nodes['modality']  # [S, N]
    node_present = graph.nodes['real'] & jnp.take_along_axis(present_slots, slot, axis=1)
    x = jnp.take_along_axis(table, slot[..., None], axis=1)  # [S, N, width]
    x = jnp.where(node_present[..., None], x, 0.0)
    edge_on = (graph.edges['real']
               & jnp.take_along_axis(node_present, graph.senders, axis=1)
               & jnp.take_along_axis(node_present, graph.receivers, axis=1))
    similarity = jax.vmap(lambda x, s, r: edge_similarity(x, s, r, cos_scale=self.cos_scale))(
        x.astype(layers.stat_dtype(x.dtype)), graph.senders, graph.receivers)  # >= float32
    gamma = jnp.where(graph.edges['cross'], self.cross_modal_weight, 1.0)

    def adjacency(edge_on):
      raw = jnp.where(edge_on, similarity * gamma, 0.0)
      weights = jax.vmap(lambda w, s, r: normalize_edges(w, s, r, x.shape[1]))(
          raw, graph.senders, graph.receivers)
      return graph.senders, graph.receivers, weights

    if self.fusion in ('graph', 'early'):
      edges = adjacency(edge_on)
      node_out = self._gcn('gcn')(x, layers.cast_inputs(edges, self.dtype), deterministic=deterministic)
    else:  # one GCN per modality over its own nodes, no cross-modal edges
      edges = adjacency(edge_on & ~graph.edges['cross'])
      node_out = 0.0
      for k, name in enumerate(self.modalities):
        out = self._gcn(f'gcn_{name}')(x, layers.cast_inputs(edges, self.dtype),
                                       deterministic=deterministic)
        node_out = node_out + jnp.where((graph.nodes['modality'] == k)[..., None], out, 0.0)
    node_out = jnp.where(node_present[..., None], node_out, 0.0)
    # Back to the turn grid: [S, B_s * L * M, F] -> [B, L, M, F].
    grid = jnp.zeros(table.shape[:2] + node_out.shape[-1:], node_out.dtype)
    grid = jax.vmap(lambda g, i, v: g.at[i].add(v))(grid, slot, node_out)
    return grid.reshape(batch, num_turns, m, -1), edges[2]

  def _context_lstm(self, x: Array, turn_mask: Array, deterministic: bool) -> Array:
    """2-layer bidirectional LSTM over the turns (width / 2 per direction), dropout between the
    layers as torch's `nn.LSTM(dropout=...)`; padding turns never reach the real ones."""
    lengths = turn_mask.sum(axis=1).astype(jnp.int32)
    hidden = self.width // 2
    carry = encoders.zero_lstm_carry(x.shape[0], hidden, x.dtype, jnp.float32)
    for layer in range(2):
      if layer:
        x = layers.Dropout(self.dropout)(x, deterministic=deterministic)
      cells = [nn.RNN(nn.OptimizedLSTMCell(hidden, dtype=self.dtype, name=f'text_lstm_{layer}_{d}'))
               for d in ('forward', 'backward')]
      x = nn.Bidirectional(*cells)(x, initial_carry=(carry, carry), seq_lengths=lengths)
    return layers.cast_inputs(x, self.dtype)  # the carry is float32 (zero_lstm_carry)
