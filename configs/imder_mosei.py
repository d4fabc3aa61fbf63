"""python -m mmer_jax.main --config=configs/imder_mosei.py

IMDer (Wang, Li, Cui, NeurIPS 2023) on CMU-MOSEI, the project's headline command. Everything is as
in `configs/imder_mosi.py` except the authors' MOSEI settings: batch 128, 6 cross-modal layers,
gradient value clipping at 0.6, reduce-on-plateau patience 5, no attention/embedding dropout.

  python -m mmer_jax.main --config=configs/imder_mosei.py                 # MMSA's aligned_50.pkl
  python -m mmer_jax.main --config=configs/imder_mosei.py:synthetic
  python -m mmer_jax.main --config=configs/imder_mosei.py:smoke           # ~3 minutes

Without a variant it reads `MOSEI/Processed/aligned_50.pkl` from `--config.data.manual_dir` (its
SHA-256 is checked against MMSA's) and, when the file is absent, stops at once with the download
instructions and the `:synthetic` hint.
"""

from configs import imder_mosi


def get_config(arg: str | None = None):
  config = imder_mosi.base_config()
  config.data.name = 'mosei'
  config.data.batch_size = 128
  config.data.eval_batch_size = 128
  config.method = imder_mosi.imder_method(nlevels=6, attn_dropout_a=0.0, embed_dropout=0.0)
  config.optimizer.clip_value = 0.6
  config.optimizer.plateau_patience = 5
  return imder_mosi.apply_variants(config, arg)


sweep = imder_mosi.sweep  # the same seeds (docs/scaling.md)
