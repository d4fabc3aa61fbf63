"""Degenerate training made visible: a diverged loss stops the run, a collapsed model is flagged.

Two failures look like results when nothing checks for them: features on their own scales (1e-4
to 1e3) drive the loss to ~1e3 and the network to predict one class for everything, and a too
large learning rate turns the loss into NaN. The trainer calls these after every step and every
validation pass:

  check_loss          a non-finite training loss raises `TrainingDiverged` before anything is
                      saved, so the last good checkpoint stays the latest; a loss above
                      `train.loss_bound` gives a warning (once per run)
  prediction_collapse the validation predictions are (nearly) one class for every sample
                      (classification) or one constant score (regression): a warning

Warnings go to the log and to `results.json` (`warnings`), each with a hint at the usual causes.
"""

from __future__ import annotations

import math

import numpy as np

HINT = ('usual causes: unscaled input features (set --config.data.standardize=true, or check the '
        'features\' scales) or a learning rate that is too high (--config.optimizer.learning_rate)')


class TrainingDiverged(FloatingPointError):
  """The training loss became NaN or infinite; the run stopped without saving the bad state."""


def check_loss(loss: float, step: int, *, bound: float | None, workdir: str) -> str | None:
  """Raises TrainingDiverged for a non-finite loss; returns a warning when it exceeds `bound`."""
  if not math.isfinite(loss):
    raise TrainingDiverged(
        f'training loss is {loss} at step {step}: training diverged and stopped; {HINT}. The last '
        f'good checkpoint in {workdir}/checkpoints is intact (this step\'s state was not saved).')
  if bound is not None and loss > bound:
    return (f'training loss {loss:.4g} at step {step} exceeds train.loss_bound={bound:g}; {HINT}')
  return None


COLLAPSE_SHARE = 0.9  # one class predicted for at least this share of the samples ...
COLLAPSE_EXCESS = 0.4  # ... and for this much more than its share of the labels
CONSTANT_RATIO = 0.01  # regression: prediction std below this fraction of the labels' std


def prediction_collapse(task: str, outputs: np.ndarray, labels: np.ndarray, mask: np.ndarray, *,
                        split: str = 'valid') -> str | None:
  """A warning when the predictions have (nearly) collapsed, else None.

  Classification: one class is predicted for at least 90% of the scored samples and for 40
  points more than its share of the labels (so a majority-heavy dataset predicted faithfully is
  not flagged). Regression: the predictions' std is below 1% of the labels' (a constant score).
  `outputs` are a split's eval outputs flattened to rows (logits [N, C] or scores [N]), `labels`
  [N] and `mask` the rows that count. Fewer than two scored rows cannot collapse.
  """
  outputs, labels, mask = np.asarray(outputs), np.asarray(labels), np.asarray(mask, bool)
  n = int(mask.sum())
  if n < 2:
    return None
  if task == 'classification':
    classes = np.argmax(outputs[mask], axis=-1)
    counts = np.bincount(classes)
    top = int(np.argmax(counts))
    share = counts[top] / n
    label_share = float(np.mean(labels[mask] == top))
    if share >= COLLAPSE_SHARE and share >= label_share + COLLAPSE_EXCESS:
      return (f'predictions on the {split} split collapsed to one class: class {top} for '
              f'{counts[top]} of {n} samples ({label_share:.0%} of the labels); {HINT}')
    return None
  scores = outputs[mask].reshape(n, -1)[:, 0].astype(np.float64)
  label_std = float(np.std(labels[mask]))
  if float(np.std(scores)) <= CONSTANT_RATIO * max(label_std, 1e-12):
    return (f'predictions on the {split} split collapsed to a constant score (std '
            f'{np.std(scores):.3g} against the labels\' {label_std:.3g}, mean {scores.mean():.4g}); '
            f'{HINT}')
  return None
