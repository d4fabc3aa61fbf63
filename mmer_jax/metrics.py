"""Evaluation metrics for emotion recognition, computed exactly on the host with numpy.

Every method reports the same numbers, so they live in one place: for classification WA, UA,
weighted F1, macro F1 and M3ER's per-class one-vs-rest accuracy and its mean ("MA"); for
regression (CMU-MOSI / MOSEI sentiment in [-3, 3]) MAE, Pearson correlation, Acc-2 and its F1 in
MMSA's two conventions (non-zero and has-zero), Acc-7 and Acc-5.

All functions take predictions and labels `[N]` plus an optional boolean `mask` `[N]`; masked-out
rows are dropped first, so padding rows never change a result. An empty selection raises
`ValueError`. Degenerate cases return 0.0 instead of nan.

The conventions (sklearn's and MMSA's): docs/protocol.md#metrics.
"""

from __future__ import annotations

import numpy as np

CLASSIFICATION_KEYS = ('wa', 'ua', 'weighted_f1', 'macro_f1', 'mean_ovr_accuracy')
REGRESSION_KEYS = ('mae', 'corr', 'acc2', 'acc2_has0', 'f1', 'f1_has0', 'acc7', 'acc5')


def _select(mask, *arrays):
  """Flattens `arrays` to [N] and keeps the rows where `mask` is True.

  Raises ValueError on mismatched lengths or when no row is left.
  """
  arrays = [np.asarray(a).reshape(-1) for a in arrays]
  n = arrays[0].shape[0]
  for a in arrays[1:]:
    if a.shape[0] != n:
      raise ValueError(f'predictions and labels must have the same length, got {n} and '
                       f'{a.shape[0]}')
  if mask is not None:
    mask = np.asarray(mask).reshape(-1)
    if mask.dtype != np.bool_:
      raise ValueError(f'mask must be boolean, got dtype {mask.dtype}')
    if mask.shape[0] != n:
      raise ValueError(f'mask has {mask.shape[0]} rows but the predictions have {n}')
    arrays = [a[mask] for a in arrays]
  if arrays[0].shape[0] == 0:
    raise ValueError('no samples to evaluate: the inputs are empty or the mask is all False')
  return arrays


# ---------------------------------------------------------------------------------------------
# Classification.
# ---------------------------------------------------------------------------------------------


def _class_indices(x, name):
  """Checks that `x` holds non-negative integer class indices and returns it as int64."""
  if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_)):
    raise ValueError(f'{name} must hold integer class indices, got dtype {x.dtype}')
  x = x.astype(np.int64)
  if np.any(x < 0):
    raise ValueError(f'{name} must hold non-negative class indices, got {x.min()}')
  return x


def confusion_matrix(pred, label, mask=None, num_classes=None):
  """Counts `[num_classes, num_classes]`, rows = true class, columns = predicted class.

  `num_classes` defaults to one more than the largest index seen; passing it keeps the shape
  fixed and checks that no index is out of range.
  """
  pred, label = _select(mask, pred, label)
  pred, label = _class_indices(pred, 'pred'), _class_indices(label, 'label')
  seen = int(max(pred.max(), label.max())) + 1
  if num_classes is None:
    num_classes = seen
  elif seen > num_classes:
    raise ValueError(f'class index {seen - 1} out of range for num_classes={num_classes}')
  flat = label * num_classes + pred
  return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _per_class(cm):
  """Per-class true positives, label support, prediction counts and F1 from a confusion matrix.

  F1 is `2 tp / (2 tp + fp + fn)`, which is 0 for a class that occurs on only one side.
  """
  tp = np.diag(cm).astype(np.float64)
  support = cm.sum(axis=1).astype(np.float64)
  predicted = cm.sum(axis=0).astype(np.float64)
  denom = support + predicted  # = 2 tp + fp + fn
  f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
  return tp, support, predicted, f1


def _wa(cm):
  return float(np.trace(cm) / cm.sum())


def _ua(cm):
  tp, support, _, _ = _per_class(cm)
  present = support > 0
  return float(np.mean(tp[present] / support[present]))


def _weighted_f1(cm):
  _, support, _, f1 = _per_class(cm)
  return float(np.sum(f1 * support) / np.sum(support))


