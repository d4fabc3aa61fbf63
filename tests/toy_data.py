"""Tiny generic feature directories with a planted signal, for trainer tests (no builder needed)."""

from __future__ import annotations

import json
import pathlib

import numpy as np


def write_features_dir(path, *, n: int = 96, seed: int = 0, classes: int = 3, dialogues: bool = False,
                       turns: int | tuple[int, ...] = 4) -> pathlib.Path:
  """Audio as sequences (T <= 6, dim 5), text per utterance (dim 4); labels are learnable.

  With `dialogues`, utterances are grouped `turns` per dialogue (for dialogue-level methods); a
  tuple of turns gives dialogues of those lengths in turn (cycled), for length grouping.
  Splits: 60% train, 20% valid, 20% test (whole dialogues).
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  label = rng.integers(classes, size=n)
  protos = rng.normal(size=(classes, 5)) * 2.0
  lengths = rng.integers(2, 7, size=n)
  audio = rng.normal(size=(n, 6, 5)).astype(np.float32) * 0.5 + protos[label][:, None, :]
  text = (rng.normal(size=(n, 4)) + np.eye(classes, 4)[label] * 1.5).astype(np.float32)
  cycle = (turns if dialogues else 1,) if isinstance(turns, int) or not dialogues else tuple(turns)
  lengths_cycle = np.resize(np.asarray(cycle), n)  # more dialogues than n: enough to cut at n
  dialogue = np.repeat(np.arange(n), lengths_cycle)[:n]
  turn = np.arange(n) - np.searchsorted(dialogue, dialogue)
  n_dia = dialogue.max() + 1
  split_of = np.where(np.arange(n_dia) < 0.6 * n_dia, 'train',
                      np.where(np.arange(n_dia) < 0.8 * n_dia, 'valid', 'test'))
  rows = ['split,dialogue_id,turn,speaker,label']
  for i in range(n):
    rows.append(f'{split_of[dialogue[i]]},d{dialogue[i]},{turn[i]},s{i % 2},{label[i]}')
  (path / 'utterances.csv').write_text('\n'.join(rows) + '\n')
  np.save(path / 'audio.npy', audio)
  np.save(path / 'audio_lengths.npy', lengths)
  np.save(path / 'text.npy', text)
  meta = {'name': 'toy', 'task': 'classification', 'label_names': [f'c{k}' for k in range(classes)],
          'modalities': {'audio': {'file': 'audio.npy', 'level': 'sequence', 'dim': 5, 'max_len': 6},
                         'text': {'file': 'text.npy', 'level': 'utterance', 'dim': 4}}}
  (path / 'meta.json').write_text(json.dumps(meta))
  return path
