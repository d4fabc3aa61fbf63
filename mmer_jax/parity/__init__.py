"""Numerical parity with the authors' own code: one set of weights, one batch, the same numbers.

  python -m mmer_jax.parity --method=mmin --authors_repo=/path/to/MMIN

builds the authors' networks from the user's checkout (imported at run time, never copied:
`checkout.py`), copies one set of weights into both implementations through a documented map
(`layouts.py` for the generic PyTorch <-> Flax layer layouts), runs both on the same batch and
missing pattern in float32 and float64, and prints one JSON line (`tolerances.py`); the exit code
is 0 only when every quantity is within its tolerance. PyTorch is the extra
`pip install -e '.[parity]'`; it is never needed to train. Each method is a module with
`run(authors_repo, *, precisions, seed, batch_size) -> dict` listed in `METHODS`.

The JSON line and the methods' pages: docs/testing.md#parity-with-the-authors-code.
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
