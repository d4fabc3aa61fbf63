"""MMIN (Zhao, Li, Jin, ACL 2021) and the comparison rows of its paper, as one method.

`config.method.variant` picks the row:

  mmin           student encoders -> CRA (forward imagination) -> classifier on the CRA latents,
                 backward (cycle) imagination, frozen pretrained teacher; trained on the six
                 missing patterns (one per sample per step, `train_missing='patterns'`)
  mmin_ae        the same with a plain autoencoder instead of the CRA (MMIN-AE)
  mmin_nocycle   the same without the backward net and its loss (MMIN-NoCycle)
  full_baseline  the stage-1 model: early fusion (`fusion.EarlyFusion`) trained on complete data
                 (`train_missing='none'`); evaluated under missing conditions by zero-filling
                 (`method.missing_input='zero_features'`, the paper's baseline: the zero features
                 are encoded like real ones; 'zero_embedding' zeroes the embedding instead)
  augmented      early fusion trained from scratch on the six patterns and the full one
                 (`train_missing='patterns_and_full'`; `method.augmented_missing='patterns'` gives
                 the authors' code's six patterns only)

Loss per example of the mmin* variants:

  ce_weight * CE(logits, label)
  + fwd_weight * mean_d (imagined - stop_gradient(target))^2
  + cycle_weight * mean_d (cycle - stop_gradient(student))^2      (not for mmin_nocycle)

with means over the joint embedding dims (the trainer then averages over the batch, which is the
authors' `MSELoss` mean over batch x 384). The forward target is `config.method.teacher_target`:

  'complement'  (default: the issue, DESIGN.md and the authors' code) the frozen encoders applied
                to the input with the available modalities zeroed: missing slots hold the
                teacher's embedding of the real features, available slots the teacher's
                embedding of an all-zero input. The cycle then maps the imagined missing
                modalities back to the available ones: two complementary views, each telling
                which slots the other lacks.
  'full'        the frozen encoders' joint embedding of the complete input (a reading of the
                paper's text). With it the cycle target is ill-posed: the backward net must put
                exact zeros in the missing slots of an input, the imagined full embedding, that
                no longer says which slots were missing.

Two stages (`prepare`): stage 1 trains the full-modality early-fusion model (`full_baseline`,
`<workdir>/stage1`, skipped when its results.json exists; or `config.method.pretrained_workdir`
names a finished stage-1 run) and its best-on-valid `encoders` are copied into both the student
encoders (fine-tuned) and the teacher (frozen: `trainable_mask` False, outputs stop_gradient'ed).
The classifier and the imagination nets start from their fresh initialisation, as in the
authors' code. `<workdir>/stage1/results.json` is also the paper's full-modality baseline row.
"""

from __future__ import annotations

import functools
import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmer_jax import checkpoint
from mmer_jax import evaluate
from mmer_jax import missing
from mmer_jax.data import schema
from mmer_jax.methods import base
from mmer_jax.models import fusion
from mmer_jax.models import mmin as mmin_model

VARIANTS = ('mmin', 'mmin_ae', 'mmin_nocycle', 'full_baseline', 'augmented')
MMIN_VARIANTS = ('mmin', 'mmin_ae', 'mmin_nocycle')
TRAIN_MISSING = {'mmin': 'patterns', 'mmin_ae': 'patterns', 'mmin_nocycle': 'patterns',
                 'full_baseline': 'none', 'augmented': 'patterns_and_full'}


@functools.partial(jax.jit, static_argnums=0)
def _init(model, rng, features, lengths, modality_mask):
  """Compiled init, cached per model (flax modules hash by their attributes).

  Compiling the ~100 random initialisers dominates (each Method instance would otherwise pay it
  again); an eager init dispatches them op by op and is no faster.
  """
  return model.init({'params': rng}, features, lengths, modality_mask, deterministic=True)['params']


