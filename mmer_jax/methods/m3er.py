"""M3ER (Mittal, Bhattacharya, Chandra, Bera, Manocha, AAAI 2020): multiplicative fusion, a CCA
modality check and proxy features. No official code exists; this follows the paper, and
docs/m3er.md lists every choice the paper leaves open.

At prediction time, per sample: (1) the modality check (`method.modality_check`) in the space of
a CCA fitted on the training split for every pair of modalities, by `method.check_statistic`
('correlation', the paper's, or 'typicality', ours); (2) proxy features (`method.proxy`): every
modality that is not effective is regenerated from each effective one (`ops/proxy`) and the
regenerations averaged; (3) the classification network (`models/m3er.py`), whose heads'
probabilities are averaged. The check and the proxies act on utterance-level vectors and at
inference only; training uses the batch's modality mask and the multiplicative fusion loss
(`multiplicative_loss`). `fit` learns the CCAs, the linear maps, the neighbour banks and the mean
sequence lengths, frozen under `fitted`.

Details: docs/m3er.md#what-it-is.
"""

from __future__ import annotations

import itertools

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mmer_jax.data import schema
from mmer_jax.methods import base
from mmer_jax.models import m3er as m3er_model
from mmer_jax.ops import cca as cca_lib
from mmer_jax.ops import proxy as proxy_lib

FITTED = 'fitted'  # the frozen subtree `fit` fills
LOSS_FORMS = ('original', 'm3er')
# variant -> (loss form, modality check, proxy features): the rows of the paper's ablation table.
VARIANTS = {
    'm3er': ('m3er', True, True),
    'original_mult': ('original', False, False),
    'no_check_no_proxy': ('m3er', False, False),
    'no_proxy': ('m3er', True, False),
}


def multiplicative_loss(log_probs: jax.Array, label: jax.Array, used: jax.Array, *, beta: float,
                        form: str, num_modalities: int, weights_from=None) -> jax.Array:
  """Per-example multiplicative fusion loss over the used modalities' heads.

  form 'original' (Liu et al., 2018): -sum_i prod_{j != i} (1 - p_j^y)^(beta/(M-1)) log p_i^y,
  a modality is down-weighted where the others already predict the label well.
  form 'm3er' (M3ER's modification): -sum_i (p_i^y)^(beta/(M-1)) log p_i^y, a modality is
  weighted by its own confidence in the label.

  Args:
    log_probs: [B, M, C] per-modality log-probabilities.
    label: int [B].
    used: bool [B, M]; modalities that do not take part contribute nothing (and, in 'original',
      are left out of the products).
    beta: the paper's beta; M = `num_modalities` (the dataset's, fixed).
    form: 'original' | 'm3er'.
    weights_from: None (the weights are differentiated with the rest) or log-probabilities
      [B, M, C] the weights are computed from instead (e.g. `stop_gradient(log_probs)`: the
      weights as constants, the form trained with; `-p^q log p` on its own is not monotone in p).

  Returns:
    [B] losses.
  """
  if form not in LOSS_FORMS:
    raise ValueError(f'method.loss: expected one of {LOSS_FORMS}, got {form!r}')
  if num_modalities < 2:
    raise ValueError('multiplicative fusion needs at least two modalities')
  exponent = beta / (num_modalities - 1)
  label = label.astype(jnp.int32)
  used = jnp.asarray(used, log_probs.dtype)
  log_p = jnp.take_along_axis(log_probs, label[:, None, None], axis=-1)[..., 0]  # [B, M]
  weight_log_p = log_p if weights_from is None else jnp.take_along_axis(
      weights_from, label[:, None, None], axis=-1)[..., 0]
  if form == 'm3er':
    weights = jnp.exp(exponent * weight_log_p)
  else:
    log_miss = jnp.log1p(-jnp.minimum(jnp.exp(weight_log_p), 1. - 1e-7)) * used  # log(1 - p_j)
    weights = jnp.exp(exponent * (log_miss.sum(-1, keepdims=True) - log_miss))
  return -jnp.sum(used * weights * log_p, axis=-1)


