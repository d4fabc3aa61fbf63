"""The missing-modality evaluation grid and the results files, with a fake model.

The fake `predict` sums per-modality logit votes over the modalities the batch's `modality_mask`
keeps, so every condition and every drawn rate mask changes its outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmer_jax import evaluate
from mmer_jax import metrics
from mmer_jax.data import schema

NUM_CLASSES = 4
STRENGTH = np.array([0.8, 0.5, 1.5])  # audio, visual, text: text is the strongest signal
CONDITIONS = ('full', 'a', 'v', 't', 'av', 'at', 'vt')
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
CLASSIFICATION_METRICS = {'wa', 'ua', 'weighted_f1', 'macro_f1'}
REGRESSION_METRICS = {'mae', 'corr', 'acc2', 'acc2_has0', 'f1', 'acc7'}


def make_spec(task='classification', modalities=('audio', 'visual', 'text')):
  mods = {m: schema.ModalitySpec(level='utterance', dim=8) for m in modalities}
  if task == 'classification':
    return schema.DatasetSpec(name='fake', task=task, modalities=mods,
                              label_names=tuple(f'c{i}' for i in range(NUM_CLASSES)))
  return schema.DatasetSpec(name='fake', task=task, modalities=mods, label_range=(-3.0, 3.0))


def make_data(spec, *, n=150, seed=0):
  """Labels and per-modality votes x [N, 3, C] (classification) or [N, 3] (regression)."""
  rng = np.random.default_rng(seed)
  if spec.task == 'classification':
    label = rng.integers(0, NUM_CLASSES, n)
    onehot = np.eye(NUM_CLASSES)[label]
    x = onehot[:, None, :] * STRENGTH[None, :, None] + rng.normal(size=(n, 3, NUM_CLASSES))
  else:
    label = rng.uniform(-3, 3, n).astype(np.float32)
    x = label[:, None] * STRENGTH[None, :] / STRENGTH.mean() + rng.normal(size=(n, 3))
  return label, x.astype(np.float32)


def make_batches(spec, label, x, *, batch_size=32, pad_seed=None):
  """Fixed-size utterance batches; the last is padded with garbage rows (example_mask False)."""
  rng = np.random.default_rng(pad_seed)
  batches = []
  for start in range(0, len(label), batch_size):
    lab, feat = label[start:start + batch_size], x[start:start + batch_size]
    k = len(lab)
    pad = batch_size - k
    if pad:
      junk_label = rng.integers(0, NUM_CLASSES, pad) if spec.task == 'classification' else rng.uniform(-3, 3, pad)
      lab = np.concatenate([lab, junk_label.astype(lab.dtype)])
      feat = np.concatenate([feat, (rng.normal(size=(pad,) + feat.shape[1:]) * 10).astype(np.float32)])
    batches.append({
        'x': feat,
        'label': lab,
        'example_mask': np.arange(batch_size) < k,
        'modality_mask': np.tile(spec.available, (batch_size, 1)),
    })
  return batches


def fake_predict(params, batch):
  """Logits [..., C] (or scores [...]) that depend on which modalities the mask keeps."""
  mask = np.asarray(batch['modality_mask'], np.float32)
  x = np.asarray(batch['x'])
  if x.ndim == mask.ndim + 1:  # classification votes [..., 3, C]
    return (x * mask[..., None]).sum(-2) + params['bias']
  return (x * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0) + params['bias']


PARAMS = {'bias': np.float32(0.0)}


def grid(spec, batches, *, seed=0, predict=fake_predict, conditions=CONDITIONS, rates=RATES):
  return evaluate.run_grid(spec, predict, PARAMS, lambda: iter(batches), conditions=conditions,
                           rates=rates, seed=seed)


def by_name(rows):
  return {r['condition']: r['metrics'] for r in rows}


@pytest.fixture(scope='module')
def cls_setup():
  spec = make_spec()
  label, x = make_data(spec)
  return spec, label, x, make_batches(spec, label, x)


# -- row names -------------------------------------------------------------------------------------


def test_rate_name_one_decimal():
  assert evaluate.rate_name(0.3) == 'rate=0.3'
  assert evaluate.rate_name(0.1 + 0.2) == 'rate=0.3'
  assert evaluate.rate_name(0) == 'rate=0.0'
  assert evaluate.rate_name(0.7) == 'rate=0.7'


def test_row_names_all_modalities(cls_setup):
  spec, _, _, batches = cls_setup
  rows = grid(spec, batches)
  assert [r['condition'] for r in rows] == list(CONDITIONS) + [f'rate={r:.1f}' for r in RATES]
  assert [r['condition'] for r in rows][-8:] == ['rate=0.0', 'rate=0.1', 'rate=0.2', 'rate=0.3',
                                                 'rate=0.4', 'rate=0.5', 'rate=0.6', 'rate=0.7']


def test_row_names_text_only():
  spec = make_spec(modalities=('text',))
  label, x = make_data(spec, n=40)
  rows = grid(spec, make_batches(spec, label, x), rates=(0.0, 0.5))
  assert [r['condition'] for r in rows] == ['full', 't', 'rate=0.0', 'rate=0.5']
  named = by_name(rows)
  # With one modality nothing can be dropped: every row is the full model.
  for name in ('t', 'rate=0.0', 'rate=0.5'):
    assert named[name] == named['full']


def test_row_names_audio_text():
  spec = make_spec(modalities=('audio', 'text'))
  label, x = make_data(spec, n=40)
  rows = grid(spec, make_batches(spec, label, x), rates=(0.2,))
  assert [r['condition'] for r in rows] == ['full', 'a', 't', 'at', 'rate=0.2']


# -- what the rows compute -------------------------------------------------------------------------


def expected_metrics(spec, label, x, pattern):
  mask = np.broadcast_to(np.asarray(pattern, bool) & spec.available, (len(label), 3))
  out = fake_predict(PARAMS, {'x': x, 'modality_mask': mask})
  return metrics.compute(spec.task, out, label)


def test_condition_rows_match_direct_computation(cls_setup):
  spec, label, x, batches = cls_setup
  named = by_name(grid(spec, batches, rates=()))
  patterns = {'full': (1, 1, 1), 'a': (1, 0, 0), 'v': (0, 1, 0), 't': (0, 0, 1),
              'av': (1, 1, 0), 'at': (1, 0, 1), 'vt': (0, 1, 1)}
  for name, pattern in patterns.items():
    assert named[name] == pytest.approx(expected_metrics(spec, label, x, pattern)), name
  # The conditions are genuinely different settings for this model.
  assert len({named[c]['wa'] for c in CONDITIONS}) > 3
  assert named['t']['wa'] > named['v']['wa']


def test_pooled_metrics_count_each_example_once_per_condition(cls_setup):
  spec, label, x, batches = cls_setup
  patterns = {'a': (1, 0, 0), 'at': (1, 0, 1), 'vt': (0, 1, 1)}
  pooled = evaluate.pooled_metrics(spec, fake_predict, PARAMS, lambda: iter(batches), tuple(patterns))
  votes = np.concatenate([(x * np.array(p, np.float32)[None, :, None]).sum(1) for p in patterns.values()])
  expected = metrics.compute(spec.task, votes, np.tile(label, len(patterns)),
                             np.ones(len(votes), bool))
  assert pooled == pytest.approx(expected)
  assert evaluate.pooled_metrics(spec, fake_predict, PARAMS, lambda: iter(batches), ('full',)) == \
      pytest.approx(by_name(grid(spec, batches, rates=()))['full'])
  for bad in ((), ('x',), ('rate=0.3',)):
    with pytest.raises(ValueError, match='valid conditions'):
      evaluate.pooled_metrics(spec, fake_predict, PARAMS, lambda: iter(batches), bad)


def test_rate_zero_equals_full(cls_setup):
  spec, _, _, batches = cls_setup
  named = by_name(grid(spec, batches, conditions=('full',), rates=(0.0,)))
  assert named['rate=0.0'] == named['full']


def test_rate_masks_are_per_sample_and_keep_a_modality():
  spec = make_spec(modalities=('audio', 'text'))
  label, x = make_data(spec, n=64)
  batches = make_batches(spec, label, x)
  seen = []

  def recording_predict(params, batch):
    seen.append(np.asarray(batch['modality_mask']).copy())
    return fake_predict(params, batch)

  grid(spec, batches, predict=recording_predict, conditions=(), rates=(0.5,))
  masks = np.concatenate(seen)
  assert masks.shape == (64, 3)
  assert masks.any(axis=1).all()  # at least one modality kept
  assert not masks[:, 1].any()  # never a modality the dataset does not have
  assert len({tuple(m) for m in masks}) == 3  # {a}, {t}, {a,t} all occur: per sample, not per batch


# -- determinism and seeds -------------------------------------------------------------------------


def test_grid_is_deterministic(cls_setup):
  spec, _, _, batches = cls_setup
  assert grid(spec, batches, seed=3) == grid(spec, batches, seed=3)


def test_seed_changes_rate_rows_only(cls_setup):
  spec, _, _, batches = cls_setup
  a, b = by_name(grid(spec, batches, seed=0)), by_name(grid(spec, batches, seed=1))
  for name in CONDITIONS + ('rate=0.0',):
    assert a[name] == b[name], name
  changed = [f'rate={r:.1f}' for r in RATES[1:] if a[f'rate={r:.1f}'] != b[f'rate={r:.1f}']]
  assert len(changed) >= 4, changed


# -- padding ---------------------------------------------------------------------------------------


def test_padding_rows_do_not_change_metrics(cls_setup):
  spec, label, x, _ = cls_setup
  assert len(label) % 32  # the last batch is padded
  one = grid(spec, make_batches(spec, label, x, pad_seed=1))
  two = grid(spec, make_batches(spec, label, x, pad_seed=2))
  assert one == two  # padding contents are ignored (rate masks included: same shapes)
  # Fixed conditions do not depend on how the rows are batched or padded at all.
  unpadded = grid(spec, make_batches(spec, label, x, batch_size=len(label)), rates=())
  assert by_name(unpadded) == {k: v for k, v in by_name(one).items() if not k.startswith('rate=')}


def test_dialogue_batches_flatten_and_mask_padding_turns():
  """Dialogue-shaped batches ([B, L] masks, [B, L, C] outputs) give the flat rows' metrics."""
  spec = make_spec()
  label, x = make_data(spec, n=24)
  turns = [5, 3, 8, 2, 6]  # 24 turns over 5 dialogues, padded to L = 8
  length = 8
  batch = {'x': np.zeros((5, length, 3, NUM_CLASSES), np.float32), 'label': np.zeros((5, length), np.int64),
           'example_mask': np.zeros((5, length), bool), 'modality_mask': np.ones((5, length, 3), bool)}
  start = 0
  for d, n in enumerate(turns):
    batch['x'][d, :n], batch['label'][d, :n] = x[start:start + n], label[start:start + n]
    batch['example_mask'][d, :n] = True
    batch['x'][d, n:] = 50.0  # garbage in the padding turns
    start += n
  dialogue = by_name(grid(spec, [batch], rates=()))
  for name, pattern in (('full', (1, 1, 1)), ('t', (0, 0, 1)), ('av', (1, 1, 0))):
    assert dialogue[name] == pytest.approx(expected_metrics(spec, label, x, pattern)), name


