"""python -m mmer_jax.main --config=configs/fusion_mosi.py:synthetic

Early / late fusion baselines on CMU-MOSI (MMSA aligned_50 features), sentiment regression.

  python -m mmer_jax.main --config=configs/fusion_mosi.py:synthetic --config.method.name=late_fusion

L1 loss on scores in [-3, 3]; the model is selected on valid MAE. Expected on the synthetic set:
test MAE clearly below the constant predictor's and Corr > 0.5 with all modalities. Without
`:synthetic` it reads `MOSI/Processed/aligned_50.pkl` from `--config.data.manual_dir`.

`:synthetic` trains on a 2-core CPU in about 4 minutes (docs/laptop.md), so there is
no `:cpu` variant: `:cpu` stops with an error that says so.
"""

from configs import default

CPU_MINUTES = 4  # `:synthetic` on a 2-core CPU, estimated (docs/laptop.md)


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'mosi'
  config.data.batch_size = 64
  config.data.eval_batch_size = 256

  config.method = default.fusion_method('early_fusion', encoder_dropout=0.3,
                                        missing_input='zero_embedding')  # | late_fusion | gated_attention

  config.optimizer.learning_rate = 5e-4
  config.optimizer.clip_norm = 5.0
  config.train.num_epochs = 20
  return default.apply_variant(config, arg, cpu_minutes=CPU_MINUTES)


def sweep():
  """python launch/sweep.py --config=configs/fusion_mosi.py:synthetic --workdir=runs/sweep

  5 seeds, one compiled program (docs/scaling.md).
  """
  return [{'seed': s} for s in range(5)]
