"""The missing-modality protocol shared by every method: masks, conditions and missing rates.

A modality mask is a boolean array `[batch, 3]` in `MODALITIES` order (audio, visual, text):
True means the modality is present for that sample. Models receive the mask itself; `apply_mask`
exists only for models whose inputs must be zero where a modality is missing. Fixed conditions
(MMIN: `CONDITIONS`, `condition_mask`, `random_pattern_mask`) and missing rates (GCNet, IMDer:
`missing_rate_mask`, one rate or one per modality, conditioned on one modality remaining;
`effective_missing_fraction(s)` give the realised fractions) are both produced here, and
`noise_corrupt` replaces modalities by noise (M3ER's ineffectual modalities).

Everything random takes an explicit `jax.random` key: the same key gives the same masks.
Arguments that decide shapes or pattern sets (`batch_size`, `available`) must be static; the key
and `rate` may be traced. The protocol: docs/protocol.md#masks.
"""

from __future__ import annotations

import types
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mmer_jax.data.schema import MODALITIES

CONDITIONS: Mapping[str, tuple[bool, bool, bool]] = types.MappingProxyType({
    'full': (True, True, True),
    'a': (True, False, False),
    'v': (False, True, False),
    't': (False, False, True),
    'av': (True, True, False),
    'at': (True, False, True),
    'vt': (False, True, True),
})
MISSING_CONDITIONS = ('a', 'v', 't', 'av', 'at', 'vt')


def _available(available) -> np.ndarray:
  """Validates an availability vector (default: all modalities) and returns bool [3]."""
  if available is None:
    return np.ones(len(MODALITIES), bool)
  out = np.asarray(available)
  if out.shape != (len(MODALITIES),):
    raise ValueError(f'available must have shape ({len(MODALITIES)},) in {MODALITIES} order, '
                     f'got {out.shape}')
  out = out.astype(bool)
  if not out.any():
    raise ValueError('available must contain at least one modality')
  return out


def _pattern(name: str) -> np.ndarray:
  if name not in CONDITIONS:
    raise ValueError(f'unknown condition {name!r}; expected one of {list(CONDITIONS)}')
  return np.array(CONDITIONS[name], bool)


def condition_mask(name: str, batch_size: int, available=None) -> jax.Array:
  """The mask bool [batch_size, 3] of one fixed condition, the same for every sample.

  With `available`, 'full' means every modality the dataset has, and a condition that needs a
  modality the dataset lacks is an error (see `conditions_for`).
  """
  avail = _available(available)
  pattern = _pattern(name)
  if name == 'full':
    pattern = avail
  elif np.any(pattern & ~avail):
    raise ValueError(f'condition {name!r} needs a modality the dataset does not have '
                     f'(available: {[m for m, a in zip(MODALITIES, avail) if a]})')
  return jnp.broadcast_to(jnp.asarray(pattern), (batch_size, len(MODALITIES)))


def conditions_for(available) -> list[str]:
  """The condition names a dataset with modalities `available` (bool [3]) can be evaluated on.

  'full' always (meaning every available modality), then, in `CONDITIONS` order, each missing
  pattern whose modalities are all available. A pattern equal to the available set (e.g. 't'
  for a text-only dataset) duplicates 'full'; it is kept so that results tables of different
  datasets share column names. A text-only dataset gives ['full', 't'].
  """
  avail = _available(available)
  return ['full'] + [n for n in MISSING_CONDITIONS if not np.any(_pattern(n) & ~avail)]


def random_pattern_mask(rng, batch_size: int, available=None, include_full: bool = False):
  """MMIN training masks: per sample, one missing pattern drawn uniformly.

  The candidates are the distinct patterns that keep only available modalities and miss at
  least one of them: the six MMIN patterns when all three modalities are available, e.g. {a}
  and {t} for an audio+text dataset. `include_full` adds the full available set as one more
  equally likely candidate. A single-modality dataset cannot miss anything, so it always gets
  the full mask.

  Returns:
    bool [batch_size, 3].
  """
  avail = _available(available)
  candidates = [_pattern(n) for n in MISSING_CONDITIONS]
  candidates = [p for p in candidates if not np.any(p & ~avail) and not np.array_equal(p, avail)]
  if include_full or not candidates:
    candidates.append(avail)
  table = jnp.asarray(np.stack(candidates))
  index = jax.random.randint(rng, (batch_size,), 0, len(candidates))
  return table[index]


