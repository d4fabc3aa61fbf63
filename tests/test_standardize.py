"""Tests for data/standardize.py: training-split statistics, applied to batches, kept by the run."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs import fusion_features
from mmer_jax import checkpoint
from mmer_jax import train
from mmer_jax.data import pipeline
from mmer_jax.data import schema
from mmer_jax.data import standardize
from real_toy_data import SPLITS, load, make_directory, toy_config


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