# -- results files ---------------------------------------------------------------------------------


def test_results_json_schema_classification(tmp_path, cls_setup):
  spec, _, _, batches = cls_setup
  rows = grid(spec, batches, seed=7)
  results = evaluate.make_results(method='early_fusion', dataset='synthetic/iemocap_4', seed=7, rows=rows)
  results['selected_step'] = 12  # extra top-level keys are allowed
  evaluate.write_results(str(tmp_path), results, spec.task)
  loaded = json.loads((tmp_path / 'results.json').read_text())
  assert loaded == results
  assert {'method', 'dataset', 'split', 'seed', 'rows'} <= set(loaded)
  assert loaded['method'] == 'early_fusion'
  assert loaded['dataset'] == 'synthetic/iemocap_4'
  assert loaded['split'] == 'test'
  assert loaded['seed'] == 7 and isinstance(loaded['seed'], int)
  assert len(loaded['rows']) == len(CONDITIONS) + len(RATES)
  for row in loaded['rows']:
    assert set(row) == {'condition', 'metrics', 'num_samples', 'missing_fraction', 'per_class_f1'}
    assert list(row['per_class_f1']) == list(spec.label_names)
    assert all(0.0 <= f <= 1.0 for f in row['per_class_f1'].values())
    assert row['num_samples'] == 150  # every test sample keeps a modality under every condition
    assert set(row['missing_fraction']) == set(spec.modalities)
    assert set(row['metrics']) == CLASSIFICATION_METRICS
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in row['metrics'].values())
  assert not list(tmp_path.glob('*.tmp'))


