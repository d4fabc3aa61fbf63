"""MMIN's imagination claim, measured: how close the imagined missing embeddings come to the real ones.

For each of the six missing conditions, on the evaluation split: the mean squared error, over the
missing modalities' slots, between the forward net's imagined embedding and the frozen teacher's
embedding of the real features, against two trivial imputers of the same slots: the training
split's mean teacher embedding, and zeros. Writes `imagination_mse.json`:

  {"split", "conditions": {cond: {"examples", "mse": {"imagined", "train_mean", "zeros"},
                                  "ratio_to_train_mean", "ratio_to_zeros"}},
   "beats_train_mean_everywhere"}

Ratios below 1 mean the imagination is closer to the truth than the imputer. Needs a method with
`imagination(params, batch) -> {'imagined', 'real'}` ([B, M, E] each) and a frozen `teacher`.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from mmer_jax import missing
from mmer_jax.data import schema


def train_mean_embedding(run, params) -> np.ndarray:
  """The teacher's mean joint embedding of the complete training inputs, [M * E]."""
  tables = params.get('teacher_tables')
  if tables is None:
    tables = run.method.teacher_tables(params['teacher'], run.eval_batches('train'))
  return np.asarray(tables['full'], np.float64).mean(axis=0)


def measure(run, params, split: str) -> dict:
  method = run.method
  modalities = method.modalities
  mean = train_mean_embedding(run, params).reshape(len(modalities), -1)
  imagine = jax.jit(method.imagination)
  conditions = {}
  for condition in missing.conditions_for(run.spec.available):
    if condition not in missing.MISSING_CONDITIONS:
      continue
    keep = np.array(missing.CONDITIONS[condition], bool)  # (audio, visual, text) order
    absent = np.array([not keep[schema.MODALITIES.index(m)] for m in modalities])
    if not absent.any():
      continue
    sums = {'imagined': 0.0, 'train_mean': 0.0, 'zeros': 0.0}
    count = 0
    for batch in run.eval_batches(split)():
      batch = dict(batch, modality_mask=np.asarray(batch['modality_mask']) & keep)
      out = imagine(params, batch)
      valid = np.asarray(batch['example_mask'])
      imagined = np.asarray(out['imagined'], np.float64)[valid][:, absent]
      real = np.asarray(out['real'], np.float64)[valid][:, absent]
      sums['imagined'] += float(np.square(imagined - real).sum())
      sums['train_mean'] += float(np.square(mean[absent][None] - real).sum())
      sums['zeros'] += float(np.square(real).sum())
      count += real.size
    mse = {k: v / max(count, 1) for k, v in sums.items()}
    conditions[condition] = {
        'examples': count // (int(absent.sum()) * mean.shape[-1]), 'mse': mse,
        'ratio_to_train_mean': mse['imagined'] / mse['train_mean'],
        'ratio_to_zeros': mse['imagined'] / mse['zeros']}
  return {'split': split, 'conditions': conditions,
          'beats_train_mean_everywhere': all(c['ratio_to_train_mean'] < 1 for c in conditions.values())}


def write(run, params, workdir: str) -> list[str]:
  if not hasattr(run.method, 'imagination'):
    raise ValueError(f'config.analysis=imagination_mse: method {run.config.method.name!r} does not '
                     'imagine missing modalities (it has no `imagination`)')
  report = measure(run, params, run.config.eval.split)
  path = os.path.join(workdir, 'imagination_mse.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  return [path]