def _macro_f1(cm):
  _, support, predicted, f1 = _per_class(cm)
  seen = (support + predicted) > 0
  return float(np.mean(f1[seen]))


def _ovr_accuracy(cm):
  """Per class c, the accuracy of the binary problem pred == c vs label == c: (N - fp - fn) / N."""
  tp, support, predicted, _ = _per_class(cm)
  n = cm.sum()
  return (n - (support - tp) - (predicted - tp)) / n


def _mean_ovr_accuracy(cm):
  return float(np.mean(_ovr_accuracy(cm)))


def wa(pred, label, mask=None):
  """Weighted accuracy (WA): the fraction of correct predictions."""
  return _wa(confusion_matrix(pred, label, mask))


def ua(pred, label, mask=None):
  """Unweighted accuracy (UA): mean recall over the classes present in `label`.

  Same as `sklearn.metrics.balanced_accuracy_score`; classes that appear only in `pred` are not
  averaged over (they have no recall).
  """
  return _ua(confusion_matrix(pred, label, mask))


def weighted_f1(pred, label, mask=None):
  """Per-class F1 averaged with weights equal to each class's support in `label`."""
  return _weighted_f1(confusion_matrix(pred, label, mask))


def macro_f1(pred, label, mask=None):
  """Unweighted mean of per-class F1 over the classes present in `label` or `pred`.

  Same as `sklearn.metrics.f1_score(average='macro')` with its default label set: classes that
  occur in neither array are ignored, a class that occurs on one side only contributes 0.
  """
  return _macro_f1(confusion_matrix(pred, label, mask))


def classification_metrics(pred, label, mask=None, num_classes=None):
  """All classification metrics from one confusion matrix.

  Args:
    pred: int [N] predicted class indices.
    label: int [N] true class indices.
    mask: optional bool [N]; rows with False are ignored.
    num_classes: optional number of classes; only checks that indices are in range (the
      averages above are defined by the classes that occur, not by this number).

  Returns:
    dict with keys `wa`, `ua`, `weighted_f1`, `macro_f1`, `mean_ovr_accuracy` (Python floats).
    `mean_ovr_accuracy` averages over the classes 0..num_classes-1 (default: up to the largest
    index seen), so unlike the others it depends on `num_classes`.
  """
  cm = confusion_matrix(pred, label, mask, num_classes)
  return {'wa': _wa(cm), 'ua': _ua(cm), 'weighted_f1': _weighted_f1(cm),
          'macro_f1': _macro_f1(cm), 'mean_ovr_accuracy': _mean_ovr_accuracy(cm)}


# ---------------------------------------------------------------------------------------------
# Regression (MOSI / MOSEI sentiment scores).
# ---------------------------------------------------------------------------------------------


def _floats(mask, pred, label):
  pred, label = _select(mask, pred, label)
  return pred.astype(np.float64), label.astype(np.float64)


def _binary_weighted_f1(pred, label):
  """Weighted F1 of two boolean arrays (0.0 when empty)."""
  if pred.size == 0:
    return 0.0
  return _weighted_f1(confusion_matrix(pred.astype(np.int64), label.astype(np.int64),
                                       num_classes=2))


def _multiclass_acc(pred, label, bound):
  """Accuracy after clipping to [-bound, bound] and rounding to integers (MMSA's Acc-7/Acc-5)."""
  pred = np.round(np.clip(pred, -bound, bound))
  label = np.round(np.clip(label, -bound, bound))
  return float(np.mean(pred == label))


def mae(pred, label, mask=None):
  """Mean absolute error."""
  pred, label = _floats(mask, pred, label)
  return float(np.mean(np.abs(pred - label)))


def corr(pred, label, mask=None):
  """Pearson correlation; 0.0 when either array is constant (undefined correlation)."""
  pred, label = _floats(mask, pred, label)
  if np.ptp(pred) == 0 or np.ptp(label) == 0:
    return 0.0
  dp, dl = pred - pred.mean(), label - label.mean()
  r = np.sum(dp * dl) / np.sqrt(np.sum(dp * dp) * np.sum(dl * dl))
  return float(np.clip(r, -1.0, 1.0))


def _nonzero(pred, label):
  keep = label != 0
  return pred[keep] > 0, label[keep] > 0


