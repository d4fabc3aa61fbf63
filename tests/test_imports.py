"""Every module of the package imports (on each supported Python and JAX: the smoke subset of
`.ci/run` runs this on 3.12 and 3.13), and `main` parses its flags."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import mmer_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(mmer_jax.__path__, 'mmer_jax.'))


def test_the_package_has_its_modules():
  for name in ('mmer_jax.main', 'mmer_jax.train', 'mmer_jax.models.imder_head',
               'mmer_jax.methods.mmgcn', 'mmer_jax.data.synthetic', 'mmer_jax.parity'):
    assert name in MODULES


@pytest.mark.parametrize('name', MODULES)
def test_module_imports(name):
  importlib.import_module(name)


def test_main_help_lists_its_flags():
  done = subprocess.run([sys.executable, '-m', 'mmer_jax.main', '--help'], capture_output=True,
                        text=True, check=False, timeout=120)
  out = done.stdout + done.stderr  # absl prints the help and exits 1
  for flag in ('--config', '--workdir', '--mode', '--stage'):
    assert flag in out
