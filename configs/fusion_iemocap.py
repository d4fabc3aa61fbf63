"""python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic

Early / late fusion baselines on IEMOCAP 4-class (MMIN's features: audio, visual, text sequences).

  python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic --config.method.name=late_fusion
  python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic --config.method.name=late_fusion \
      --config.train.missing=patterns_and_full      # the "augmented" baseline of the MMIN paper

Encoders as in MMIN: LSTM(128) + max-pool for audio and visual, TextCNN(3,4,5 x 128) for text.
Expected on the synthetic set (4 balanced-ish classes, chance UA 0.25): test UA well above 0.6 with
all modalities; see docs/baselines.md. Without `:synthetic` it reads MMIN's h5 release
(fold `--config.data.options.fold=1..10`) from `--config.data.manual_dir`.

`:synthetic` trains on a 2-core CPU in about 15 minutes (docs/laptop.md), so there is
no `:cpu` variant: `:cpu` stops with an error that says so.
"""

from configs import default

CPU_MINUTES = 15  # `:synthetic` on a 2-core CPU, estimated (docs/laptop.md)


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data.name = 'iemocap_4'
  config.data.batch_size = 128
  config.data.eval_batch_size = 256

  # MMIN's baselines zero-fill a missing modality's features and encode them like any input;
  # 'zero_embedding' instead tells the model what is missing (see mmer_jax/models/fusion.py).
  config.method = default.fusion_method('early_fusion', encoder_dropout=0.5,
                                        missing_input='zero_features')  # | late_fusion | gated_attention

  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.optimizer.clip_norm = 5.0
  config.train.num_epochs = 20
  return default.apply_variant(config, arg, cpu_minutes=CPU_MINUTES)


def sweep():
  """python launch/sweep.py --config=configs/fusion_iemocap.py:synthetic --workdir=runs/sweep

  8 seeds, one compiled program (the vmapped sweep; docs/scaling.md). A grid of seeds x learning
  rates is also one program: `[{'seed': s, 'optimizer.learning_rate': lr} for s in range(4) for
  lr in (1e-4, 2e-4, 5e-4)]`; a structural field (`method.name`) would make separate jobs.
  """
  return [{'seed': s} for s in range(8)]
