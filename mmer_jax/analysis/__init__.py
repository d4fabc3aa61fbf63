"""The papers' figures, chosen by `config.analysis` and run after the test evaluation.

Each entry is `name -> function(run, params, workdir) -> list of written paths`, where `run` is
the evaluated `train.Run` and `params` the selected checkpoint's parameters:

  imagination_pca   MMIN's picture: an imagined vs. real embedding, PCA (PNG)
  imagination_mse   MMIN's imagination claim: MSE of the imagined missing embeddings against the
                    train-mean and zero imputers, per missing condition (JSON)
"""

from __future__ import annotations

import importlib
from typing import Iterable

_ANALYSES = {
    'imagination_pca': ('mmer_jax.analysis.imagination_pca', 'write'),
    'imagination_mse': ('mmer_jax.analysis.imagination_mse', 'write'),
}
NAMES = tuple(_ANALYSES)


def get_analysis(name: str):
  if name not in _ANALYSES:
    raise ValueError(f'config.analysis: unknown {name!r}; expected some of {", ".join(NAMES)}')
  module, fn = _ANALYSES[name]
  return getattr(importlib.import_module(module), fn)


def run_all(names: Iterable[str], run, params, workdir: str) -> list[str]:
  """Runs each analysis in `names`; returns every path they wrote."""
  paths = []
  for name in names or ():
    paths += get_analysis(name)(run, params, workdir)
  return paths
