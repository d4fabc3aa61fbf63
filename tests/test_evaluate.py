"""The missing-modality evaluation grid and the results files, with a fake model.

The fake `predict` sums per-modality logit votes over the modalities the batch's `modality_mask`
keeps, so every condition and every drawn rate mask changes its outputs.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from mmer_jax import evaluate
from mmer_jax import metrics
from mmer_jax.data import schema

NUM_CLASSES = 4
STRENGTH = np.array([0.8, 0.5, 1.5])  # audio, visual, text: text is the strongest signal
CONDITIONS = ('full', 'a', 'v', 't', 'av', 'at', 'vt')
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
CLASSIFICATION_METRICS = {'wa', 'ua', 'weighted_f1', 'macro_f1', 'mean_ovr_accuracy'}
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
  assert evaluate.rate_name(0.25) == 'rate=0.25' and evaluate.rate_name(0.05) == 'rate=0.05'


def test_rates_finer_than_a_decimal_are_evaluated_at_themselves(cls_setup):
  """eval.rates=(0.25, 0.05): rows rate=0.25 and rate=0.05, each drawn at its own rate (its
  masks differ from those of 0.2 and 0.1, which a one-decimal name would have evaluated)."""
  spec, _, _, batches = cls_setup
  rows = by_name(grid(spec, batches, conditions=(), rates=(0.25, 0.05, 0.2, 0.1)))
  assert list(rows) == ['rate=0.25', 'rate=0.05', 'rate=0.2', 'rate=0.1']
  assert rows['rate=0.25'] != rows['rate=0.2'] and rows['rate=0.05'] != rows['rate=0.1']


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
    assert set(row) == {'condition', 'metrics', 'num_samples', 'missing_fraction', 'per_class_f1',
                        'per_class_accuracy'}
    assert list(row['per_class_f1']) == list(spec.label_names)
    assert all(0.0 <= f <= 1.0 for f in row['per_class_f1'].values())
    assert list(row['per_class_accuracy']) == list(spec.label_names)
    assert np.mean(list(row['per_class_accuracy'].values())) == pytest.approx(
        row['metrics']['mean_ovr_accuracy'])
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
  assert table[0] == '| condition | wa | ua | weighted_f1 | macro_f1 | mean_ovr_accuracy | n |'
  assert set(table[1]) <= set('|-')
  body = table[2:]
  assert len(body) == len(rows)
  for line, row in zip(body, rows):
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[0] == row['condition']
    assert [float(c) for c in cells[1:-1]] == pytest.approx(
        [row['metrics'][k] for k in ('wa', 'ua', 'weighted_f1', 'macro_f1', 'mean_ovr_accuracy')],
        abs=5e-5)
    assert int(cells[-1]) == row['num_samples']


# -- ineffectual modalities (noise rows) -----------------------------------------------------------


def feature_batches(spec, label, x, *, batch_size=32):
  """`make_batches` plus per-modality features batch[m] = that modality's votes [B, C]."""
  batches = make_batches(spec, label, x, batch_size=batch_size)
  for batch in batches:
    for i, m in enumerate(schema.MODALITIES):
      if spec.available[i]:
        batch[m] = batch['x'][:, i, :]
  return batches


def feature_predict(params, batch):
  """Logits: the sum of the kept modalities' features (so noise in a feature changes them)."""
  mask = np.asarray(batch['modality_mask'], np.float32)
  out = params['bias']
  for i, m in enumerate(schema.MODALITIES):
    if m in batch:
      out = out + np.asarray(batch[m]) * mask[..., i, None]
  return out


def noise_grid(spec, batches, *, seed=0, conditions=('full',), fractions=(0.5,), snr_db=-10.0):
  return evaluate.run_grid(spec, feature_predict, PARAMS, lambda: iter(batches),
                           conditions=conditions, rates=(), seed=seed, noise_fractions=fractions,
                           noise_snr_db=snr_db)


@pytest.fixture(scope='module')
def noise_setup():
  spec = make_spec()
  label, x = make_data(spec)
  return spec, label, x, feature_batches(spec, label, x)


