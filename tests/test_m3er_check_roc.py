"""analysis/m3er_check_roc.py: the ROC of M3ER's modality check against scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as sk

from mmer_jax.analysis import m3er_check_roc


def test_roc_matches_sklearn_and_finds_the_best_f1_threshold():
  rng = np.random.default_rng(0)
  positive = rng.random(400) < 0.3
  score = rng.normal(size=400) + 1.5 * positive
  score[:50] = np.round(score[:50])  # ties
  curve = m3er_check_roc.roc(score, positive)
  assert curve['auc'] == pytest.approx(sk.roc_auc_score(positive, score), abs=1e-12)
  fpr, tpr, _ = sk.roc_curve(positive, score, drop_intermediate=False)
  np.testing.assert_allclose(curve['fpr'], fpr)
  np.testing.assert_allclose(curve['tpr'], tpr)
  best = curve['best_f1']
  flagged = score >= best['threshold']
  assert best['f1'] == pytest.approx(sk.f1_score(positive, flagged))
  thresholds = np.unique(score)
  assert best['f1'] >= max(sk.f1_score(positive, score >= t) for t in thresholds) - 1e-12
