"""python -m mmer_jax.main --config=configs/m3er_mosei.py:synthetic

M3ER on CMU-MOSEI's six emotions (happy, sad, anger, fear, disgust, surprise; the dominant
emotion of each segment), with MOSEI's aligned feature shapes (audio 74, visual 35, text 768, 50
frames). Everything else, the variants included, as configs/m3er_iemocap.py. The synthetic
stand-in is `synthetic/mosei_emotions`; the real labels need an emotion release of MOSEI in the
generic feature-directory format (`--config.data.name=features_dir --config.data.features_dir=`).

`:synthetic` trains on a 2-core CPU in about 9 minutes (measured: early stopping after epoch 16;
all 500 epochs would be about 210; docs/laptop.md), so there is no `:cpu` variant: `:cpu` stops
with an error that says so.
"""

from configs import m3er_iemocap

CPU_MINUTES = 9  # `:synthetic` on a 2-core CPU, measured (docs/laptop.md)


def get_config(arg: str | None = None):
  config = m3er_iemocap.get_config()
  config.data.name = 'mosei_emotions'
  return m3er_iemocap.apply_variant(config, arg, cpu_minutes=CPU_MINUTES)


sweep = m3er_iemocap.sweep  # the same seeds (docs/scaling.md)
