"""Importing the authors' code from the user's checkout at run time (never copied into mmer_jax)."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys


def require_torch():
  """Imports torch, or says how to get it (the `[parity]` extra)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit("the parity check needs PyTorch: pip install -e '.[parity]'") from e
  return torch


def commit(repo: str) -> str | None:
  """The checkout's git commit, when it is a git checkout."""
  try:
    out = subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


@contextlib.contextmanager
def on_path(repo: str, required: tuple[str, ...]):
  """Puts `repo` first on sys.path while importing from it; checks the files it must have.

  The authors' top-level packages have generic names (`models`, `utils`, ...): modules of those
  names imported before are set aside and restored afterwards, so neither side shadows the other.
  """
  repo = os.path.abspath(os.path.expanduser(repo))
  missing = [f for f in required if not os.path.exists(os.path.join(repo, f))]
  if missing:
    raise SystemExit(f'--authors_repo={repo}: not the expected checkout, it lacks {missing}')
  tops = {f.split('/')[0].removesuffix('.py') for f in required}
  saved = {k: v for k, v in sys.modules.items() if k.split('.')[0] in tops}
  for k in saved:
    del sys.modules[k]
  sys.path.insert(0, repo)
  try:
    yield
  finally:
    sys.path.remove(repo)
    for k in [k for k in sys.modules if k.split('.')[0] in tops]:
      del sys.modules[k]
    sys.modules.update(saved)


def import_names(repo: str, names: dict[str, str], required: tuple[str, ...]) -> dict:
  """{alias: 'module:attribute'} imported from the checkout -> {alias: object}."""
  out = {}
  with on_path(repo, required):
    for alias, target in names.items():
      module, attr = target.split(':')
      out[alias] = getattr(importlib.import_module(module), attr)
  return out
