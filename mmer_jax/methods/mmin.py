"""MMIN (Zhao, Li, Jin, ACL 2021) and the comparison rows of its paper.

`config.method.variant` picks the row (`mmin`, `mmin_ae`, `mmin_nocycle`, `full_baseline`,
`augmented`); `resolve_config` turns it into config fields before training, so
`<workdir>/config.json` says what ran. This class implements the first three; `full_baseline` and
`augmented` resolve to early fusion (`methods/baselines.py`). Its loss per example is the
cross-entropy plus the forward-imagination error to the teacher's target
(`config.method.teacher_target`) and the cycle error, reduced over the joint embedding by
`config.method.imagination_reduction`. Two stages, as data in the config: stage 1's encoders
initialise the student and the frozen teacher. With `method.cache_teacher`, `fit` computes the
teacher's embeddings of the training split once (`teacher_tables`).

The model, the loss and its weights: docs/mmin.md#the-model; the rows:
docs/mmin.md#the-comparison-rows.
"""

from __future__ import annotations

import functools

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmer_jax.methods import base
from mmer_jax.models import cra
from mmer_jax.models import layers
from mmer_jax.models import mmin as mmin_model

VARIANTS = ('mmin', 'mmin_ae', 'mmin_nocycle', 'full_baseline', 'augmented')
MMIN_VARIANTS = ('mmin', 'mmin_ae', 'mmin_nocycle')
REDUCTIONS = ('mean', 'sum')  # method.imagination_reduction over the joint embedding's dims
MISSING_SLOTS = ('zero', 'encoded_zeros')  # method.missing_slot: the student's missing slots
TABLES = 'teacher_tables'  # the frozen parameter subtree of the cached teacher embeddings
FROZEN = ('teacher', TABLES)


@functools.partial(jax.jit, static_argnums=0)
def _init(model, rng, features, lengths, modality_mask):
  """Compiled init, cached per model (flax modules hash by their attributes).

  Compiling the ~100 random initialisers dominates (each Method instance would otherwise pay it
  again); an eager init dispatches them op by op and is no faster.
  """
  return model.init({'params': rng}, features, lengths, modality_mask, deterministic=True)['params']


