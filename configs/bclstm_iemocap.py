"""python -m mmer_jax.main --config=configs/bclstm_iemocap.py:synthetic

bc-LSTM (Poria et al., ACL 2017) on IEMOCAP 6-class conversations (MMGCN's features).

A bidirectional LSTM over the turns of each dialogue on top of per-modality utterance features
(text 100, audio 1582, visual 342). Selected on valid weighted F1 (MMGCN's pickle has no valid
split; ours is 10% of the training dialogues, seeded). Expected on the synthetic set: test
weighted F1 clearly above a context-free model's, since ambiguous turns need context. Without
`:synthetic` it reads `IEMOCAP_features.pkl` from `--config.data.manual_dir`.

`:synthetic` trains on a 2-core CPU in about 2 minutes (docs/laptop.md), so there is
no `:cpu` variant: `:cpu` stops with an error that says so.
"""

from configs import default

CPU_MINUTES = 2  # `:synthetic` on a 2-core CPU, estimated (docs/laptop.md)


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'iemocap_6'
  config.data.batch_size = 8  # dialogues
  config.data.eval_batch_size = 8

  config.method.name = 'bclstm'
  config.method.utterance_dim = 100
  config.method.lstm_hidden = 100
  config.method.dense_dim = 100
  config.method.dropout = 0.3

  config.optimizer.learning_rate = 1e-3
  config.optimizer.name = 'adamw'
  config.optimizer.weight_decay = 1e-4
  config.optimizer.clip_norm = 5.0
  config.train.num_epochs = 40
  config.train.log_every_steps = 20
  config.train.select_metric = 'valid/weighted_f1'
  return default.apply_variant(config, arg, conversational=True, cpu_minutes=CPU_MINUTES)


def sweep():
  """python launch/sweep.py --config=configs/bclstm_iemocap.py:synthetic --workdir=runs/sweep

  5 seeds, one compiled program (docs/scaling.md).
  """
  return [{'seed': s} for s in range(5)]
