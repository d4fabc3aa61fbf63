"""Shared defaults; every other config starts from `get_config()` here and overrides.

  python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic   (a concrete config)

Not runnable on its own: it names no method.
"""

from typing import Callable

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Data: a registry name (`synthetic/<release>`, `features_dir` or an official release).
  config.data = ml_collections.ConfigDict()
  config.data.name = 'synthetic/iemocap_4'
  config.data.data_dir = config_dict.placeholder(str)  # where built datasets live (TFDS data_dir)
  config.data.manual_dir = config_dict.placeholder(str)  # the user's copy of an official release
  config.data.features_dir = config_dict.placeholder(str)  # a generic feature directory
  config.data.options = ml_collections.ConfigDict()  # builder options: seed, sizes, fold, ...
  config.data.batch_size = 128  # utterances, or dialogues for a dialogue-level method
  config.data.eval_batch_size = 256
  config.data.buckets = (8, 16, 32, 64, 128)  # dialogue length buckets
  # Training dialogue batches: 'none' (consecutive slices of the epoch's permutation) | 'sorted'
  # (each pool of the permutation sorted by length and cut into batches, the batches shuffled per
  # (seed, epoch): little padding; data/pipeline.py dialogue_batch_indices). Evaluation batches
  # keep the split's order either way.
  config.data.length_grouping = 'none'
  config.data.length_grouping_pool = 0  # 'sorted': batches per sorted pool (0: the whole split)
  config.data.max_lens = ml_collections.ConfigDict()  # {modality: frames}; default from the dataset
  config.data.prefetch = 2
  # Standardise each modality with the training split's mean and std (mmer_jax/data/standardize.py):
  # True | False | None = the dataset's default (on for features_dir; docs/data.md per release).
  config.data.standardize = config_dict.placeholder(bool)

  # Method: `name` picks the file in mmer_jax/methods; the rest are that method's knobs.
  config.method = ml_collections.ConfigDict()
  config.method.name = config_dict.placeholder(str)

  # Optimiser (optax).
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'  # 'adam' | 'adamw' | 'sgd'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.weight_decay_mode = 'decoupled'  # 'decoupled' (AdamW) | 'l2' (added to the grads, torch Adam)
  config.optimizer.clip_norm = config_dict.placeholder(float)  # global-norm clipping
  # With names ('/'-paths of parameter subtrees, e.g. 'encoders/audio'), each named subtree's
  # gradient norm is clipped to clip_norm on its own (the rest together): per-network clipping as
  # in the authors' MMIN code. Empty: one global norm.
  config.optimizer.clip_groups = ()
  config.optimizer.clip_value = config_dict.placeholder(float)  # element-wise clipping
  config.optimizer.schedule = 'constant'  # 'constant' | 'linear_decay' | 'cosine'
  config.optimizer.constant_epochs = 0  # linear_decay: epochs at the base rate before decaying
  config.optimizer.warmup_epochs = 0
  config.optimizer.reduce_on_plateau = False  # optax.contrib.reduce_on_plateau on the epoch train loss
  config.optimizer.plateau_factor = 0.5
  config.optimizer.plateau_patience = 5  # epochs

  # Training loop.
  config.train = ml_collections.ConfigDict()
  config.train.num_epochs = 20
  # Modality dropout while training: 'none' | 'patterns' | 'patterns_and_full' | 'rate' |
  # 'drop_one' | 'drop_two' (exactly one / two of the available modalities missing per sample).
  config.train.missing = 'none'
  config.train.missing_rate = 0.3
  # train.missing='rate' with one rate per modality instead, e.g. 'a:0.1,v:0.5,t:0.0' (missing.py).
  config.train.missing_rates = config_dict.placeholder(str)
  # Where the training masks are drawn (data/grouping.py, docs/protocol.md): 'step' (in the
  # compiled step, per batch key), 'host' (per example on the host, keyed by seed, epoch and
  # example) or 'host_grouped' (host draws, each batch one missing pattern: IMDer's default).
  config.train.mask_draw = 'step'
  config.train.log_every_steps = 50
  # The log is never silent longer than this while a stage runs: a progress line or a heartbeat
  # naming what runs (compiling, a slow step, validating, a grid row); None: lines every N steps.
  config.train.log_every_seconds = config_dict.FieldReference(30.0, field_type=float)
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_steps = 200
  # Model selection on the validation split only. None: the task's default, valid/ua
  # (classification) or valid/mae (regression), and the metric's direction (min for mae).
  config.train.select_metric = config_dict.placeholder(str)
  config.train.select_mode = config_dict.placeholder(str)  # 'max' | 'min'
  # Early stopping: stop after this many evaluated epochs without a better select_metric (None: off).
  config.train.patience = config_dict.placeholder(int)
  # A training loss above this is flagged in the log and results.json (unscaled features, too
  # high a learning rate); a non-finite loss always stops the run (mmer_jax/diagnostics.py).
  config.train.loss_bound = 100.0
  # Missing conditions pooled for the validation metrics (e.g. ('a', 'v', 't', 'av', 'at', 'vt'));
  # None: the method's choice (complete data, except MMIN's rows trained on missing data).
  config.train.valid_conditions = config_dict.placeholder(tuple)
  config.train.max_steps = config_dict.placeholder(int)  # stop early (smoke runs, benchmarks)
  # Evaluate and select with an exponential moving average of the parameters (None: off).
  config.train.ema_decay = config_dict.placeholder(float)

  # Stages (mmer_jax/stages.py): earlier stages, name -> the fields in which each differs from
  # this config; this config runs last as stage `stage_name`. No stages: one run in the workdir.
  config.stages = ml_collections.ConfigDict()
  config.stage_name = 'main'
  # Restore parameter subtrees {dest: source} from an earlier stage's or a finished run's best
  # checkpoint (stage XOR workdir).
  config.init_from = ml_collections.ConfigDict()
  config.init_from.stage = config_dict.placeholder(str)
  config.init_from.workdir = config_dict.placeholder(str)
  config.init_from.params = ml_collections.ConfigDict()
  # Figures written after the test evaluation (mmer_jax/analysis), e.g. ('imagination_pca',).
  config.analysis = ()

  # Evaluation grid (evaluate.py): conditions x missing rates on the test split.
  config.eval = ml_collections.ConfigDict()
  config.eval.conditions = ('full', 'a', 'v', 't', 'av', 'at', 'vt')
  config.eval.rates = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
  config.eval.split = 'test'
  # Ineffectual modalities (M3ER; evaluate.py, missing.noise_corrupt): rows `noise=<f>` on complete
  # data, where a share f of the test samples has one present modality replaced by white Gaussian
  # noise. noise_fractions: one row per fraction; noise_fraction (the flag
  # --config.eval.noise_fraction=0.3, "the share of test samples with one modality replaced by
  # noise") adds one more row when set.
  config.eval.noise_fractions = ()
  config.eval.noise_fraction = config_dict.placeholder(float)
  # The noise's signal-to-noise ratio in dB: x + n with n of power P * 10^(-snr/10), P the
  # modality's mean square over its valid frames. At -10 dB the added noise has ten times the
  # signal's power (lower approaches replacement). noise_replace=True replaces the modality by
  # noise of power P outright (nothing of x left) and ignores noise_snr_db.
  config.eval.noise_snr_db = -10.0
  config.eval.noise_replace = False

  # JAX's PRNG for every key of the run (dropout, missing-modality masks, initialisation):
  # 'threefry2x32' (JAX's default) | 'rbg' | 'unsafe_rbg' (cheaper random bits; mmer_jax/rng.py,
  # docs/training.md). A checkpoint resumes only under the impl it was written with.
  config.rng_impl = 'threefry2x32'

  config.parallel = 'jit'  # 'jit' (NamedSharding over a Mesh axis `batch`) | 'pmap'
  # Mixed precision (docs/training.md): 'float32' | 'bfloat16' (activations and matmuls in
  # bfloat16; parameters, optimiser state, losses and metrics stay float32). --mode=gradcheck
  # ignores it and checks in float64.
  config.precision = 'float32'
  config.gradcheck = ml_collections.ConfigDict()
  config.gradcheck.batch_size = 4
  config.gradcheck.eps = 1e-4
  config.gradcheck.jitter = 0.01  # moves the check off exact ReLU/max kinks at initialisation
  config.gradcheck.atol = 1e-5
  config.gradcheck.rtol = 1e-4
  return config


