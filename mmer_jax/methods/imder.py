"""IMDer (Wang, Li, Cui, NeurIPS 2023): diffusion recovers the missing modalities.

Each modality is projected to d channels; for every modality a sample lacks, a score network
conditioned on its available projections draws the missing projection by reverse-time
diffusion (VE SDE), a refinement network cleans it, and the MulT head predicts from the
completed set. Stages `pretrain` (projections and head on complete data) then `imder` (frozen
projections; score, refinement and head trained, loss = task + score_weight * score + rec_weight
* rec, per example over the slots the sample misses). Draws are per example (keys folded from
its split position and modality) and never differentiated; a one-pattern batch draws exactly its
missing slots. `method.recovery='zeros'` is the no-recovery row. Details, the authors' choices
and where we differ: docs/imder.md#what-runs, #model-code, #speed-side-by-side-with-the-authors-code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmer_jax.data import schema
from mmer_jax.diffusion import conditioning
from mmer_jax.diffusion import losses as dsm
from mmer_jax.diffusion import sampling
from mmer_jax.diffusion import sde as sde_lib
from mmer_jax.methods import base
from mmer_jax.models import imder as imder_model
from mmer_jax.models import imder_refine
from mmer_jax.models import score_net
from mmer_jax.ops import slots

VARIANTS = ('imder', 'pretrain')
RECOVERIES = ('diffusion', 'zeros')
INDEX = {n: schema.MODALITIES.index(n) for n in schema.MODALITIES}  # a modality's mask column


class IMDerMethod(base.Method):
  """IMDer and its complete-data pretraining stage; utterance batches (sequences or vectors)."""

  level = 'utterance'
  variants = VARIANTS

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.method
    if m.variant not in VARIANTS:
      raise ValueError(f'method.variant: expected one of {VARIANTS}, got {m.variant!r}')
    if m.recovery not in RECOVERIES:
      raise ValueError(f'method.recovery: expected one of {RECOVERIES}, got {m.recovery!r}')
    if len(self.modalities) < 2:
      raise ValueError(f'IMDer recovers a modality from the others: the dataset {spec.name!r} has '
                       f'only {list(self.modalities)}')
    for sampler_field in ('sampler', 'train_sampler'):
      if m[sampler_field] not in sampling.SAMPLERS:
        raise ValueError(f'method.{sampler_field}: expected one of {sampling.SAMPLERS}, got '
                         f'{m[sampler_field]!r}')
    self.length_multiple = score_net.ScoreNet.length_multiple(len(m.score_channels))
    utterance_level = tuple(n for n in self.modalities if spec.modalities[n].level == 'utterance')
    self.variant, self.recovery = m.variant, m.recovery
    self.recovers = self.variant == 'imder' and self.recovery == 'diffusion'
    self.groups_patterns = self.recovers  # one pattern per batch: exactly its missing slots drawn
    self.score_weight, self.rec_weight = float(m.score_weight), float(m.rec_weight)
    self.dsm_eps = float(m.dsm_eps)
    self.perturb_condition = bool(m.perturb_condition)
    self.sde = sde_lib.VESDE(sigma=float(m.sigma))
    self.model = imder_model.IMDer(
        modalities=self.modalities, utterance_level=utterance_level, d_model=m.d_model,
        num_heads=m.num_heads, nlevels=m.nlevels, mem_levels=m.mem_levels,
        num_outputs=self.num_outputs, dropouts={k: float(m[k]) for k in imder_model.DROPOUTS},
        text_dropout=float(m.text_dropout), attn_mask=bool(m.attn_mask), sigma=float(m.sigma),
        score_channels=tuple(m.score_channels), time_embed_dim=m.time_embed_dim,
        score_attn_layers=m.score_attn_layers,
        refine_blocks=m.refine_blocks, refine_reduction=m.refine_reduction,
        utterance_tokens=m.utterance_tokens, dtype=self.dtype)
    self.score_module = score_net.ScoreNet(**self.model.score_net_kwargs())
    self.refine_module = imder_refine.RefineNet(num_blocks=m.refine_blocks,
                                                reduction=m.refine_reduction, dtype=self.dtype)
    self.chunk_fraction = float(m.chunk_fraction)
    self.eval_sampler = (m.sampler, int(m.num_steps), float(m.sampler_eps),
                         dict(m.sampler_options))
    self.train_sampler = (m.train_sampler, int(m.train_num_steps), float(m.sampler_eps), {})

  # -- pieces --------------------------------------------------------------------------------

  def _apply(self, params, method, *args, rng=None, **kwargs):
    """A piece of the model; its outputs in at least float32, so the projections, conditions,
    draws, targets and losses (the diffusion's arithmetic) are float32 under any precision."""
    rngs = {'dropout': rng} if rng is not None else None
    return base.full_precision(self.model.apply(params, *args, rngs=rngs, method=method, **kwargs))

  def project(self, params, batch, rng=None):
    """Modality -> its projection [B, L, d] (frozen in stage `imder`, as the authors')."""
    features = {n: jnp.asarray(batch[n]) for n in self.modalities}
    proj = self._apply(params, imder_model.IMDer.project, features, deterministic=rng is None,
                       rng=rng)
    if self.variant == 'imder':
      proj = jax.lax.stop_gradient(proj)
    return proj

  def _stacked_conditions(self, params, proj, mask):
    """Every modality's per-sample condition [M, B, L, d] (`IMDer.conditions`, stacked)."""
    conditions = self._apply(params, imder_model.IMDer.conditions, proj, mask, INDEX)
    return jnp.stack([conditions[n] for n in self.modalities])

  def _network(self, params):
    return lambda x, t, c: self._apply(params, imder_model.IMDer.score_of, x, t, c)

  def _networks(self, params, name: str, positions=None) -> dict:
    """The stacked variables of the `score` or `refine` networks [M, ...], or of the modalities
    at stacked `positions` [k] (traced) only: [k, ...]."""
    variables = {c: params[c][name] for c in ('params', 'constants') if name in params.get(c, {})}
    if positions is None:
      return variables
    return jax.tree.map(lambda v: v[positions], variables)

  def refine_at(self, params, positions, x):
    """The refinement networks of the modalities at stacked `positions` [k]: [k, B, L, d]."""
    apply = lambda v, x: base.full_precision(self.refine_module.apply(v, x))  # noqa: E731
    return _each_network(apply, self._networks(params, 'refine', positions), x)

  def recover(self, params, condition, keys, sampler, positions=None):
    """One draw per slot [M, C, L, d] given the slots' conditions [M, C, L, d] and keys [M, C]
    (with `positions` [k]: the networks of those stacked modalities only, [k, C, ...]).

    Slot (m, j) is modality m of one example. Its draw comes from its own key alone: a single
    modality's network is vmapped over the stacked variables (m) and the slots (j), and the
    sampler runs on [1, L, d], so a draw does not depend on the rest of the batch.
    """
    kind, num_steps, eps, options = sampler
    sample = sampling.get_sampler(kind, self.sde, (1,) + condition.shape[2:], num_steps=num_steps,
                                  eps=eps, dtype=condition.dtype, **options)
    stacked = self._networks(params, 'score', positions)

    def per_modality(variables, keys_m, condition_m):
      network = lambda x, t, c: base.full_precision(  # noqa: E731
          self.score_module.apply(variables, x, t, c))

      def one(key, cond):  # cond [L, d]
        sample_key, condition_key = jax.random.split(key)
        cond = cond[None]
        if self.perturb_condition:
          score_fn = conditioning.perturbed_condition_score(network, cond, condition_key, self.sde)
        else:
          score_fn = lambda x, t: network(x, t, cond)  # noqa: E731
        return sample(sample_key, score_fn)[0][0]

      return jax.vmap(one)(keys_m, condition_m)

    if positions is None:
      return jax.vmap(per_modality)(stacked, keys, condition)
    return _over_networks(per_modality, stacked, keys, condition)

  def score_loss(self, params, x0, condition, keys, positions=None):
    """Per-slot DSM loss [M, C] at each slot's own (t, z).

    x0 and condition are [M, C, L, d], keys [M, C]; with `positions` [k], the first axis holds
    the score networks of those stacked modalities only.
    """
    draw = lambda k, x: dsm.draw_perturbation(k, x[None], self.sde, eps=self.dsm_eps)  # noqa: E731
    t, z = jax.vmap(jax.vmap(draw))(keys, x0)
    t, z = t[..., 0], z[:, :, 0]
    if positions is None:
      network = self._network(params)
    else:
      apply = lambda v, *a: base.full_precision(self.score_module.apply(v, *a))  # noqa: E731
      network = lambda x, t, c: _each_network(  # noqa: E731
          apply, self._networks(params, 'score', positions), x, t, c)
    x_t, std = dsm.perturb(x0, t, z, self.sde)
    if self.perturb_condition:
      condition = condition + std[..., None, None] * z
    residual = std[..., None, None] * network(x_t, t, condition) + z
    return jnp.sum(jnp.square(residual), axis=(2, 3))

  def slot_keys(self, rng, batch):
    """Per-(modality, example) keys [M, B] for the draws and for the score loss's (t, z), each
    folded from the example's own key (its position in the split) and the modality's column."""
    columns = jnp.asarray([INDEX[n] for n in self.modalities])
    draw_keys, loss_keys = _split(base.example_rngs(rng, batch))
    per_modality = lambda keys: jax.vmap(  # noqa: E731
        lambda i: jax.vmap(lambda k: jax.random.fold_in(k, i))(keys))(columns)
    return per_modality(draw_keys), per_modality(loss_keys)

  def complete(self, params, batch, rng, *, train: bool, draw_params=None):
    """(projections with every missing modality recovered or zero-filled, per-example terms).

    Only the (modality, example) slots a sample misses are drawn, refined and scored
    (`ops/slots.py`: chunks of `method.chunk_fraction` of the batch per modality, an empty chunk
    skipped, so a complete batch runs no sampler). `draw_params` (default `params`) are the
    weights the draws and the frozen projections come from; `gradcheck_loss` fixes them so the
    stop-gradient targets are constants.
    """
    draw_params = params if draw_params is None else draw_params
    mask = jnp.asarray(batch['modality_mask'])
    # What the data has before the training drop (train_step sets it); without it, everything.
    observed = jnp.asarray(batch.get('observed_mask', jnp.ones_like(mask)))
    project_rng = jax.random.fold_in(rng, 1) if train else None
    frozen = self.variant == 'imder'  # the projections: fixed targets, or trained (pretrain)
    proj = self.project(draw_params if frozen else params, batch, project_rng)
    columns = jnp.asarray([INDEX[n] for n in self.modalities])
    present = mask[:, columns].T  # [M, B]
    terms = {'score': jnp.zeros(mask.shape[:1]), 'rec': jnp.zeros(mask.shape[:1])}
    if not self.recovers:
      filled = {n: jnp.where(present[k][:, None, None], proj[n], 0.0)
                for k, n in enumerate(self.modalities)}
      return filled, terms
    # The score networks see every modality at one length, a multiple of the U-Net's (48 for
    # aligned_50: nothing padded); shorter projections are zero-padded at the end for them and
    # the recovery is cut back to the modality's own length.
    lengths = {n: proj[n].shape[1] for n in self.modalities}
    proj = imder_model.pad_to_common_length(proj, self.length_multiple)
    x0 = jnp.stack([proj[n] for n in self.modalities])
    draw_keys, loss_keys = self.slot_keys(rng, batch)
    sampler = self.train_sampler if train else self.eval_sampler
    fixed = jax.lax.stop_gradient(draw_params)  # the draw is never differentiated
    draw_conditions = jax.lax.stop_gradient(self._stacked_conditions(fixed, proj, mask))
    missing = ~present

    def slot_terms(draw_condition, draw_key, *targets):
      draw = jax.lax.stop_gradient(self.recover(fixed, draw_condition, draw_key, sampler))
      refined = self._apply(params, imder_model.IMDer.refine_of, draw)
      if not train:
        return refined, None, None
      target, condition, loss_key = targets
      score = self.score_loss(params, target, condition, loss_key)
      return refined, score, jnp.mean(jnp.square(refined - target), axis=(2, 3))

    # Training also gathers each slot's target, its differentiable condition and its loss key.
    per_slot = (draw_conditions, draw_keys)
    if train:
      per_slot += (x0, self._stacked_conditions(params, proj, mask), loss_keys)
    if 'pattern_missing' in batch:  # a batch of one pattern (train.mask_draw='host_grouped')
      refined, score, rec = self._pattern_slots(params, fixed, batch['pattern_missing'], per_slot,
                                                sampler, train)
    else:
      chunk = slots.chunk_size(mask.shape[0], self.chunk_fraction)
      refined, score, rec = slots.over_slots(slot_terms, missing, chunk, *per_slot)
    filled = {n: jnp.where(missing[k][:, None, None], refined[k], proj[n])[:, :lengths[n]]
              for k, n in enumerate(self.modalities)}
    if train:
      has_target = missing & observed[:, columns].T
      terms['score'] = jnp.sum(jnp.where(has_target, score, 0.0), axis=0)
      terms['rec'] = jnp.sum(jnp.where(has_target, rec, 0.0), axis=0)
    return filled, terms

  def _pattern_slots(self, params, fixed, pattern_missing, per_slot, sampler, train: bool):
    """`over_slots`' results for a batch whose every row misses the same k modalities
    (`pattern_missing` int32 [B, k], MODALITIES columns; k static, the columns traced): the k
    modalities' networks, gathered from the stacked ones, run on all B slots, with no packing
    and no branch. Draws, refinements and loss terms equal the packed path's slot by slot."""
    m, b = per_slot[0].shape[:2]
    k = pattern_missing.shape[-1]
    zeros = jnp.zeros((m, b) + per_slot[0].shape[2:], per_slot[0].dtype)
    if k == 0:  # a complete batch: no sampler at all
      return zeros, jnp.zeros((m, b)), jnp.zeros((m, b))
    position_of = jnp.zeros(len(schema.MODALITIES), jnp.int32).at[
        jnp.asarray([INDEX[n] for n in self.modalities])].set(jnp.arange(m, dtype=jnp.int32))
    positions = position_of[pattern_missing[0]]  # [k]
    taken = jax.tree.map(lambda a: a[positions], per_slot)
    draw = jax.lax.stop_gradient(self.recover(fixed, taken[0], taken[1], sampler, positions))
    refined = self.refine_at(params, positions, draw)
    score = rec = jnp.zeros((k, b))
    if train:
      target, condition, loss_key = taken[2:]
      score = self.score_loss(params, target, condition, loss_key, positions)
      rec = jnp.mean(jnp.square(refined - target), axis=(2, 3))
    place = lambda x: jnp.zeros((m,) + x.shape[1:], x.dtype).at[positions].set(x)  # noqa: E731
    return place(refined), place(score), place(rec)

  def recovery_views(self, params, batch, rng):
    """For the picture: every modality's real projection, its recovery conditioned on what the
    sample has, and its recovery from a zero condition (the networks' uninformative input, the
    stand-in for the paper's unconditional recovery), each averaged over time: [M, B, d] x 3."""
    mask = jnp.asarray(batch['modality_mask'])
    proj = self.project(params, batch)
    proj = imder_model.pad_to_common_length(proj, self.length_multiple)
    x0 = jnp.stack([proj[n] for n in self.modalities])
    conditions = self._stacked_conditions(params, proj, mask)
    keys, _ = self.slot_keys(rng, batch)
    # Both recoveries in one sampler call (slots side by side): one compiled U-Net, not two.
    both = jnp.concatenate([conditions, jnp.zeros_like(conditions)], axis=1)
    draws = self.recover(params, both, jnp.concatenate([keys, keys], axis=1), self.eval_sampler)
    refined = self._apply(params, imder_model.IMDer.refine_of, draws).mean(2)
    batch_size = conditions.shape[1]
    return {'real': x0.mean(2), 'conditional': refined[:, :batch_size],
            'unconditional': refined[:, batch_size:]}

  def _loss(self, params, batch, rng, draw_params=None):
    dropout_rng, draw_rng = jax.random.split(rng)
    filled, terms = self.complete(params, batch, draw_rng, train=True, draw_params=draw_params)
    outputs = self._apply(params, imder_model.IMDer.fuse, filled, deterministic=False,
                          rng=dropout_rng)
    task, aux = base.supervised_loss(self.spec.task, outputs, batch['label'])
    total = task + self.score_weight * terms['score'] + self.rec_weight * terms['rec']
    return total, {**aux, 'task': task, 'score': terms['score'], 'rec': terms['rec']}

  # -- the Method interface ------------------------------------------------------------------

  def init(self, rng, batch):
    features = {n: jnp.asarray(batch[n]) for n in self.modalities}
    mask = jnp.ones((features[self.modalities[0]].shape[0], len(schema.MODALITIES)), bool)
    init = jax.jit(lambda key: self.model.init({'params': key}, features, mask, INDEX,
                                               method=imder_model.IMDer.init_all))
    return dict(init(rng))

  def loss(self, params, batch, rng):
    return self._loss(params, batch, rng)

  def gradcheck_loss(self, params, batch, rng, *, target_params):
    """The loss with the draws (and frozen projections) computed from `target_params`."""
    return self._loss(params, batch, rng, draw_params=target_params)

  def predict(self, params, batch, rng):
    filled, _ = self.complete(params, batch, rng, train=False)
    outputs = self._apply(params, imder_model.IMDer.fuse, filled, deterministic=True)
    return base.task_output(self.spec.task, outputs)

  def trainable_mask(self, params):
    """The Fourier constants never train; stage `imder` freezes the projections."""
    def flag(path, _):
      keys = [getattr(p, 'key', str(p)) for p in path]
      if keys[0] != 'params':
        return False
      return not (self.variant == 'imder' and keys[1] == 'projections')
    return jax.tree_util.tree_map_with_path(flag, params)

  def ema_mask(self, params):
    """Only the score networks are averaged for evaluation (they sample)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: [getattr(p, 'key', '') for p in path[:2]] == ['params', 'score'], params)


def _over_networks(fn, variables, *args):
  """fn(variables[j], *args[j]) for each of the k gathered networks, stacked: [k, ...].

  One network at a time (`lax.map`), for the draws (never differentiated): measured faster than
  `vmap` over the stacked kernels on XLA:CPU (MOSI batch 32, NFE 10: one missing 0.42 s against
  0.49 s, two 0.75 against 0.81 s). The differentiated score and refinement terms stay vmapped:
  under `lax.map` their training step took 2.9 s against 1.1 s (one missing)."""
  return jax.lax.map(lambda a: fn(*a), (variables, *args))


def _each_network(fn, variables, *args):
  """`fn(variables[i], *args[i])` stacked over the k (static, 1 or 2) gathered networks, each
  applied on its own, for the differentiated score and refinement terms. Measured on XLA:CPU
  (MOSI batch 32, two missing, `:fast`): vmapped over two stacked kernels the convolutions become
  grouped ones and the training step took 5.3 s; `lax.map` is slower still in the backward
  (docs/imder.md "Speed")."""
  k = jax.tree.leaves(variables)[0].shape[0]
  return jnp.stack([fn(*jax.tree.map(lambda a, i=i: a[i], (variables, *args))) for i in range(k)])


def _split(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Two keys per key of a batch of keys (typed keys [B] or raw [B, 2])."""
  pairs = jax.vmap(jax.random.split)(keys)  # [B, 2(, 2)]
  return pairs[:, 0], pairs[:, 1]
