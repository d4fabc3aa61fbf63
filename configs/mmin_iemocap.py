"""python -m mmer_jax.main --config=configs/mmin_iemocap.py:synthetic

MMIN (Zhao, Li, Jin, ACL 2021) on IEMOCAP 4-class (MMIN's features: ComParE audio, DenseFace
visual, BERT-large text sequences), and the comparison rows of its paper:

  python -m mmer_jax.main --config=configs/mmin_iemocap.py:synthetic --config.method.variant=mmin_ae
  python -m mmer_jax.main --config=configs/mmin_iemocap.py:synthetic --config.method.variant=mmin_nocycle
  python -m mmer_jax.main --config=configs/mmin_iemocap.py:synthetic --config.method.variant=augmented \
      --config.optimizer.b1=0.9 --config.train.num_epochs=40 --config.optimizer.constant_epochs=20 \
      --config.optimizer.clip_norm=0.5        # the authors' data-augmentation script's optimiser
      # (+ --config.method.augmented_missing=patterns: their six patterns without the full one)
  python -m mmer_jax.main --config=configs/mmin_iemocap.py:synthetic \
      --config.method.teacher_target=full   # imagine the complete input's embedding instead

Two stages, as data (`config.stages`, mmer_jax/stages.py), each in its own directory: `stage1`
trains the full-modality early-fusion model into `<workdir>/stage1` (its results.json is the
paper's "full-modality baseline" row, evaluated under every missing condition by zero-filling),
then stage `mmin` (`<workdir>/mmin`) starts from its encoders (student, fine-tuned) and uses them
as the frozen teacher (`config.init_from`); `<workdir>/results.json` is MMIN's table.
`--stage=stage1` runs one stage alone; `--config.stages.stage1.<field>=...` sets stage 1's own
fields; `:talk_loss` weighs the imagination losses as the talk presenting MMIN
(squared L2 norms, 0.1 each); `--config.method.pretrained_workdir=DIR` reuses a finished stage-1 run instead (the same
fold!). Training draws one of the six missing patterns per sample and step; the test grid reports
the six conditions, full, and missing rates.

Real data: without `:synthetic` it reads MMIN's h5 release from `--config.data.manual_dir`,
one fold per run: `--config.data.options.fold=K` (K = 1..10, default 1). The paper's numbers are
10-fold cross-validation: 10 runs with fold=1..10 (each with its own workdir and stage 1), the
table being the mean over folds. Model selection uses valid UA (as the authors' IEMOCAP runs),
pooled over the six missing patterns of the validation split for the rows trained on missing
data, and on the complete split for stage 1 / full_baseline (`train.valid_conditions` overrides).
Results and their discussion: docs/mmin.md. `:smoke` runs both stages end to end in about a
minute on a CPU (numbers meaningless).

Hyperparameters follow the authors' master scripts (CAP_mmin.sh): Adam lr 2e-4, beta1 0.5 (their
default; stage 1 used 0.9), batch 128, 30 epochs constant + 30 linearly decayed (optax decays to 0
at the last step; theirs stops at lr/31), loss 1.0 CE + 4.0 forward + 2.0 cycle, separate forward
and backward CRAs, classifier 320-128-128-4 with dropout 0.5. No weight decay: their
weight_decay=1e-5 flag never reached the optimiser. They clip each network's gradient norm at 1.0;
we clip the global norm at 1.0 (stage 1: 0.5).

`:synthetic` trains on a 2-core CPU in about 44 minutes (both stages) (docs/laptop.md), so there is
no `:cpu` variant: `:cpu` stops with an error that says so.
"""

import ml_collections
from ml_collections import config_dict

from configs import default
from mmer_jax import missing
from mmer_jax.data import synthetic_generator

CPU_MINUTES = 44  # `:synthetic` on a 2-core CPU, estimated (docs/laptop.md)

