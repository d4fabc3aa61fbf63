"""The missing-modality evaluation grid, the same for every method, and the results table.

Rows: `full`, MMIN's six conditions (those the dataset can express), per-sample missing rates
`rate=0.0` ... `rate=0.7` (one for all, or per modality: `rate=a:0.1,v:0.5,t:0.0`), and M3ER's
ineffectual-modality rows `noise=0.3` (complete data, a share of the samples with one present
modality replaced by noise). Every mask and corruption is keyed by the run's seed, the row and
each example's position in the split, so a rerun or another batch size gives the same masks.
Columns: the task's metrics. Written to `<workdir>/results.json` (a stable interface) and
`results.md`. `noise_batches` yields the corrupted batches with the ground truth, for analyses.
A condition removes modalities, never adds one back; a sample left with none is not scored.

The grid, the noise rows and results.json: docs/protocol.md#the-evaluation-grid.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from mmer_jax import metrics
from mmer_jax import missing
from mmer_jax import writers
from mmer_jax.data import grouping
from mmer_jax.data import schema

CLASSIFICATION_COLUMNS = ('wa', 'ua', 'weighted_f1', 'macro_f1', 'mean_ovr_accuracy')
REGRESSION_COLUMNS = ('mae', 'corr', 'acc2', 'acc2_has0', 'f1', 'acc7')


def parse_rate(condition: str) -> float | tuple[float, ...]:
  """The rate of a `rate=...` condition: a float, or a per-modality tuple in MODALITIES order."""
  text = condition.split('=', 1)[1]
  if ':' in text:
    return tuple(float(r) for r in missing.parse_rates(text))
  rate = missing.rate_value(text)
  if rate is None:
    raise ValueError(f'condition {condition!r}: expected rate=<r in [0, 1]> or per-modality '
                     'rates like rate=a:0.1,v:0.5,t:0.0')
  return rate


def rate_name(rate) -> str:
  """`rate=0.3` for one rate, `rate=a:0.1,v:0.5,t:0.0` for per-modality rates."""
  if np.ndim(rate):
    return 'rate=' + missing.rates_name(rate)
  return f'rate={missing.probability_text(rate)}'


def parse_noise(condition: str) -> float:
  """The fraction of a `noise=<f>` condition (the share of samples with one modality noised)."""
  fraction = missing.rate_value(condition.split('=', 1)[1])
  if fraction is None:
    raise ValueError(f'condition {condition!r}: expected noise=<fraction in [0, 1]>')
  return fraction


def noise_name(fraction) -> str:
  """`noise=0.3` (one decimal unless more are needed, e.g. `noise=0.25`)."""
  f = float(fraction)
  if missing.rate_value(str(f)) is None:
    raise ValueError(f'noise fraction must be in [0, 1], got {fraction}')
  return 'noise=' + missing.probability_text(f)


def condition_names(spec: schema.DatasetSpec, conditions: Iterable[str]) -> list[str]:
  """The conditions the dataset can express, rate and noise conditions in canonical form
  (checked)."""
  expressible = set(missing.conditions_for(spec.available))
  out = []
  for c in conditions:
    if c.startswith('rate='):
      out.append(rate_name(parse_rate(c)))
    elif c.startswith('noise='):
      out.append(noise_name(parse_noise(c)))
    elif c in expressible:
      out.append(c)
    elif c not in missing.CONDITIONS:
      raise ValueError(f'unknown condition {c!r}; expected one of {list(missing.CONDITIONS)}, '
                       'rate=<r>, rate=a:<r>,v:<r>,t:<r> or noise=<f>')
  return out


def rate_key(rng, rate) -> jax.Array:
  """The key of a rate's masks: the seed's key folded with the rate (per-modality: each rate)."""
  for r in np.atleast_1d(rate):
    rng = jax.random.fold_in(rng, int(round(float(r) * 1000)))
  return rng


def configured_noise(eval_config) -> tuple[tuple[float, ...], float | None]:
  """(noise fractions, SNR in dB or None for replacement) of a config's `eval` section:
  `noise_fractions` plus `noise_fraction` when set; `noise_snr_db` unless `noise_replace`."""
  fractions = tuple(eval_config.get('noise_fractions', ()))
  if eval_config.get('noise_fraction') is not None:
    fractions += (eval_config.noise_fraction,)
  snr_db = None if eval_config.get('noise_replace', False) else eval_config.get('noise_snr_db', -10.0)
  return fractions, snr_db


_NOISE_TAG = 0x6E6F6973  # 'nois': noise keys never coincide with the rate keys of the same number


def _positions(lead: tuple[int, ...], first_unit: int) -> tuple[np.ndarray, np.ndarray]:
  """(unit, turn) of each row of a batch's leading axes ([B] or [B, L]), flattened: the example's
  position in the split and its turn (0 for utterance batches). Rate masks and noise are keyed
  by them, never by how the split was batched."""
  grid = np.indices(lead).reshape(len(lead), -1)
  unit = first_unit + grid[0]
  return unit, (grid[1] if len(lead) > 1 else np.zeros_like(unit))


def noise_key(rng, fraction) -> jax.Array:
  """The key of a `noise=<fraction>` row: the seed's key (or the seed) folded with a tag and the
  fraction. `noise_batches(..., rng=noise_key(seed, f))` reproduces the grid's corruption."""
  if isinstance(rng, (int, np.integer)):
    rng = jax.random.PRNGKey(int(rng))
  return jax.random.fold_in(jax.random.fold_in(rng, _NOISE_TAG), int(round(float(fraction) * 1000)))


