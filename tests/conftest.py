"""Fixtures shared by the test modules, and the XLA compilation cache of a test run."""

from __future__ import annotations

import os
import pathlib
import tempfile

# One persistent XLA compilation cache for the test processes and the programs they start (they
# inherit the environment): many tests compile the same smoke-size programs again, in another
# process (a killed run and its resumption, a sweep member's separate run, a config's smoke run
# and its gradcheck). A hit loads the executable the same HLO compiled to, so no result changes.
# JAX keys entries by program, options and versions; set JAX_COMPILATION_CACHE_DIR to move it.
# JAX reads these variables when it is imported (below, in the test process; at start-up, in a
# subprocess), so they are the one setting for both. A size limit turns on JAX's file lock around
# every read and write (without one, a process can read an entry another is still writing:
# parallel test workers do).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), f'mmer_jax_tests_xla_cache_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(4 << 30))  # bytes; least recent go first

import jax  # noqa: E402  (after the cache's environment)
import pytest  # noqa: E402

from configs import fusion_features  # noqa: E402
import toy_data  # noqa: E402


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


@pytest.fixture(scope='module')
def grouped_toy_config(tmp_path_factory):
  """fusion_features on a 90-row toy directory, training masks drawn on the host at rate 0.5 in
  one-pattern batches (`train.mask_draw='host_grouped'`): epochs of different lengths."""
  config = fusion_features.get_config()
  config.data.features_dir = str(toy_data.write_features_dir(tmp_path_factory.mktemp('g') / 'toy', n=90))
  config.data.batch_size = 8
  config.train.missing = 'rate'
  config.train.missing_rate = 0.5
  config.train.mask_draw = 'host_grouped'
  return config


# The smoke subset (`python -m pytest -m smoke`): what `.ci/run` runs on Python 3.12 and 3.13 after
# installing there, a few minutes: every module imports, the numerical core, one training run end
# to end with its progress log. Their slow tests stay out.
SMOKE_FILES = frozenset({
    'test_imports.py', 'test_metrics.py', 'test_missing.py', 'test_steps.py', 'test_stages.py',
    'test_base.py', 'test_optim.py', 'test_writers.py', 'test_safe_pickle.py', 'test_pipeline.py',
    'test_graphs.py',
})


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.path.name in SMOKE_FILES and not item.get_closest_marker('slow'):
      item.add_marker(pytest.mark.smoke)
