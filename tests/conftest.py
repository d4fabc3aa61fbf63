"""Fixtures shared by the test modules."""

from __future__ import annotations

import pathlib

import jax
import pytest


def _shared_data_dir() -> pathlib.Path | None:
  """The repository's ../shared/data (real datasets), or /work/shared/data, or None."""
  for candidate in (pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data',
                    pathlib.Path('/work/shared/data')):
    if candidate.is_dir():
      return candidate
  return None


@pytest.fixture(scope='session')
def shared_data_dir() -> pathlib.Path:
  """Directory of the real datasets (e.g. meld_text/); tests that need it skip without it."""
  path = _shared_data_dir()
  if path is None:
    pytest.skip('shared/data (real datasets) not found next to the repository')
  return path


@pytest.fixture
def x64():
  """Enables float64 for one test and restores the previous setting afterwards."""
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', previous)
