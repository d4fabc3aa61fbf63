"""Tests for diagnostics.py: a collapsed model is flagged, a diverged loss stops the run."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import fusion_features
from mmer_jax import checkpoint
from mmer_jax import diagnostics
from mmer_jax import train
from real_toy_data import make_directory, toy_config


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
