"""The missing-modality evaluation grid, the same for every method, and the results table.

Rows: `full` (every modality the dataset has), MMIN's six conditions (`a`, `v`, `t`, `av`, `at`,
`vt`, those the dataset can express), and per-sample missing rates `rate=0.0` ... `rate=0.7`
(masks from `missing.missing_rate_mask`, keyed by the run's seed, the rate and each example's
position in the split, so a rerun, or another batch size, gives the same masks). Columns: the
task's metrics. Written to `<workdir>/results.json` (a stable interface) and `results.md`.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Iterable

import jax
import numpy as np

from mmer_jax import metrics
from mmer_jax import missing
from mmer_jax.data import schema

CLASSIFICATION_COLUMNS = ('wa', 'ua', 'weighted_f1', 'macro_f1')
REGRESSION_COLUMNS = ('mae', 'corr', 'acc2', 'acc2_has0', 'f1', 'acc7')


def condition_names(spec: schema.DatasetSpec, conditions: Iterable[str]) -> list[str]:
  expressible = set(missing.conditions_for(spec.available))
  return [c for c in conditions if c in expressible]


def rate_name(rate: float) -> str:
  return f'rate={rate:.1f}'


@functools.partial(jax.jit, static_argnames=('rate', 'available'))
def _rate_masks(rng, unit_index, turn_index, *, rate: float, available: tuple) -> jax.Array:
  """One mask per (example, turn), keyed by position, never by how the split was batched."""
  def one(unit, turn):
    key = jax.random.fold_in(jax.random.fold_in(rng, unit), turn)
    return missing.missing_rate_mask(key, 1, rate, available=np.array(available))[0]
  return jax.vmap(one)(unit_index, turn_index)


def _mask_for(condition: str, batch_mask: np.ndarray, *, rng, available, first_unit: int) -> np.ndarray:
  """`batch_mask` AND the condition's mask; rate masks depend on the seed and example position only."""
  lead = batch_mask.shape[:-1]  # [B] utterances or [B, L] dialogue turns
  rows = int(np.prod(lead))
  if condition.startswith('rate='):
    rate = float(condition.split('=')[1])
    grid = np.indices(lead).reshape(len(lead), -1)
    unit = first_unit + grid[0]
    turn = grid[1] if len(lead) > 1 else np.zeros_like(unit)
    drawn = np.asarray(_rate_masks(rng, unit, turn, rate=rate,
                                   available=tuple(bool(a) for a in available)))
  else:
    drawn = np.asarray(missing.condition_mask(condition, rows))
  return batch_mask & drawn.reshape(batch_mask.shape)


def predict_split(predict: Callable, params, batches: Iterable[dict], *, available,
                  condition: str = 'full', rng=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Outputs, labels and example mask of a whole split, flattened to rows, under a condition.

  `batches` must be the split in its fixed (unshuffled) order: rate masks are keyed by position.
  """
  outs, labels, masks = [], [], []
  first_unit = 0
  for batch in batches:
    batch = dict(batch)
    if condition != 'full':
      batch['modality_mask'] = _mask_for(condition, batch['modality_mask'], rng=rng,
                                         available=available, first_unit=first_unit)
    first_unit += len(batch['example_mask'])
    out = np.asarray(predict(params, batch))
    mask = np.asarray(batch['example_mask'])
    outs.append(out.reshape((mask.size,) + out.shape[mask.ndim:]))
    labels.append(np.asarray(batch['label']).reshape(-1))
    masks.append(mask.reshape(-1))
  return np.concatenate(outs), np.concatenate(labels), np.concatenate(masks)


def split_metrics(spec: schema.DatasetSpec, predict: Callable, params, batches: Iterable[dict],
                  **kwargs) -> dict:
  outputs, labels, mask = predict_split(predict, params, batches, available=spec.available, **kwargs)
  return metrics.compute(spec.task, outputs, labels, mask)


def pooled_metrics(spec: schema.DatasetSpec, predict: Callable, params,
                   make_batches: Callable[[], Iterable[dict]], conditions: Iterable[str]) -> dict:
  """Metrics of the predictions under every condition in `conditions`, pooled into one set.

  With the six missing patterns this is the authors' MMIN validation: each example counted once
  per pattern. `('full',)` is the plain split metrics. Rate conditions are not accepted here (they
  need a key).
  """
  conditions = tuple(conditions)
  unknown = set(conditions) - set(condition_names(spec, conditions))
  if not conditions or unknown:
    raise ValueError(f'valid conditions: expected a non-empty subset of '
                     f'{missing.conditions_for(spec.available)}, got {list(conditions)}')
  parts = [predict_split(predict, params, make_batches(), available=spec.available, condition=c)
           for c in conditions]
  outputs, labels, mask = (np.concatenate(p) for p in zip(*parts))
  return metrics.compute(spec.task, outputs, labels, mask)


def run_grid(spec: schema.DatasetSpec, predict: Callable, params, make_batches: Callable[[], Iterable[dict]],
             *, conditions: Iterable[str], rates: Iterable[float], seed: int) -> list[dict]:
  """One row per condition and rate: {'condition': name, 'metrics': {...}}."""
  rows = []
  for condition in condition_names(spec, conditions):
    m = split_metrics(spec, predict, params, make_batches(), condition=condition)
    rows.append({'condition': condition, 'metrics': m})
  base_key = jax.random.PRNGKey(seed)
  for rate in rates:
    key = jax.random.fold_in(base_key, int(round(rate * 1000)))
    m = split_metrics(spec, predict, params, make_batches(), condition=rate_name(rate), rng=key)
    rows.append({'condition': rate_name(rate), 'metrics': m})
  return rows


def columns(task: str) -> tuple[str, ...]:
  return CLASSIFICATION_COLUMNS if task == 'classification' else REGRESSION_COLUMNS


def results_markdown(results: dict, task: str) -> str:
  cols = columns(task)
  lines = [f"# {results['method']} on {results['dataset']} ({results['split']}, seed {results['seed']})", '',
           '| condition | ' + ' | '.join(cols) + ' |', '|---|' + '---|' * len(cols)]
  for row in results['rows']:
    lines.append(f"| {row['condition']} | " + ' | '.join(
        f"{row['metrics'][c]:.4f}" if c in row['metrics'] else '' for c in cols) + ' |')
  return '\n'.join(lines) + '\n'


def write_results(workdir: str, results: dict, task: str) -> None:
  """Writes results.json (stable schema) and results.md, each atomically."""
  os.makedirs(workdir, exist_ok=True)
  for name, text in (('results.json', json.dumps(results, indent=2)),
                     ('results.md', results_markdown(results, task))):
    path = os.path.join(workdir, name)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(path + '.tmp', path)


def make_results(*, method: str, dataset: str, seed: int, rows: list[dict], split: str = 'test') -> dict[str, Any]:
  return {'method': method, 'dataset': dataset, 'split': split, 'seed': int(seed),
          'rows': [{'condition': r['condition'],
                    'metrics': {k: float(v) for k, v in r['metrics'].items()}} for r in rows]}