def stage1_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The stage-1 run of an MMIN config: the `full_baseline` variant with the stage-1 optimiser.

  Same data, seed, encoders and evaluation; `method.stage1_*` give its epochs, learning rate,
  beta1, clipping and batch size (the authors' utt_fusion scripts: 10 + 10 epochs, beta1 0.9).
  """
  c = ml_collections.ConfigDict(config.to_dict())
  m = c.method
  m.variant = 'full_baseline'
  m.pretrained_workdir = None
  c.train.valid_conditions = ('full',)
  c.train.num_epochs = m.stage1_epochs
  c.optimizer.constant_epochs = m.stage1_constant_epochs
  c.optimizer.learning_rate = m.stage1_learning_rate
  c.optimizer.b1 = m.stage1_b1
  c.optimizer.clip_norm = m.stage1_clip_norm
  if m.get('stage1_batch_size'):
    c.data.batch_size = m.stage1_batch_size
  return c


class MMINMethod(base.Method):
  """MMIN and its comparison rows (see the module docstring); utterance level."""

  level = 'utterance'

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.method
    self.variant = m.get('variant', 'mmin')
    if self.variant not in VARIANTS:
      raise ValueError(f'method.variant: expected one of {VARIANTS}, got {self.variant!r}')
    self.modalities = tuple(spec.ordered_modalities())
    encoder_kwargs = dict(modalities=self.modalities, embed_dim=m.embed_dim,
                          encoder_dropout=m.encoder_dropout, num_filters=m.num_filters,
                          kernel_sizes=tuple(m.kernel_sizes), mlp_hidden=tuple(m.mlp_hidden),
                          num_outputs=self.num_outputs)
    self.is_mmin = self.variant in MMIN_VARIANTS
    self.cache_teacher = False
    self.teacher_tables = None  # name -> [num_train, joint dim], built by the first `train_batch`
    self._build_teacher_tables = None  # set by `prepare` when cache_teacher
    if not self.is_mmin:
      self.model = fusion.EarlyFusion(hidden=tuple(m.hidden), dropout=m.dropout,
                                      missing_input=m.get('missing_input', 'zero_features'),
                                      **encoder_kwargs)
      return
    self.teacher_target = m.get('teacher_target', 'complement')
    if self.teacher_target not in mmin_model.TEACHER_TARGETS:
      raise ValueError(f'method.teacher_target: expected one of {mmin_model.TEACHER_TARGETS}, '
                       f'got {self.teacher_target!r}')
    self.has_cycle = self.variant != 'mmin_nocycle'
    # The frozen deterministic teacher encodes each modality on its own, so both targets are
    # fixed functions of each training example and its drawn mask: the teacher's embeddings of
    # the complete input and of the all-zero input (the complement's available slots) are
    # computed once per run (on the first training batch after `prepare`, so evaluating a
    # checkpoint never pays for them) instead of at every step.
    self.cache_teacher = bool(m.get('cache_teacher', True))
    self.ce_weight = float(m.ce_weight)
    self.fwd_weight = float(m.fwd_weight)
    self.cycle_weight = float(m.cycle_weight) if self.has_cycle else 0.0
    self.model = mmin_model.MMIN(
        imagination='ae' if self.variant == 'mmin_ae' else 'cra',
        cra_blocks=m.cra_blocks, cra_layers=tuple(m.cra_layers), ae_layers=tuple(m.ae_layers),
        ae_output_relu=m.get('ae_output_relu', True), cycle=self.has_cycle,
        share_weights=bool(m.share_weights), classifier_hidden=tuple(m.classifier_hidden),
        classifier_dropout=m.classifier_dropout, **encoder_kwargs)

  # -- the Method interface ---------------------------------------------------------------------

  @property
  def train_missing(self) -> str:
    if self.variant == 'augmented':
      return self.config.method.get('augmented_missing', TRAIN_MISSING['augmented'])
    return TRAIN_MISSING[self.variant]

  @property
  def valid_conditions(self) -> tuple[str, ...]:
    """Model selection as the authors: the rows trained on missing data (mmin*, augmented) are
    selected on the six missing patterns of the validation split, pooled; `full_baseline` (stage
    1) on the complete split. `config.train.valid_conditions` overrides both."""
    if self.config.train.get('valid_conditions'):
      return tuple(self.config.train.valid_conditions)
    if self.variant == 'full_baseline':
      return ('full',)
    return tuple(evaluate.condition_names(self.spec, missing.MISSING_CONDITIONS))

  def _apply(self, params, batch, rng=None, **kwargs):
    features = {k: batch[k] for k in self.modalities}
    rngs = {'dropout': rng} if rng is not None else None
    return self.model.apply({'params': params}, features, batch.get('lengths'), batch['modality_mask'],
                            deterministic=rng is None, rngs=rngs, **kwargs)

  def init(self, rng, batch):
    features = {k: jnp.asarray(batch[k]) for k in self.modalities}
    return _init(self.model, rng, features, batch.get('lengths'), jnp.asarray(batch['modality_mask']))

  def loss(self, params, batch, rng, *, target_params=None):
    """Per-example loss and aux terms (ce, fwd_mse, cycle_mse, accuracy).

    A batch that carries the cached teacher embeddings (`teacher_full`, and `teacher_zero` for
    the complement target; added by `train_batch`) builds the forward target from them instead
    of running the teacher: the same values, without the teacher's forward pass in every step.

    `target_params` (default: `params`) are the parameters the stop-gradient targets (teacher
    embedding, cycle target = student embedding) are computed from. At `target_params=params0`
    the loss as a function of `params` has, at `params0`, exactly the gradient `jax.grad` gives
    the real loss: that surrogate is what a finite-difference gradient check can verify.
    """
    if not self.is_mmin:
      return base.supervised_loss(self.spec.task, self._apply(params, batch, rng), batch['label'])
    cached = all(k in batch for k in self._cached_fields)
    teacher_targets = () if cached else (self.teacher_target,)
    kwargs = dict(teacher_targets=teacher_targets, with_cycle=self.has_cycle)
    out = self._apply(params, batch, rng, **kwargs)
    targets = out if target_params is None else self._apply(target_params, batch, rng, **kwargs)
    ce, aux = base.supervised_loss(self.spec.task, out['logits'], batch['label'])
    if not cached:
      target = targets[f'teacher_{self.teacher_target}']
    elif self.teacher_target == 'full':
      target = batch['teacher_full']
    else:
      target = mmin_model.complement_target(batch['teacher_full'], batch['teacher_zero'],
                                            batch['modality_mask'], self.modalities)
    target = jax.lax.stop_gradient(target)
    fwd = jnp.mean(jnp.square(out['imagined'] - target), axis=-1)
    total = self.ce_weight * ce + self.fwd_weight * fwd
    aux = {**aux, 'ce': ce, 'fwd_mse': fwd}
    if self.has_cycle:
      cyc = jnp.mean(jnp.square(out['cycle'] - jax.lax.stop_gradient(targets['student'])), axis=-1)
      total = total + self.cycle_weight * cyc
      aux['cycle_mse'] = cyc
    return total, aux

  def gradcheck_loss(self, params, batch, rng, *, target_params):
    """`loss` with its stop-gradient targets computed from `target_params` (for `--mode=gradcheck`):
    at params == target_params its gradient is `jax.grad(loss)`, and finite differences apply."""
    return self.loss(params, batch, rng, target_params=target_params)

  def predict(self, params, batch):
    if not self.is_mmin:
      out = self._apply(params, batch)
    else:
      out = self._apply(params, batch, teacher_targets=(), with_cycle=False)['logits']
    return out if self.spec.task == 'classification' else base.regression_output(out)

  def write_figures(self, params, run, workdir):
    """PCA of imagined vs. real (teacher) embeddings of a missing modality on the test split.

    The paper's picture (it uses t-SNE): with {a, t} available, the visual part of the imagined
    joint embedding against the frozen teacher's embedding of the real visual features.
    """
    if not self.is_mmin or len(self.modalities) < 2:
      return []
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    absent = 'visual' if 'visual' in self.modalities else self.modalities[0]
    k, dim = self.modalities.index(absent), self.config.method.embed_dim
    keep = np.array([m != absent for m in schema.MODALITIES])
    apply = jax.jit(lambda p, b: self._apply(p, b, teacher_targets=('full',), with_cycle=False))
    imagined, real, labels = [], [], []
    for batch in run.eval_batches(self.config.eval.split)():
      batch = dict(batch, modality_mask=np.asarray(batch['modality_mask']) & keep)
      out = apply(params, batch)
      valid = np.asarray(batch['example_mask'])
      imagined.append(np.asarray(out['imagined'])[valid, k * dim:(k + 1) * dim])
      real.append(np.asarray(out['teacher_full'])[valid, k * dim:(k + 1) * dim])
      labels.append(np.asarray(batch['label'])[valid])
    imagined, real, labels = map(np.concatenate, (imagined, real, labels))
    both = np.concatenate([imagined, real])
    centred = both - both.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(6, 5))
    n = len(imagined)
    for c in np.unique(labels):
      name = self.spec.label_names[int(c)] if self.spec.label_names else str(c)
      ax.scatter(*xy[n:][labels == c].T, s=8, marker='o', alpha=0.5, color=f'C{int(c)}', label=f'real {name}')
      ax.scatter(*xy[:n][labels == c].T, s=8, marker='x', alpha=0.7, color=f'C{int(c)}', label=f'imagined {name}')
    ax.set_title(f'{absent} embedding, imagined from the others vs. real (PCA, test split)')
    ax.legend(fontsize=6, ncol=2)
    path = os.path.join(workdir, f'imagination_pca_{absent}.png')
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
    return [path]

  @property
  def _cached_fields(self) -> tuple[str, ...]:
    """The teacher embeddings `train_batch` joins to the batches (see `compute_teacher_tables`)."""
    return ('teacher_full',) if self.teacher_target == 'full' else ('teacher_full', 'teacher_zero')

  def train_batch(self, batch):
    """Adds the cached teacher embeddings (zeros on padding rows) to a train batch.

    The first call after `prepare` builds the tables (teacher passes over the training split).
    """
    if self.teacher_tables is None and self._build_teacher_tables is not None:
      self.teacher_tables = self._build_teacher_tables()
      self._build_teacher_tables = None
      logging.info('MMIN: cached the frozen teacher\'s embeddings (%s) of %d training examples',
                   ', '.join(self.teacher_tables), len(self.teacher_tables['teacher_full']))
    if self.teacher_tables is None:
      return batch
    index = np.asarray(batch['index'])
    num_examples = len(self.teacher_tables['teacher_full'])
    if index.max(initial=-1) >= num_examples:
      raise ValueError(f'batch index {int(index.max())} outside the teacher table of '
                       f'{num_examples} training examples')
    valid = (index >= 0)[:, None]
    out = dict(batch)
    for name, table in self.teacher_tables.items():
      rows = table[np.maximum(index, 0)]
      out[name] = np.where(valid, rows, np.zeros((), rows.dtype))
    return out

  def compute_teacher_tables(self, teacher_params, run) -> dict[str, np.ndarray]:
    """The frozen teacher's embeddings of every training example, in split order.

    `teacher_full`: of the complete input (the 'full' target, and the complement's missing slots);
    `teacher_zero` (complement target only): of the all-zero input with the example's lengths,
    which fills the complement's available slots.
    """
    names = self._cached_fields
    embed = jax.jit(lambda p, b: self.model.teacher_embedding(
        p, {m: b[m] for m in self.modalities}, b.get('lengths')))
    tables = {}
    for batch in run.streams.epoch('train', train=False):
      index, valid = np.asarray(batch['index']), np.asarray(batch['example_mask'])
      for name in names:
        inputs = batch if name == 'teacher_full' else {
            **batch, **{m: np.zeros_like(batch[m]) for m in self.modalities}}
        out = np.asarray(embed(teacher_params, inputs))
        if name not in tables:
          tables[name] = np.zeros((run.streams.num_examples('train'), out.shape[-1]), np.float32)
        tables[name][index[valid]] = out[valid]
    return tables

  def trainable_mask(self, params):
    """Everything but the frozen `teacher` subtree."""
    return {k: jax.tree_util.tree_map(lambda _, k=k: k != 'teacher', v) for k, v in params.items()}

  # -- the two-stage pipeline -------------------------------------------------------------------

  def prepare(self, params, run, workdir):
    """Stage 1 (train or restore the full-modality model), then copy its encoders in (mmin*).

    With `cache_teacher`, the teacher's embeddings of the training split are computed from these
    teacher params when the first training batch asks for them (`train_batch`), not here:
    `--mode=evaluate` also initialises the state and never trains.
    """
    if not self.is_mmin:
      return params
    params = self._load_stage1(params, run, workdir)
    self.teacher_tables = None
    if self.cache_teacher:
      teacher = params['teacher']
      self._build_teacher_tables = lambda: self.compute_teacher_tables(teacher, run)
    return params

  def _load_stage1(self, params, run, workdir):
    source = self.config.method.get('pretrained_workdir')
    if not source:
      if workdir is None:
        logging.warning('MMIN without a workdir or method.pretrained_workdir: no stage 1, the '
                        'encoders and the teacher keep their random initialisation')
        return params
      source = os.path.join(workdir, 'stage1')
      if not os.path.exists(os.path.join(source, 'results.json')):
        from mmer_jax import train  # pylint: disable=g-import-not-at-top  (train imports methods)
        logging.info('MMIN stage 1: training the full-modality model in %s', source)
        train.train_and_evaluate(stage1_config(self.config), source,
                                 devices=list(run.mesh.devices.flat))
    encoders = load_stage1_encoders(source, run.spec, jax.random.PRNGKey(self.config.seed),
                                    next(iter(run.streams.epoch('train', 0, train=True))))
    _check_same_shapes(encoders, params['encoders'], source)
    params = dict(params)
    params['encoders'] = encoders
    params['teacher'] = jax.tree_util.tree_map(jnp.array, encoders)  # its own buffers
    logging.info('MMIN: student encoders and frozen teacher initialised from %s', source)
    return params


def load_stage1_encoders(stage1_workdir: str, spec, rng, batch) -> dict:
  """The `encoders` params of the best checkpoint of a finished stage-1 run.

  The run's own `config.json` rebuilds its model (early_fusion, or mmin's full_baseline /
  augmented variants: any method whose params hold an `encoders` subtree) to shape the restore.
  """
  from mmer_jax import methods  # pylint: disable=g-import-not-at-top  (methods imports this module)
  path = os.path.join(stage1_workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: not a training run directory (method.pretrained_workdir '
                            'must name a finished stage-1 run)')
  with open(path, encoding='utf-8') as f:
    config = ml_collections.ConfigDict(json.load(f))
  method = methods.create_method(config, spec)
  target = jax.eval_shape(lambda: method.init(rng, batch))
  target = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), target)
  _, best_mgr = checkpoint.create_managers(stage1_workdir)
  restored = checkpoint.restore(best_mgr, {'params': target})
  if restored is None:
    raise FileNotFoundError(f'{stage1_workdir}/checkpoints/best: no checkpoint of the stage-1 run')
  params = restored[0]['params']
  if 'encoders' not in params:
    raise ValueError(f'{stage1_workdir}: the stage-1 model has no `encoders` parameters '
                     f'(got {sorted(params)}); train early_fusion or mmin variant=full_baseline')
  return jax.tree_util.tree_map(jnp.asarray, params['encoders'])


def _check_same_shapes(loaded, expected, source):
  shapes = lambda t: jax.tree_util.tree_map(lambda x: tuple(x.shape), t)  # noqa: E731
  if jax.tree_util.tree_structure(loaded) != jax.tree_util.tree_structure(expected) or \
      shapes(loaded) != shapes(expected):
    raise ValueError(f'{source}: the stage-1 encoders do not match this MMIN config\'s encoders '
                     f'(embed_dim, num_filters, kernel_sizes, mlp_hidden must agree): '
                     f'{shapes(loaded)} vs {shapes(expected)}')
