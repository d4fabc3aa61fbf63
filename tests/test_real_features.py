"""Real features as users bring them: standardisation, per-sample presence, uneven missingness,
degenerate training made visible, and the bring-your-own-features config.

Toy directories in the generic format carry what real releases have: columns on wildly different
scales (1e-4 to 1e3), a constant column, a sequence modality with padding, and a presence file
whose absent rows hold NaN.
"""

from __future__ import annotations

import copy
import csv
import json
import os

import jax
import numpy as np
import pytest

from configs import fusion_features
from mmer_jax import checkpoint
from mmer_jax import diagnostics
from mmer_jax import evaluate
from mmer_jax import missing
from mmer_jax import train
from mmer_jax.data import pipeline
from mmer_jax.data import registry
from mmer_jax.data import schema
from mmer_jax.data import standardize

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


# -- presence ------------------------------------------------------------------------------------


def test_present_file_marks_samples_missing_in_batches(tmp_path):
  made = make_directory(tmp_path / 'd')
  dataset = load(tmp_path / 'd', tmp_path / 'tfds')
  assert dataset.spec.incomplete == ('visual',)
  source = dataset.sources['train']
  batch = next(pipeline.utterance_batches(source, dataset.spec, batch_size=64))
  examples = pipeline.read(source, range(len(source)))
  rows = [int(ex['utterance_id'].decode().split('/')[0][1:]) for ex in examples]
  expected = made['has_visual'][rows]
  np.testing.assert_array_equal(batch['modality_mask'][:60, 1], expected)
  assert batch['modality_mask'][:60, 0].all() and not batch['modality_mask'][:, 2].any()
  assert np.isfinite(batch['visual']).all()
  assert (batch['visual'][:60][~expected] == 0).all()  # NaN rows are stored as zeros


def test_present_rows_stay_missing_in_every_condition(tmp_path):
  made = make_directory(tmp_path / 'd')
  dataset = load(tmp_path / 'd', tmp_path / 'tfds')
  spec, source = dataset.spec, dataset.sources['test']
  absent = ~np.array([pipeline.sample_available(ex, spec)[1]
                      for ex in pipeline.read(source, range(len(source)))])
  assert absent.any()
  batches = lambda: pipeline.utterance_batches(source, spec, batch_size=8)  # noqa: E731
  predict = lambda params, batch: np.zeros((len(batch['label']), 3))  # noqa: E731
  for condition in ('full', 'a', 'v', 'rate=0.5', 'rate=1.0', 'rate=a:0.9,v:0.2'):
    rng = jax.random.PRNGKey(0)
    _, _, mask, modality = evaluate.predict_split(
        predict, None, batches(), available=spec.available, condition=condition, rng=rng,
        with_modality_mask=True)
    mask, modality = mask[:len(source)], modality[:len(source)]
    assert not modality[absent, 1].any(), condition  # a condition never adds a modality back
    assert (mask == modality.any(-1)).all(), condition  # no modality left: not scored
    if condition.startswith('rate='):  # a rate keeps one of the sample's own modalities
      assert mask.all(), condition
  rows = {r['condition']: r for r in evaluate.run_grid(
      spec, predict, None, batches, conditions=('full', 'a', 'v'), rates=(0.5,), seed=0)}
  assert rows['v']['num_samples'] == int((~absent).sum())  # absent samples have nothing left
  assert rows['a']['num_samples'] == rows['full']['num_samples'] == len(source)
  assert rows['full']['missing_fraction']['visual'] == pytest.approx(absent.mean())
  assert rows['rate=0.5']['num_samples'] == len(source)
  del made


@pytest.mark.parametrize('edit, match', [
    (lambda p: np.save(p, np.ones(99, bool)), r'visual_present.npy.*shape \[100\]'),
    (lambda p: np.save(p, np.ones(100, np.int8)), r'visual_present.npy.*a bool array.*int8'),
    (lambda p: os.remove(p), r'visual_present.npy.*not found'),
])
def test_wrong_present_file_is_a_clear_data_error(tmp_path, edit, match):
  make_directory(tmp_path / 'd')
  edit(str(tmp_path / 'd' / 'visual_present.npy'))
  with pytest.raises(schema.DataError, match=match):
    load(tmp_path / 'd', tmp_path / 'tfds')