def utterance_encoders(dropout: float = 0.5) -> ml_collections.ConfigDict:
  """`method.encoders` (keyword arguments of `models.encoders.ModalityEncoders`): MMIN's
  utterance encoders, LSTM(128) + max-pool for audio/visual sequences, TextCNN(3,4,5 x 128) for
  text, an MLP for utterance-level features; `dropout` of the TextCNN/MLP encoders. `padding`:
  'masked' (padded frames never reach an output) or 'included' (the LSTM runs over the zero
  padding and the pools count it, as the authors' code does). `lstm_biases`: 1, or 2 for
  PyTorch's redundant pair (which Adam moves twice as fast; mmer_jax/parity)."""
  return ml_collections.ConfigDict({'embed_dim': 128, 'dropout': dropout, 'num_filters': 128,
                                    'kernel_sizes': (3, 4, 5), 'mlp_hidden': (), 'padding': 'masked',
                                    'lstm_biases': 1})


def mlp_head(hidden=(128, 128), dropout: float = 0.3) -> ml_collections.ConfigDict:
  """`method.head` / `method.classifier` (keyword arguments of `models.layers.MLPHead`)."""
  return ml_collections.ConfigDict({'hidden': tuple(hidden), 'dropout': dropout})


def fusion_method(name: str = 'early_fusion', *, encoder_dropout: float,
                  missing_input: str) -> ml_collections.ConfigDict:
  """`config.method` of the utterance fusion baselines (early_fusion | late_fusion |
  gated_attention): the encoders, a 128-128 head with dropout 0.3, and `missing_input`
  ('zero_features' | 'zero_embedding', see mmer_jax/models/fusion.py)."""
  return ml_collections.ConfigDict({'name': name, 'encoders': utterance_encoders(encoder_dropout),
                                    'head': mlp_head((128, 128), dropout=0.3),
                                    'missing_input': missing_input})


