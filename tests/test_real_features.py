"""Real features as users bring them: per-sample presence, training on them, uneven missingness,
and the bring-your-own-features config.

Toy directories in the generic format (real_toy_data.py) carry what real releases have: columns on
wildly different scales (1e-4 to 1e3), a constant column, a sequence modality with padding, and a
presence file whose absent rows hold NaN. Their standardisation is tested in test_standardize.py,
degenerate training made visible in test_diagnostics.py.
"""

from __future__ import annotations

import copy
import os

import jax
import numpy as np
import pytest

from mmer_jax import checkpoint
from mmer_jax import evaluate
from mmer_jax import missing
from mmer_jax import train
from mmer_jax.data import pipeline
from mmer_jax.data import schema
from real_toy_data import load, make_directory, toy_config

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
