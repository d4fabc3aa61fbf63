"""Degenerate training made visible: a diverged loss stops the run, a collapsed model is flagged.

Two failures look like results when nothing checks for them: features on their own scales (1e-4
to 1e3) drive the loss to ~1e3 and the network to predict one class for everything, and a too
large learning rate turns the loss into NaN. The trainer calls these after every step and every
validation pass:

  check_loss          a non-finite training loss raises `TrainingDiverged` before anything is
                      saved, so the last good checkpoint stays the latest; a loss above
                      `train.loss_bound` gives a warning (once per run)
  prediction_collapse the validation predictions are one class for every sample (classification)
                      or one constant score (regression): a warning

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


def prediction_collapse(task: str, outputs: np.ndarray, mask: np.ndarray, *,
                        split: str = 'valid') -> str | None:
  """A warning when every scored prediction is the same class (or the same score), else None.

  `outputs` are a split's eval outputs flattened to rows (logits [N, C] or scores [N]) and `mask`
  the rows that count. Fewer than two scored rows cannot collapse.
  """
  outputs, mask = np.asarray(outputs), np.asarray(mask, bool)
  if mask.sum() < 2:
    return None
  if task == 'classification':
    classes = np.argmax(outputs[mask], axis=-1)
    if np.all(classes == classes[0]):
      return (f'predictions on the {split} split collapsed to one class: class {int(classes[0])} '
              f'for all {int(mask.sum())} samples; {HINT}')
    return None
  scores = outputs[mask].reshape(int(mask.sum()), -1)[:, 0].astype(np.float64)
  spread = float(scores.max() - scores.min())
  if spread <= 1e-6 * max(1.0, float(np.abs(scores).max())):
    return (f'predictions on the {split} split collapsed to a constant score ({scores[0]:.4g} for '
            f'all {int(mask.sum())} samples); {HINT}')
  return None
