"""python -m mmer_jax.main --config=configs/mmgcn_iemocap.py:synthetic

MMGCN (Hu, Liu, Zhao, Jin, ACL 2021) on IEMOCAP 6-class conversations (MMGCN's features: text
100, audio 1582, visual 342): one graph per dialogue over its utterances' modality nodes, a deep
GCN (GCNII) over it, a classifier on each utterance's nodes (mmer_jax/methods/mmgcn.py,
docs/mmgcn.md).

  python -m mmer_jax.main --config=configs/mmgcn_iemocap.py:synthetic
  python -m mmer_jax.main --config=configs/mmgcn_iemocap.py:smoke
  python -m mmer_jax.main --config=configs/mmgcn_iemocap.py:synthetic --config.method.modalities=vt
  python -m mmer_jax.main --config=configs/mmgcn_iemocap.py:synthetic --config.method.fusion=gated
  python -m mmer_jax.main --config=configs/mmgcn_iemocap.py --config.data.features_dir=PATH

Hyperparameters follow the authors' run.sh for IEMOCAP: Adam lr 3e-4 with L2 3e-5 (added to the
gradients, as torch's Adam), dropout 0.4, batch 16 dialogues, 20 epochs, class-weighted NLL.
Depth: the paper's best, 4 layers (the authors' code builds 64 whatever its flag says:
`--config.method.num_layers=64 --config.method.gcn_form=authors` is their model). Selection on
valid weighted F1 (MMGCN's pickle has no valid split; ours is 10% of the training dialogues,
seeded; the authors report the best test epoch). Without a variant it reads
`IEMOCAP_features.pkl` from `--config.data.manual_dir`.

`:synthetic` trains on a 2-core CPU in about 4 minutes (at depth 64, the authors' model, about
23; docs/laptop.md), so there is no `:cpu` variant: `:cpu` stops with an error that says so.
"""

import ml_collections

from configs import default

CPU_MINUTES = 4  # `:synthetic` on a 2-core CPU, estimated (docs/laptop.md)


def mmgcn_method(**overrides) -> ml_collections.ConfigDict:
  """`config.method` of MMGCN (keyword arguments of models.mmgcn.MMGCN and the loss)."""
  method = ml_collections.ConfigDict({
      'name': 'mmgcn',
      'modalities': 'avt',  # the paper's rows: a, v, t, at, av, vt, avt
      'fusion': 'graph',  # MMGCN | 'early' | 'late' | 'gated' (the fusion baselines)
      'width': 200,  # encoder output: Dense (audio, visual), Dense + 2-layer BiLSTM (text)
      'speaker_nodes': 'text',  # 'none' | 'text' (the authors' code) | 'all'
      'num_speakers': 2,
      'num_layers': 4,
      'gcn_hidden': 100,
      'alpha': 0.1,
      'lamda': 0.5,
      'gcn_form': 'paper',  # | 'authors' ([A h, h0] W, their variant=True)
      'remat': False,  # recompute GCN layers in the backward pass (deep stacks, long dialogues)
      'fused': True,  # the GCN's layers as one scan over folded kernels (False: layer by layer)
      'unroll': 1,  # layers per scan iteration when fused (True: all)
      'message_passing': 'blocks',  # | 'edges' (the jraph edge list; the same numbers, slower)
      'cross_modal_weight': 1.0,  # gamma on cross-modal edges
      'cos_scale': 0.99999,
      'dropout': 0.4,
      'loss': 'weighted_nll',  # | 'nll' | 'focal' | 'focal_authors'
      'class_weights': (),  # empty: inverse training-split frequencies
      'focal_gamma': 2.5,
  })
  method.update(overrides)
  return method


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'iemocap_6'
  config.data.batch_size = 16  # dialogues
  config.data.eval_batch_size = 16
  # Training batches of dialogues of similar length, padded to fine buckets: a fifth of the turn
  # slots padding instead of three fifths (docs/mmgcn.md#speed).
  config.data.buckets = (16, 24, 32, 48, 64, 96, 128)
  config.data.length_grouping = 'sorted'

  config.method = mmgcn_method()

  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 3e-4
  config.optimizer.weight_decay = 3e-5
  config.optimizer.weight_decay_mode = 'l2'
  config.train.num_epochs = 20
  config.train.log_every_steps = 10
  config.train.select_metric = 'valid/weighted_f1'
  config.analysis = ('mmgcn_adjacency',)
  return apply_variant(config, arg)


def apply_variant(config, arg: str | None, cpu_minutes: int = CPU_MINUTES):
  """`default.apply_variant` for a conversation set; `smoke` also makes the GCN 2 layers deep."""
  config = default.apply_variant(config, arg, conversational=True, cpu_minutes=cpu_minutes)
  if arg and 'smoke' in arg:
    config.method.num_layers = 2
  return config


def sweep():
  """python launch/sweep.py --config=configs/mmgcn_iemocap.py:synthetic --workdir=runs/sweep

  5 seeds, one compiled program (docs/scaling.md).
  """
  return [{'seed': s} for s in range(5)]
