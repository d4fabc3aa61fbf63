"""Every registered method and variant keeps the contract the trainer relies on.

For each case (`contract_checks.cases()`: every name in the registry, times the variants its
module declares), on its registered example config with small dims: the loss is per example with
the shape of `example_mask`; padding rows change neither the real rows' losses and predictions
nor the weighted loss; `predict` has the task's shape and is deterministic for a key;
`trainable_mask` matches the parameter tree and frozen leaves do not move in a step while
trainable ones do; gradients are finite (and not all zero); sharded jit over 8 devices equals
pmap over 8 devices and one device. A new method is covered by registering it.

The checks run in one subprocess with 8 host CPU devices (`contract_checks.py`).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import contract_checks

REPO = pathlib.Path(__file__).resolve().parents[1]
CASES = contract_checks.cases()
# With -m slow (the default run stays within CI's time; `seconds` in each report sizes a case):
# - imder:imder, about 5 minutes on 2 cores (compiling the score U-Nets inside the sampler and
#   the loss, on one device, jit and pmap); imder:pretrain (about 80 s) keeps IMDer's projections,
#   fusion head and trainable mask in the default run, tests/test_imder_method.py its recovery.
# - mmin_ae, mmin_nocycle and augmented: mmin's networks with a plain autoencoder or without the
#   backward net, and full_baseline's network; mmin and full_baseline cover MMIN's networks,
#   frozen teacher and stage.
# - M3ER's original_mult, check-only and neither rows run its network and paths that m3er covers
#   (the loss forms' gradients: tests/test_m3er.py).
SLOW_CASES = ('imder:imder', 'mmin:mmin_ae', 'mmin:mmin_nocycle', 'mmin:augmented',
              'm3er:original_mult', 'm3er:no_proxy', 'm3er:no_check_no_proxy')
FAST_CASES = [c for c in CASES if c not in SLOW_CASES]
TOL = 1e-5


def _run_cases(cases):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'contract_checks.py'), *cases], env=env,
                        capture_output=True, text=True, timeout=1800, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = {}
  for line in proc.stdout.splitlines():
    if line.startswith('CONTRACT '):
      report = json.loads(line[len('CONTRACT '):])
      out[report['case']] = report
  return out


@pytest.fixture(scope='module')
def reports():
  return _run_cases(FAST_CASES)


@pytest.fixture(scope='module')
def slow_reports():
  return _run_cases(SLOW_CASES)


def test_every_registered_method_and_variant_is_a_case():
  from mmer_jax import methods  # pylint: disable=g-import-not-at-top
  names = {c.partition(':')[0] for c in CASES}
  assert names == set(methods.NAMES)
  assert {'mmin:mmin', 'mmin:mmin_ae', 'mmin:mmin_nocycle', 'mmin:full_baseline',
          'mmin:augmented'} <= set(CASES)


def _report(request, case):
  """The case's report, from the default or the slow subprocess run."""
  return request.getfixturevalue('slow_reports' if case in SLOW_CASES else 'reports')[case]


def _slow_if_slow(cases):
  return [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in cases]


@pytest.mark.parametrize('case', _slow_if_slow(CASES))
def test_method_contract(request, case):
  r = _report(request, case)
  assert 'error' not in r, r.get('error')
  assert r['devices'] == 8
  # Loss per example, shaped like example_mask; aux terms too.
  assert r['loss_shape'] == r['example_mask_shape'], r
  assert all(shape == r['example_mask_shape'] for shape in r['aux_shapes'].values()), r['aux_shapes']
  assert r['loss_finite'] and r['step_loss_finite']
  # Padding rows change nothing.
  assert r['padding_loss_diff'] <= TOL and r['padding_total_diff'] <= TOL, r
  assert r['predict_padding_diff'] <= TOL, r
  # predict: the task's shape, deterministic for a key, the same through the compiled eval step.
  assert r['predict_shape'] == r['predict_expected_shape'], r
  assert r['predict_repeat_diff'] == 0.0
  assert r['jit_predict_diff'] <= TOL and r['pmap_predict_diff'] <= TOL, r
  # trainable_mask: matches the tree; frozen leaves stay, trainable ones move.
  assert r['mask_matches_tree'] and r['mask_all_bool']
  assert r['frozen_moved'] == 0, r
  assert r['trainable_moved'] > 0, r
  assert r['grads_finite'] and r['grads_nonzero']
  # One step: jit over 8 devices == pmap over 8 == one device.
  assert r['jit_vs_pmap_loss_diff'] <= TOL, r
  assert r['jit_vs_pmap_params_diff'] <= TOL and r['single_vs_jit_params_diff'] <= TOL, r


@pytest.mark.parametrize('case', _slow_if_slow(
    ['mmin:mmin', 'mmin:mmin_ae', 'mmin:mmin_nocycle', 'mmin:full_baseline', 'mmin:augmented']))
def test_mmin_cases_freeze_the_teacher_and_its_tables(request, case):
  r = _report(request, case)
  if case in ('mmin:full_baseline', 'mmin:augmented'):  # resolved to early fusion: nothing frozen
    assert r['method'] == 'early_fusion' and r['num_frozen_leaves'] == 0
  else:
    assert r['num_frozen_leaves'] > 0