def pooled(batch, modality: str) -> jax.Array:
  """The utterance-level vector [B, D] of a modality: its mean over the valid frames."""
  x = jnp.asarray(batch[modality])
  if x.ndim == 2:
    return x
  lengths = batch.get('lengths')
  if lengths is None or modality not in lengths:
    return x.mean(1)
  length = jnp.asarray(lengths[modality])
  valid = (jnp.arange(x.shape[1])[None, :] < length[:, None]).astype(x.dtype)
  return jnp.einsum('btd,bt->bd', x, valid) / jnp.maximum(length, 1)[:, None].astype(x.dtype)


def pair_name(a: str, b: str) -> str:
  return f'{a}_{b}'


def map_name(source: str, target: str) -> str:
  return f'{source}_to_{target}'


class M3ERMethod(base.Method):
  """config.method: variant, loss, modality_check, proxy, beta, tau, the network's sizes and the
  fitted parts' settings (configs/m3er_iemocap.py documents each)."""

  level = 'utterance'
  variants = tuple(VARIANTS)

  @classmethod
  def resolve_config(cls, config):
    m = config.method
    if m.variant not in VARIANTS:
      raise ValueError(f'config.method.variant={m.variant!r}: expected one of {list(VARIANTS)}')
    form, check, proxy = VARIANTS[m.variant]
    for field, value in (('loss', form), ('modality_check', check), ('proxy', proxy)):
      if m[field] is None:  # the variant's value unless set explicitly
        m[field] = value
    return config

  def __init__(self, config, spec):
    super().__init__(config, spec)
    if spec.task != 'classification':
      raise ValueError(f'M3ER classifies emotions; {spec.name} is a {spec.task} dataset')
    m = config.method
    if len(self.modalities) < 2:
      raise ValueError(f'M3ER fuses modalities; {spec.name} has only {self.modalities}')
    self.network = m3er_model.M3ERNetwork(
        modalities=self.modalities, num_classes=self.num_outputs, lstm_hidden=m.lstm_hidden,
        memory_dim=m.memory_dim, attention_hidden=m.attention_hidden, head_hidden=m.head_hidden,
        dropout=m.dropout, dtype=self.dtype)
    self.column = np.array([schema.MODALITIES.index(x) for x in self.modalities])
    self.pairs = tuple(itertools.combinations(self.modalities, 2))

  # -- the network ------------------------------------------------------------------------------

  def _logits(self, params, features, lengths, used, rng=None):
    """Per-modality logits [B, M, C], in at least float32 (the losses and the fusion are)."""
    rngs = {'dropout': rng} if rng is not None else None
    return base.full_precision(self.network.apply({'params': params}, features, lengths, used,
                                                  deterministic=rng is None, rngs=rngs))

  def _features(self, batch):
    return {m: jnp.asarray(batch[m]) for m in self.modalities}

  def _present(self, batch):
    """bool [B, M]: the batch's modality mask in `self.modalities` order."""
    return jnp.asarray(batch['modality_mask'])[:, self.column]

  def init(self, rng, batch):
    present = self._present(batch)
    network = self.network.init(rng, self._features(batch), batch.get('lengths'), present)['params']
    return {'network': network}  # `fit` adds the FITTED subtree

  def trainable_mask(self, params):
    return {k: jax.tree_util.tree_map(lambda _, k=k: k != FITTED, v) for k, v in params.items()}

  def loss(self, params, batch, rng, *, target_params=None):
    m = self.config.method
    present = self._present(batch)
    features, lengths = self._features(batch), batch.get('lengths')
    log_probs = jax.nn.log_softmax(self._logits(params['network'], features, lengths, present, rng))
    if m.weight_gradient:
      weights_from = None
    elif target_params is not None:
      weights_from = jax.nn.log_softmax(
          self._logits(target_params['network'], features, lengths, present, rng))
    else:
      weights_from = jax.lax.stop_gradient(log_probs)
    loss = multiplicative_loss(log_probs, batch['label'], present, beta=m.beta, form=m.loss,
                               num_modalities=len(self.modalities), weights_from=weights_from)
    fused = fuse(log_probs, present)
    return loss, {'accuracy': (fused.argmax(-1) == batch['label']).astype(jnp.float32)}

  def gradcheck_loss(self, params, batch, rng, *, target_params):
    """`loss` with the multiplicative weights computed from `target_params` (fixed): at
    params == target_params its gradient is the training gradient."""
    return self.loss(params, batch, rng, target_params=target_params)

  def predict(self, params, batch, rng):
    del rng  # deterministic
    inputs = self.prepare(params, batch)
    logits = self._logits(params['network'], inputs['features'], inputs['lengths'], inputs['used'])
    return fuse(jax.nn.log_softmax(logits), inputs['used'])

  # -- modality check and proxy features --------------------------------------------------------

  def modality_check(self, params, batch, vectors=None) -> dict:
    """{'scores': {pair: [B]}, 'agreement': [B, M], 'typicality': [B, M], 'effective': bool
    [B, M]} for the batch's present modalities (`method.check_statistic`, module docstring).

    `agreement` is each modality's best score with a present partner (-inf without one): the
    correlation rule flags a modality whose agreement is below `tau`. `vectors` are the batch's
    utterance vectors when the caller has them (`pooled`). Without `method.modality_check` every
    present modality is effective (the statistics are still given, for the ROC analysis).
    """
    m = self.config.method
    fitted = params[FITTED]
    present = self._present(batch)
    if vectors is None:
      vectors = {x: pooled(batch, x) for x in self.modalities}
    index = {x: i for i, x in enumerate(self.modalities)}
    scores, typical = {}, [[] for _ in self.modalities]
    agreement = [jnp.full(present.shape[:1], -jnp.inf) for _ in self.modalities]
    for a, b in self.pairs:
      cca = fitted['cca'][pair_name(a, b)]
      score = cca_lib.sample_correlation(cca, vectors[a], vectors[b], weighting=m.check_weighting)
      scores[pair_name(a, b)] = score
      typical[index[a]].append(cca_lib.typicality(cca, vectors[a], which='x'))
      typical[index[b]].append(cca_lib.typicality(cca, vectors[b], which='y'))
      both = present[:, index[a]] & present[:, index[b]]
      for x in (a, b):
        agreement[index[x]] = jnp.where(both, jnp.maximum(agreement[index[x]], score),
                                        agreement[index[x]])
    agreement = jnp.stack(agreement, -1)  # [B, M]
    typicality = jnp.stack([sum(t) / len(t) for t in typical], -1)  # [B, M]
    out = {'scores': scores, 'agreement': agreement, 'typicality': typicality,
           'effective': present}
    if not m.modality_check:
      return out
    if m.check_statistic == 'correlation':  # a modality without a present partner passes
      effective = present & ((agreement >= m.tau) | jnp.isneginf(agreement))
    elif m.check_statistic == 'typicality':
      effective = present & (typicality <= m.typicality_tau)
    else:
      raise ValueError(f'method.check_statistic: expected correlation or typicality, got '
                       f'{m.check_statistic!r}')
    # Nothing effective left: keep the present modality most typical of the training data.
    ranked = jnp.where(present, typicality, jnp.inf)
    keep = jax.nn.one_hot(jnp.argmin(ranked, -1), len(self.modalities), dtype=bool) & present
    none_left = ~effective.any(-1, keepdims=True)
    return {**out, 'effective': jnp.where(none_left, keep, effective)}

  def proxies(self, params, vectors, effective) -> dict:
    """{m: [B, D_m]}: each modality regenerated from the sample's effective modalities (mean
    over them of the nearest-neighbour reconstruction mapped to m; zeros where none), from the
    batch's utterance vectors {m: [B, D_m]}."""
    m = self.config.method
    fitted = params[FITTED]
    eff = jnp.asarray(effective, jnp.float32)
    rebuilt = {source: proxy_lib.rebuild(vectors[source], fitted['bank'][source],
                                         num_neighbors=m.num_neighbors, ridge=m.proxy_ridge)
               for source in self.modalities}
    out = {}
    for target in self.modalities:
      total, count = 0., 0.
      for i, source in enumerate(self.modalities):
        if source == target:
          continue
        mapped = proxy_lib.map_rebuilt(*rebuilt[source], fitted['maps'][map_name(source, target)])
        total = total + eff[:, i:i + 1] * mapped
        count = count + eff[:, i:i + 1]
      out[target] = total / jnp.maximum(count, 1.)
    return out

  def prepare(self, params, batch) -> dict:
    """The network's inputs after the check and the proxies: {'features', 'lengths', 'used',
    'effective', 'regenerated'} (bool [B, M] each)."""
    m = self.config.method
    fitted = params[FITTED]
    present = self._present(batch)
    vectors = {x: pooled(batch, x) for x in self.modalities}  # the check's and the proxies'
    effective = (self.modality_check(params, batch, vectors)['effective'] if m.modality_check
                 else present)
    features = self._features(batch)
    lengths = dict(batch['lengths']) if batch.get('lengths') is not None else None
    regenerated = jnp.zeros_like(effective)
    if m.proxy:
      regenerated = ~effective & effective.any(-1, keepdims=True)
      proxies = self.proxies(params, vectors, effective)
      for j, x in enumerate(self.modalities):
        vector = proxies[x].astype(features[x].dtype)
        if features[x].ndim == 3:
          vector = jnp.broadcast_to(vector[:, None, :], features[x].shape)
          if lengths is not None and x in lengths:
            own = jnp.asarray(lengths[x])
            proxy_length = jnp.where(own > 0, own, fitted['mean_length'][x].astype(own.dtype))
            lengths[x] = jnp.where(regenerated[:, j], proxy_length, own)
        regen = regenerated[:, j].reshape((-1,) + (1,) * (vector.ndim - 1))
        features[x] = jnp.where(regen, vector, features[x])
    used = effective | regenerated
    for j, x in enumerate(self.modalities):  # an absent modality's input is exactly zero
      keep = used[:, j].reshape((-1,) + (1,) * (features[x].ndim - 1))
      features[x] = jnp.where(keep, features[x], jnp.zeros((), features[x].dtype))
    return {'features': features, 'lengths': lengths, 'used': used, 'effective': effective,
            'regenerated': regenerated}

  # -- fitted on the training split -------------------------------------------------------------

  def _fitted_from(self, stats) -> dict:
    """The FITTED subtree from the training split's vectors and lengths (`training_vectors`)."""
    m = self.config.method
    vectors = stats['vectors']
    ccas = {pair_name(a, b): cca_lib.fit_cca(vectors[a], vectors[b], m.cca_components, m.cca_ridge)
            for a, b in self.pairs}
    maps = {map_name(s, t): proxy_lib.fit_linear_map(vectors[s], vectors[t], m.map_ridge)
            for s, t in itertools.permutations(self.modalities, 2)}
    mean_length = {x: np.asarray(stats['lengths'][x].mean(), np.float32) for x in self.modalities}
    tree = {'cca': ccas, 'maps': maps, 'bank': vectors, 'mean_length': mean_length}
    return jax.tree_util.tree_map(jnp.asarray, tree)

  def training_vectors(self, batches) -> dict:
    """Utterance-level vectors and sequence lengths of every training example, rows by `index`."""
    pool = jax.jit(lambda b: {x: pooled(b, x) for x in self.modalities})

    def compute(batch):
      lengths = batch.get('lengths') or {}
      out = pool({x: batch[x] for x in self.modalities} | {'lengths': batch.get('lengths')})
      return {**{('vectors', x): v for x, v in out.items()},
              **{('lengths', x): np.asarray(lengths.get(x, np.ones(len(batch['index']))), np.float32)
                 for x in self.modalities}}
    tables = base.training_tables(batches, compute, 'M3ER fit')
    return {part: {x: tables[part, x] for x in self.modalities} for part in ('vectors', 'lengths')}

  def fit(self, params, batches):
    """Fits the CCAs, the linear maps and the neighbour banks on the training split."""
    stats = self.training_vectors(batches)
    fitted = self._fitted_from(stats)
    for name, c in fitted['cca'].items():
      logging.info('M3ER: CCA %s, %d components, leading correlations %s', name,
                   c['correlations'].shape[0], np.round(np.asarray(c['correlations'][:5]), 3))
    return {**params, FITTED: fitted}


def fuse(log_probs: jax.Array, used: jax.Array) -> jax.Array:
  """log of the mean probability over the used modalities' heads: [B, M, C] -> [B, C]."""
  used = jnp.asarray(used, log_probs.dtype)[..., None]
  mean = jnp.sum(jnp.exp(log_probs) * used, axis=-2) / jnp.maximum(used.sum(-2), 1.)
  return jnp.log(jnp.maximum(mean, jnp.finfo(log_probs.dtype).tiny))
