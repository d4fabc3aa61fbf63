"""Toy feature directories shaped like real releases (scales 1e-4 to 1e3, a constant column,
NaN in absent rows), and a short fusion_features config on them: for test_real_features.py,
test_standardize.py and test_diagnostics.py."""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from configs import fusion_features
from mmer_jax.data import registry

SCALES = np.array([1e-4, 1e-2, 1.0, 1e2, 1e3, 0.0])  # the last column is constant (0 * x + 7)
SPLITS = ('train',) * 60 + ('valid',) * 20 + ('test',) * 20


def make_directory(path, *, seed=0, present=True, nan_absent=True, scale=True,
                   task='classification', valid_test_shift=0.0):
  """A 100-row directory: audio [N, 6] utterance level, visual [N, T<=5, 4] sequences; 3 classes
  readable from either modality; visual absent for every 4th sample (when `present`)."""
  rng = np.random.default_rng(seed)
  n = len(SPLITS)
  label = np.arange(n) % 3
  centres = rng.normal(size=(3, 6))
  audio = centres[label] + 0.3 * rng.normal(size=(n, 6))
  audio = audio * (SCALES if scale else 1.0) + np.where(SCALES == 0, 7.0, 0.0)
  lengths = rng.integers(1, 6, size=n)
  visual = np.zeros((n, 5, 4))
  vcentres = rng.normal(size=(3, 4))
  for i in range(n):
    visual[i, :lengths[i]] = vcentres[label[i]] + 0.3 * rng.normal(size=(lengths[i], 4))
  visual = visual * (100.0 if scale else 1.0)
  heldout = np.array([s != 'train' for s in SPLITS])
  audio[heldout] += valid_test_shift
  visual[heldout] += valid_test_shift
  has_visual = np.arange(n) % 4 != 3
  os.makedirs(path, exist_ok=True)
  if present and nan_absent:
    visual[~has_visual] = np.nan
    lengths = np.where(has_visual, lengths, 0)  # absent rows may hold anything, lengths included
  np.save(os.path.join(path, 'audio.npy'), audio.astype(np.float32))
  np.save(os.path.join(path, 'visual.npy'), visual.astype(np.float32))
  np.save(os.path.join(path, 'visual_lengths.npy'), lengths)
  visual_entry = {'file': 'visual.npy', 'level': 'sequence', 'dim': 4}
  if present:
    np.save(os.path.join(path, 'visual_present.npy'), has_visual)
    visual_entry['present'] = 'visual_present.npy'
  meta = {'name': 'toy_real', 'task': task,
          'modalities': {'audio': {'file': 'audio.npy', 'level': 'utterance', 'dim': 6},
                         'visual': visual_entry}}
  if task == 'classification':
    meta['label_names'] = ['x', 'y', 'z']
  else:
    meta['label_range'] = [-1.0, 3.0]
  with open(os.path.join(path, 'meta.json'), 'w') as f:
    json.dump(meta, f)
  with open(os.path.join(path, 'utterances.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['split', 'dialogue_id', 'turn', 'speaker', 'label'])
    for i in range(n):
      writer.writerow([SPLITS[i], f'd{i}', 0, f's{i % 7}',
                       label[i] if task == 'classification' else float(label[i])])
  return {'audio': audio, 'visual': visual, 'lengths': lengths, 'label': label,
          'has_visual': has_visual}


def load(path, data_dir):
  return registry.load('features_dir', features_dir=str(path), data_dir=str(data_dir))


def toy_config(path, data_dir, **train):
  config = fusion_features.get_config()
  config.data.features_dir = str(path)
  config.data.data_dir = str(data_dir)
  config.data.batch_size = 16
  config.data.eval_batch_size = 32
  config.data.prefetch = 0
  config.train.num_epochs = train.pop('num_epochs', 3)
  config.train.patience = train.pop('patience', None)
  config.train.log_every_steps = 1000
  config.eval.rates = (0.0, 0.5)
  for key, value in train.items():
    config.train[key] = value
  return config
