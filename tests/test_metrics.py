"""Tests for mmer_jax.metrics: agreement with scikit-learn / numpy, masks, closed-form cases."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from mmer_jax import metrics

SEEDS = range(8)


def _sk(fn, *args, **kwargs):
  """Calls a scikit-learn metric with its 'class only on one side' warnings silenced."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    return fn(*args, **kwargs)


def _sk_ovr_accuracy(pred, label, num_classes=None):
  """Per class c in 0..C-1, sklearn's accuracy of the binary problem pred == c vs label == c."""
  c = num_classes or int(max(pred.max(), label.max())) + 1
  return [skm.accuracy_score(label == k, pred == k) for k in range(c)]


def _sk_classification(pred, label, num_classes=None):
  return {
      'wa': skm.accuracy_score(label, pred),
      'ua': _sk(skm.balanced_accuracy_score, label, pred),
      'weighted_f1': _sk(skm.f1_score, label, pred, average='weighted'),
      'macro_f1': _sk(skm.f1_score, label, pred, average='macro'),
      'mean_ovr_accuracy': np.mean(_sk_ovr_accuracy(pred, label, num_classes)),
  }


def _mmsa_regression(pred, label):
  """The MMSA reference implementation, written out with sklearn/numpy.

  Where MMSA would give nan (constant arrays, no non-zero label) it holds our documented 0.0.
  """
  nz = label != 0
  constant = np.ptp(pred) == 0 or np.ptp(label) == 0
  return {
      'mae': skm.mean_absolute_error(label, pred),
      'corr': 0.0 if constant else np.corrcoef(pred, label)[0, 1],
      'acc2': skm.accuracy_score(label[nz] > 0, pred[nz] > 0) if nz.any() else 0.0,
      'f1': _sk(skm.f1_score, label[nz] > 0, pred[nz] > 0, average='weighted')
            if nz.any() else 0.0,
      'acc2_has0': skm.accuracy_score(label >= 0, pred >= 0),
      'f1_has0': _sk(skm.f1_score, label >= 0, pred >= 0, average='weighted'),
      'acc7': np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(label, -3, 3))),
      'acc5': np.mean(np.round(np.clip(pred, -2, 2)) == np.round(np.clip(label, -2, 2))),
  }


def _assert_close(got, want):
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)


def _regression_data(rng, n):
  # Labels on MOSI's grid of annotator means (multiples of 1/3, many exact zeros and halves).
  label = rng.integers(-9, 10, n) / 3.0
  label[rng.random(n) < 0.1] = 0.0
  pred = np.clip(label + rng.normal(0, 1.0, n), -3.5, 3.5)
  pred[rng.random(n) < 0.05] = 0.0
  return pred, label


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize('seed', SEEDS)
def test_classification_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  n, c = int(rng.integers(1, 200)), int(rng.integers(2, 8))
  label = rng.integers(0, c, n)
  pred = np.where(rng.random(n) < 0.5, label, rng.integers(0, c, n))
  got = metrics.classification_metrics(pred, label, num_classes=c)
  _assert_close(got, _sk_classification(pred, label, num_classes=c))
  assert got['wa'] == metrics.wa(pred, label)
  assert got['ua'] == metrics.ua(pred, label)
  assert got['weighted_f1'] == metrics.weighted_f1(pred, label)
  assert got['macro_f1'] == metrics.macro_f1(pred, label)
  np.testing.assert_allclose(metrics.per_class_f1(pred, label, num_classes=c),
                             skm.f1_score(label, pred, average=None, labels=range(c), zero_division=0))
  np.testing.assert_allclose(metrics.per_class_accuracy(pred, label, num_classes=c),
                             _sk_ovr_accuracy(pred, label, c), rtol=1e-12)
  assert got['mean_ovr_accuracy'] == pytest.approx(1 - 2 * (1 - got['wa']) / c)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40))
def test_classification_matches_sklearn_property(pairs):
  # Small class ranges make classes that occur on one side only (the edge cases) common.
  pred, label = (np.array(x) for x in zip(*pairs))
  _assert_close(metrics.classification_metrics(pred, label), _sk_classification(pred, label))


def test_classification_closed_form():
  label = np.array([0, 0, 0, 0, 1, 1])
  pred = np.array([0, 0, 0, 1, 1, 2])  # class 2 is only predicted
  m = metrics.classification_metrics(pred, label)
  assert m['wa'] == pytest.approx(4 / 6)
  assert m['ua'] == pytest.approx((3 / 4 + 1 / 2) / 2)  # class 2 has no recall: not averaged
  f1_0, f1_1, f1_2 = 2 * 3 / (2 * 3 + 1), 2 * 1 / (2 * 1 + 2), 0.0
  assert m['weighted_f1'] == pytest.approx((4 * f1_0 + 2 * f1_1) / 6)
  assert m['macro_f1'] == pytest.approx((f1_0 + f1_1 + f1_2) / 3)  # class 2 costs a zero term
  # One-vs-rest: class 0 misses one sample (fn), class 1 one fn and one fp, class 2 one fp.
  assert m['mean_ovr_accuracy'] == pytest.approx((5 / 6 + 4 / 6 + 5 / 6) / 3)


