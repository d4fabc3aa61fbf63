"""Every module of the package imports (on each supported Python and JAX: the smoke subset of
`.ci/run` runs this on 3.12 and 3.13), and each command-line entry point prints its help."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import mmer_jax

# The modules that define absl flags at import (entry points): each in its own process, since two
# of them (or a launcher a test file imported) define flags of the same name.
ENTRY_POINTS = {'mmer_jax.main': ('--config', '--workdir', '--mode', '--stage'),
                'mmer_jax.benchmark': ('--config', '--steps'),
                'mmer_jax.compare': ('--out',),
                'mmer_jax.parity': ('--method', '--authors_repo'),
                'mmer_jax.data': ('--dataset',)}
MODULES = sorted(m.name for m in pkgutil.walk_packages(mmer_jax.__path__, 'mmer_jax.')
                 if m.name not in ENTRY_POINTS and not m.name.endswith('.__main__'))


def test_the_package_has_its_modules():
  for name in ('mmer_jax.train', 'mmer_jax.models.imder_head', 'mmer_jax.methods.mmgcn',
               'mmer_jax.data.synthetic', 'mmer_jax.parity.imder'):
    assert name in MODULES


@pytest.mark.parametrize('name', MODULES)
def test_module_imports(name):
  importlib.import_module(name)


def test_entry_points_print_their_flags():
  procs = {name: subprocess.Popen([sys.executable, '-m', name, '--help'], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
           for name in ENTRY_POINTS}
  for name, proc in procs.items():
    out, _ = proc.communicate(timeout=180)  # absl prints the help and exits 1
    assert 'Traceback' not in out, out
    for flag in ENTRY_POINTS[name]:
      assert flag in out, (name, flag, out[-2000:])
