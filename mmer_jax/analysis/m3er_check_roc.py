"""M3ER's modality check, measured: does it find the modalities replaced by noise?

On the validation and the evaluation split, one modality of every sample is replaced by noise
(`evaluate.noise_batches` at fraction 1, keyed as the grid's `noise=1.0` row). Each present
(sample, modality) is a case, positive when it was replaced. For both check statistics
(correlation, typicality) the ROC over the threshold, and for the run's own statistic and
threshold the check's actual decisions: precision and recall of "ineffectual". Writes
`m3er_check_roc.json` and `m3er_check_roc.png` (one panel per split).

The statistics' rules, the JSON's fields and the results:
docs/m3er.md#the-checks-precision-and-recall.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from mmer_jax import evaluate
from mmer_jax import writers

STATISTICS = ('correlation', 'typicality')


def roc(flag_score: np.ndarray, positive: np.ndarray) -> dict:
  """ROC of "flag when score >= threshold" over every distinct threshold (higher = flag)."""
  order = np.argsort(-flag_score, kind='stable')
  score, pos = flag_score[order], positive[order].astype(np.float64)
  last = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1]  # the last case of each threshold
  tp, fp = np.cumsum(pos)[last], np.cumsum(1 - pos)[last]
  num_pos, num_neg = max(pos.sum(), 1.0), max((1 - pos).sum(), 1.0)
  tpr, fpr = np.r_[0.0, tp / num_pos], np.r_[0.0, fp / num_neg]
  precision = np.r_[1.0, tp / np.maximum(tp + fp, 1.0)]
  f1 = 2 * precision * tpr / np.maximum(precision + tpr, 1e-12)
  best = int(np.argmax(f1))
  thresholds = np.r_[np.inf, score[last]]
  return {'auc': float(np.trapezoid(tpr, fpr)), 'thresholds': thresholds.tolist(), 'tpr': tpr.tolist(),
          'fpr': fpr.tolist(), 'precision': precision.tolist(),
          'best_f1': {'threshold': float(thresholds[best]), 'precision': float(precision[best]),
                      'recall': float(tpr[best]), 'f1': float(f1[best])}}


def _thin(curve: dict, points: int = 200) -> dict:
  """At most `points` points of each curve array (for a readable JSON)."""
  n = len(curve['tpr'])
  keep = np.unique(np.linspace(0, n - 1, min(points, n)).astype(int))
  return {k: ([v[i] for i in keep] if isinstance(v, list) else v) for k, v in curve.items()}


def measure(run, params, split: str, *, fraction: float = 1.0) -> dict:
  method = run.method
  config = run.config
  check = jax.jit(method.modality_check)
  best_partner, typicality, positive, flagged = [], [], [], []
  _, snr = evaluate.configured_noise(config.eval)
  for batch, noised in evaluate.noise_batches(
      run.eval_batches(split)(), rng=evaluate.noise_key(config.seed, fraction), fraction=fraction,
      snr_db=snr, available=run.spec.available):
    out = jax.device_get(check(params, batch))
    present = np.asarray(batch['modality_mask'])[:, method.column]
    case = present & np.asarray(batch['example_mask'])[:, None]
    best_partner.append(np.asarray(out['agreement'])[case])
    typicality.append(np.asarray(out['typicality'])[case])
    positive.append(np.asarray(noised)[:, method.column][case])
    flagged.append((present & ~np.asarray(out['effective']))[case])
  positive, flagged = np.concatenate(positive), np.concatenate(flagged)
  best_partner, typicality = np.concatenate(best_partner), np.concatenate(typicality)
  tp = float((positive & flagged).sum())
  curves = {'correlation': roc(-np.where(np.isfinite(best_partner), best_partner, np.inf), positive),
            'typicality': roc(typicality, positive)}
  curves['correlation']['thresholds'] = [-t for t in curves['correlation']['thresholds']]
  curves['correlation']['best_f1']['threshold'] *= -1
  for curve in curves.values():
    curve['best_f1']['tau'] = curve['best_f1'].pop('threshold')
  return {'cases': int(len(positive)), 'positives': int(positive.sum()),
          'at_tau': {'precision': tp / max(float(flagged.sum()), 1.0),
                     'recall': tp / max(float(positive.sum()), 1.0)},
          'roc': {k: _thin(v) for k, v in curves.items()}}


def write(run, params, workdir: str) -> list[str]:
  config = run.config
  m = config.method
  splits = list(dict.fromkeys(['valid', config.eval.split]))
  results = {split: measure(run, params, split) for split in splits}
  tau = m.tau if m.check_statistic == 'correlation' else m.typicality_tau
  report = {'fraction': 1.0, 'snr_db': evaluate.configured_noise(config.eval)[1],
            'statistic': m.check_statistic, 'tau': tau, 'modality_check': bool(m.modality_check),
            'splits': results}
  path = os.path.join(workdir, 'm3er_check_roc.json')
  writers.write_atomic(path, json.dumps(report, indent=1))
  return [path, _plot(report, os.path.join(workdir, 'm3er_check_roc.png'))]


def _plot(report: dict, path: str) -> str:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  splits = report['splits']
  fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 4), squeeze=False)
  for ax, (split, result) in zip(axes[0], splits.items()):
    for name, curve in result['roc'].items():
      ax.plot(curve['fpr'], curve['tpr'], label=f"{name} (AUC {curve['auc']:.3f})")
    ax.plot([0, 1], [0, 1], ':', color='grey')
    ax.set(title=f'{split}: noise-replaced modality found', xlabel='false positive rate',
           ylabel='true positive rate')
    ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
