"""python -m mmer_jax.main --config=configs/imder_mosi.py:synthetic

IMDer (Wang, Li, Cui, NeurIPS 2023) on CMU-MOSI: score-based diffusion recovers the projected
features of each missing modality, conditioned on the available ones, and a MulT-style
cross-modal transformer regresses sentiment from the completed set (mmer_jax/methods/imder.py,
docs/imder.md).

  python -m mmer_jax.main --config=configs/imder_mosi.py:synthetic      # GPU-scale (~a day on CPU)
  python -m mmer_jax.main --config=configs/imder_mosi.py:synthetic,cpu  # laptop-sized (below)
  python -m mmer_jax.main --config=configs/imder_mosi.py:synthetic,fast # DPM-Solver-2, 5 steps
  python -m mmer_jax.main --config=configs/imder_mosi.py:smoke                       # ~3 minutes
  python -m mmer_jax.main --config=configs/imder_mosi.py:synthetic --config.method.recovery=zeros
      # the no-recovery row: the same head with missing modalities zero-filled
  python -m mmer_jax.main --config=configs/imder_mosi.py:synthetic --config.method.sampler=dpm_solver \
      --config.method.num_steps=10                   # a fast sampler for evaluation

Two stages (mmer_jax/stages.py): `stage1` trains the complete-data model (projections + fusion
head, as the authors' `pt/pretrained-<dataset>.pth`), then stage `imder` starts from it with the
projections frozen (the authors project under `torch.no_grad()`), and trains the score networks,
the refinement networks and the head with `L1 + 0.1 (score + rec)`. Missing modalities are drawn
per sample from the shared protocol at `train.missing_rate` on the host, and each batch holds
samples of one pattern (`train.mask_draw='host_grouped'`; the authors draw one pattern per batch;
see docs/protocol.md); evaluation covers the missing rates 0.0-0.7 and the conditions.
Without a variant it reads MMSA's `MOSI/Processed/aligned_50.pkl` from `--config.data.manual_dir`.

Hyperparameters follow the authors' config.json for MOSI: batch 32, Adam lr 2e-3, gradient value
clipping at 1.0, reduce-on-plateau (factor 0.5, patience 24), early stopping after 20 epochs
without a better valid MAE, d = 32 with 8 heads, 4 cross-modal layers (the memory transformers
3), attention dropout on audio 0.2, embedding dropout 0.2. Their weight_decay=0.005 never reaches
the optimiser (Adam without it), so none here. The sampler, its step count and the sampler used
inside training are config fields (`method.sampler`, `method.num_steps`, `method.train_sampler`,
`method.train_num_steps`).

`:cpu` (`cpu_scale`, docs/imder.md "CPU scale"; with `synthetic`, or alone on the real release or
a features directory) is the laptop size that `launch/table.py --spec=launch/tables/imder_mosi.py`
and the `imder` row of `--spec=launch/tables/features.py:DIR,imder` run: score U-Nets of two
levels (32, 64) with one attention layer, two RCABs, DPM-Solver-2 draws (3 steps in training, 10
at evaluation), 15 epochs per stage, selection pooled over the three one-missing patterns. At the
authors' scale one training step takes about 25 s on a 2-core CPU (100 epochs: days); the head,
projections, losses, optimiser and protocol stay the authors' in both.
"""

import ml_collections

from configs import default
from mmer_jax import missing


def imder_method(*, nlevels: int, attn_dropout_a: float, embed_dropout: float
                 ) -> ml_collections.ConfigDict:
  """`config.method` of IMDer (keyword arguments of the models, the loss weights, the samplers)."""
  return ml_collections.ConfigDict({
      'name': 'imder',
      'variant': 'imder',  # | 'pretrain' (stage 1: complete data, no recovery)
      'recovery': 'diffusion',  # | 'zeros' (missing projections zero-filled: the no-recovery row)
      'd_model': 32, 'num_heads': 8, 'nlevels': nlevels, 'mem_levels': 3, 'kernel_size': 3,
      'attn_dropout': 0.0, 'attn_dropout_a': attn_dropout_a, 'attn_dropout_v': 0.0,
      'relu_dropout': 0.0, 'embed_dropout': embed_dropout, 'res_dropout': 0.0,
      'output_dropout': 0.0, 'text_dropout': 0.0, 'attn_mask': True,
      'sigma': 25.0, 'dsm_eps': 1e-5,
      'perturb_condition': True,  # the authors diffuse the condition with the sample
      'score_channels': (32, 64, 128, 256), 'time_embed_dim': 256, 'score_attn_layers': 2,
      'refine_blocks': 20, 'refine_reduction': 16,
      'score_weight': 0.1, 'rec_weight': 0.1,
      'sampler': 'euler_maruyama', 'num_steps': 100, 'sampler_eps': 1e-3,
      'sampler_options': {},  # e.g. {'order': 1} for dpm_solver, {'snr': 0.1} for pc
      'train_sampler': 'euler_maruyama', 'train_num_steps': 100,
      # Draws and score terms run on the missing (modality, example) slots only, in chunks of
      # this share of the batch per modality (mmer_jax/ops/slots.py; 1.0: one chunk of B).
      'chunk_fraction': 0.5,
      # Utterance-level features (a features directory such as ravdess_av): the vector is mapped
      # to this many tokens of d_model channels by a learned projection (docs/imder.md).
      'utterance_tokens': 8,
  })


