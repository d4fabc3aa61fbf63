"""MELD 7-class conversations from MMGCN's `MELD_features_raw1.pkl`.

The pickle is a 10-tuple in MMGCN's `dataloader.py` order: videoIDs, videoSpeakers (one-hot
vectors, 9 speaker slots in MMGCN), videoLabels, videoText [n, 600], videoAudio [n, 300],
videoVisual [n, 342], videoSentence, trainVid, testVid and a tenth element MMGCN discards (we do
too). Labels in the release's order: neutral, surprise, fear, sadness, joy, disgust, anger.
A speaker's name is the index of its one-hot slot ('0'..'8').

trainVid holds MELD's train and dev dialogues together (1152 dialogues; testVid 280) and the file
has no validation split: `valid_seed` (default 0) draws 10% of trainVid's dialogues as validation
(see `mmgcn_pkl`), so model selection never looks at the test dialogues.

Usage:
  registry.load('meld_7', manual_dir=DIR)                    # DIR/MELD_features_raw1.pkl
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from mmer_jax.data import mmgcn_pkl
from mmer_jax.data import schema

LABELS = ('neutral', 'surprise', 'fear', 'sadness', 'joy', 'disgust', 'anger')

INSTRUCTIONS = """\
meld_7 needs MMGCN's feature file `MELD_features_raw1.pkl` (the pickle its dataloader reads from
./MELD_features/; see https://github.com/hujingwen6666/MMGCN). MELD is distributed under GPL-3.0
by its authors (https://affective-meld.github.io/).
Put the file directly in the manual directory: <manual_dir>/MELD_features_raw1.pkl
"""


class Meld7(mmgcn_pkl.MmgcnBuilder, skip_registration=True):
  """MELD 7-class conversations from MMGCN's MELD_features_raw1.pkl."""

  name = 'meld_7'
  FILENAME = 'MELD_features_raw1.pkl'
  EXTRA_FIELDS = 1
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def spec(self) -> schema.DatasetSpec:
    return schema.DatasetSpec(
        name='meld_7', task='classification',
        modalities={'audio': schema.ModalitySpec('utterance', 300),
                    'visual': schema.ModalitySpec('utterance', 342),
                    'text': schema.ModalitySpec('utterance', 600)},
        label_names=LABELS, conversational=True)

  def _utterance_id(self, vid, utt, turn: int) -> str:
    return f'dia{vid}_utt{utt}'  # videoIDs count utterances inside a dialogue

  def _speaker_name(self, path: str, vid, turn: int, value) -> str:
    try:
      v = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
      v = np.zeros(0)
    if v.ndim != 1 or v.size == 0 or not np.isin(v, (0.0, 1.0)).all() or v.sum() != 1:
      raise schema.DataError(path, f'videoSpeakers[{vid!r}]', f'a one-hot speaker vector, got '
                             f'{np.asarray(value).tolist() if v.size else value!r}', row=turn)
    return str(int(v.argmax()))


def make_builder(*, data_dir: str, valid_seed: int = 0,
                 file_format: str = 'array_record') -> tfds.core.DatasetBuilder:
  """The MELD builder whose validation dialogues are drawn with `valid_seed`."""
  return mmgcn_pkl.create_builder(Meld7, data_dir=data_dir, valid_seed=valid_seed,
                                  file_format=file_format)
