"""IMDer (Wang, Li, Cui, NeurIPS 2023): diffusion recovers the missing modalities.

Each modality is projected to d channels (a Conv1d with kernel 3 and no padding: 50 frames -> 48;
an utterance vector becomes `utterance_tokens` tokens, docs/imder.md). For every modality a
sample lacks, a score network conditioned on the sample's available projections (one, or the
1x1-conv fusion of two) draws the missing projection by reverse-time diffusion of a VE SDE
(sigma = 25); a refinement network cleans the draw; the cross-modal transformer head predicts
from the completed set. A modality present in the sample is never replaced by its recovery.

Stages (configs/imder_mosi.py): `pretrain` trains projections and head on complete data; `imder`
starts from them, keeps the projections frozen and trains the score networks (denoising score
matching on the true projection of each dropped modality, conditioned on what the sample kept),
the refinement networks (MSE of the refined draw to the true projection) and the head, with

    loss = task (L1 | CE) + score_weight * sum_m score_m + rec_weight * sum_m rec_m,

each term per example and only over the modalities the sample is missing but the data has (a
modality the data itself lacks has no target). The draw used in training is not differentiated
(as the authors' `torch.no_grad()` sampler). Evaluation draws each example's noise from a key
folded with its position in the split, so results do not depend on the batch size.

`method.recovery='zeros'` replaces the recovery by zero-filled projections (the no-recovery row,
the same head); `train.ema_decay` averages the score networks' weights, which sampling uses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mmer_jax.data import schema
from mmer_jax.diffusion import losses as dsm
from mmer_jax.diffusion import sampling
from mmer_jax.diffusion import sde as sde_lib
from mmer_jax.methods import base
from mmer_jax.models import imder as imder_model

VARIANTS = ('imder', 'pretrain')
RECOVERIES = ('diffusion', 'zeros')
FROZEN_IN_IMDER = ('projections',)


class IMDerMethod(base.Method):
  """IMDer and its complete-data pretraining stage; utterance batches (sequence or vector)."""

  level = 'utterance'
  variants = VARIANTS

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.method
    if m.variant not in VARIANTS:
      raise ValueError(f'method.variant: expected one of {VARIANTS}, got {m.variant!r}')
    if m.recovery not in RECOVERIES:
      raise ValueError(f'method.recovery: expected one of {RECOVERIES}, got {m.recovery!r}')
    self.variant, self.recovery = m.variant, m.recovery
    self.recovers = self.variant == 'imder' and self.recovery == 'diffusion'
    self.score_weight, self.rec_weight = float(m.score_weight), float(m.rec_weight)
    self.dsm_eps = float(m.dsm_eps)
    self.sde = sde_lib.VESDE(sigma=float(m.sigma))
    self.model = imder_model.IMDer(
        modalities=self.modalities, levels={n: spec.modalities[n].level for n in self.modalities},
        d_model=m.d_model, num_heads=m.num_heads, nlevels=m.nlevels, mem_levels=m.mem_levels,
        kernel_size=m.kernel_size, num_outputs=self.num_outputs,
        dropouts={k: float(m[k]) for k in imder_model.DROPOUTS}, attn_mask=bool(m.attn_mask),
        sigma=float(m.sigma), score_channels=tuple(m.score_channels),
        time_embed_dim=m.time_embed_dim, refine_blocks=m.refine_blocks,
        refine_reduction=m.refine_reduction, utterance_tokens=m.utterance_tokens)
    self.eval_sampler = (m.sampler, int(m.num_steps), float(m.sampler_eps))
    self.train_sampler = (m.train_sampler, int(m.train_num_steps), float(m.sampler_eps))

  # -- pieces --------------------------------------------------------------------------------

  def _call(self, params, method, *args, rng=None, **kwargs):
    rngs = {'dropout': rng} if rng is not None else None
    return self.model.apply({'params': params}, *args, rngs=rngs, method=method, **kwargs)

  def _project(self, params, batch):
    features = {k: batch[k] for k in self.modalities}
    proj = self._call(params, imder_model.IMDer.project, features)
    if self.variant == 'imder':  # frozen: the authors project under no_grad
      proj = jax.lax.stop_gradient(proj)
    return proj

  def _conditions(self, params, proj, mask):
    """Per missing-candidate modality, the condition of each sample: its one available other
    modality, or the fusion of both (selected per sample from the batch's mask)."""
    return self._call(params, imder_model.IMDer.conditions, proj, mask)

  def _score_fn(self, params, name, condition):
    """score(x, t) for a batch of one modality's projections under a fixed condition."""
    return lambda x, t: self._call(params, imder_model.IMDer.score, name, x, t, condition)

  def _draw(self, params, name, condition, keys, sampler):
    """One draw per example (its own key), vmapped so results do not depend on the batch."""
    kind, num_steps, eps = sampler
    shape = condition.shape[1:-1] + (self.model.d_model,)
    sample = sampling.get_sampler(kind, self.sde, shape, num_steps=num_steps, eps=eps)

    def one(key, cond):
      score = lambda x, t: self._call(params, imder_model.IMDer.score, name, x[None],  # noqa: E731
                                      jnp.broadcast_to(t, (1,)), cond[None])[0]
      return sample(key, score)[0]
    return jax.vmap(one)(keys, condition)

  def _complete(self, params, batch, rng, *, train: bool):
    """(projections with every missing modality recovered or zero-filled, loss terms)."""
    mask = jnp.asarray(batch['modality_mask'])
    observed = jnp.asarray(batch.get('observed_mask', mask))
    proj = self._project(params, batch)
    per_example = mask.shape[0]
    terms = {'score': jnp.zeros(per_example), 'rec': jnp.zeros(per_example)}
    if self.variant == 'pretrain' or len(self.modalities) == 1:
      return proj, terms
    index = {n: schema.MODALITIES.index(n) for n in self.modalities}
    filled = {}
    if self.recovery == 'zeros':
      for name in self.modalities:
        keep = mask[:, index[name]][:, None, None]
        filled[name] = jnp.where(keep, proj[name], 0.0)
      return filled, terms
    conditions = self._conditions(params, proj, mask)
    keys = base.example_rngs(rng, batch)  # [B, 2]
    sampler = self.train_sampler if train else self.eval_sampler
    for k, name in enumerate(self.modalities):
      missing = ~mask[:, index[name]]
      has_target = missing & observed[:, index[name]]
      condition = conditions[name]
      key_m = jax.vmap(lambda key, k=k: jax.random.fold_in(key, k))(keys)
      if train:
        score_fn = self._score_fn(params, name, condition)
        loss_key = jax.random.fold_in(jax.random.fold_in(rng, 7), k)
        score_loss = dsm.score_matching_loss(score_fn, proj[name], loss_key, self.sde,
                                             eps=self.dsm_eps)
        terms['score'] = terms['score'] + jnp.where(has_target, score_loss, 0.0)
      draw = jax.lax.stop_gradient(self._draw(params, name, condition, key_m, sampler))
      refined = self._call(params, imder_model.IMDer.refine, name, draw)
      if train:
        rec = jnp.mean(jnp.square(refined - proj[name]), axis=tuple(range(1, refined.ndim)))
        terms['rec'] = terms['rec'] + jnp.where(has_target, rec, 0.0)
      filled[name] = jnp.where(missing[:, None, None], refined, proj[name])
    return filled, terms

  # -- the Method interface ------------------------------------------------------------------

  def init(self, rng, batch):
    features = {k: jnp.asarray(batch[k]) for k in self.modalities}
    return _init(self.model, rng, features, jnp.asarray(batch['modality_mask']))

  def loss(self, params, batch, rng):
    dropout_rng, draw_rng = jax.random.split(rng)
    filled, terms = self._complete(params, batch, draw_rng, train=True)
    outputs = self._call(params, imder_model.IMDer.head, filled, deterministic=False,
                         rng=dropout_rng)
    task, aux = base.supervised_loss(self.spec.task, outputs, batch['label'])
    total = task + self.score_weight * terms['score'] + self.rec_weight * terms['rec']
    return total, {**aux, 'task': task, 'score': terms['score'], 'rec': terms['rec']}

  def predict(self, params, batch, rng):
    filled, _ = self._complete(params, batch, rng, train=False)
    outputs = self._call(params, imder_model.IMDer.head, filled, deterministic=True)
    return base.task_output(self.spec.task, outputs)

  def trainable_mask(self, params):
    """Stage `imder` freezes the projections; fixed random features are never trained."""
    def flag(path, _):
      keys = [getattr(p, 'key', str(p)) for p in path]
      if self.variant == 'imder' and keys[0] in FROZEN_IN_IMDER:
        return False
      return keys[-1] not in imder_model.CONSTANT_PARAMS
    return jax.tree_util.tree_map_with_path(flag, params)

  def ema_mask(self, params):
    """Only the score networks are averaged for evaluation (they sample)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[0], 'key', '').startswith('score_'), params)


@functools.partial(jax.jit, static_argnums=0)
def _init(model, rng, features, modality_mask):
  """Compiled init (every submodule: projections, fusions, score and refinement nets, head)."""
  return model.init({'params': rng}, features, modality_mask, method=imder_model.IMDer.init_all)[
      'params']
