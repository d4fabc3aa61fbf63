"""A restricted unpickler for the official feature releases (.pkl files we did not write).

`pickle.load` runs whatever callable a file names, so a tampered `IEMOCAP_features.pkl` could run
code on the user's machine. The releases only ever need numpy arrays, dtypes and scalars inside
builtin containers, so `load` resolves exactly those globals and rejects everything else with a
`schema.DataError` *before* anything is called: nothing in a rejected file runs.

  data = safe_pickle.load('/path/IEMOCAP_features.pkl')

What is allowed and why: docs/data.md#the-restricted-unpickler.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import os
import pickle
from typing import Any, BinaryIO

from mmer_jax.data import schema

# (module, name) pairs after mapping Python 2 names; numpy.core.* is resolved in numpy._core.*
# when numpy 2 is installed (numpy.core is a deprecated alias there).
_NUMPY_NAMES = {
    'multiarray': ('_reconstruct', 'scalar'),
    'numeric': ('_frombuffer',),
}
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {('numpy', 'ndarray'), ('numpy', 'dtype')}
    | {(f'{root}.{sub}', name)
       for root in ('numpy.core', 'numpy._core')
       for sub, names in _NUMPY_NAMES.items() for name in names}
    | {('builtins', n) for n in ('set', 'frozenset', 'list', 'dict', 'tuple', 'range',
                                 'bytearray', 'complex', 'slice')}
    | {('_codecs', 'encode')}
    | {('collections', n) for n in ('OrderedDict', 'defaultdict', 'deque')}
)


def _python3_name(module: str, name: str) -> tuple[str, str]:
  """Python 2 module/name spellings -> Python 3 (what the stdlib does under fix_imports)."""
  if (module, name) in _compat_pickle.NAME_MAPPING:
    return _compat_pickle.NAME_MAPPING[(module, name)]
  return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RestrictedUnpickler(pickle.Unpickler):
  """`pickle.Unpickler` whose `find_class` resolves only `ALLOWED` globals."""

  def __init__(self, file: BinaryIO, *, source: str, encoding: str = 'latin1'):
    super().__init__(file, encoding=encoding, fix_imports=True)
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    module, name = _python3_name(module, name)
    if (module, name) not in ALLOWED:
      raise schema.DataError(
          self._source, 'pickle',
          f'only numpy arrays and builtin containers; the file asks for {module}.{name}')
    if module.startswith('numpy.core.'):
      try:  # numpy 2: the implementation lives in numpy._core; numpy.core only warns.
        return getattr(importlib.import_module('numpy._core.' + module[len('numpy.core.'):]), name)
      except ImportError:
        pass
    return getattr(importlib.import_module(module), name)

  def persistent_load(self, pid):
    raise schema.DataError(self._source, 'pickle',
                           'a self-contained pickle; the file asks for a persistent id')


def load_file(f: BinaryIO, *, source: str, encoding: str = 'latin1') -> Any:
  """Unpickles one object from an open binary file (e.g. the payload of an object .npy)."""
  try:
    return RestrictedUnpickler(f, source=source, encoding=encoding).load()
  except schema.DataError:
    raise
  except Exception as e:  # truncated, corrupt, or not a pickle at all
    raise schema.DataError(source, 'pickle',
                           f'a readable pickle file ({type(e).__name__}: {e})') from e


def load(path: str | os.PathLike, *, encoding: str = 'latin1') -> Any:
  """Reads a release pickle, allowing only numpy arrays/dtypes/scalars and builtin containers."""
  path = os.fspath(path)
  with open(path, 'rb') as f:
    return load_file(f, source=path, encoding=encoding)


def loads(data: bytes, *, source: str = '<bytes>', encoding: str = 'latin1') -> Any:
  """`load` for bytes in memory."""
  return load_file(io.BytesIO(data), source=source, encoding=encoding)
