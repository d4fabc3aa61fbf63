"""IEMOCAP from the authors' feature releases: 6-class conversations (MMGCN) and 4-class (MMIN).

`iemocap_6` reads MMGCN's `IEMOCAP_features.pkl`: 151 dialogues (120 train, 31 test) with one
utterance-level vector per turn: text 100 (TextCNN), audio 1582 (openSMILE IS10), visual 342
(DenseNet faces); speakers 'M'/'F'; labels in the release's order happy, sad, neutral, angry,
excited, frustrated. The file has no validation split: `valid_seed` (default 0) draws 10% of the
training dialogues as validation (see `mmgcn_pkl`), so model selection never sees the test set.

`iemocap_4` reads MMIN's h5 features and its 10 leave-one-speaker-out folds (see `mmin_h5`):
sequence-level audio ComParE [T, 130], visual DenseFace [T, 342], text BERT-large [T, 1024];
labels angry, happy (+excited), neutral, sad. `fold` (1..10, default 1) picks the fold.

Usage:
  registry.load('iemocap_6', manual_dir=DIR)                 # DIR/IEMOCAP_features.pkl
  registry.load('iemocap_4', manual_dir=DIR, fold=3)         # DIR/IEMOCAP_features_2021/...
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from mmer_jax.data import mmgcn_pkl
from mmer_jax.data import mmin_h5
from mmer_jax.data import schema

RELEASES = ('iemocap_6', 'iemocap_4')
LABELS_6 = ('happy', 'sad', 'neutral', 'angry', 'excited', 'frustrated')
SPEAKERS_6 = ('M', 'F')

INSTRUCTIONS_6 = """\
iemocap_6 needs MMGCN's feature file `IEMOCAP_features.pkl` (the pickle its dataloader reads from
./IEMOCAP_features/; distributed with MMGCN / DialogueGCN, https://github.com/hujingwen6666/MMGCN).
IEMOCAP is licensed by USC SAIL (https://sail.usc.edu/iemocap/): request access there first.
Put the file directly in the manual directory: <manual_dir>/IEMOCAP_features.pkl
"""

LAYOUT_4 = mmin_h5.Layout(root='IEMOCAP_features_2021', audio_files=('comparE.h5',),
                          mean_std_file='comparE_mean_std.h5', num_folds=10)
INSTRUCTIONS_4 = f"""\
iemocap_4 needs MMIN's IEMOCAP feature release (https://github.com/AIM3-RUC/MMIN, "Download the
features"); IEMOCAP itself is licensed by USC SAIL (https://sail.usc.edu/iemocap/).
Put the release folder in the manual directory as <manual_dir>/{LAYOUT_4.root}/ holding
  A/comparE.h5 (and A/comparE_mean_std.h5 if you have it), V/denseface.h5, L/bert_large.h5,
  target/<fold>/{{trn,val,tst}}_int2name.npy and target/<fold>/{{trn,val,tst}}_label.npy
for the folds 1..{LAYOUT_4.num_folds}.
"""


class Iemocap6(mmgcn_pkl.MmgcnBuilder, skip_registration=True):
  """IEMOCAP 6-class conversations from MMGCN's IEMOCAP_features.pkl."""

  name = 'iemocap_6'
  FILENAME = 'IEMOCAP_features.pkl'
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS_6

  def spec(self) -> schema.DatasetSpec:
    return schema.DatasetSpec(
        name='iemocap_6', task='classification',
        modalities={'audio': schema.ModalitySpec('utterance', 1582),
                    'visual': schema.ModalitySpec('utterance', 342),
                    'text': schema.ModalitySpec('utterance', 100)},
        label_names=LABELS_6, conversational=True)

  def _utterance_id(self, vid, utt, turn: int) -> str:
    return str(utt)  # the IEMOCAP turn names, e.g. 'Ses01F_impro01_F000', unique in the corpus

  def _speaker_name(self, path: str, vid, turn: int, value) -> str:
    if isinstance(value, bytes):
      value = value.decode('latin1')
    if value not in SPEAKERS_6:
      raise schema.DataError(path, f'videoSpeakers[{vid!r}]', f"'M' or 'F', got {value!r}",
                             row=turn)
    return value


class Iemocap4(mmin_h5.MminBuilder, skip_registration=True):
  """IEMOCAP 4-class utterances from MMIN's h5 features, one cross-validation fold."""

  name = 'iemocap_4'
  LAYOUT = LAYOUT_4
  BUILDER_CONFIGS = mmin_h5.fold_configs(LAYOUT_4.num_folds)
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS_4


def make_builder(*, data_dir: str, release: str, fold: int | None = None,
                 valid_seed: int | None = None, audio_norm: str | None = None,
                 file_format: str = 'array_record') -> tfds.core.DatasetBuilder:
  """The builder of one IEMOCAP release (iemocap_6: valid_seed; iemocap_4: fold, audio_norm)."""
  if release == 'iemocap_6':
    if fold is not None or audio_norm is not None:
      raise ValueError('iemocap_6 (MMGCN) has one fixed train/test split and utterance-level '
                       'features: fold and audio_norm apply to iemocap_4 only')
    return mmgcn_pkl.create_builder(Iemocap6, data_dir=data_dir, file_format=file_format,
                                    valid_seed=0 if valid_seed is None else valid_seed)
  if release == 'iemocap_4':
    if valid_seed is not None:
      raise ValueError('iemocap_4 (MMIN) has its own validation speaker per fold: valid_seed '
                       'applies to iemocap_6 only')
    return mmin_h5.create_builder(Iemocap4, data_dir=data_dir, file_format=file_format,
                                  fold=1 if fold is None else fold,
                                  audio_norm=audio_norm or 'train')
  raise ValueError(f'unknown IEMOCAP release {release!r}; expected one of {RELEASES}')