def test_per_class_accuracy_closed_form():
  # 3 classes, 6 samples: errors 0 -> 1 (sample 1) and 2 -> 0 (sample 5).
  label = np.array([0, 0, 1, 1, 2, 2])
  pred = np.array([0, 1, 1, 1, 2, 0])
  # class 0: fp at 5, fn at 1 -> 4/6; class 1: fp at 1 -> 5/6; class 2: fn at 5 -> 5/6.
  want = [4 / 6, 5 / 6, 5 / 6]
  np.testing.assert_allclose(metrics.per_class_accuracy(pred, label), want)
  np.testing.assert_allclose(metrics.per_class_accuracy(pred, label), _sk_ovr_accuracy(pred, label))
  m = metrics.classification_metrics(pred, label)
  assert m['mean_ovr_accuracy'] == pytest.approx(np.mean(want))
  # A class that never occurs is a binary problem solved on every sample; num_classes adds it.
  np.testing.assert_allclose(metrics.per_class_accuracy(pred, label, num_classes=4), want + [1.0])
  assert metrics.classification_metrics(pred, label, num_classes=4)['mean_ovr_accuracy'] == \
      pytest.approx(np.mean(want + [1.0]))
  # The mask drops samples before anything is counted: without sample 5 only sample 1 is wrong.
  mask = np.arange(6) < 5
  np.testing.assert_allclose(metrics.per_class_accuracy(pred, label, mask, num_classes=3),
                             [4 / 5, 4 / 5, 1.0])
  logits = np.eye(3)[pred].astype(np.float32)
  assert metrics.compute('classification', logits, label)['mean_ovr_accuracy'] == \
      pytest.approx(np.mean(want))


def test_classification_perfect_and_constant():
  label = np.array([2, 2, 2])
  assert metrics.classification_metrics(label, label) == {
      'wa': 1.0, 'ua': 1.0, 'weighted_f1': 1.0, 'macro_f1': 1.0, 'mean_ovr_accuracy': 1.0}
  m = metrics.classification_metrics(np.array([0, 0, 0]), label)
  # One-vs-rest over classes 0..2: class 1 is right (never predicted, never true), 0 and 2 wrong.
  assert m == {'wa': 0.0, 'ua': 0.0, 'weighted_f1': 0.0, 'macro_f1': 0.0,
               'mean_ovr_accuracy': pytest.approx(1 / 3)}


@pytest.mark.parametrize('seed', SEEDS)
def test_classification_mask(seed):
  rng = np.random.default_rng(seed)
  n = 50
  label, pred = rng.integers(0, 4, n), rng.integers(0, 4, n)
  mask = rng.random(n) < 0.6
  mask[0] = True
  masked = metrics.classification_metrics(pred, label, mask)
  assert masked == metrics.classification_metrics(pred[mask], label[mask])
  # Garbage padding rows (with class indices never seen otherwise) change nothing.
  pad_pred = np.concatenate([pred[mask], np.full(17, 3), rng.integers(0, 4, 5)])
  pad_label = np.concatenate([label[mask], np.zeros(17, int), rng.integers(0, 4, 5)])
  pad_mask = np.arange(len(pad_pred)) < mask.sum()
  assert metrics.classification_metrics(pad_pred, pad_label, pad_mask) == masked


def test_classification_errors():
  with pytest.raises(ValueError, match='no samples'):
    metrics.classification_metrics(np.array([1, 2]), np.array([1, 2]), np.array([False, False]))
  with pytest.raises(ValueError, match='no samples'):
    metrics.wa(np.array([], int), np.array([], int))
  with pytest.raises(ValueError, match='out of range'):
    metrics.classification_metrics(np.array([0, 5]), np.array([0, 1]), num_classes=4)
  with pytest.raises(ValueError, match='same length'):
    metrics.wa(np.array([0, 1]), np.array([0]))
  with pytest.raises(ValueError, match='integer'):
    metrics.wa(np.array([0.5, 1.0]), np.array([0, 1]))
  with pytest.raises(ValueError, match='boolean'):
    metrics.wa(np.array([0, 1]), np.array([0, 1]), mask=np.array([1, 0]))


# --- regression -----------------------------------------------------------------------------


