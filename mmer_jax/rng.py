"""The run's PRNG implementation (`config.rng_impl`), set once before any key is made.

JAX's default, threefry2x32, computes its random bits with ~20 rounds of integer arithmetic per
pair of 32-bit words; a deep GCN's dropout masks (MMGCN at depth 64: ~67 masks a step) spend a
noticeable share of a CPU step on them. 'rbg' draws the bits with XLA's RngBitGenerator (splits
and folds still threefry, so keys stay independent); 'unsafe_rbg' also derives keys with it
(cheaper, weaker guarantees). The impl decides every key of the run (initialisation, dropout,
training missing masks, evaluation rate masks), so the same seed draws differently under each;
an rbg key is uint32[4] where threefry's is uint32[2], so a checkpoint resumes only under the impl
it was written with. Set by the entry points (`mmer_jax.main`, `mmer_jax.benchmark`,
`launch/sweep.py`) right after reading the config.
"""

from __future__ import annotations

import jax

IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')
DEFAULT = 'threefry2x32'


def impl_of(config) -> str:
  """The impl a config asks for (`config.rng_impl`; absent or None: threefry2x32), checked."""
  impl = config.get('rng_impl', None) or DEFAULT
  if impl not in IMPLS:
    raise ValueError(f'rng_impl: expected one of {IMPLS}, got {impl!r}')
  return impl


def configure(config) -> str:
  """Makes the config's impl JAX's default (`jax_default_prng_impl`); returns its name."""
  impl = impl_of(config)
  jax.config.update('jax_default_prng_impl', impl)
  return impl
