"""MMGCN (Hu et al., ACL 2021) and its fusion baselines, as a dialogue-level method.

`config.method` (see `configs/mmgcn_iemocap.py`) picks the modalities (letters of the paper's
rows), the fusion ('graph' is MMGCN; 'early', 'late', 'gated' the paper's fusion baselines on the
same encoders), the encoders, the GCN and its layout, and the loss ('nll', 'weighted_nll',
'focal', 'focal_authors'). Empty `class_weights` are the inverse training-split frequencies,
fitted once and carried by the checkpoint, scaled to a mean of 1 on the training split.

The fields, the losses and where they differ from the authors' code: docs/mmgcn.md#what-it-is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mmer_jax.data import graphs
from mmer_jax.methods import base
from mmer_jax.models import mmgcn

LETTERS = {'a': 'audio', 'v': 'visual', 't': 'text', 'l': 'text'}
LOSSES = ('nll', 'weighted_nll', 'focal', 'focal_authors')
GCN_FORMS = ('paper', 'authors')


def parse_modalities(letters: str) -> tuple[str, ...]:
  """'avt' -> ('audio', 'visual', 'text') (library order); 'l' is the authors' letter for text."""
  unknown = set(letters) - set(LETTERS)
  if not letters or unknown:
    raise ValueError(f'method.modalities: expected letters from a, v, t (e.g. avt), got {letters!r}')
  names = {LETTERS[c] for c in letters}
  return tuple(m for m in ('audio', 'visual', 'text') if m in names)


def class_loss(kind: str, logits: jax.Array, label: jax.Array, *, class_weights=None,
               focal_gamma: float = 2.5) -> jax.Array:
  """Per-utterance loss [...] from logits [..., C] and integer labels [...].

  nll: -log p_y. weighted_nll: w_y (-log p_y). focal (Lin et al. 2017, alpha = 1):
  -(1 - p_y)^gamma log p_y. focal_authors: the authors' `FocalLoss` per utterance,
  -(1/C) sum_c (1 - onehot_c log p_c)^gamma log p_c (every class's log-probability enters, the
  true class's with weight (1 - log p_y)^gamma >= 1).
  """
  logp = jax.nn.log_softmax(logits, axis=-1)
  label = label.astype(jnp.int32)
  logp_y = jnp.take_along_axis(logp, label[..., None], axis=-1)[..., 0]
  if kind == 'nll':
    return -logp_y
  if kind == 'weighted_nll':
    return -jnp.asarray(class_weights)[label] * logp_y
  if kind == 'focal':
    return -((1.0 - jnp.exp(logp_y)) ** focal_gamma) * logp_y
  if kind == 'focal_authors':
    onehot = jax.nn.one_hot(label, logits.shape[-1], dtype=logp.dtype)
    return -jnp.mean((1.0 - onehot * logp) ** focal_gamma * logp, axis=-1)
  raise ValueError(f'method.loss: expected one of {LOSSES}, got {kind!r}')


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
  """Class weights 1 / frequency, scaled so the weighted mean over the counted labels is 1."""
  counts = np.asarray(counts, np.float64)
  prior = counts / max(counts.sum(), 1.0)
  weights = np.where(counts > 0, 1.0 / np.maximum(prior, 1e-12), 0.0)
  return (weights / max(float((prior * weights).sum()), 1e-12)).astype(np.float32)