def _early_fusion_method(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The early-fusion method config of an MMIN config's comparison rows (same encoders)."""
  m = config.method
  return ml_collections.ConfigDict({
      'name': 'early_fusion', 'variant': m.variant, 'encoders': m.encoders.to_dict(),
      'head': m.head.to_dict(), 'missing_input': m.missing_input})


class MMINMethod(base.Method):
  """MMIN, MMIN-AE and MMIN-NoCycle (see the module docstring); utterance level."""

  level = 'utterance'
  variants = VARIANTS  # the comparison rows resolve to early fusion

  @classmethod
  def resolve_config(cls, config):
    """The comparison rows become early fusion; `pretrained_workdir` replaces stage 1."""
    m = config.method
    if m.variant not in VARIANTS:
      raise ValueError(f'method.variant: expected one of {VARIANTS}, got {m.variant!r}')
    stage1 = config.init_from.stage
    if m.variant in MMIN_VARIANTS:
      if m.pretrained_workdir:
        if stage1 in config.stages:
          del config.stages[stage1]
        config.init_from.stage = None
        config.init_from.workdir = m.pretrained_workdir
      return config
    if m.variant == 'full_baseline' and stage1 in config.stages:
      config.update(config.stages[stage1].to_dict())  # the full-modality baseline is stage 1 itself
    elif m.variant == 'augmented':
      config.train.missing = m.augmented_missing
    config.method = _early_fusion_method(config)
    config.stages = ml_collections.ConfigDict()
    config.init_from.stage = config.init_from.workdir = None
    config.init_from.params = ml_collections.ConfigDict()
    config.analysis = ()
    return config

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.method
    self.variant = m.variant
    if self.variant not in MMIN_VARIANTS:
      raise ValueError(f'method.variant={self.variant!r}: this class implements {MMIN_VARIANTS}; '
                       'resolve the config first (methods.resolve_config)')
    self.teacher_target = m.teacher_target
    if self.teacher_target not in mmin_model.TEACHER_TARGETS:
      raise ValueError(f'method.teacher_target: expected one of {mmin_model.TEACHER_TARGETS}, '
                       f'got {self.teacher_target!r}')
    self.has_cycle = self.variant != 'mmin_nocycle'
    self.cache_teacher = bool(m.cache_teacher)
    self.ce_weight = float(m.ce_weight)
    self.fwd_weight = float(m.fwd_weight)
    self.cycle_weight = float(m.cycle_weight) if self.has_cycle else 0.0
    self.reduction = m.get('imagination_reduction', 'mean')
    if self.reduction not in REDUCTIONS:
      raise ValueError(f'method.imagination_reduction: expected one of {REDUCTIONS}, got {self.reduction!r}')
    missing_slot = m.get('missing_slot', 'zero')
    if missing_slot not in MISSING_SLOTS:
      raise ValueError(f'method.missing_slot: expected one of {MISSING_SLOTS}, got {missing_slot!r}')
    if self.variant == 'mmin_ae':
      forward_net = cra.PlainAE(layers=tuple(m.ae.layers), output_relu=m.ae.output_relu,
                                dtype=self.dtype)
    else:
      forward_net = cra.CascadeResidualAE(num_blocks=m.cra.num_blocks, layers=tuple(m.cra.layers),
                                          transition=m.cra.transition, dtype=self.dtype)
    classifier = layers.MLPHead(hidden=tuple(m.classifier.hidden), dropout=m.classifier.dropout,
                                num_outputs=self.num_outputs, dtype=self.dtype)
    self.model = mmin_model.MMIN(encoders=base.create_encoders(config, spec), forward_net=forward_net,
                                 classifier=classifier, cycle=self.has_cycle,
                                 share_weights=bool(m.share_weights),
                                 zero_missing_slot=missing_slot == 'zero')

  # -- the Method interface ---------------------------------------------------------------------

  def _apply(self, params, batch, rng=None, **kwargs):
    """The model's outputs, in at least float32 (the losses and the tables are)."""
    features = {k: batch[k] for k in self.modalities}
    rngs = {'dropout': rng} if rng is not None else None
    model_params = {k: v for k, v in params.items() if k != TABLES}
    return base.full_precision(self.model.apply(
        {'params': model_params}, features, batch.get('lengths'), batch['modality_mask'],
        deterministic=rng is None, rngs=rngs, **kwargs))

  def init(self, rng, batch):
    features = {k: jnp.asarray(batch[k]) for k in self.modalities}
    return _init(self.model, rng, features, batch.get('lengths'), jnp.asarray(batch['modality_mask']))

  def loss(self, params, batch, rng, *, target_params=None):
    """Per-example loss and aux terms (ce, fwd_mse, cycle_mse, accuracy).

    With fitted `teacher_tables` the forward target is built from the rows of the batch's
    examples (`index`) instead of running the teacher: the same values, without the teacher's
    forward pass in every step.

    `target_params` (default: `params`) are the parameters the stop-gradient targets (teacher
    embedding, cycle target = student embedding) are computed from. At `target_params=params0`
    the loss as a function of `params` has, at `params0`, exactly the gradient `jax.grad` gives
    the real loss: that surrogate is what a finite-difference gradient check can verify.
    """
    source = params if target_params is None else target_params
    cached = TABLES in source
    kwargs = dict(teacher_targets=() if cached else (self.teacher_target,), with_cycle=self.has_cycle)
    out = self._apply(params, batch, rng, **kwargs)
    targets = out if target_params is None else self._apply(target_params, batch, rng, **kwargs)
    ce, aux = base.supervised_loss(self.spec.task, out['logits'], batch['label'])
    if cached:
      target = self.cached_target(source[TABLES], batch)
    else:
      target = targets[f'teacher_{self.teacher_target}']
    target = jax.lax.stop_gradient(target)
    reduce = jnp.mean if self.reduction == 'mean' else jnp.sum
    fwd = reduce(jnp.square(out['imagined'] - target), axis=-1)
    total = self.ce_weight * ce + self.fwd_weight * fwd
    aux = {**aux, 'ce': ce, 'fwd_mse': fwd}
    if self.has_cycle:
      cyc = reduce(jnp.square(out['cycle'] - jax.lax.stop_gradient(targets['student'])), axis=-1)
      total = total + self.cycle_weight * cyc
      aux['cycle_mse'] = cyc
    return total, aux

  def gradcheck_loss(self, params, batch, rng, *, target_params):
    """`loss` with its stop-gradient targets computed from `target_params` (for `--mode=gradcheck`):
    at params == target_params its gradient is `jax.grad(loss)`, and finite differences apply."""
    return self.loss(params, batch, rng, target_params=target_params)

  def predict(self, params, batch, rng):
    del rng  # deterministic
    out = self._apply(params, batch, teacher_targets=(), with_cycle=False)['logits']
    return base.task_output(self.spec.task, out)

  def imagination(self, params, batch) -> dict:
    """Per-modality imagined vs. real embeddings under the batch's mask (`analysis/`).

    {'imagined', 'real'}: [B, M, E], the forward net's output and the frozen teacher's embedding
    of the real features, per modality in `self.modalities` order.
    """
    out = self._apply(params, batch, teacher_targets=('full',), with_cycle=False)
    split = lambda x: x.reshape(x.shape[0], len(self.modalities), -1)  # noqa: E731
    return {'imagined': split(out['imagined']), 'real': split(out['teacher_full'])}

  def trainable_mask(self, params):
    """Everything but the frozen `teacher` and the fitted `teacher_tables`."""
    return {k: jax.tree_util.tree_map(lambda _, k=k: k not in FROZEN, v) for k, v in params.items()}

  # -- the cached teacher targets ---------------------------------------------------------------

  @property
  def table_names(self) -> tuple[str, ...]:
    """The teacher embeddings `fit` tabulates (see `teacher_tables`)."""
    return ('full',) if self.teacher_target == 'full' else ('full', 'zero')

  def cached_target(self, tables, batch):
    """The forward target of a batch from the fitted tables, gathered by the rows' `index`
    (padding rows, index -1, get zeros)."""
    index = jnp.asarray(batch['index'])
    valid = (index >= 0)[:, None]
    rows = {name: jnp.where(valid, table[jnp.maximum(index, 0)], 0.) for name, table in tables.items()}
    if self.teacher_target == 'full':
      return rows['full']
    return mmin_model.complement_target(rows['full'], rows['zero'], batch['modality_mask'],
                                        self.modalities)

  def fit(self, params, batches):
    """Adds the frozen teacher's embeddings of the training split (`cache_teacher`)."""
    if not self.cache_teacher:
      return params
    tables = self.teacher_tables(params['teacher'], batches)
    logging.info('MMIN: fitted the frozen teacher\'s embeddings (%s) of %d training examples',
                 ', '.join(tables), len(tables['full']))
    return {**params, TABLES: tables}

  def teacher_tables(self, teacher_params, batches) -> dict[str, jax.Array]:
    """The frozen teacher's joint embeddings of every training example, rows by `index`.

    `full`: of the complete input (the 'full' target, and the complement's missing slots);
    `zero` (complement target only): of the all-zero input with the example's lengths, which
    fills the complement's available slots.
    """
    embed = jax.jit(lambda p, b: base.full_precision(self.model.teacher_embedding(
        p, {m: b[m] for m in self.modalities}, b.get('lengths'))))

    def compute(batch):
      return {name: embed(teacher_params, batch if name == 'full' else {
          **batch, **{m: np.zeros_like(batch[m]) for m in self.modalities}})
              for name in self.table_names}
    tables = base.training_tables(batches, compute, 'MMIN teacher tables')
    return {name: jnp.asarray(table) for name, table in tables.items()}