@functools.partial(jax.jit, static_argnames=('snr_db',))
def _noise_rows(rng, unit_index, turn_index, features, lengths, modality_mask, fraction, *, snr_db):
  """`missing.noise_corrupt` of each (example, turn) with its own key, keyed by position."""
  def one(unit, turn, feats, lens, mask):
    key = jax.random.fold_in(jax.random.fold_in(rng, unit), turn)
    return missing.noise_corrupt(key, feats, lens, mask, fraction=fraction, snr_db=snr_db)
  return jax.vmap(one)(unit_index, turn_index, features, lengths, modality_mask)


def noise_batches(batches: Iterable[dict], *, rng, fraction: float, snr_db: float | None = -10.0,
                  available) -> Iterator[tuple[dict, np.ndarray]]:
  """The batches with one present modality of a `fraction` of the samples replaced by noise
  (`missing.noise_corrupt`), each with `noised` bool [..., 3] (the batch's mask shape, MODALITIES
  order): True where that sample's modality was replaced. Padding rows may be corrupted too;
  they are not scored (`example_mask`).

  Each (example, turn) has its own key, `rng` folded with its position in the split, so the
  corruption does not depend on the batch size: `batches` must be the split in its fixed order.
  With `rng=noise_key(seed, fraction)` and the same `snr_db` this is exactly the grid's
  `noise=<fraction>` row. The modality masks are unchanged.
  """
  if rng is None:
    raise ValueError('noise_batches needs a key (rng)')
  if missing.rate_value(str(float(fraction))) is None:
    raise ValueError(f'noise fraction must be in [0, 1], got {fraction}')
  names = [m for m, a in zip(schema.MODALITIES, np.asarray(available, bool)) if a]
  snr = None if snr_db is None else float(snr_db)
  first_unit = 0
  for batch in batches:
    batch = dict(batch)
    mask = np.asarray(batch['modality_mask'], bool)
    lead = mask.shape[:-1]  # [B] utterances or [B, L] dialogue turns
    rows = int(np.prod(lead))
    unit, turn = _positions(lead, first_unit)
    feats = {m: np.asarray(batch[m]) for m in names if m in batch}
    flat = {m: x.reshape((rows,) + x.shape[len(lead):]) for m, x in feats.items()}
    lengths = {m: np.asarray(v).reshape(rows) for m, v in (batch.get('lengths') or {}).items()
               if m in flat}
    new, noised = _noise_rows(rng, unit, turn, flat, lengths, mask.reshape(rows, -1),
                              np.float32(fraction), snr_db=snr)
    for m, x in feats.items():
      batch[m] = np.asarray(new[m]).reshape(x.shape)
    first_unit += len(batch['example_mask'])
    yield batch, np.asarray(noised).reshape(mask.shape)


