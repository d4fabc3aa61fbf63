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


# --- noise_corrupt (ineffectual modalities) -------------------------------------------------


def _noise_inputs(batch_size=20_000, seed=0, max_len=6):
  """Utterance-level text [B, 16], sequence-level audio [B, T, 8] with lengths, visual [B, 4];
  a mask with random gaps (the first 20 rows with nothing present)."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, max_len + 1, batch_size).astype(np.int32)
  audio = rng.normal(1.0, 2.0, (batch_size, max_len, 8)).astype(np.float32)
  audio[np.arange(max_len)[None, :] >= lengths[:, None]] = 0.0  # zero padding frames
  features = {'audio': audio,
              'visual': rng.normal(size=(batch_size, 4)).astype(np.float32) * 3,
              'text': rng.normal(size=(batch_size, 16)).astype(np.float32)}
  mask = rng.random((batch_size, 3)) < 0.7
  mask[:20] = False  # no modality at all: never corrupted
  return features, {'audio': lengths}, mask


@pytest.fixture(scope='module')
def noise_inputs():
  return _noise_inputs()


# fraction and snr_db traced: one compilation per input shape (compiling dominates these tests).
_noise = jax.jit(lambda key, features, lengths, mask, fraction, snr_db: missing.noise_corrupt(
    key, features, lengths, mask, fraction=fraction, snr_db=snr_db))


def test_noise_one_present_modality_per_corrupted_sample(noise_inputs):
  features, lengths, mask = noise_inputs
  out, noised = _noise(jax.random.PRNGKey(0), features, lengths, mask, 0.6, -10.0)
  noised = np.asarray(noised)
  assert noised.shape == mask.shape and noised.dtype == bool
  assert noised.sum(-1).max() == 1  # exactly one modality per corrupted sample
  assert not (noised & ~mask).any()  # only present ones
  assert not noised[:20].any()  # a sample with no present modality is never corrupted
  for i, m in enumerate(MODALITIES):
    x, y = np.asarray(features[m]), np.asarray(out[m])
    assert y.shape == x.shape and y.dtype == x.dtype
    changed = np.any((y != x).reshape(len(x), -1), axis=-1)
    np.testing.assert_array_equal(changed, noised[:, i], err_msg=m)  # the rest exactly unchanged
  # The choice is uniform among the present modalities: samples with all three present.
  full = mask.all(-1) & noised.any(-1)
  np.testing.assert_allclose(noised[full].mean(0), 1 / 3, atol=5 * _sigma(1 / 3, full.sum()))
  # ... and among two: samples with audio and text only.
  two = (mask == [True, False, True]).all(-1) & noised.any(-1)
  np.testing.assert_allclose(noised[two].mean(0)[[0, 2]], 0.5, atol=5 * _sigma(0.5, two.sum()))


def test_noise_fraction_binomial(noise_inputs):
  features, lengths, mask = noise_inputs
  eligible = mask.any(-1)
  for fraction in (0.1, 0.3, 0.8):
    _, noised = _noise(jax.random.PRNGKey(2), features, lengths, mask, fraction, -10.0)
    share = np.asarray(noised).any(-1)[eligible].mean()
    assert abs(share - fraction) < 5 * _sigma(fraction, eligible.sum()), (fraction, share)
  _, noised = _noise(jax.random.PRNGKey(2), features, lengths, mask, 1.0, -10.0)
  np.testing.assert_array_equal(np.asarray(noised).any(-1), eligible)


def test_noise_fraction_zero_changes_nothing(noise_inputs):
  features, lengths, mask = noise_inputs
  out, noised = _noise(jax.random.PRNGKey(0), features, lengths, mask, 0.0, -10.0)
  assert not np.asarray(noised).any()
  for m in MODALITIES:
    np.testing.assert_array_equal(out[m], features[m])


def test_noise_same_key_same_corruption(noise_inputs):
  features, lengths, mask = noise_inputs
  a = _noise(jax.random.PRNGKey(8), features, lengths, mask, 0.5, -10.0)
  b = _noise(jax.random.PRNGKey(8), features, lengths, mask, 0.5, -10.0)
  c = _noise(jax.random.PRNGKey(9), features, lengths, mask, 0.5, -10.0)
  np.testing.assert_array_equal(a[1], b[1])
  for m in MODALITIES:
    np.testing.assert_array_equal(a[0][m], b[0][m])
  assert not np.array_equal(a[1], c[1])


def test_noise_sequence_padding_untouched_and_power_over_valid_frames(noise_inputs):
  features, lengths, mask = noise_inputs
  audio_only = np.broadcast_to(np.array([True, False, False]), mask.shape)
  out, noised = _noise(jax.random.PRNGKey(7), features, lengths, audio_only, 1.0, 0.0)
  assert np.asarray(noised)[:, 0].all()
  audio, new = np.asarray(features['audio']), np.asarray(out['audio'])
  valid = np.arange(audio.shape[1])[None, :] < lengths['audio'][:, None]
  assert (~valid).any()
  np.testing.assert_array_equal(new[~valid], 0.0)  # padding frames stay exactly zero
  assert (new[valid] != audio[valid]).all()
  # P is the mean square over the valid frames only (padding does not dilute it): per sample,
  # noise power / signal power over the valid frames averages 1 at 0 dB.
  signal = np.where(valid[..., None], audio.astype(np.float64)**2, 0).sum((1, 2))
  noise = np.where(valid[..., None], (new - audio).astype(np.float64)**2, 0).sum((1, 2))
  assert np.mean(noise / signal) == pytest.approx(1.0, abs=0.03)


def test_noise_realised_snr_and_replacement():
  rng = np.random.default_rng(3)
  x = rng.normal(0.5, 2.0, (64, 8192)).astype(np.float32)  # large D: the realised power is tight
  x64 = x.astype(np.float64)
  mask = np.broadcast_to(np.array([False, False, True]), (64, 3))
  for snr_db in (-10.0, 0.0, 5.0):
    out, noised = _noise(jax.random.PRNGKey(1), {'text': x}, None, mask, 1.0, snr_db)
    assert np.asarray(noised)[:, 2].all()
    n = np.asarray(out['text'], np.float64) - x64
    realised = 10 * np.log10(np.mean(x64**2, -1) / np.mean(n**2, -1))
    # One sample's realised SNR has a std of 10 log10(e) sqrt(2 / D) = 0.07 dB.
    np.testing.assert_allclose(realised, snr_db, atol=0.35)
    assert np.mean(realised) == pytest.approx(snr_db, abs=0.05)
    assert abs(np.mean(n)) < 0.05 * np.sqrt(np.mean(n**2))  # zero-mean noise
  # snr_db=None: replaced by noise of the signal's power, nothing of x left.
  out, noised = missing.noise_corrupt(jax.random.PRNGKey(5), {'text': x}, None, mask,
                                      fraction=1.0, snr_db=None)
  y = np.asarray(out['text'], np.float64)
  np.testing.assert_allclose(np.mean(y**2, -1), np.mean(x64**2, -1), rtol=0.1)
  corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(y, x64)]
  assert np.max(np.abs(corr)) < 0.1


def test_noise_dialogue_axes_and_missing_feature_keys():
  rng = np.random.default_rng(10)
  mask = rng.random((6, 9, 3)) < 0.8
  features = {'text': rng.normal(size=(6, 9, 5)).astype(np.float32),
              'audio': rng.normal(size=(6, 9, 3)).astype(np.float32)}  # no visual features
  out, noised = _noise(jax.random.PRNGKey(0), features, None, mask, 1.0, -10.0)
  noised = np.asarray(noised)
  assert noised.shape == (6, 9, 3)
  assert not noised[..., 1].any()  # a modality without features is never chosen
  present = mask & np.array([True, False, True])
  np.testing.assert_array_equal(noised.any(-1), present.any(-1))
  for m in ('text', 'audio'):
    changed = np.any(np.asarray(out[m]) != features[m], -1)
    np.testing.assert_array_equal(changed, noised[..., MODALITIES.index(m)])
  with pytest.raises(ValueError, match='fraction'):
    missing.noise_corrupt(jax.random.PRNGKey(0), features, None, mask, fraction=1.5, snr_db=0.0)
  with pytest.raises(ValueError, match='unknown modalities'):
    missing.noise_corrupt(jax.random.PRNGKey(0), {'vision': features['text']}, None, mask,
                          fraction=0.5, snr_db=0.0)
  with pytest.raises(ValueError, match='leading axes'):
    missing.noise_corrupt(jax.random.PRNGKey(0), {'text': features['text'][:3]}, None, mask,
                          fraction=0.5, snr_db=0.0)
