"""python -m mmer_jax.main --config=configs/mmgcn_meld.py:synthetic

MMGCN (Hu et al., ACL 2021) on MELD 7-class conversations (text 600, audio 300, visual 342;
speakers in up to 9 slots per dialogue). See configs/mmgcn_iemocap.py and docs/mmgcn.md.

  python -m mmer_jax.main --config=configs/mmgcn_meld.py:synthetic
  python -m mmer_jax.main --config=configs/mmgcn_meld.py --config.data.features_dir=../shared/data/meld_text

The second command trains on the real MELD text features in `../shared/data/meld_text` (text
only: the graph has one node per utterance). Hyperparameters follow the authors' run.sh for MELD:
Adam lr 1e-3, no weight decay, dropout 0.4, batch 16 dialogues, 60 epochs, focal loss (gamma 2.5;
the paper's form, `--config.method.loss=focal_authors` for their code's). Selection on valid
weighted F1. Without `:synthetic` or a features_dir it reads `MELD_features_raw1.pkl` from
`--config.data.manual_dir`.

`:synthetic` trains on a 2-core CPU in about 11 minutes (at depth 64, the authors' model, about
46; docs/laptop.md), so there is no `:cpu` variant: `:cpu` stops with an error that says so.
"""

from configs import default
from configs import mmgcn_iemocap

CPU_MINUTES = 11  # `:synthetic` on a 2-core CPU, estimated (docs/laptop.md)


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'meld_7'
  config.data.batch_size = 16  # dialogues
  config.data.eval_batch_size = 16
  config.data.buckets = (8, 16, 24, 40)
  config.data.length_grouping = 'sorted'  # docs/mmgcn.md#speed

  config.method = mmgcn_iemocap.mmgcn_method(num_speakers=9, loss='focal')

  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.train.num_epochs = 60
  config.train.log_every_steps = 20
  config.train.select_metric = 'valid/weighted_f1'
  config.analysis = ('mmgcn_adjacency',)
  return mmgcn_iemocap.apply_variant(config, arg, cpu_minutes=CPU_MINUTES)


sweep = mmgcn_iemocap.sweep  # the same seeds (docs/scaling.md)
