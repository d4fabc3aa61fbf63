"""Per-modality feature standardisation fitted on the training split, applied to every batch.

`fit` computes, per modality and feature column, the mean and std over the training split only
(samples that have the modality, valid frames of sequences). `apply` maps every batch of every
split through the same statistics, host-side, after which padding and absent rows are zero again.
A constant column is only centred. `for_run` reads `<workdir>/feature_stats.json` when a run has
one, so evaluation always uses the statistics the model was trained with. Whether a run
standardises is `config.data.standardize` (None: the dataset's default).

Details and the defaults: docs/data.md#standardisation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from mmer_jax import writers
from mmer_jax.data import pipeline
from mmer_jax.data import schema

STATS_FILE = 'feature_stats.json'
_CONSTANT_RTOL = 1e-6
_READ_CHUNK = 512  # examples per read while fitting


@dataclasses.dataclass(frozen=True)
class ModalityStats:
  """Column statistics of one modality: mean and std [D] (std 1 for constant columns)."""
  mean: np.ndarray
  std: np.ndarray
  count: int  # rows (utterance level) or frames (sequence level) they were computed over
  constant: int  # columns left centred only


@dataclasses.dataclass(frozen=True)
class FeatureStats:
  """Statistics per modality, fitted on one split of one dataset."""
  modalities: Mapping[str, ModalityStats]
  dataset: str
  split: str = 'train'

  def to_json(self) -> str:
    return json.dumps({
        'dataset': self.dataset, 'split': self.split,
        'modalities': {m: {'count': s.count, 'constant': s.constant, 'mean': s.mean.tolist(),
                           'std': s.std.tolist()} for m, s in self.modalities.items()}}, indent=1)

  @classmethod
  def from_json(cls, text: str, *, source: str = '<string>') -> 'FeatureStats':
    try:
      raw = json.loads(text)
      mods = {m: ModalityStats(mean=np.asarray(v['mean'], np.float64),
                               std=np.asarray(v['std'], np.float64), count=int(v['count']),
                               constant=int(v['constant'])) for m, v in raw['modalities'].items()}
      return cls(modalities=mods, dataset=str(raw['dataset']), split=str(raw['split']))
    except (ValueError, KeyError, TypeError) as e:
      raise schema.DataError(source, 'feature_stats', 'the JSON feature statistics a run writes '
                             f'({{dataset, split, modalities: {{m: {{mean, std, count, constant}}}}}}); '
                             f'{type(e).__name__}: {e}') from e

  def check(self, spec: schema.DatasetSpec, source: str) -> None:
    """Raises DataError when these statistics do not fit the dataset's modalities."""
    if set(self.modalities) != set(spec.modalities):
      raise schema.DataError(source, 'modalities', f'statistics for the dataset\'s modalities '
                             f'{sorted(spec.modalities)}, got {sorted(self.modalities)}: they were '
                             'fitted on another dataset; remove the file to refit')
    for m, s in self.modalities.items():
      if s.mean.shape != (spec.modalities[m].dim,) or s.std.shape != s.mean.shape:
        raise schema.DataError(source, f'modalities.{m}', f'mean and std of dimension '
                               f'{spec.modalities[m].dim}, got {list(s.mean.shape)} and '
                               f'{list(s.std.shape)}: fitted on another dataset; remove the file')
      if not (np.isfinite(s.mean).all() and np.isfinite(s.std).all() and (s.std > 0).all()):
        raise schema.DataError(source, f'modalities.{m}', 'finite means and positive stds')


def _rows(example: Mapping[str, Any], name: str, level: str) -> np.ndarray:
  """The valid rows of one example's modality: [1, D] or its [T, D] frames."""
  x = np.asarray(example[name], np.float64)
  return x[None] if level == 'utterance' else x