def test_noise_names():
  spec = make_spec()
  assert evaluate.noise_name(0.3) == 'noise=0.3'
  assert evaluate.noise_name(0.1 + 0.2) == 'noise=0.3'
  assert evaluate.noise_name(0) == 'noise=0.0'
  assert evaluate.noise_name(0.25) == 'noise=0.25'
  assert evaluate.condition_names(spec, ['full', 'noise=0.30', 'noise=1']) == \
      ['full', 'noise=0.3', 'noise=1.0']
  for bad in ('noise=1.5', 'noise=x', 'noise='):
    with pytest.raises(ValueError, match='noise'):
      evaluate.condition_names(spec, [bad])
  with pytest.raises(ValueError, match='noise'):
    evaluate.noise_name(-0.1)


def test_noise_rows(noise_setup):
  spec, _, _, batches = noise_setup
  rows = noise_grid(spec, batches, conditions=('full', 'noise=0.25'), fractions=(0.5, 0.0, 1.0))
  assert [r['condition'] for r in rows] == ['full', 'noise=0.25', 'noise=0.5', 'noise=0.0',
                                            'noise=1.0']
  named = {r['condition']: r for r in rows}
  assert 'noised_fraction' not in named['full']
  for name in ('noise=0.25', 'noise=0.5', 'noise=0.0', 'noise=1.0'):
    row = named[name]
    assert row['num_samples'] == 150
    assert row['missing_fraction'] == {m: 0.0 for m in spec.modalities}  # complete data
    assert set(row['noised_fraction']) == set(spec.modalities)
    assert row['noise_snr_db'] == -10.0
  # fraction 0 is the full row; at 1 every sample has exactly one modality noised.
  assert named['noise=0.0']['metrics'] == named['full']['metrics']
  assert set(named['noise=0.0']['noised_fraction'].values()) == {0.0}
  assert sum(named['noise=1.0']['noised_fraction'].values()) == pytest.approx(1.0)
  share = sum(named['noise=0.5']['noised_fraction'].values())
  assert abs(share - 0.5) < 5 * np.sqrt(0.25 / 150)
  # Noise at -10 dB hurts this model.
  assert named['noise=1.0']['metrics']['wa'] < named['full']['metrics']['wa'] - 0.1
  results = evaluate.make_results(method='m', dataset='d', seed=0, rows=rows)
  kept = {r['condition']: r for r in results['rows']}
  assert kept['noise=0.5']['noised_fraction'] == named['noise=0.5']['noised_fraction']
  assert kept['noise=0.5']['noise_snr_db'] == -10.0
  assert 'noised_fraction' not in kept['full']


def test_noise_rows_do_not_depend_on_batch_size(noise_setup):
  spec, label, x, batches = noise_setup
  small = feature_batches(spec, label, x, batch_size=7)
  key = evaluate.noise_key(0, 0.5)
  got = {}
  for size, bs in (('32', batches), ('7', small)):
    feats, noised, masks = [], [], []
    for batch, hit in evaluate.noise_batches(iter(bs), rng=key, fraction=0.5, snr_db=-10.0,
                                             available=spec.available):
      keep = batch['example_mask']
      feats.append(np.stack([batch[m][keep] for m in schema.MODALITIES], 1))
      noised.append(hit[keep])
      assert hit.shape == batch['modality_mask'].shape
    got[size] = np.concatenate(feats), np.concatenate(noised)
  np.testing.assert_array_equal(got['32'][1], got['7'][1])
  np.testing.assert_allclose(got['32'][0], got['7'][0], rtol=1e-6, atol=1e-6)
  # The ground truth says which features changed.
  changed = np.any(got['32'][0] != x, -1)
  np.testing.assert_array_equal(changed, got['32'][1])
  a, b = noise_grid(spec, batches), noise_grid(spec, small)
  assert a[1]['noised_fraction'] == b[1]['noised_fraction']
  for ra, rb in zip(a, b):
    assert ra['metrics'] == pytest.approx(rb['metrics'])


def test_noise_batches_reproduce_the_grid_row(noise_setup):
  spec, label, _, batches = noise_setup
  row = noise_grid(spec, batches, seed=4, fractions=(0.5,))[1]
  key = evaluate.noise_key(jax.random.PRNGKey(4), 0.5)
  outs, hits = [], []
  for batch, hit in evaluate.noise_batches(iter(batches), rng=key, fraction=0.5, snr_db=-10.0,
                                           available=spec.available):
    keep = batch['example_mask']
    outs.append(feature_predict(PARAMS, batch)[keep])
    hits.append(hit[keep])
  assert metrics.compute(spec.task, np.concatenate(outs), label) == pytest.approx(row['metrics'])
  assert dict(zip(schema.MODALITIES, np.concatenate(hits).mean(0))) == \
      pytest.approx(row['noised_fraction'])
  # predict_split takes the condition too, with the row's key.
  out, lab, mask = evaluate.predict_split(feature_predict, PARAMS, iter(batches),
                                          available=spec.available, condition='noise=0.5', rng=key)
  assert metrics.compute(spec.task, out, lab, mask) == pytest.approx(row['metrics'])
  # Another seed draws other noise; the noise keys are not the rate keys.
  other = noise_grid(spec, batches, seed=5, fractions=(0.5,))[1]
  assert other['metrics'] != row['metrics']
  assert not np.array_equal(key, evaluate.rate_key(jax.random.PRNGKey(4), 0.5))