def drop_count_mask(rng, batch_size: int, num_dropped: int, available=None) -> jax.Array:
  """Training masks with exactly `num_dropped` of the available modalities missing per sample
  (`train.missing=drop_one` / `drop_two`), the kept set drawn uniformly among those patterns.

  A dataset with too few modalities to drop that many and keep one keeps a single modality.
  """
  avail = _available(available)
  patterns = _nonempty_patterns(avail)
  kept = max(1, int(avail.sum()) - num_dropped)
  table = jnp.asarray(patterns[patterns.sum(axis=1) == kept])
  return table[jax.random.randint(rng, (batch_size,), 0, table.shape[0])]


def _nonempty_patterns(avail: np.ndarray) -> np.ndarray:
  """All non-empty subsets of the available modalities, as bool [K, 3]."""
  n = len(MODALITIES)
  subsets = (np.arange(1, 2**n)[:, None] >> np.arange(n)[None, :]) & 1
  subsets = subsets.astype(bool)
  return subsets[~np.any(subsets & ~avail, axis=1)]


def missing_rate_mask(rng, batch_size: int, rate, available=None, sample_available=None) -> jax.Array:
  """Per-sample masks at missing rate `rate`, at least one available modality kept.

  Each available modality is dropped independently with probability `rate` (one rate for all,
  or one per modality), conditioned on at least one remaining; unavailable modalities are always
  False. The pattern is drawn from the exact conditional distribution. With one rate, the
  log-probabilities are taken relative to a single kept modality, `(kept - 1) log(1 - r) +
  dropped log(r)` (using 0 log 0 = 0), which stays finite at both ends: r = 0 keeps everything,
  r = 1 keeps one modality chosen uniformly. With per-modality rates they are
  `sum_kept log(1 - r_m) + sum_dropped log(r_m)`; at least one available modality must then
  have r_m < 1.

  `sample_available` (bool [batch_size, 3], e.g. a batch's `modality_mask` where the data itself
  lacks modalities for some samples) conditions each sample on keeping one of *its* modalities:
  patterns using a modality the sample lacks are impossible for it. When every row equals
  `available` the draws are exactly those without it.

  Args:
    rng: a `jax.random` key.
    batch_size: number of samples (static).
    rate: drop probability in [0, 1], a scalar (may be traced; then it is clipped to [0, 1]) or
      [3] per modality in `MODALITIES` order (see `parse_rates`).
    available: bool [3], the modalities the dataset has (static); default all.
    sample_available: optional bool [batch_size, 3] (may be traced).

  Returns:
    bool [batch_size, 3].
  """
  avail = _available(available)
  patterns = _nonempty_patterns(avail)
  kept = patterns.sum(axis=1)
  dropped = avail.sum() - kept
  if np.ndim(rate) == 0:
    if isinstance(rate, (int, float, np.number)) and not 0.0 <= float(rate) <= 1.0:
      raise ValueError(f'rate must be in [0, 1], got {rate}')
    r = jnp.clip(jnp.asarray(rate, jnp.float32), 0.0, 1.0)
    logits = (jax.scipy.special.xlogy(jnp.asarray(kept - 1, jnp.float32), 1.0 - r)
              + jax.scipy.special.xlogy(jnp.asarray(dropped, jnp.float32), r))
  else:
    r = np.asarray(rate, np.float64)
    if r.shape != (len(MODALITIES),) or np.any((r < 0) | (r > 1)):
      raise ValueError(f'per-modality rates: expected [{len(MODALITIES)}] values in [0, 1] in '
                       f'{MODALITIES} order, got {rate}')
    if np.all(r[avail] >= 1.0):
      raise ValueError(f'per-modality rates {rate}: every available modality has rate 1, so no '
                       'sample could keep one; give at least one a rate below 1')
    keep_p, drop_p = jnp.asarray(1.0 - r, jnp.float32), jnp.asarray(r, jnp.float32)
    on = jnp.asarray(patterns, jnp.float32)  # [K, 3]
    off = jnp.asarray(~patterns & avail, jnp.float32)
    logits = (jax.scipy.special.xlogy(on, keep_p) + jax.scipy.special.xlogy(off, drop_p)).sum(-1)
  table = jnp.asarray(patterns)
  if sample_available is None:
    index = jax.random.categorical(rng, logits, shape=(batch_size,))
  else:
    sample = jnp.asarray(sample_available, bool)  # [B, 3]
    possible = ~jnp.any(table[None] & ~sample[:, None, :], axis=-1)  # [B, K]
    index = jax.random.categorical(rng, jnp.where(possible, logits, -jnp.inf), axis=-1)
  return table[index]


def rate_value(text: str) -> float | None:
  """The probability a string writes, or None when it is not a number in [0, 1]."""
  try:
    r = float(text)
  except ValueError:
    return None
  return r if 0.0 <= r <= 1.0 else None