SMOKE_SIZES = {
    'utterance': {'train': 48, 'valid': 16, 'test': 16},  # utterances
    'conversation': {'train': 8, 'valid': 4, 'test': 4},  # dialogues
}


# The builder options of each official release, with their defaults, so that the command line can
# set them (ml_collections only overrides fields that exist): `--config.data.options.fold=3`.
RELEASE_OPTIONS = {
    'iemocap_4': {'fold': 1, 'audio_norm': 'train'},
    'msp_improv_4': {'fold': 1, 'audio_norm': 'train'},
    'iemocap_6': {'valid_seed': 0},
    'meld_7': {'valid_seed': 0},
    'mosi': {'verify_checksum': True},
    'mosei': {'verify_checksum': True},
}


VARIANTS = ('synthetic', 'smoke', 'cpu')


def apply_variant(config: ml_collections.ConfigDict, arg: str | None, *,
                  conversational: bool = False,
                  cpu: Callable[[ml_collections.ConfigDict], None] | None = None,
                  cpu_minutes: int | None = None) -> ml_collections.ConfigDict:
  """Applies the comma-separated variants after ':' in `--config=file.py:variants`.

  synthetic  the synthetic stand-in of the same release (no files needed)
  smoke      a tiny synthetic set, two epochs, small batches: seconds, for tests
  cpu        laptop-sized: `cpu(config)`, the config's own smaller model and schedule (same
             method), for the configs whose authors' scale takes more than about an hour on a
             2-core CPU (`configs/imder_*.py`); combines with the others (`synthetic,cpu`).
             A config without one (`cpu=None`) raises a ValueError that says it runs at its
             authors' scale on a CPU in about `cpu_minutes` minutes (`:synthetic` as it is)
  (none)     the official release, from `config.data.manual_dir`, with its builder options
             (`RELEASE_OPTIONS`) as fields
  """
  variants = [v for v in (arg or '').split(',') if v]
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    raise ValueError(f'unknown config variant(s) {sorted(unknown)}; expected any of '
                     f'{", ".join(VARIANTS)} (comma-separated)')
  if 'cpu' in variants and cpu is None:
    estimate = (f' in about {cpu_minutes} minutes' if cpu_minutes is not None else '')
    raise ValueError(
        'this config has no cpu variant: at its authors\' scale (:synthetic) it trains on a '
        f'2-core CPU{estimate}, so it needs none; drop ":cpu" from --config (docs/laptop.md)')
  synthetic = 'synthetic' in variants or 'smoke' in variants
  own = {} if synthetic else RELEASE_OPTIONS.get(config.data.name, {})
  for key in {k for options in RELEASE_OPTIONS.values() for k in options} - set(own):
    if key in config.data.options:  # set for another release (a config built on another one's)
      del config.data.options[key]
  for key, value in own.items():
    if key not in config.data.options:
      config.data.options[key] = value
  if synthetic:
    config.data.name = 'synthetic/' + config.data.name
  if 'cpu' in variants:
    cpu(config)
  if 'smoke' in variants:  # after cpu: smoke stays the tiny run
    config.data.options.sizes = SMOKE_SIZES['conversation' if conversational else 'utterance']
    config.data.batch_size = 4 if conversational else 8
    config.data.eval_batch_size = 4 if conversational else 8
    config.train.num_epochs = 2
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 3
  return config