def acc2(pred, label, mask=None):
  """Non-zero Acc-2: samples with label 0 are dropped, then `pred > 0` vs `label > 0`.

  Returns 0.0 when every label is 0 (no sample takes part).
  """
  p, l = _nonzero(*_floats(mask, pred, label))
  return float(np.mean(p == l)) if p.size else 0.0


def f1(pred, label, mask=None):
  """Weighted F1 of the non-zero Acc-2 problem (0.0 when every label is 0)."""
  return _binary_weighted_f1(*_nonzero(*_floats(mask, pred, label)))


def acc2_has0(pred, label, mask=None):
  """Has-zero Acc-2: all samples, `pred >= 0` vs `label >= 0`."""
  pred, label = _floats(mask, pred, label)
  return float(np.mean((pred >= 0) == (label >= 0)))


def f1_has0(pred, label, mask=None):
  """Weighted F1 of the has-zero Acc-2 problem."""
  pred, label = _floats(mask, pred, label)
  return _binary_weighted_f1(pred >= 0, label >= 0)


def acc7(pred, label, mask=None):
  """7-class accuracy: clip to [-3, 3], round to the integers -3..3, compare."""
  return _multiclass_acc(*_floats(mask, pred, label), bound=3.0)


def acc5(pred, label, mask=None):
  """5-class accuracy: clip to [-2, 2], round to the integers -2..2, compare."""
  return _multiclass_acc(*_floats(mask, pred, label), bound=2.0)


def regression_metrics(pred, label, mask=None):
  """All regression metrics (MMSA conventions, see the module docstring).

  Args:
    pred: float [N] (or [N, 1]) predicted scores.
    label: float [N] true scores.
    mask: optional bool [N]; rows with False are ignored.

  Returns:
    dict with keys `mae`, `corr`, `acc2`, `acc2_has0`, `f1`, `f1_has0`, `acc7`, `acc5`.
  """
  pred, label = _floats(mask, pred, label)
  return {
      'mae': mae(pred, label),
      'corr': corr(pred, label),
      'acc2': acc2(pred, label),
      'acc2_has0': acc2_has0(pred, label),
      'f1': f1(pred, label),
      'f1_has0': f1_has0(pred, label),
      'acc7': acc7(pred, label),
      'acc5': acc5(pred, label),
  }


def per_class_f1(pred, label, mask=None, num_classes=None) -> list[float]:
  """F1 of each class (sklearn's `f1_score(average=None, labels=range(C))`: 0 for a class that
  occurs on one side only or not at all)."""
  return [float(f) for f in _per_class(confusion_matrix(pred, label, mask, num_classes))[3]]


def per_class_accuracy(pred, label, mask=None, num_classes=None) -> list[float]:
  """One-vs-rest accuracy of each class c in 0..C-1 (M3ER's per-class accuracy): the accuracy of
  the binary problem `pred == c` vs `label == c` over all (unmasked) samples, i.e.
  `sklearn.metrics.accuracy_score(label == c, pred == c)`. Their mean is `mean_ovr_accuracy`."""
  return [float(a) for a in _ovr_accuracy(confusion_matrix(pred, label, mask, num_classes))]


def compute(task, outputs, label, mask=None):
  """Metrics for a model's raw outputs, dispatched on the dataset's task.

  Args:
    task: 'classification' (outputs are logits [N, C], predictions are their argmax) or
      'regression' (outputs are scores [N] or [N, 1]).
    outputs: model outputs (numpy or jax arrays).
    label: [N] labels.
    mask: optional bool [N]; rows with False (padding) are ignored.

  Returns:
    dict of Python floats with `CLASSIFICATION_KEYS` or `REGRESSION_KEYS`.
  """
  outputs = np.asarray(outputs)
  if task == 'classification':
    if outputs.ndim != 2:
      raise ValueError(f'classification outputs must be logits [N, C], got shape {outputs.shape}')
    return classification_metrics(np.argmax(outputs, axis=-1), np.asarray(label), mask,
                                  num_classes=outputs.shape[-1])
  if task == 'regression':
    if outputs.ndim == 2 and outputs.shape[-1] == 1:
      outputs = outputs[:, 0]
    if outputs.ndim != 1:
      raise ValueError(f'regression outputs must be [N] or [N, 1], got shape {outputs.shape}')
    return regression_metrics(outputs, np.asarray(label), mask)
  raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