def parse_rates(text: str) -> np.ndarray:
  """`'a:0.1,v:0.5,t:0.0'` (or full names, `audio:0.1`) -> float [3] in `MODALITIES` order.

  A modality left out has rate 0 (never dropped). Raises ValueError naming what is wrong.
  """
  out = np.zeros(len(MODALITIES))
  seen = set()
  short = {m[0]: m for m in MODALITIES}
  for part in str(text).split(','):
    part = part.strip()
    if not part:
      continue
    name, sep, value = part.partition(':')
    name = short.get(name.strip(), name.strip())
    if not sep or name not in MODALITIES:
      raise ValueError(f'per-modality rates {text!r}: expected entries like a:0.1,v:0.5,t:0.0 '
                       f'(modalities a/audio, v/visual, t/text), got {part!r}')
    if name in seen:
      raise ValueError(f'per-modality rates {text!r}: {name} is given twice')
    r = rate_value(value)
    if r is None:
      raise ValueError(f'per-modality rates {text!r}: the rate of {name} must be a number in '
                       f'[0, 1], got {value!r}')
    out[MODALITIES.index(name)] = r
    seen.add(name)
  if not seen:
    raise ValueError(f'per-modality rates {text!r}: expected entries like a:0.1,v:0.5,t:0.0')
  return out


def probability_text(r: float) -> str:
  """A probability as results tables name it: one decimal unless more are needed (0.3, 0.25)."""
  r = float(r)
  return f'{r:.1f}' if abs(r * 10 - round(r * 10)) < 1e-9 else f'{r:g}'


def rates_name(rates) -> str:
  """The canonical text of per-modality rates, e.g. 'a:0.1,v:0.5,t:0.0' (one decimal unless
  more are needed)."""
  return ','.join(f'{m[0]}:{probability_text(r)}' for m, r in zip(MODALITIES, rates))


def effective_missing_fractions(rates, available=None) -> np.ndarray:
  """Per modality, the probability that `missing_rate_mask` with per-modality `rates` drops it.

  Independent drops conditioned on at least one available modality kept: P(m dropped | not all
  dropped) = (r_m - prod r) / (1 - prod r), the product over the available modalities. Zero for
  unavailable modalities (they are not counted as missing slots). With one rate r for all three
  modalities the mean of these is `effective_missing_fraction(r)`.
  """
  avail = _available(available)
  r = np.where(avail, np.asarray(rates, np.float64), 0.0)
  all_dropped = np.prod(r[avail])
  if all_dropped >= 1.0:
    raise ValueError(f'rates {rates}: every available modality has rate 1')
  return np.where(avail, (r - all_dropped) / (1.0 - all_dropped), 0.0)


def effective_missing_fraction(rate, num_modalities: int = 3):
  """Expected fraction of missing modality slots of `missing_rate_mask` at `rate`.

  Each modality is missing with probability r (1 - r^(M-1)) / (1 - r^M) after conditioning
  on at least one of M kept, written as r * sum_{j<M-1} r^j / sum_{j<M} r^j so that r = 1 needs
  no special case (the value there is (M-1)/M). For M = 3 this equals (2a + b) / 3 with a, b
  the fractions of samples missing two and one modalities; see the module docstring.
  Works on Python floats and numpy arrays.
  """
  if num_modalities < 1:
    raise ValueError(f'num_modalities must be >= 1, got {num_modalities}')
  r = np.asarray(rate, np.float64)
  if np.any((r < 0) | (r > 1)):
    raise ValueError(f'rate must be in [0, 1], got {rate}')
  num = sum(r**j for j in range(num_modalities - 1)) if num_modalities > 1 else 0.0
  den = sum(r**j for j in range(num_modalities))
  out = r * num / den
  return float(out) if np.ndim(out) == 0 else out


def apply_mask(features: Mapping[str, jax.Array], mask) -> dict[str, jax.Array]:
  """Zeroes each sample's missing modalities, for models that need zeros at their input.

  A convenience only: models should still be given `mask`, which stays the source of truth
  (a zero feature vector can be a real observation).

  Args:
    features: dict with any subset of the keys 'audio', 'visual', 'text'; arrays [B, ...].
    mask: bool [B, 3] in `MODALITIES` order. Extra leading axes are allowed as long as the
      features share them (e.g. dialogue batches: mask [D, T, 3], features [D, T, ...]).

  Returns:
    a new dict with the same keys, where rows whose modality is missing are exactly zero.
  """
  unknown = set(features) - set(MODALITIES)
  if unknown:
    raise ValueError(f'unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}')
  mask = jnp.asarray(mask, bool)
  out = {}
  for name, x in features.items():
    keep = mask[..., MODALITIES.index(name)]
    keep = keep.reshape(keep.shape + (1,) * (jnp.ndim(x) - keep.ndim))
    out[name] = jnp.where(keep, x, jnp.zeros((), jnp.result_type(x)))
  return out


