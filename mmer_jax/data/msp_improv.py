"""MSP-IMPROV 4-class from MMIN's feature release (h5 features, 12 cross-validation folds).

Same format as IEMOCAP 4-class (see `mmin_h5`): sequence-level audio ComParE [T, 130], visual
DenseFace [T, 342], text BERT-large [T, 1024]; labels angry, happy, neutral, sad (the authors'
preprocessing maps the MSP-IMPROV codes A, H, N, S to 0..3), stored as class indices. In that
preprocessing each of the 12 folds holds out one speaker for validation and the other speaker of
the same session for test. MMIN's MSP scripts read the audio as `A/comparE_raw.h5`; either that
name or `A/comparE.h5` is accepted.

Usage:
  registry.load('msp_improv_4', manual_dir=DIR, fold=5)     # DIR/MSP-IMPROV_features_2021/...
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from mmer_jax.data import mmin_h5

LAYOUT = mmin_h5.Layout(root='MSP-IMPROV_features_2021',
                        audio_files=('comparE.h5', 'comparE_raw.h5'), num_folds=12)
INSTRUCTIONS = f"""\
msp_improv_4 needs MMIN-format MSP-IMPROV features (https://github.com/AIM3-RUC/MMIN);
MSP-IMPROV itself is licensed by the MSP lab at UT Dallas
(https://ecs.utdallas.edu/research/researchgroups/msp-lab/).
Put the release folder in the manual directory as <manual_dir>/{LAYOUT.root}/ holding
  A/comparE.h5 (or A/comparE_raw.h5), V/denseface.h5, L/bert_large.h5,
  target/<fold>/{{trn,val,tst}}_int2name.npy and target/<fold>/{{trn,val,tst}}_label.npy
for the folds 1..{LAYOUT.num_folds}.
"""


class MspImprov4(mmin_h5.MminBuilder, skip_registration=True):
  """MSP-IMPROV 4-class utterances from MMIN-format h5 features, one cross-validation fold."""

  name = 'msp_improv_4'
  LAYOUT = LAYOUT
  BUILDER_CONFIGS = mmin_h5.fold_configs(LAYOUT.num_folds)
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS


def make_builder(*, data_dir: str, fold: int = 1, audio_norm: str = 'train',
                 file_format: str = 'array_record') -> tfds.core.DatasetBuilder:
  """The builder of one fold (1..12) of MSP-IMPROV."""
  return mmin_h5.create_builder(MspImprov4, data_dir=data_dir, fold=fold, audio_norm=audio_norm,
                                file_format=file_format)