def fit(source, spec: schema.DatasetSpec) -> FeatureStats:
  """Mean and std per column of every modality over one split (`source`, random access).

  Accumulates in float64 with Chan et al.'s pairwise update (exact for any scale); the std is
  the population one (ddof 0, as numpy and MMIN's `calc_mean_std`).
  """
  acc = {m: [0, np.zeros(s.dim), np.zeros(s.dim)] for m, s in spec.modalities.items()}
  for start in range(0, len(source), _READ_CHUNK):
    examples = pipeline.read(source, range(start, min(start + _READ_CHUNK, len(source))))
    for name, mspec in spec.modalities.items():
      blocks = [_rows(ex, name, mspec.level) for ex in examples
                if name not in spec.incomplete or bool(ex[f'{name}_present'])]
      if not blocks:
        continue
      x = np.concatenate(blocks)
      n_b, mean_b = len(x), x.mean(axis=0)
      m2_b = ((x - mean_b) ** 2).sum(axis=0)
      n_a, mean_a, m2_a = acc[name]
      n = n_a + n_b
      delta = mean_b - mean_a
      acc[name] = [n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n]
  mods = {}
  for name, (n, mean, m2) in acc.items():
    if n == 0:
      raise schema.DataError(f'{spec.name} (train split)', name, 'at least one training sample '
                             'that has this modality, to fit its standardisation on; found none')
    std = np.sqrt(m2 / n)
    constant = std <= _CONSTANT_RTOL * np.abs(mean)
    constant |= std == 0
    mods[name] = ModalityStats(mean=mean, std=np.where(constant, 1.0, std), count=int(n),
                               constant=int(constant.sum()))
  return FeatureStats(modalities=mods, dataset=spec.name)


def apply(batch: dict, stats: FeatureStats) -> dict:
  """The batch with every modality standardised; padding and absent rows stay exactly zero.

  Works on utterance batches ([B, D] / [B, T, D] with `lengths`) and dialogue batches
  ([B, L, D]); `modality_mask` at this point is what each sample has in the data.
  """
  out = dict(batch)
  mask = np.asarray(batch['modality_mask'])
  example_mask = np.asarray(batch['example_mask'])
  for name, s in stats.modalities.items():
    x = np.asarray(batch[name])
    keep = example_mask & mask[..., schema.MODALITIES.index(name)]  # [B] or [B, L]
    y = ((x - s.mean) / s.std).astype(np.float32)
    keep = keep.reshape(keep.shape + (1,) * (x.ndim - keep.ndim))
    lengths = batch.get('lengths', {}).get(name)
    if lengths is not None and x.ndim == 3 and example_mask.ndim == 1:
      keep = keep & (np.arange(x.shape[1])[None, :, None] < np.asarray(lengths)[:, None, None])
    out[name] = np.where(keep, y, np.float32(0))
  return out


def enabled(config_value: bool | None, builder) -> bool:
  """`config.data.standardize`, or the dataset's default (a builder's `STANDARDIZE`) when None."""
  if config_value is None:
    return bool(getattr(builder, 'STANDARDIZE', False))
  return bool(config_value)


def for_run(config, dataset, workdir: str | None) -> FeatureStats | None:
  """The statistics a run uses: None when it does not standardise; else those stored in
  `<workdir>/feature_stats.json`, or freshly fitted on the training split (and stored there,
  atomically, when there is a workdir)."""
  if not enabled(config.data.get('standardize'), dataset.builder):
    return None
  path = os.path.join(workdir, STATS_FILE) if workdir else None
  if path and os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      stats = FeatureStats.from_json(f.read(), source=path)
    stats.check(dataset.spec, path)
    return stats
  checkpoints = os.path.join(workdir, 'checkpoints') if workdir else None
  if checkpoints and os.path.isdir(checkpoints) and any(
      os.listdir(os.path.join(checkpoints, d)) for d in os.listdir(checkpoints)
      if os.path.isdir(os.path.join(checkpoints, d))):
    # Statistics are stored before the first step, so this run was trained on unscaled features.
    raise schema.DataError(path, 'feature_stats', 'the feature statistics this run was trained '
                           'with; the run has checkpoints but no statistics, so it was trained '
                           'without standardisation: pass --config.data.standardize=false to '
                           'resume or evaluate it')
  stats = fit(dataset.sources['train'], dataset.spec)
  if path:
    os.makedirs(workdir, exist_ok=True)
    writers.write_atomic(path, stats.to_json())
  return stats
