"""python -m mmer_jax.main --config=configs/fusion_features.py --config.data.features_dir=PATH

Late / early / gated-attention fusion on anyone's features: a directory in the generic format
(meta.json + utterances.csv + one .npy per modality, docs/byof.md). The task, the labels and the
modalities come from meta.json; selection follows the task (valid UA for classification, valid
MAE for regression) unless `--config.train.select_metric` says otherwise.

  python -m mmer_jax.main --config=configs/fusion_features.py --config.data.features_dir=../shared/data/ravdess_av
  ... --config.method.name=early_fusion            # or gated_attention
  ... --config.train.missing=patterns_and_full     # trained with random missing modalities too
  ... --config.train.missing=rate --config.train.missing_rates=a:0.1,v:0.5   # uneven missingness

Defaults chosen for a few hundred to tens of thousands of utterances: features standardised with
the training split's statistics (`data.standardize`), batches of 32, AdamW (lr 1e-3, weight decay
1e-4), dropout 0.3 in the encoders and the head, up to 200 epochs with early stopping after 20
epochs without a better validation metric. A missing modality is left out of the fusion
(`missing_input='zero_embedding'`), so the same model can be evaluated on any subset.

Variants: `:smoke` / `:synthetic` run the same config on the synthetic IEMOCAP stand-in (tests,
a first look without a directory). `:synthetic` trains on a 2-core CPU in about 8 minutes
(measured: early stopping after epoch 23; all 200 epochs would be about 60; docs/laptop.md), so
there is no `:cpu` variant: `:cpu` stops with an error that says so.
"""

from configs import default

CPU_MINUTES = 8  # `:synthetic` on a 2-core CPU, measured (docs/laptop.md)


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'features_dir'
  config.data.standardize = True
  config.data.batch_size = 32
  config.data.eval_batch_size = 256

  config.method = default.fusion_method('late_fusion', encoder_dropout=0.3,
                                        missing_input='zero_embedding')  # | early_fusion | gated_attention

  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.clip_norm = 5.0
  config.train.num_epochs = 200
  config.train.patience = 20
  config.train.log_every_steps = 20
  config.train.checkpoint_every_steps = 1000

  variants = [v for v in (arg or '').split(',') if v]
  if variants:
    config.data.name = 'iemocap_4'
    config = default.apply_variant(config, arg, cpu_minutes=CPU_MINUTES)
    if 'smoke' in variants:
      config.train.patience = None
  return config


def sweep():
  """python launch/sweep.py --config=configs/fusion_features.py:synthetic --workdir=runs/sweep

  5 seeds, one compiled program (docs/scaling.md).
  """
  return [{'seed': s} for s in range(5)]
