"""python -m mmer_jax.main --config=configs/bclstm_meld.py:synthetic

bc-LSTM (Poria et al., ACL 2017) on MELD 7-class conversations.

  python -m mmer_jax.main --config=configs/bclstm_meld.py --config.data.features_dir=../shared/data/meld_text

The second command trains on the real MELD text features shipped in `../shared/data/meld_text`
(MiniLM sentence embeddings, text only): expect test weighted F1 >= 0.57 with the checkpoint chosen
on valid (a context-free logistic regression gets 0.564). Without `:synthetic` or a features_dir
it reads `MELD_features_raw1.pkl` from `--config.data.manual_dir`.

`:synthetic` trains on a 2-core CPU in about 4 minutes (docs/laptop.md), so there is
no `:cpu` variant: `:cpu` stops with an error that says so.
"""

from configs import default

CPU_MINUTES = 4  # `:synthetic` on a 2-core CPU, estimated (docs/laptop.md)


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'meld_7'
  config.data.batch_size = 16  # dialogues
  config.data.eval_batch_size = 16
  config.data.buckets = (8, 16, 24, 40)

  config.method.name = 'bclstm'
  config.method.utterance_dim = 200
  config.method.lstm_hidden = 128
  config.method.dense_dim = 128
  config.method.dropout = 0.5

  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-2
  config.optimizer.schedule = 'cosine'
  config.optimizer.clip_norm = 5.0
  config.train.num_epochs = 40
  config.train.log_every_steps = 20
  config.train.select_metric = 'valid/weighted_f1'
  return default.apply_variant(config, arg, conversational=True, cpu_minutes=CPU_MINUTES)


def sweep():
  """python launch/sweep.py --config=configs/bclstm_meld.py:synthetic --workdir=runs/sweep

  5 seeds, one compiled program (docs/scaling.md).
  """
  return [{'seed': s} for s in range(5)]