class MMGCNMethod(base.Method):
  """MMGCN: per-turn logits from a deep GCN over each dialogue's modality graph."""

  level = 'dialogue'

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.method
    if m.loss not in LOSSES:
      raise ValueError(f'method.loss: expected one of {LOSSES}, got {m.loss!r}')
    if m.gcn_form not in GCN_FORMS:
      raise ValueError(f'method.gcn_form: expected one of {GCN_FORMS}, got {m.gcn_form!r}')
    if spec.task != 'classification':
      raise ValueError('MMGCN classifies emotions; this dataset is a regression task')
    use = tuple(x for x in parse_modalities(m.modalities) if x in self.modalities)
    if not use:
      raise ValueError(f'method.modalities={m.modalities!r}: the dataset has none of them '
                       f'(it has {list(self.modalities)})')
    self.use_modalities = use
    self.model = mmgcn.MMGCN(
        modalities=self.modalities, use_modalities=use, num_classes=self.num_outputs,
        width=m.width, fusion=m.fusion, speaker_nodes=m.speaker_nodes, num_speakers=m.num_speakers,
        gcn_hidden=m.gcn_hidden, gcn_layers=m.num_layers, gcn_alpha=m.alpha, gcn_lambda=m.lamda,
        gcn_concat_input=m.gcn_form == 'authors', gcn_remat=m.remat,
        gcn_fused=m.get('fused', True), gcn_unroll=m.get('unroll', 1),
        cross_modal_weight=m.cross_modal_weight, cos_scale=m.cos_scale, dropout=m.dropout,
        message_passing=m.message_passing, dtype=self.dtype)

  def host_batch(self, batch, num_shards: int = 1):
    """Edge-list message passing needs the batch's graphs (one per device); blocks need none."""
    if self.model.message_passing != 'edges':
      return batch
    return graphs.add_dialogue_graph(batch, len(self.modalities), num_shards)

  def _apply(self, params, batch, rng=None, model=None, **kwargs):
    features = {k: batch[k] for k in self.modalities}
    rngs = {'dropout': rng} if rng is not None else None
    return base.full_precision((model or self.model).apply(
        {'params': params['model']}, features, batch['speaker'], batch['turn_mask'],
        batch['modality_mask'], batch.get('graph'), deterministic=rng is None, rngs=rngs, **kwargs))

  def init(self, rng, batch):
    features = {k: jnp.asarray(batch[k]) for k in self.modalities}
    params = {'model': self.model.init({'params': rng}, features, batch['speaker'], batch['turn_mask'],
                                       batch['modality_mask'], batch.get('graph'),
                                       deterministic=True)['params']}
    if self.config.method.loss == 'weighted_nll':
      params['class_weights'] = jnp.ones((self.num_outputs,), jnp.float32)
    return params

  def fit(self, params, batches):
    """Class weights for `weighted_nll`: the configured ones, or inverse training frequencies."""
    if 'class_weights' not in params:
      return params
    counts = np.zeros(self.num_outputs)
    for batch in batches():
      label = np.asarray(batch['label'])[np.asarray(batch['example_mask'], bool)]
      counts += np.bincount(label.astype(int), minlength=self.num_outputs)
    weights = self.config.method.class_weights
    if not weights:
      w = inverse_frequency_weights(counts)
    elif len(weights) != self.num_outputs:
      raise ValueError(f'method.class_weights has {len(weights)} entries; the dataset has '
                       f'{self.num_outputs} classes')
    else:  # the configured weights, scaled to a training-split mean of 1
      w = np.asarray(weights, np.float64)
      w = w / max(float((counts / max(counts.sum(), 1.0) * w).sum()), 1e-12)
    return {**params, 'class_weights': jnp.asarray(w, jnp.float32)}

  def trainable_mask(self, params):
    mask = jax.tree_util.tree_map(lambda _: True, params)
    if 'class_weights' in params:
      mask['class_weights'] = False
    return mask

  def loss(self, params, batch, rng):
    logits = self._apply(params, batch, rng)
    m = self.config.method
    per = class_loss(m.loss, logits, batch['label'], class_weights=params.get('class_weights'),
                     focal_gamma=m.focal_gamma)
    return per, {'accuracy': (logits.argmax(-1) == batch['label']).astype(jnp.float32)}

  def predict(self, params, batch, rng):
    del rng  # deterministic
    return self._apply(params, batch)

  def adjacency(self, params, batch):
    """(batch, logits, normalised edge weights [S, E]) in eval mode with edge-list message
    passing, for pictures of the graph: the weights the GCN used (late and gated fusion use no
    cross-modal edges). A batch without a graph gets one (one shard)."""
    if 'graph' not in batch:
      batch = graphs.add_dialogue_graph(batch, len(self.modalities), 1)
    logits, weights = self._apply(params, batch, model=self.model.clone(message_passing='edges'),
                                  return_adjacency=True)
    return batch, logits, weights