def get_config(arg: str | None = None):
  return apply_variants(base_config(), arg)


def base_config() -> ml_collections.ConfigDict:
  """MOSI's config before the variants (imder_mosei.py starts from it)."""
  config = default.get_config()
  config.data.name = 'mosi'
  config.data.batch_size = 32
  config.data.eval_batch_size = 64
  config.method = imder_method(nlevels=4, attn_dropout_a=0.2, embed_dropout=0.2)

  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.clip_value = 1.0
  config.optimizer.reduce_on_plateau = True
  config.optimizer.plateau_factor = 0.5
  config.optimizer.plateau_patience = 24
  config.train.num_epochs = 100
  config.train.patience = 20
  config.train.missing = 'rate'
  config.train.missing_rate = 0.5
  # Each sample's pattern drawn on the host from the protocol, batches of one pattern: a step
  # draws exactly its batch's missing slots (docs/imder.md "Speed"); 'step' draws in the step.
  config.train.mask_draw = 'host_grouped'
  config.train.ema_decay = 0.999
  # Selection on valid L1 pooled over the missing conditions (where recovery acts; the authors
  # validate with missing modalities too); stage 1 selects on complete data.
  config.train.valid_conditions = missing.MISSING_CONDITIONS
  # The score loss is a sum over the 48 x 32 entries of each recovered projection (the authors'
  # loss_fn): hundreds at the start, so the divergence bound is set above that.
  config.train.loss_bound = 1e4

  config.analysis = ('recovery_pca',)

  config.stage_name = 'imder'
  config.stages.stage1 = ml_collections.ConfigDict({
      'method': {'variant': 'pretrain'},
      'train': {'missing': 'none', 'ema_decay': None, 'valid_conditions': ('full',)},
  })
  config.init_from.stage = 'stage1'
  config.init_from.params = ml_collections.ConfigDict({'params/projections': 'params/projections',
                                                       'params/head': 'params/head'})
  return config


def cpu_scale(config) -> None:
  """`:cpu`, the laptop size (docs/imder.md, "CPU scale"): score U-Nets of two levels (32, 64)
  with one attention layer, two RCABs, DPM-Solver-2 draws (3 steps in training, 10 at
  evaluation), 15 epochs per stage, selection pooled over the three one-missing patterns. The
  projections, fusion head, losses, optimiser and protocol stay the authors'."""
  m = config.method
  m.score_channels, m.score_attn_layers, m.refine_blocks = (32, 64), 1, 2
  m.train_sampler, m.train_num_steps = 'dpm_solver', 3
  m.sampler, m.num_steps = 'dpm_solver', 10
  config.train.num_epochs = 15
  # Each modality recovered once: half the sampler runs of the six missing patterns.
  config.train.valid_conditions = ('av', 'at', 'vt')


FAST_STEPS = 5  # DPM-Solver-2 steps of `:fast` (NFE 10: within the accuracy target, docs/imder.md)


def fast_sampler(config) -> None:
  """`:fast`: DPM-Solver-2 of `FAST_STEPS` steps for the training draws and the evaluation."""
  m = config.method
  m.sampler = m.train_sampler = 'dpm_solver'
  m.num_steps = m.train_num_steps = FAST_STEPS


def apply_variants(config, arg, cpu=cpu_scale):
  """`:synthetic` / `:smoke` / `:cpu` (default.apply_variant, `cpu` the laptop size), `:fast`
  (`fast_sampler`, after cpu's samplers) and, for smoke, a small fast model."""
  variants = [v for v in (arg or '').split(',') if v]
  config = default.apply_variant(config, ','.join(v for v in variants if v != 'fast'), cpu=cpu)
  if 'fast' in variants:
    fast_sampler(config)
  if 'smoke' in (arg or '').split(','):
    m = config.method
    m.nlevels, m.mem_levels, m.refine_blocks = 1, 1, 2
    m.score_channels, m.score_attn_layers = (32, 64), 1
    m.num_steps, m.train_num_steps = 4, 2
    config.train.num_epochs, config.train.patience = 2, None
    config.stages.stage1.train.num_epochs = 2
  return config


def sweep():
  """python launch/sweep.py --config=configs/imder_mosi.py:synthetic --workdir=runs/sweep

  5 seeds. Host-drawn masks (`train.mask_draw='host_grouped'`) make each seed's batches its own
  (patterns, shapes, counts), so the seeds run as separate jobs (docs/scaling.md).
  """
  return [{'seed': s} for s in range(5)]
