"""Paired comparisons over seeds, as the results tables report them.

Two rows of a table trained with the same seeds are compared seed by seed: the difference
better - worse per seed, its mean and sample std, how many seeds it holds in, and the paired t
statistic mean / (std / sqrt(n)) against the two-sided 5% critical value of Student's t with
n - 1 degrees of freedom.
"""

from __future__ import annotations

import numpy as np

# Two-sided 5% critical values of Student's t, by degrees of freedom.
T_CRITICAL = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
              9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
              17: 2.110, 18: 2.101, 19: 2.093}  # up to 20 seeds


def paired_difference(diff) -> dict:
  """{mean_diff, std_diff, seeds_held, num_seeds, t, t_critical, significant, holds} of the
  per-seed differences `diff` (better - worse). Undefined statistics (one seed, identical
  differences) are None, which stays valid JSON."""
  diff = np.asarray(diff, np.float64)
  std = float(np.std(diff, ddof=1)) if len(diff) > 1 else None
  t = float(diff.mean() / (std / np.sqrt(len(diff)))) if std and std > 1e-12 else None
  crit = T_CRITICAL.get(len(diff) - 1)
  return {'mean_diff': float(diff.mean()), 'std_diff': std, 'seeds_held': int((diff > 0).sum()),
          'num_seeds': len(diff), 't': t, 't_critical': crit,
          'significant': None if t is None or crit is None else bool(abs(t) > crit),
          'holds': bool(diff.mean() > 0)}