# `:synthetic,train_x4`: the synthetic set with four times the release's training utterances
# (17,700; valid and test keep the release's sizes): docs/mmin.md's x4 columns.
TRAIN_X4_SIZES = {'train': 4 * synthetic_generator.RELEASES['iemocap_4'].sizes['train']}


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'iemocap_4'
  config.data.batch_size = 128
  config.data.eval_batch_size = 256

  m = config.method
  m.name = 'mmin'
  m.variant = 'mmin'  # mmin | mmin_ae | mmin_nocycle | full_baseline | augmented
  m.teacher_target = 'complement'  # complement (the missing modalities) | full (complete input)
  # Both targets are fixed functions of each example and its mask (the teacher is frozen and
  # deterministic): `fit` tabulates its embeddings once per run (frozen params), instead of
  # running the teacher in every step.
  m.cache_teacher = True
  m.augmented_missing = 'patterns_and_full'  # augmented variant; 'patterns': the authors' code
  m.ce_weight = 1.0
  m.fwd_weight = 4.0
  m.cycle_weight = 2.0
  # The squared errors of the forward and cycle terms: 'mean' over the joint embedding's dims (the
  # authors' MSELoss) or 'sum' (squared L2 norms, the talk's form; `:talk_loss`).
  m.imagination_reduction = 'mean'
  # A missing modality's slot of the student embedding: 'zero' (exactly zero) or 'encoded_zeros'
  # (the encoder's output for the zeroed input, as the authors' code; docs/mmin.md).
  m.missing_slot = 'zero'
  m.share_weights = False  # backward net = forward net
  # Imagination nets. CRA: 5 blocks of 384-256-128-64-128-256-384 (+ the authors' transition).
  m.cra = ml_collections.ConfigDict({'num_blocks': 5, 'layers': (256, 128, 64), 'transition': True})
  # MMIN-AE: the authors' SimpleFcAE shape, 384-512-450-384-256 and back, LeakyReLU, ReLU output;
  # the classifier reads its 256-d latent.
  m.ae = ml_collections.ConfigDict({'layers': (512, 450, 384, 256), 'output_relu': True})
  m.classifier = default.mlp_head((128, 128), dropout=0.5)
  # Encoders (shared by stage 1, the student and the teacher) and the early-fusion head of
  # stage 1 and of the full_baseline / augmented variants (384-128-128-4, dropout 0.3).
  m.encoders = default.utterance_encoders(dropout=0.5)
  m.head = default.mlp_head((128, 128), dropout=0.3)
  # How the early-fusion rows meet a missing modality: its zero-filled features are encoded like
  # real ones (the paper's baselines); 'zero_embedding' zeroes the embedding instead.
  m.missing_input = 'zero_features'
  m.pretrained_workdir = config_dict.placeholder(str)  # a finished stage-1 run; None: stage 1 runs

  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.optimizer.weight_decay = 0.0
  config.optimizer.clip_norm = 1.0
  config.optimizer.schedule = 'linear_decay'
  config.optimizer.constant_epochs = 30
  config.train.num_epochs = 60
  # One of the six missing patterns per sample and step; selection pooled over the six.
  config.train.missing = 'patterns'
  config.train.valid_conditions = missing.MISSING_CONDITIONS
  config.analysis = ('imagination_pca', 'imagination_mse')

  # Stage 1 (CAP_utt_fusion.sh): the full-modality early-fusion model, 10 + 10 epochs, lr 2e-4,
  # beta1 0.9, clip 0.5, trained and selected on complete data; its encoders initialise the
  # student and the frozen teacher of stage `mmin`.
  config.stage_name = 'mmin'
  config.stages.stage1 = ml_collections.ConfigDict({
      'method': {'variant': 'full_baseline'},
      'train': {'num_epochs': 20, 'missing': 'none', 'valid_conditions': ('full',)},
      'optimizer': {'constant_epochs': 10, 'learning_rate': 2e-4, 'b1': 0.9, 'clip_norm': 0.5},
  })
  config.init_from.stage = 'stage1'
  config.init_from.params = ml_collections.ConfigDict({'encoders': 'encoders', 'teacher': 'encoders'})

  variants = [v for v in (arg or '').split(',') if v]
  if 'talk_loss' in variants:
    variants.remove('talk_loss')
    set_talk_loss(config)
  if 'train_x4' in variants:
    variants.remove('train_x4')
    if 'synthetic' not in variants:
      raise ValueError('the train_x4 variant resizes the synthetic set: use it as synthetic,train_x4')
    config.data.options.sizes = dict(TRAIN_X4_SIZES)
  config = default.apply_variant(config, ','.join(variants), cpu_minutes=CPU_MINUTES)
  if 'smoke' in variants:
    smoke_stages(config)
  return config


def set_talk_loss(config):
  """`:talk_loss`: L_cls + 0.1 L_forward + 0.1 L_backward with squared L2 norms averaged over
  samples, as the talk presenting MMIN writes it (the authors' code: 4.0 / 2.0 on dim means)."""
  config.method.imagination_reduction = 'sum'
  config.method.fwd_weight = 0.1
  config.method.cycle_weight = 0.1


def smoke_stages(config):
  """`:smoke` for both stages: as many epochs as the main stage, one at the constant rate."""
  stage1 = config.stages.stage1
  stage1.train.num_epochs = config.train.num_epochs
  stage1.optimizer.constant_epochs = 1
  config.optimizer.constant_epochs = 1
  if 'data' in stage1:
    del stage1['data']  # the smoke batch size for both stages


def sweep():
  """python launch/sweep.py --config=configs/mmin_iemocap.py:synthetic --workdir=runs/sweep

  5 seeds. MMIN's config has stages (a teacher, then MMIN), so each seed is a job of its own
  (docs/scaling.md).
  """
  return [{'seed': s} for s in range(5)]
