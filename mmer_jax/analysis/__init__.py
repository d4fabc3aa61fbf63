"""The papers' figures, chosen by `config.analysis` and run after the test evaluation.

Each entry is `name -> function(run, params, workdir) -> list of written paths`, where `run` is
the evaluated `train.Run` and `params` the selected checkpoint's parameters: `imagination_pca`,
`imagination_mse` (MMIN), `recovery_pca` (IMDer), `mmgcn_adjacency` (MMGCN) and `m3er_check_roc`
(M3ER).

They run after results.json is written and only add to it, so one that fails (a figure that
cannot be drawn for this dataset, a full disk) is logged as a warning and the next one runs: the
run still succeeds. An unknown name is a config error and raises (stages.py checks it up front).

What each one draws: docs/training.md#figures.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from absl import logging

_ANALYSES = {
    'imagination_pca': ('mmer_jax.analysis.imagination_pca', 'write'),
    'imagination_mse': ('mmer_jax.analysis.imagination_mse', 'write'),
    'recovery_pca': ('mmer_jax.analysis.recovery_pca', 'write'),
    'mmgcn_adjacency': ('mmer_jax.analysis.mmgcn_adjacency', 'write'),
    'm3er_check_roc': ('mmer_jax.analysis.m3er_check_roc', 'write'),
}
NAMES = tuple(_ANALYSES)


def get_analysis(name: str):
  if name not in _ANALYSES:
    raise ValueError(f'config.analysis: unknown {name!r}; expected some of {", ".join(NAMES)}')
  module, fn = _ANALYSES[name]
  return getattr(importlib.import_module(module), fn)


def run_all(names: Iterable[str], run, params, workdir: str) -> list[str]:
  """Runs each analysis in `names`; returns every path written by those that succeeded.

  Every name is resolved first (ValueError for an unknown one, before anything runs); a failure
  inside an analysis is logged as a warning and skipped (module docstring).
  """
  resolved = [(name, get_analysis(name)) for name in names or ()]
  paths = []
  for name, fn in resolved:
    try:
      paths += fn(run, params, workdir)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('analysis %s failed (%s: %s) and was skipped; the run\'s results are '
                      'unaffected.', name, type(e).__name__, e, exc_info=True)
  return paths
