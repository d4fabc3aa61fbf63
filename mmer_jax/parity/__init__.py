"""Numerical parity with the authors' own code: one set of weights, one batch, the same numbers.

  python -m mmer_jax.parity --method=mmin --authors_repo=/path/to/MMIN

builds the authors' networks from the user's checkout (imported at run time, never copied: see
`checkout.py`), copies one set of weights into both implementations through a documented map
between their parameter names and layouts and ours (`layouts.py` for the generic PyTorch <-> Flax
layer layouts, `mmin.py` for MMIN's names), runs both on the same batch and missing pattern in
float32 and float64, and prints one JSON line (`tolerances.py`):

  {"method", "authors_repo", "authors_commit", "options": {config field: value}, "notes": [...],
   "float32": {quantity: {"max_abs", "max_rel", "tolerance", "ok"}}, "float64": {...}, "ok"}

with `max_rel = max|ours - theirs| / max|theirs|` over each tensor. The exit code is 0 only when
every quantity is within its tolerance. `options` are the config fields the run sets so that our
model computes what theirs does (each a documented departure, e.g. docs/mmin.md). PyTorch is the
extra `pip install -e '.[parity]'`; it is never needed to train.

Each method is a module with `run(authors_repo, *, precisions, seed, batch_size) -> dict` listed
in `METHODS`: MMIN (`mmin.py`, docs/mmin.md), IMDer (`imder.py`, docs/imder_parity.md) and MMGCN
(`mmgcn.py`, docs/mmgcn_parity.md).
"""

from __future__ import annotations

import importlib

METHODS = {
    'mmin': 'mmer_jax.parity.mmin',
    'imder': 'mmer_jax.parity.imder',
    'mmgcn': 'mmer_jax.parity.mmgcn',
}


def get_method(name: str):
  if name not in METHODS:
    raise ValueError(f'--method: expected one of {sorted(METHODS)}, got {name!r}')
  return importlib.import_module(METHODS[name])