@pytest.mark.parametrize('seed', SEEDS)
def test_regression_matches_mmsa(seed):
  rng = np.random.default_rng(seed)
  pred, label = _regression_data(rng, int(rng.integers(3, 300)))
  got = metrics.regression_metrics(pred, label)
  _assert_close(got, _mmsa_regression(pred, label))
  for k, v in got.items():
    assert getattr(metrics, k)(pred, label) == v


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-8, 8), st.integers(-6, 6)), min_size=2, max_size=40))
def test_regression_matches_mmsa_property(pairs):
  # Half-integer grids hit the boundaries: exact zeros, rounding ties, clipping.
  pred, label = (np.array(x) / 2.0 for x in zip(*pairs))
  _assert_close(metrics.regression_metrics(pred, label), _mmsa_regression(pred, label))


def test_regression_closed_form():
  pred = np.array([2.6, -0.4, 0.0, 1.5, -3.7])
  label = np.array([3.0, 0.0, -1.0, 2.5, -2.0])
  m = metrics.regression_metrics(pred, label)
  assert m['mae'] == pytest.approx((0.4 + 0.4 + 1.0 + 1.0 + 1.7) / 5)
  # Non-zero: drop label 0 -> pairs (+,+), (0 -> not > 0, -), (+,+), (-,-): all agree.
  assert m['acc2'] == 1.0 and m['f1'] == 1.0
  # Has-zero: -0.4 vs 0.0 disagrees, 0.0 vs -1.0 disagrees.
  assert m['acc2_has0'] == pytest.approx(3 / 5)
  # Acc-7: rounds [3, -0, 0, 2, -3] vs [3, 0, -1, 2, -2] (1.5 and 2.5 round half to even).
  assert m['acc7'] == pytest.approx(3 / 5)
  # Acc-5: clipped [2, -0, 0, 2, -2] vs [2, 0, -1, 2, -2].
  assert m['acc5'] == pytest.approx(4 / 5)


def test_corr_degenerate_is_zero():
  label = np.array([1.0, 2.0, 3.0])
  assert metrics.corr(np.full(3, 0.1), label) == 0.0
  assert metrics.corr(label, np.full(3, -1.0)) == 0.0
  assert metrics.corr(np.array([0.5]), np.array([2.0])) == 0.0
  assert metrics.corr(label, 2 * label + 1) == pytest.approx(1.0)
  assert metrics.corr(label, -label) == pytest.approx(-1.0)


def test_acc2_all_zero_labels():
  m = metrics.regression_metrics(np.array([0.3, -0.2]), np.zeros(2))
  assert m['acc2'] == 0.0 and m['f1'] == 0.0
  assert m['acc2_has0'] == 0.5
  assert all(np.isfinite(v) for v in m.values())


@pytest.mark.parametrize('seed', SEEDS)
def test_regression_mask(seed):
  rng = np.random.default_rng(seed)
  pred, label = _regression_data(rng, 80)
  mask = rng.random(80) < 0.5
  mask[:2] = True
  masked = metrics.regression_metrics(pred, label, mask)
  assert masked == metrics.regression_metrics(pred[mask], label[mask])
  k = int(mask.sum())
  pad_pred = np.concatenate([pred[mask], rng.normal(0, 100, 9), [np.inf, -np.inf]])
  pad_label = np.concatenate([label[mask], rng.normal(0, 100, 9), [0.0, 7.0]])
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # padding must not even produce inf/nan warnings
    assert metrics.regression_metrics(pad_pred, pad_label, np.arange(k + 11) < k) == masked
  with pytest.raises(ValueError, match='no samples'):
    metrics.regression_metrics(pred, label, np.zeros(80, bool))


# --- compute --------------------------------------------------------------------------------


def test_compute_classification():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(30, 5)).astype(np.float32)
  label = rng.integers(0, 5, 30)
  mask = np.arange(30) < 25
  got = metrics.compute('classification', logits, label, mask)
  assert got == metrics.classification_metrics(logits.argmax(-1), label, mask)
  assert set(got) == set(metrics.CLASSIFICATION_KEYS)


def test_compute_regression():
  rng = np.random.default_rng(1)
  pred, label = _regression_data(rng, 40)
  mask = np.arange(40) < 33
  want = metrics.regression_metrics(pred, label, mask)
  assert metrics.compute('regression', pred, label, mask) == want
  assert metrics.compute('regression', pred[:, None], label, mask) == want
  assert set(want) == set(metrics.REGRESSION_KEYS)


def test_compute_accepts_jax_arrays():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
  label = jnp.array([0, 1, 1])
  assert metrics.compute('classification', logits, label)['wa'] == pytest.approx(2 / 3)


def test_compute_errors():
  with pytest.raises(ValueError, match='task'):
    metrics.compute('ranking', np.zeros(3), np.zeros(3))
  with pytest.raises(ValueError, match='logits'):
    metrics.compute('classification', np.zeros(3), np.zeros(3, int))
  with pytest.raises(ValueError, match=r'\[N, 1\]'):
    metrics.compute('regression', np.zeros((3, 2)), np.zeros(3))