def test_noise_replacement_and_sequence_padding():
  mods = {'audio': schema.ModalitySpec(level='sequence', dim=3, max_len=5),
          'text': schema.ModalitySpec(level='utterance', dim=4)}
  spec = schema.DatasetSpec(name='fake', task='classification', modalities=mods,
                            label_names=('a', 'b'))
  rng = np.random.default_rng(0)
  lengths = np.array([1, 5, 3, 2])
  audio = rng.normal(size=(4, 5, 3)).astype(np.float32)
  audio[np.arange(5)[None] >= lengths[:, None]] = 0.0
  batch = {'audio': audio, 'text': rng.normal(size=(4, 4)).astype(np.float32),
           'lengths': {'audio': lengths}, 'label': np.array([0, 1, 0, 1]),
           'example_mask': np.ones(4, bool),
           'modality_mask': np.tile([True, False, False], (4, 1))}  # only audio: always chosen
  (out, hit), = evaluate.noise_batches([batch], rng=jax.random.PRNGKey(0), fraction=1.0,
                                       snr_db=None, available=spec.available)
  assert hit[:, 0].all() and not hit[:, 1:].any()
  valid = np.arange(5)[None] < lengths[:, None]
  np.testing.assert_array_equal(out['audio'][~valid], 0.0)
  assert (out['audio'][valid] != audio[valid]).all()
  np.testing.assert_array_equal(out['text'], batch['text'])
  np.testing.assert_array_equal(batch['audio'], audio)  # the input batch is not modified

  def predict(params, b):
    return np.stack([b['audio'].sum((1, 2)), b['text'].sum(-1)], -1)
  rows = evaluate.run_grid(spec, predict, None, lambda: iter([batch]), conditions=(), rates=(),
                           seed=0, noise_fractions=(1.0,), noise_snr_db=None)
  assert rows[0]['noise_snr_db'] is None
  assert rows[0]['noised_fraction'] == {'audio': 1.0, 'text': 0.0}


def test_noise_dialogue_batches():
  spec = make_spec()
  label, x = make_data(spec, n=24)
  turns = [5, 3, 8, 2, 6]
  batch = {'label': np.zeros((5, 8), np.int64), 'example_mask': np.zeros((5, 8), bool),
           'modality_mask': np.ones((5, 8, 3), bool)}
  for m in schema.MODALITIES:
    batch[m] = np.zeros((5, 8, NUM_CLASSES), np.float32)
  start = 0
  for d, n in enumerate(turns):
    for i, m in enumerate(schema.MODALITIES):
      batch[m][d, :n] = x[start:start + n, i]
    batch['label'][d, :n] = label[start:start + n]
    batch['example_mask'][d, :n] = True
    start += n
  (out, hit), = evaluate.noise_batches([batch], rng=evaluate.noise_key(0, 1.0), fraction=1.0,
                                       available=spec.available)
  assert hit.shape == (5, 8, 3)
  np.testing.assert_array_equal(hit.sum(-1), 1)  # every turn, padding turns included
  rows = evaluate.run_grid(spec, feature_predict, PARAMS, lambda: iter([batch]), conditions=('full',),
                           rates=(), seed=0, noise_fractions=(1.0,))
  assert rows[1]['num_samples'] == 24
  assert sum(rows[1]['noised_fraction'].values()) == pytest.approx(1.0)


def test_noise_config_defaults():
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  assert tuple(config.eval.noise_fractions) == ()
  assert config.eval.noise_fraction is None
  assert config.eval.noise_snr_db == -10.0 and config.eval.noise_replace is False
  config.eval.noise_fraction = 0.3  # the issue's --config.eval.noise_fraction=0.3
  assert config.eval.noise_fraction == 0.3
