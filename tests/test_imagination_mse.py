"""analysis/imagination_mse.py: MMIN's imagination MSE against closed-form values."""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.analysis import imagination_mse


def test_imagination_mse_against_closed_form_values():
  """A fake MMIN whose imagined embedding is the real one + 1 in every slot: MSE 1 exactly."""
  e, n = 2, 5
  real = np.concatenate([np.full((n, e), 2.0), np.full((n, e), 3.0), np.full((n, e), 4.0)], -1)

  class Fake:
    modalities = ('audio', 'visual', 'text')

    def imagination(self, params, batch):
      del params, batch
      r = jnp.asarray(real).reshape(n, 3, e)
      return {'imagined': r + 1.0, 'real': r}

  batch = {'modality_mask': np.ones((n, 3), bool), 'example_mask': np.array([1, 1, 1, 1, 0], bool)}
  run = types.SimpleNamespace(method=Fake(), spec=types.SimpleNamespace(available=np.ones(3, bool)),
                              eval_batches=lambda split: (lambda: [batch]))
  table = np.concatenate([np.zeros((3, 3 * e)), np.full((1, 3 * e), 4.0)])  # mean 1.0 per dim
  report = imagination_mse.measure(run, {'teacher_tables': {'full': table}}, 'test')
  c = report['conditions']
  assert set(c) == {'a', 'v', 't', 'av', 'at', 'vt'}
  assert c['t']['examples'] == 4  # padding row excluded
  # {t} available: audio and visual imagined; mean imputer 1.0 vs real 2 and 3.
  assert c['t']['mse'] == pytest.approx({'imagined': 1.0, 'train_mean': (1 + 4) / 2, 'zeros': (4 + 9) / 2})
  assert c['av']['mse'] == pytest.approx({'imagined': 1.0, 'train_mean': 9.0, 'zeros': 16.0})
  assert c['av']['ratio_to_train_mean'] == pytest.approx(1 / 9)
  # {v,t}: audio imagined at 3 against a mean of 1 and a real 2: a tie, which is not a win.
  assert c['vt']['ratio_to_train_mean'] == pytest.approx(1.0)
  assert not report['beats_train_mean_everywhere']
