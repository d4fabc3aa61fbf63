"""The comparison rows every later method is measured against.

Utterance level (`level = 'utterance'`): early fusion (concatenated encoder embeddings -> MLP),
late fusion (one head per modality, averaged over the present ones) and gated-attention fusion,
over the encoders of DESIGN.md (LSTM for audio/visual sequences, TextCNN for text sequences, MLP
for utterance-level features). Dialogue level: bc-LSTM (Poria et al., ACL 2017), a bidirectional
LSTM over the turns of each dialogue. All are trained with modality masks, so
`config.train.missing` turns any of them into the "augmented" baseline of the MMIN paper.
"""

from __future__ import annotations

import jax.numpy as jnp

from mmer_jax.methods import base
from mmer_jax.models import bclstm
from mmer_jax.models import fusion
from mmer_jax.models import layers


class _Supervised(base.Method):
  """A single model trained with the task loss: subclasses define `_apply(params, batch, rng)`
  (train mode when `rng` is given, eval mode otherwise)."""

  def loss(self, params, batch, rng):
    return base.supervised_loss(self.spec.task, self._apply(params, batch, rng), batch['label'])

  def predict(self, params, batch, rng):
    del rng  # deterministic
    return base.task_output(self.spec.task, self._apply(params, batch))


class _UtteranceFusion(_Supervised):
  """Shared wiring of the fusion models: config -> module, batch -> call, outputs -> loss.

  `config.method.encoders` and `config.method.head` are the keyword arguments of the
  `ModalityEncoders` and of the `layers.MLPHead`; `method.missing_input` how a missing modality
  is met (see `models/fusion.py`).
  """

  level = 'utterance'
  model_cls: type = None

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.method
    head = m.head.to_dict()
    head['hidden'] = tuple(head['hidden'])
    self.model = self.model_cls(encoders=base.create_encoders(config, spec),
                                head=layers.MLPHead(num_outputs=self.num_outputs, dtype=self.dtype,
                                                    **head),
                                missing_input=m.missing_input, dtype=self.dtype)

  def _apply(self, params, batch, rng=None):
    features = {k: batch[k] for k in self.modalities}
    rngs = {'dropout': rng} if rng is not None else None
    return base.full_precision(self.model.apply(
        {'params': params}, features, batch.get('lengths'), batch['modality_mask'],
        deterministic=rng is None, rngs=rngs))

  def init(self, rng, batch):
    features = {k: jnp.asarray(batch[k]) for k in self.modalities}
    return self.model.init({'params': rng}, features, batch.get('lengths'), batch['modality_mask'],
                           deterministic=True)['params']


class EarlyFusionMethod(_UtteranceFusion):
  model_cls = fusion.EarlyFusion


class LateFusionMethod(_UtteranceFusion):
  model_cls = fusion.LateFusion


class GatedAttentionMethod(_UtteranceFusion):
  model_cls = fusion.GatedAttentionFusion


class BcLSTMMethod(_Supervised):
  """bc-LSTM: per-turn outputs from a bidirectional LSTM over each dialogue's turns."""

  level = 'dialogue'

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.method
    self.model = bclstm.BCLSTM(modalities=self.modalities, utterance_dim=m.utterance_dim,
                               lstm_hidden=m.lstm_hidden, dense_dim=m.dense_dim, dropout=m.dropout,
                               num_outputs=self.num_outputs, dtype=self.dtype)

  def _apply(self, params, batch, rng=None):
    features = {k: batch[k] for k in self.modalities}
    rngs = {'dropout': rng} if rng is not None else None
    return base.full_precision(self.model.apply(
        {'params': params}, features, batch['turn_mask'], batch['modality_mask'],
        deterministic=rng is None, rngs=rngs))

  def init(self, rng, batch):
    features = {k: jnp.asarray(batch[k]) for k in self.modalities}
    return self.model.init({'params': rng}, features, batch['turn_mask'], batch['modality_mask'],
                           deterministic=True)['params']
