"""python -m mmer_jax.main --config=configs/imder_mosei.py

IMDer (Wang, Li, Cui, NeurIPS 2023) on CMU-MOSEI, the project's headline command. Everything is as
in `configs/imder_mosi.py` except the authors' MOSEI settings: batch 128, 6 cross-modal layers,
gradient value clipping at 0.6, reduce-on-plateau patience 5, no attention/embedding dropout.

  python -m mmer_jax.main --config=configs/imder_mosei.py                 # MMSA's aligned_50.pkl
  python -m mmer_jax.main --config=configs/imder_mosei.py:synthetic       # GPU-scale (days on CPU)
  python -m mmer_jax.main --config=configs/imder_mosei.py:synthetic,cpu   # laptop-sized (below)
  python -m mmer_jax.main --config=configs/imder_mosei.py:smoke           # ~3 minutes

Without a variant it reads `MOSEI/Processed/aligned_50.pkl` from `--config.data.manual_dir` (its
SHA-256 is checked against MMSA's) and, when the file is absent, stops at once with the download
instructions and the `:synthetic` hint.

`:cpu` (`cpu_scale`; with `synthetic`, or alone on the real release) is MOSI's laptop size
(`imder_mosi.cpu_scale`: two-level score U-Nets, two RCABs, DPM-Solver-2 draws of 3 steps in
training, 15 epochs, selection over the three one-missing patterns) with two cuts for MOSEI's
size. Each stage stops after `CPU_STEPS` = 40 steps of batch 128 (5,120 utterances, a third of
an epoch of the 16,326; validated once, at the end; a checkpoint every 10 steps): at batch 128
the authors' 6-layer MulT head alone costs seconds a step on 2 cores, so MOSI's 15 epochs (1,920
steps a stage) would take most of a day. The evaluation draws take `CPU_EVAL_STEPS` = 5 steps
(NFE 10; MOSI's variant 10): the 15-row test grid over the 4,659 test utterances, run for both
stages, is most of the run's time, and at NFE 10 DPM-Solver-2 scores as at NFE 20 (docs/imder.md,
"Fast sampling"). The head, projections, losses, optimiser, batch size, data and evaluation grid
stay the authors' and the protocol's. It shows the pipeline at MOSEI's size and is not a result
(the MOSI table in docs/imder.md is); its time: docs/laptop.md.
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
  return imder_mosi.apply_variants(config, arg, cpu=cpu_scale)


CPU_STEPS = 40  # `:cpu`: training steps of each stage (batch 128)
CPU_EVAL_STEPS = 5  # `:cpu`: DPM-Solver-2 steps of the evaluation draws (NFE 10)


def cpu_scale(config) -> None:
  """`:cpu`: `imder_mosi.cpu_scale`, evaluation draws of `CPU_EVAL_STEPS` steps, and each stage
  stops after `CPU_STEPS` steps (the module docstring says why)."""
  imder_mosi.cpu_scale(config)
  config.method.num_steps = CPU_EVAL_STEPS
  config.train.num_epochs = 1
  config.train.max_steps = CPU_STEPS  # stage 1 inherits it: the stages differ only in their own
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 10


sweep = imder_mosi.sweep  # the same seeds (docs/scaling.md)
