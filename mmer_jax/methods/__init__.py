"""Method registry: `config.method.name` -> the Method class that implements it."""

import importlib

from mmer_jax.methods import base

_METHODS = {
    'early_fusion': ('mmer_jax.methods.baselines', 'EarlyFusionMethod'),
    'late_fusion': ('mmer_jax.methods.baselines', 'LateFusionMethod'),
    'gated_attention': ('mmer_jax.methods.baselines', 'GatedAttentionMethod'),
    'bclstm': ('mmer_jax.methods.baselines', 'BcLSTMMethod'),
    'mmin': ('mmer_jax.methods.mmin', 'MMINMethod'),
}
NAMES = tuple(_METHODS)


def get_method_class(name: str) -> type[base.Method]:
  if name not in _METHODS:
    raise ValueError(f'unknown method {name!r}; expected one of {", ".join(NAMES)}')
  module, cls = _METHODS[name]
  return getattr(importlib.import_module(module), cls)


def create_method(config, spec) -> base.Method:
  return get_method_class(config.method.name)(config, spec)