@functools.partial(jax.jit, static_argnames=('rate', 'available'))
def _rate_masks(rng, unit_index, turn_index, sample_available, *, rate, available: tuple) -> jax.Array:
  """One mask per (example, turn), keyed by position, never by how the split was batched."""
  def one(unit, turn, own):
    key = jax.random.fold_in(jax.random.fold_in(rng, unit), turn)
    rates = np.asarray(rate) if np.ndim(rate) else rate
    return missing.missing_rate_mask(key, 1, rates, available=np.array(available),
                                     sample_available=own[None])[0]
  return jax.vmap(one)(unit_index, turn_index, sample_available)


def _mask_for(condition: str, batch_mask: np.ndarray, *, rng, available, first_unit: int) -> np.ndarray:
  """`batch_mask` AND the condition's mask; rate masks depend on the seed and example position
  only (and keep one of each sample's own modalities)."""
  lead = batch_mask.shape[:-1]  # [B] utterances or [B, L] dialogue turns
  rows = int(np.prod(lead))
  if condition.startswith('rate='):
    rate = parse_rate(condition)
    unit, turn = _positions(lead, first_unit)
    own = batch_mask.reshape(rows, -1)
    own = np.where(own.any(-1, keepdims=True), own, np.asarray(available, bool))  # padding rows
    drawn = np.asarray(_rate_masks(rng, unit, turn, own, rate=rate,
                                   available=tuple(bool(a) for a in available)))
  else:
    drawn = np.asarray(missing.condition_mask(condition, rows))
  return batch_mask & drawn.reshape(batch_mask.shape)


def predict_split(predict: Callable, params, batches: Iterable[dict], *, available,
                  condition: str = 'full', rng=None, with_modality_mask: bool = False,
                  noise_snr_db: float | None = -10.0, group_patterns: bool = False) -> tuple:
  """Outputs, labels and example mask of a whole split, flattened to rows, under a condition
  (and, `with_modality_mask`, the modality masks the rows were seen with).

  `batches` must be the split in its fixed (unshuffled) order: rate masks and noise are keyed by
  position. The example mask is False for padding and for samples left with no modality. A
  `noise=<f>` condition corrupts complete data (`noise_batches` with `rng`, at `noise_snr_db`).
  `group_patterns` (utterance batches): rows are predicted in batches of one missing pattern
  (`grouping.PatternBatcher`), the outputs returned in split order as without it.
  """
  if condition.startswith('noise='):
    batches = (b for b, _ in noise_batches(batches, rng=rng, fraction=parse_noise(condition),
                                           snr_db=noise_snr_db, available=available))
    condition = 'full'
  modality_masks = []
  outs, labels, masks = [], [], []
  first_unit = 0
  batcher = grouping.PatternBatcher(predict, params, available) if group_patterns else None
  for batch in batches:
    batch = dict(batch)
    if condition != 'full':
      batch['modality_mask'] = _mask_for(condition, batch['modality_mask'], rng=rng,
                                         available=available, first_unit=first_unit)
    # A sample left with no modality is not scored (a condition never adds one back).
    batch['example_mask'] = np.asarray(batch['example_mask']) & np.asarray(
        batch['modality_mask']).any(-1)
    mask = np.asarray(batch['example_mask'])
    if batcher is not None:
      batcher.add(batch, first_unit)
    else:
      out = np.asarray(predict(params, batch))
      outs.append(out.reshape((mask.size,) + out.shape[mask.ndim:]))
    first_unit += len(batch['example_mask'])
    labels.append(np.asarray(batch['label']).reshape(-1))
    masks.append(mask.reshape(-1))
    if with_modality_mask:
      modality_masks.append(np.asarray(batch['modality_mask']).reshape(mask.size, -1))
  if batcher is not None:
    outs = [batcher.outputs(first_unit)]
  result = np.concatenate(outs), np.concatenate(labels), np.concatenate(masks)
  if with_modality_mask:
    return (*result, np.concatenate(modality_masks))
  return result