def noise_corrupt(rng, features: Mapping[str, jax.Array], lengths, modality_mask, *, fraction,
                  snr_db) -> tuple[dict[str, jax.Array], jax.Array]:
  """Ineffectual modalities (M3ER): one present modality of some samples replaced by noise.

  Each sample (each row of the mask's leading axes: [B] utterances, [B, L] dialogue turns, or
  none for a single sample) is corrupted with probability `fraction`; a corrupted sample gets
  exactly one of its present modalities (mask True and in `features`), chosen uniformly, replaced
  by `x + n`, with n white Gaussian noise of power `P * 10**(-snr_db / 10)` and P the mean square
  of that sample's modality over its valid frames, so the realised signal-to-noise ratio is
  `snr_db` (at -10 dB the noise has ten times the signal's power). `snr_db=None` is pure
  replacement: `x' = n` with power P, nothing of x left. Padding frames (beyond `lengths`) are
  left exactly as they were. A sample with no present modality is never corrupted. The mask is
  unchanged: the model is not told which modality is noise (detecting it is its job).

  Args:
    rng: a `jax.random` key; everything random comes from it.
    features: dict modality -> [..., D] (utterance level) or [..., T, D] (sequence level), the
      leading axes `...` those of `modality_mask`.
    lengths: dict modality -> int [...] valid frames of sequence-level modalities, or None (all
      frames valid); utterance-level modalities need none.
    modality_mask: bool [..., 3] in `MODALITIES` order.
    fraction: probability in [0, 1] that a sample is corrupted (static or traced).
    snr_db: the signal-to-noise ratio in dB of a corrupted modality (static or traced), or None
      (static) for pure replacement.

  Returns:
    (new_features, noised): the features with the same keys, shapes and dtypes, and bool [..., 3]
    in `MODALITIES` order, True where that sample's modality was replaced.
  """
  unknown = set(features) - set(MODALITIES)
  if unknown:
    raise ValueError(f'unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}')
  if isinstance(fraction, (int, float, np.number)) and not 0.0 <= float(fraction) <= 1.0:
    raise ValueError(f'fraction must be in [0, 1], got {fraction}')
  lengths = lengths or {}
  mask = jnp.asarray(modality_mask, bool)
  lead = mask.shape[:-1]
  have = jnp.asarray([m in features for m in MODALITIES])
  present = mask & have
  any_present = present.any(-1)
  k_pick, k_which, k_noise = jax.random.split(rng, 3)
  corrupt = jax.random.bernoulli(k_pick, jnp.clip(jnp.asarray(fraction, jnp.float32), 0.0, 1.0),
                                 lead) & any_present
  logits = jnp.where(present, 0.0, -jnp.inf)
  logits = jnp.where(any_present[..., None], logits, 0.0)  # no present modality: never corrupted
  which = jax.random.categorical(k_which, logits, axis=-1)
  noised = (jnp.arange(len(MODALITIES)) == which[..., None]) & corrupt[..., None]
  out = {}
  for name, x in features.items():
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f'noise_corrupt: {name} features must be floating point, got {x.dtype}')
    extra = x.ndim - len(lead)
    if x.shape[:len(lead)] != lead or extra not in (1, 2):
      raise ValueError(f'noise_corrupt: {name} features of shape {x.shape} do not match the '
                       f'mask\'s leading axes {lead} + [D] or [T, D]')
    if extra == 2 and name in lengths and lengths[name] is not None:
      frames = jnp.arange(x.shape[-2]) < jnp.asarray(lengths[name])[..., None]  # [..., T]
      valid = frames[..., None]  # [..., T, 1]
    else:
      valid = jnp.ones(lead + (1,) * extra, bool)
    xf = x.astype(jnp.float32)
    axes = tuple(range(len(lead), x.ndim))
    count = jnp.broadcast_to(valid, x.shape).sum(axes)
    power = jnp.where(valid, xf * xf, 0.0).sum(axes) / jnp.maximum(count, 1)  # P per sample
    if snr_db is not None:
      power = power * 10.0 ** (-jnp.asarray(snr_db, jnp.float32) / 10.0)
    scale = jnp.sqrt(power).reshape(lead + (1,) * extra)
    noise = scale * jax.random.normal(jax.random.fold_in(k_noise, MODALITIES.index(name)), x.shape)
    new = noise if snr_db is None else xf + noise
    hit = noised[..., MODALITIES.index(name)].reshape(lead + (1,) * extra) & valid
    out[name] = jnp.where(hit, new, xf).astype(x.dtype)
  return out, noised
