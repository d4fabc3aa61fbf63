"""parity/tolerances.py: our tensors against the authors', differences and the report."""

from __future__ import annotations

import numpy as np
import pytest

from mmer_jax.parity import tolerances


def test_difference_is_relative_to_the_largest_magnitude():
  d = tolerances.difference([1.0, 1e-9], [1.0 + 1e-6, 0.0], tolerance=1e-5)
  assert d['max_abs'] == pytest.approx(1e-6) and d['max_rel'] == pytest.approx(1e-6 / (1 + 1e-6))
  assert d['ok']
  assert not tolerances.difference([2.0], [1.0], tolerance=0.5)['ok']
  assert not tolerances.difference([np.nan], [1.0], tolerance=0.5)['ok']
  with pytest.raises(ValueError, match='shapes differ'):
    tolerances.difference(np.zeros(2), np.zeros(3), 1.0)
  rep = tolerances.report('x', {'float32': {'a': {'ok': True}}, 'float64': {'b': {'ok': False}}})
  assert rep['ok'] is False