def split_metrics(spec: schema.DatasetSpec, predict: Callable, params, batches: Iterable[dict],
                  **kwargs) -> dict:
  outputs, labels, mask = predict_split(predict, params, batches, available=spec.available, **kwargs)
  return metrics.compute(spec.task, outputs, labels, mask)


def grid_row(spec: schema.DatasetSpec, predict: Callable, params, batches: Iterable[dict], *,
             condition: str, rng=None, noise_snr_db: float | None = -10.0,
             group_patterns: bool = False) -> dict:
  """One results row: the condition, its metrics, how many samples it scored and, per modality
  of the dataset, the share of those samples seen without it (a `noise=` row also: the share
  whose modality was replaced by noise, and the SNR)."""
  noised = None
  if condition.startswith('noise='):
    noised = []
    def recorded(pairs):
      for batch, hit in pairs:
        noised.append(hit.reshape(-1, hit.shape[-1]))
        yield batch
    batches = recorded(noise_batches(batches, rng=rng, fraction=parse_noise(condition),
                                     snr_db=noise_snr_db, available=spec.available))
  outputs, labels, mask, modality_mask = predict_split(
      predict, params, batches, available=spec.available,
      condition='full' if noised is not None else condition, rng=rng, with_modality_mask=True,
      group_patterns=group_patterns)
  scored = modality_mask[mask]
  fraction = {m: float(1.0 - scored[:, schema.MODALITIES.index(m)].mean()) if len(scored) else 0.0
              for m in spec.ordered_modalities()}
  row = {'condition': condition, 'metrics': metrics.compute(spec.task, outputs, labels, mask),
         'num_samples': int(mask.sum()), 'missing_fraction': fraction}
  if noised is not None:
    hit = np.concatenate(noised)[mask]
    row['noised_fraction'] = {m: float(hit[:, schema.MODALITIES.index(m)].mean()) if len(hit)
                              else 0.0 for m in spec.ordered_modalities()}
    row['noise_snr_db'] = None if noise_snr_db is None else float(noise_snr_db)
  if spec.task == 'classification':  # the papers' per-class tables
    pred = np.argmax(np.asarray(outputs), -1)
    num_classes = len(spec.label_names)
    f1 = metrics.per_class_f1(pred, labels, mask, num_classes=num_classes)
    row['per_class_f1'] = dict(zip(spec.label_names, f1))
    acc = metrics.per_class_accuracy(pred, labels, mask, num_classes=num_classes)
    row['per_class_accuracy'] = dict(zip(spec.label_names, acc))
  return row