def test_results_json_schema_regression(tmp_path):
  spec = make_spec(task='regression')
  label, x = make_data(spec, n=80)
  rows = grid(spec, make_batches(spec, label, x), rates=(0.0, 0.5))
  results = evaluate.make_results(method='imder', dataset='synthetic/mosi', seed=0, rows=rows)
  evaluate.write_results(str(tmp_path), results, spec.task)
  loaded = json.loads((tmp_path / 'results.json').read_text())
  assert loaded['split'] == 'test'
  for row in loaded['rows']:
    assert set(row) == {'condition', 'metrics', 'num_samples', 'missing_fraction'}
    assert row['num_samples'] == 80
    assert REGRESSION_METRICS <= set(row['metrics'])
    assert all(isinstance(v, float) and np.isfinite(v) for v in row['metrics'].values())
  named = by_name(loaded['rows'])
  assert named['full']['mae'] < named['v']['mae']  # the fake model depends on the modalities
  md = (tmp_path / 'results.md').read_text()
  assert '| condition | mae | corr | acc2 | acc2_has0 | f1 | acc7 |' in md


def test_results_markdown_header_and_one_line_per_row(tmp_path, cls_setup):
  spec, _, _, batches = cls_setup
  rows = grid(spec, batches)
  results = evaluate.make_results(method='late_fusion', dataset='fake', seed=0, rows=rows)
  evaluate.write_results(str(tmp_path), results, spec.task)
  md = (tmp_path / 'results.md').read_text()
  assert md == evaluate.results_markdown(results, spec.task)
  lines = md.strip().splitlines()
  assert lines[0].startswith('# late_fusion on fake')
  table = [l for l in lines if l.startswith('|')]
  assert table[0] == '| condition | wa | ua | weighted_f1 | macro_f1 | n |'
  assert set(table[1]) <= set('|-')
  body = table[2:]
  assert len(body) == len(rows)
  for line, row in zip(body, rows):
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[0] == row['condition']
    assert [float(c) for c in cells[1:-1]] == pytest.approx(
        [row['metrics'][k] for k in ('wa', 'ua', 'weighted_f1', 'macro_f1')], abs=5e-5)
    assert int(cells[-1]) == row['num_samples']