def test_nan_outside_absent_rows_is_still_an_error(tmp_path):
  make_directory(tmp_path / 'd')
  file = tmp_path / 'd' / 'visual.npy'
  x = np.load(file)
  x[0, 0, 0] = np.nan  # row 0 has visual
  np.save(file, x)
  with pytest.raises(schema.DataError, match=r"visual.npy: field 'visual', row 0"):
    load(tmp_path / 'd', tmp_path / 'tfds')


# -- standardisation -----------------------------------------------------------------------------


def test_standardised_train_features_have_mean_0_std_1(tmp_path):
  made = make_directory(tmp_path / 'd')
  dataset = load(tmp_path / 'd', tmp_path / 'tfds')
  stats = standardize.fit(dataset.sources['train'], dataset.spec)
  # Against numpy on the training rows that have the modality (valid frames only).
  train_rows = np.array([s == 'train' for s in SPLITS])
  np.testing.assert_allclose(stats.modalities['audio'].mean, made['audio'][train_rows].mean(0),
                             rtol=1e-6)
  assert stats.modalities['audio'].constant == 1 and stats.modalities['audio'].std[-1] == 1.0
  frames = np.concatenate([made['visual'][i, :made['lengths'][i]] for i in np.flatnonzero(
      train_rows & made['has_visual'])])
  np.testing.assert_allclose(stats.modalities['visual'].std, frames.std(0), rtol=1e-5)
  assert stats.modalities['visual'].count == len(frames)

  config = toy_config(tmp_path / 'd', tmp_path / 'tfds')
  run = train.Run(config, workdir=str(tmp_path / 'run'))
  audio, visual = [], []
  for batch in run.streams.epoch('train', train=False):
    keep = batch['example_mask']
    audio.append(batch['audio'][keep])
    for x, n, ok in zip(batch['visual'][keep], batch['lengths']['visual'][keep],
                        batch['modality_mask'][keep, 1]):
      assert (x[n:] == 0).all()  # padding frames stay zero
      if ok:
        visual.append(x[:n])
      else:
        assert (x == 0).all()  # absent rows stay zero
  audio, visual = np.concatenate(audio), np.concatenate(visual)
  np.testing.assert_allclose(audio[:, :-1].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(audio[:, :-1].std(0), 1, atol=1e-4)
  np.testing.assert_allclose(audio[:, -1], 0, atol=1e-4)  # the constant column: centred only
  np.testing.assert_allclose(visual.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(visual.std(0), 1, atol=1e-4)
  assert os.path.exists(tmp_path / 'run' / standardize.STATS_FILE)


def test_statistics_come_from_the_training_split_only(tmp_path):
  make_directory(tmp_path / 'a')
  make_directory(tmp_path / 'b', valid_test_shift=1e3)  # only valid/test features differ
  learned = []
  for name in ('a', 'b'):
    config = toy_config(tmp_path / name, tmp_path / 'tfds', num_epochs=2)
    train.train_and_evaluate(config, str(tmp_path / f'run_{name}'))
    with open(tmp_path / f'run_{name}' / standardize.STATS_FILE) as f:
      learned.append([json.load(f)['modalities']])
    latest, _ = checkpoint.create_managers(str(tmp_path / f'run_{name}'))
    learned[-1].append(checkpoint.restore_params(latest))
  assert learned[0][0] == learned[1][0]
  jax.tree_util.tree_map(np.testing.assert_array_equal, learned[0][1], learned[1][1])


def test_a_resumed_run_reads_its_stored_statistics(tmp_path):
  make_directory(tmp_path / 'd')
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds')
  workdir = tmp_path / 'run'
  first = train.Run(config, workdir=str(workdir)).feature_stats
  stored = json.loads((workdir / standardize.STATS_FILE).read_text())
  stored['modalities']['audio']['mean'][0] += 5.0
  (workdir / standardize.STATS_FILE).write_text(json.dumps(stored))
  again = train.Run(config, workdir=str(workdir)).feature_stats
  assert again.modalities['audio'].mean[0] == pytest.approx(first.modalities['audio'].mean[0] + 5)
  stored['modalities']['audio']['mean'] = [0.0, 1.0]
  (workdir / standardize.STATS_FILE).write_text(json.dumps(stored))
  with pytest.raises(schema.DataError, match='feature_stats.json.*dimension 6'):
    train.Run(config, workdir=str(workdir))


def test_a_run_trained_unscaled_is_not_evaluated_with_fresh_statistics(tmp_path):
  make_directory(tmp_path / 'd')
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds', num_epochs=1)
  config.data.standardize = False
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  config.data.standardize = True
  with pytest.raises(schema.DataError, match='trained without standardisation.*standardize=false'):
    train.evaluate_best(config, str(tmp_path / 'run'))


def test_standardize_off_and_dataset_defaults(tmp_path):
  make_directory(tmp_path / 'd')
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds')
  config.data.standardize = False
  assert train.Run(config).feature_stats is None
  config.data.standardize = None  # the dataset's default: on for a features directory
  assert train.Run(config).feature_stats is not None
  synthetic = fusion_features.get_config('smoke')
  synthetic.data.standardize = None
  synthetic.data.data_dir = str(tmp_path / 'tfds')
  assert train.Run(synthetic).feature_stats is None  # off for the synthetic sets


# -- training on them ----------------------------------------------------------------------------


def test_nan_absent_rows_build_and_train_and_learn(tmp_path):
  make_directory(tmp_path / 'd')
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds', num_epochs=15)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  rows = {r['condition']: r for r in results['rows']}
  assert results['standardized'] and 'warnings' not in results
  assert rows['full']['metrics']['wa'] >= 0.8  # 3 classes, chance 0.33
  assert rows['v']['num_samples'] == 15  # 5 of the 20 test samples have no visual
  assert results['selected_on'] == 'valid/ua'


def test_collapse_warning_fires_on_unscaled_inputs_only(tmp_path, shared_data_dir):
  """RAVDESS's raw features (1e-4 to 1e3): one class for nearly every clip, a loss ~1e3."""
  warned = {}
  for standardized in (False, True):
    config = fusion_features.get_config()
    config.data.features_dir = str(shared_data_dir / 'ravdess_av')
    config.data.data_dir = str(tmp_path / 'tfds')
    config.data.standardize = standardized
    config.train.num_epochs = 4
    config.eval.conditions, config.eval.rates = ('full',), ()
    results = train.train_and_evaluate(config, str(tmp_path / f'run_{standardized}'))
    warned[standardized] = results.get('warnings', [])
  assert any(w.startswith('collapse') for w in warned[False]), warned
  assert any(w.startswith('loss_bound') for w in warned[False]), warned
  assert warned[True] == []


def test_prediction_collapse_rule():
  labels = np.arange(100) % 4
  logits = np.zeros((100, 4))
  logits[:, 2] = 1.0
  logits[:5, 0] = 2.0  # 95 of 100 predicted class 2, which is 25% of the labels
  mask = np.ones(100, bool)
  assert 'class 2 for 95 of 100' in diagnostics.prediction_collapse('classification', logits,
                                                                    labels, mask)
  faithful = np.eye(4)[labels]
  assert diagnostics.prediction_collapse('classification', faithful, labels, mask) is None
  majority = np.zeros(100, int)
  majority[:8] = 1  # a 92% majority class predicted as such is not a collapse
  assert diagnostics.prediction_collapse('classification', np.eye(4)[majority], majority,
                                         mask) is None
  scores = np.linspace(-1, 1, 100)
  assert diagnostics.prediction_collapse('regression', scores, scores, mask) is None
  assert 'constant score' in diagnostics.prediction_collapse('regression', 0.3 + 1e-4 * scores,
                                                             scores, mask)
  assert diagnostics.prediction_collapse('regression', np.zeros(100), scores, ~mask) is None


def test_loss_bound_warns_and_non_finite_loss_raises():
  assert diagnostics.check_loss(1.2, 3, bound=100.0, workdir='w') is None
  assert 'exceeds train.loss_bound=100' in diagnostics.check_loss(130.0, 3, bound=100.0, workdir='w')
  assert diagnostics.check_loss(1e9, 3, bound=None, workdir='w') is None
  for bad in (float('nan'), float('inf')):
    with pytest.raises(diagnostics.TrainingDiverged, match=r'step 3.*w/checkpoints is intact'):
      diagnostics.check_loss(bad, 3, bound=100.0, workdir='w')


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  make_directory(tmp_path / 'd')
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds', num_epochs=3)
  config.train.checkpoint_every_steps = 2
  real_init = train.Run.__init__

  def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    step = self.train_step

    def poisoned(state, batch):  # step 7 reports NaN, as a diverged update would
      state, metrics = step(state, batch)
      if int(jax.device_get(state.step)) == 7:
        metrics = {**metrics, 'loss': np.float32(np.nan)}
      return state, metrics
    self.train_step = poisoned
  monkeypatch.setattr(train.Run, '__init__', init)
  with pytest.raises(diagnostics.TrainingDiverged, match=r'loss is nan at step 7.*intact'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  latest, _ = checkpoint.create_managers(str(tmp_path / 'run'))
  assert latest.latest_step() == 6  # saved at step 6, never at the diverged step 7
  params = checkpoint.restore_params(latest)
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_selection_follows_the_task_and_rejects_foreign_metrics(tmp_path):
  make_directory(tmp_path / 'd', task='regression')
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds', num_epochs=2)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['selected_on'] == 'valid/mae' and 'valid_mae' in results
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds', select_metric='valid/ua')
  with pytest.raises(ValueError, match=r"select_metric='valid/ua' is not a validation metric of "
                     r"this regression dataset.*valid/mae"):
    train.train_and_evaluate(config, str(tmp_path / 'run2'))


def test_early_stopping_stops_and_still_evaluates(tmp_path):
  make_directory(tmp_path / 'd')
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds', num_epochs=60, patience=2)
  config.optimizer.learning_rate = 0.0  # nothing improves after the first epoch
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  latest, _ = checkpoint.create_managers(str(tmp_path / 'run'))
  steps_per_epoch = 60 // 16 + 1
  assert latest.latest_step() == 3 * steps_per_epoch  # best at epoch 1, patience 2
  assert results['selected_step'] == steps_per_epoch


# -- uneven missingness --------------------------------------------------------------------------


def test_per_modality_rates_realise_their_fractions():
  rates = missing.parse_rates('a:0.1,v:0.5,t:0.0')
  np.testing.assert_array_equal(rates, [0.1, 0.5, 0.0])
  assert missing.rates_name(rates) == 'a:0.1,v:0.5,t:0.0'
  mask = np.asarray(missing.missing_rate_mask(jax.random.PRNGKey(1), 100_000, rates))
  assert mask.any(-1).all()
  np.testing.assert_allclose(1 - mask.mean(0), missing.effective_missing_fractions(rates), atol=5e-3)
  high = missing.parse_rates('a:0.9,v:0.9,t:0.6')
  mask = np.asarray(missing.missing_rate_mask(jax.random.PRNGKey(2), 100_000, high))
  assert mask.any(-1).all()
  np.testing.assert_allclose(1 - mask.mean(0), missing.effective_missing_fractions(high), atol=5e-3)
  # Closed form: P(m dropped | not all dropped) = (r_m - prod r) / (1 - prod r).
  prod = 0.9 * 0.9 * 0.6
  np.testing.assert_allclose(missing.effective_missing_fractions(high),
                             [(0.9 - prod) / (1 - prod)] * 2 + [(0.6 - prod) / (1 - prod)])
  # One rate for all: the mean fraction is the uniform bookkeeping.
  assert missing.effective_missing_fractions(np.full(3, 0.4)).mean() == pytest.approx(
      missing.effective_missing_fraction(0.4))


def test_sample_availability_conditions_the_draw():
  own = np.zeros((6000, 3), bool)
  own[:2000, 0] = True  # audio only
  own[2000:4000, :2] = True  # audio + visual
  own[4000:] = True
  mask = np.asarray(missing.missing_rate_mask(jax.random.PRNGKey(0), 6000, 0.9,
                                              sample_available=own))
  assert not (mask & ~own).any() and mask.any(-1).all()
  assert mask[:2000, 0].all()  # the only modality a sample has is always kept
  full = np.asarray(missing.missing_rate_mask(jax.random.PRNGKey(0), 6000, 0.9))
  same = np.asarray(missing.missing_rate_mask(jax.random.PRNGKey(0), 6000, 0.9,
                                              sample_available=np.ones((6000, 3), bool)))
  np.testing.assert_array_equal(full, same)  # complete data: the draws are unchanged


@pytest.mark.parametrize('text, match', [
    ('a:1.5', 'the rate of audio'), ('q:0.1', 'expected entries like'), ('a:0.1,audio:0.2', 'twice'),
    ('', 'expected entries like')])
def test_bad_per_modality_rates_are_clear_errors(text, match):
  with pytest.raises(ValueError, match=match):
    missing.parse_rates(text)


def test_per_modality_rates_as_grid_condition_and_for_training(tmp_path):
  make_directory(tmp_path / 'd', present=False)
  config = toy_config(tmp_path / 'd', tmp_path / 'tfds', num_epochs=2, missing='rate',
                      missing_rates='a:0.2,v:0.6')
  config.eval.conditions = ('full', 'rate=a:0.2,v:0.6,t:0')
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  rows = {r['condition']: r for r in results['rows']}
  row = rows['rate=a:0.2,v:0.6,t:0.0']
  assert row['num_samples'] == 20 and 0.0 < row['missing_fraction']['visual'] < 1.0
  assert results['train_missing_rates'] == 'a:0.2,v:0.6,t:0.0'
  # Keyed by seed and rates: another evaluation batch size gives the same masks and metrics.
  again = copy.deepcopy(config)
  again.data.eval_batch_size = 7
  again.train.num_epochs = 2
  results_b = train.evaluate_best(again, str(tmp_path / 'run'))
  assert {r['condition']: r for r in results_b['rows']} == rows


@pytest.mark.slow  # MMIN's two stages (regression runs in the default run: m3er_mosei's smoke run)
def test_mmin_config_runs_on_a_regression_directory(tmp_path):
  """MMIN's IEMOCAP config on a MOSI-like directory: selection follows the task (valid/mae) and
  its figures are drawn for regression labels; the run finishes and writes its table."""
  from configs import mmin_iemocap  # pylint: disable=g-import-not-at-top
  make_directory(tmp_path / 'd', task='regression', present=False)
  config = mmin_iemocap.get_config()
  config.data.features_dir = str(tmp_path / 'd')
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.batch_size, config.data.eval_batch_size, config.data.prefetch = 16, 32, 0
  config.train.num_epochs, config.optimizer.constant_epochs = 2, 1
  config.stages.stage1.train.num_epochs = 2
  config.stages.stage1.optimizer.constant_epochs = 1
  config.eval.rates = (0.5,)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['selected_on'] == 'valid/mae' and results['task'] == 'regression'
  assert [r['condition'] for r in results['rows']] == ['full', 'a', 'v', 'av', 'rate=0.5']
  assert (tmp_path / 'run' / 'mmin' / 'imagination_mse.json').exists()
  assert list((tmp_path / 'run' / 'mmin').glob('imagination_pca_*.png'))


def test_standardize_dialogue_batches_keeps_padding_turns_zero():
  spec = schema.DatasetSpec(name='dlg', task='classification', label_names=('a', 'b'),
                            modalities={'audio': schema.ModalitySpec('utterance', 3)})
  rng = np.random.default_rng(0)
  dialogues = [pipeline.Dialogue(dialogue_id=f'd{k}', features={'audio': 50 + 10 * rng.normal(
      size=(n, 3))}, label=np.zeros(n, int), speaker=np.zeros(n, np.int32)) for k, n in
               enumerate((3, 5))]
  batch = pipeline.collate_dialogues(dialogues, spec, dialogues_per_batch=3, buckets=(8,))
  stats = standardize.FeatureStats(modalities={'audio': standardize.ModalityStats(
      mean=np.full(3, 50.0), std=np.full(3, 10.0), count=8, constant=0)}, dataset='dlg')
  out = standardize.apply(batch, stats)
  turn_mask = batch['turn_mask']
  np.testing.assert_allclose(out['audio'][turn_mask], (batch['audio'][turn_mask] - 50) / 10,
                             rtol=1e-6)
  assert (out['audio'][~turn_mask] == 0).all()  # padding turns and the padding dialogue


@pytest.mark.parametrize('mode, kept', [('drop_one', 2), ('drop_two', 1)])
def test_drop_one_and_drop_two_training_masks(mode, kept):
  from mmer_jax import steps  # pylint: disable=g-import-not-at-top
  batch_mask = np.ones((3000, 3), bool)
  mask = np.asarray(steps.training_modality_mask(jax.random.PRNGKey(0), batch_mask,
                                                 missing_mode=mode, rate=0.0,
                                                 available=np.ones(3, bool)))
  assert (mask.sum(-1) == kept).all()
  np.testing.assert_allclose(mask.mean(0), kept / 3, atol=0.03)  # every modality alike
  two_mask = batch_mask & np.array([True, True, False])
  two = np.asarray(steps.training_modality_mask(jax.random.PRNGKey(0), two_mask,
                                                missing_mode=mode, rate=0.0,
                                                available=np.array([True, True, False])))
  assert (two.sum(-1) == 1).all()  # two modalities: one dropped, whatever was asked