def pooled_outputs(spec: schema.DatasetSpec, predict: Callable, params,
                   make_batches: Callable[[], Iterable[dict]], conditions: Iterable[str],
                   group_patterns: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Outputs, labels and mask of the split under every condition in `conditions`, concatenated.

  Rate and noise conditions are not accepted here (they need a key).
  """
  conditions = tuple(conditions)
  expressible = missing.conditions_for(spec.available)
  if not conditions or set(conditions) - set(expressible):
    raise ValueError(f'valid conditions: expected a non-empty subset of {expressible}, got '
                     f'{list(conditions)}')
  parts = [predict_split(predict, params, make_batches(), available=spec.available, condition=c,
                         group_patterns=group_patterns) for c in conditions]
  return tuple(np.concatenate(p) for p in zip(*parts))


def pooled_metrics(spec: schema.DatasetSpec, predict: Callable, params,
                   make_batches: Callable[[], Iterable[dict]], conditions: Iterable[str]) -> dict:
  """Metrics of the predictions under every condition in `conditions`, pooled into one set.

  With the six missing patterns this is the authors' MMIN validation: each example counted once
  per pattern. `('full',)` is the plain split metrics.
  """
  outputs, labels, mask = pooled_outputs(spec, predict, params, make_batches, conditions)
  return metrics.compute(spec.task, outputs, labels, mask)


def run_grid(spec: schema.DatasetSpec, predict: Callable, params, make_batches: Callable[[], Iterable[dict]],
             *, conditions: Iterable[str], rates: Iterable[float], seed: int,
             noise_fractions: Iterable[float] = (), noise_snr_db: float | None = -10.0,
             report: Callable[[str], Any] | None = None, group_patterns: bool = False) -> list[dict]:
  """One row per condition, rate and noise fraction: {'condition', 'metrics', 'num_samples',
  'missing_fraction'}, for classification 'per_class_f1' and 'per_class_accuracy', for noise rows
  'noised_fraction' and 'noise_snr_db'.

  Rate conditions (from `rates` or written in `conditions`) are keyed by the seed and the rate;
  noise rows `noise=<f>` (from `noise_fractions` or written in `conditions`) by the seed and the
  fraction (`noise_key`), at `noise_snr_db` dB (None: the modality is replaced by noise).
  `report(text)` is told which row is next (`writers.Progress.activity`: the log says it).
  `group_patterns`: predict in batches of one missing pattern (`predict_split`).
  """
  base_key = jax.random.PRNGKey(seed)
  names = (condition_names(spec, conditions) + [rate_name(r) for r in rates]
           + [noise_name(f) for f in noise_fractions])
  rows = []
  unique = list(dict.fromkeys(names))  # each once, in order
  for i, condition in enumerate(unique):
    if report is not None:
      report(f'grid row {i + 1}/{len(unique)}: {condition}')
    key = None
    if condition.startswith('rate='):
      key = rate_key(base_key, parse_rate(condition))
    elif condition.startswith('noise='):
      key = noise_key(base_key, parse_noise(condition))
    rows.append(grid_row(spec, predict, params, make_batches(), condition=condition, rng=key,
                         noise_snr_db=noise_snr_db, group_patterns=group_patterns))
  return rows


def columns(task: str) -> tuple[str, ...]:
  return CLASSIFICATION_COLUMNS if task == 'classification' else REGRESSION_COLUMNS


def results_markdown(results: dict, task: str) -> str:
  cols = columns(task)
  lines = [f"# {results['method']} on {results['dataset']} ({results['split']}, seed {results['seed']})", '',
           '| condition | ' + ' | '.join(cols) + ' | n |', '|---|' + '---|' * (len(cols) + 1)]
  for row in results['rows']:
    lines.append(f"| {row['condition']} | " + ' | '.join(
        f"{row['metrics'][c]:.4f}" if c in row['metrics'] else '' for c in cols)
        + f" | {row.get('num_samples', '')} |")
  return '\n'.join(lines) + '\n'


def write_results(workdir: str, results: dict, task: str) -> None:
  """Writes results.json (stable schema) and results.md, each atomically."""
  os.makedirs(workdir, exist_ok=True)
  for name, text in (('results.json', json.dumps(results, indent=2)),
                     ('results.md', results_markdown(results, task))):
    writers.write_atomic(os.path.join(workdir, name), text)


def make_results(*, method: str, dataset: str, seed: int, rows: list[dict], split: str = 'test') -> dict[str, Any]:
  return {'method': method, 'dataset': dataset, 'split': split, 'seed': int(seed),
          'rows': [{'condition': r['condition'],
                    'metrics': {k: float(v) for k, v in r['metrics'].items()},
                    **{k: r[k] for k in ('num_samples', 'missing_fraction', 'noised_fraction',
                                         'noise_snr_db', 'per_class_f1', 'per_class_accuracy')
                       if k in r}}
                   for r in rows]}
