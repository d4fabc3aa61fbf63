"""Tests for mmer_jax.missing: conditions, pattern/rate masks and their statistics."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmer_jax import missing
from mmer_jax.data.schema import MODALITIES

N = 100_000
ALL = (True, True, True)


def _rate_mask(rng, rate, available=ALL, batch_size=N):
  return missing.missing_rate_mask(rng, batch_size, rate, available)


# One compiled sampler for the property test: rate is traced, so no recompilation per example.
_jitted_rate_mask = jax.jit(_rate_mask, static_argnames=('available', 'batch_size'))


def _pattern_probs(rate, available):
  """Closed-form P(pattern) under drop-independently-then-condition, by brute force."""
  avail = np.asarray(available)
  probs = {}
  for bits in itertools.product([False, True], repeat=3):
    keep = np.asarray(bits)
    if not keep.any() or np.any(keep & ~avail):
      continue
    k, d = keep.sum(), avail.sum() - keep.sum()
    probs[bits] = (1 - rate)**k * rate**d
  total = sum(probs.values())
  return {p: v / total for p, v in probs.items()}


def _frequencies(mask):
  rows, counts = np.unique(np.asarray(mask), axis=0, return_counts=True)
  return {tuple(bool(b) for b in r): c / len(mask) for r, c in zip(rows, counts)}


def _sigma(p, n=N):
  return np.sqrt(p * (1 - p) / n)


# --- conditions -----------------------------------------------------------------------------


def test_conditions_table():
  assert list(missing.CONDITIONS) == ['full', 'a', 'v', 't', 'av', 'at', 'vt']
  assert missing.MISSING_CONDITIONS == tuple(list(missing.CONDITIONS)[1:])
  letters = {m[0]: i for i, m in enumerate(MODALITIES)}
  for name, pattern in missing.CONDITIONS.items():
    want = [True] * 3 if name == 'full' else [c in name for c in 'avt']
    assert list(pattern) == want
    assert all(pattern[letters[c]] for c in name if c in letters)


def test_condition_mask():
  m = missing.condition_mask('vt', 4)
  assert m.shape == (4, 3) and m.dtype == jnp.bool_
  np.testing.assert_array_equal(m, np.tile([False, True, True], (4, 1)))
  np.testing.assert_array_equal(missing.condition_mask('full', 2), np.ones((2, 3), bool))
  text_only = (False, False, True)
  np.testing.assert_array_equal(missing.condition_mask('full', 2, text_only),
                                missing.condition_mask('t', 2, text_only))
  with pytest.raises(ValueError, match='does not have'):
    missing.condition_mask('at', 2, text_only)
  with pytest.raises(ValueError, match='unknown condition'):
    missing.condition_mask('avt', 2)


def test_conditions_for():
  assert missing.conditions_for(ALL) == list(missing.CONDITIONS)
  assert missing.conditions_for((False, False, True)) == ['full', 't']
  assert missing.conditions_for(np.array([True, False, True])) == ['full', 'a', 't', 'at']
  with pytest.raises(ValueError, match='at least one'):
    missing.conditions_for((False, False, False))
  with pytest.raises(ValueError, match='shape'):
    missing.conditions_for((True, True))


# --- random_pattern_mask --------------------------------------------------------------------


def test_random_pattern_mask_uniform_over_six():
  m = missing.random_pattern_mask(jax.random.key(0), N)
  assert m.shape == (N, 3) and m.dtype == jnp.bool_
  freq = _frequencies(m)
  assert set(freq) == {missing.CONDITIONS[n] for n in missing.MISSING_CONDITIONS}
  for f in freq.values():
    assert abs(f - 1 / 6) < 6 * _sigma(1 / 6)


def test_random_pattern_mask_include_full_and_available():
  freq = _frequencies(missing.random_pattern_mask(jax.random.key(1), N, include_full=True))
  assert len(freq) == 7 and all(abs(f - 1 / 7) < 6 * _sigma(1 / 7) for f in freq.values())
  # audio + text: the strict sub-patterns {a} and {t}.
  freq = _frequencies(missing.random_pattern_mask(jax.random.key(2), N, (True, False, True)))
  assert set(freq) == {(True, False, False), (False, False, True)}
  # A single-modality dataset cannot miss anything.
  m = missing.random_pattern_mask(jax.random.key(3), 10, (False, False, True))
  np.testing.assert_array_equal(m, np.tile([False, False, True], (10, 1)))


def test_random_pattern_mask_deterministic():
  a = missing.random_pattern_mask(jax.random.key(5), 64)
  b = missing.random_pattern_mask(jax.random.key(5), 64)
  c = missing.random_pattern_mask(jax.random.key(6), 64)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


# --- missing_rate_mask ----------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1),
       available=st.sampled_from([a for a in itertools.product([False, True], repeat=3)
                                  if any(a)]))
def test_rate_mask_keeps_one_and_respects_available(rate, seed, available):
  m = np.asarray(_jitted_rate_mask(jax.random.key(seed), rate, available, 256))
  assert m.shape == (256, 3) and m.dtype == np.bool_
  assert m.any(axis=1).all()
  assert not m[:, ~np.asarray(available)].any()


@pytest.mark.parametrize('rate', [0.1, 0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize('available', [ALL, (False, True, True)])
def test_rate_mask_matches_closed_form(rate, available):
  m = np.asarray(_jitted_rate_mask(jax.random.key(int(rate * 10)), rate, available, N))
  freq = _frequencies(m)
  probs = _pattern_probs(rate, available)
  assert set(freq) <= set(probs)
  for pattern, p in probs.items():
    assert abs(freq.get(pattern, 0.0) - p) < 6 * _sigma(p) + 1e-4, pattern
  # Every available modality is missing with the same conditional probability...
  n = sum(available)
  want = missing.effective_missing_fraction(rate, n)
  drop = 1 - m[:, np.asarray(available)].mean(axis=0)
  np.testing.assert_allclose(drop, want, atol=6 * _sigma(want))
  # ...which is the expected fraction of missing slots, below the nominal rate.
  assert abs((1 - m[:, np.asarray(available)].mean()) - want) < 6 * _sigma(want)
  assert want < rate


def test_rate_zero_and_one():
  m = _rate_mask(jax.random.key(0), 0.0)
  assert np.asarray(m).all()
  m = np.asarray(_rate_mask(jax.random.key(0), 0.0, (True, False, True), 100))
  np.testing.assert_array_equal(m, np.tile([True, False, True], (100, 1)))
  m = np.asarray(_rate_mask(jax.random.key(1), 1.0))
  assert (m.sum(axis=1) == 1).all()
  for f in _frequencies(m).values():
    assert abs(f - 1 / 3) < 6 * _sigma(1 / 3)


def test_rate_mask_deterministic_and_jit():
  key = jax.random.key(42)
  a = missing.missing_rate_mask(key, 128, 0.5)
  b = missing.missing_rate_mask(key, 128, 0.5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, missing.missing_rate_mask(jax.random.key(43), 128, 0.5))
  jitted = jax.jit(lambda k, r: missing.missing_rate_mask(k, 128, r))
  np.testing.assert_array_equal(jitted(key, 0.5), a)
  np.testing.assert_array_equal(jitted(key, jnp.float32(0.5)), a)


def test_rate_mask_rejects_bad_rate():
  with pytest.raises(ValueError, match='rate'):
    missing.missing_rate_mask(jax.random.key(0), 4, 1.5)
  with pytest.raises(ValueError, match='rate'):
    missing.missing_rate_mask(jax.random.key(0), 4, -0.1)


# --- effective_missing_fraction -------------------------------------------------------------


def test_effective_missing_fraction_closed_form():
  for r in np.linspace(0, 0.95, 20):  # r = 1 is the limit, checked below
    probs = _pattern_probs(r, ALL)
    a = sum(p for k, p in probs.items() if sum(k) == 1)  # two missing
    b = sum(p for k, p in probs.items() if sum(k) == 2)  # one missing
    assert missing.effective_missing_fraction(r) == pytest.approx((2 * a + b) / 3)
  assert missing.effective_missing_fraction(0.0) == 0.0
  assert missing.effective_missing_fraction(1.0) == pytest.approx(2 / 3)
  assert missing.effective_missing_fraction(0.5) == pytest.approx(0.5 * 1.5 / 1.75)
  assert missing.effective_missing_fraction(1.0, 2) == pytest.approx(1 / 2)
  assert missing.effective_missing_fraction(0.7, 1) == 0.0
  rates = np.array([0.2, 0.4])
  np.testing.assert_allclose(missing.effective_missing_fraction(rates),
                             [missing.effective_missing_fraction(r) for r in rates])


# --- apply_mask -----------------------------------------------------------------------------


def test_apply_mask():
  mask = jnp.array([[True, False, True], [False, True, False]])
  features = {
      'audio': jnp.ones((2, 5, 4)),
      'text': jnp.full((2, 3), jnp.nan),  # missing rows become exact zeros, even from nan
  }
  out = missing.apply_mask(features, mask)
  assert set(out) == {'audio', 'text'}
  np.testing.assert_array_equal(out['audio'][0], 1.0)
  np.testing.assert_array_equal(out['audio'][1], 0.0)
  assert np.isnan(out['text'][0]).all()
  np.testing.assert_array_equal(out['text'][1], 0.0)
  assert out['audio'].dtype == features['audio'].dtype
  jitted = jax.jit(missing.apply_mask)(features, mask)
  np.testing.assert_array_equal(jitted['audio'], out['audio'])
  # Dialogue batches: leading [D, T] axes shared by mask and features.
  dmask = jnp.array([[[True, True, False], [False, True, True]]])
  dout = missing.apply_mask({'text': jnp.ones((1, 2, 7)), 'visual': jnp.ones((1, 2))}, dmask)
  np.testing.assert_array_equal(dout['text'][0, :, 0], [0.0, 1.0])
  np.testing.assert_array_equal(dout['visual'], [[1.0, 1.0]])
  with pytest.raises(ValueError, match='unknown modalities'):
    missing.apply_mask({'vision': jnp.ones((2, 3))}, mask)
