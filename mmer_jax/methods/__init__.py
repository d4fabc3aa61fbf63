"""Method registry: `config.method.name` -> the Method class that implements it.

Each entry also names an example config (`configs/<file>.py`) that runs the method; the method
contract test (`tests/test_method_contract.py`) runs every registered method and variant through
it, so registering a method is what puts it under test.
"""

import importlib

import ml_collections

from mmer_jax.methods import base

# name -> (module, class, example config under configs/)
_METHODS = {
    'early_fusion': ('mmer_jax.methods.baselines', 'EarlyFusionMethod', 'fusion_iemocap'),
    'late_fusion': ('mmer_jax.methods.baselines', 'LateFusionMethod', 'fusion_iemocap'),
    'gated_attention': ('mmer_jax.methods.baselines', 'GatedAttentionMethod', 'fusion_iemocap'),
    'bclstm': ('mmer_jax.methods.baselines', 'BcLSTMMethod', 'bclstm_iemocap'),
    'mmin': ('mmer_jax.methods.mmin', 'MMINMethod', 'mmin_iemocap'),
    'imder': ('mmer_jax.methods.imder', 'IMDerMethod', 'imder_mosi'),
    'mmgcn': ('mmer_jax.methods.mmgcn', 'MMGCNMethod', 'mmgcn_iemocap'),
    'm3er': ('mmer_jax.methods.m3er', 'M3ERMethod', 'm3er_iemocap'),
}
NAMES = tuple(_METHODS)


def get_method_class(name: str) -> type[base.Method]:
  if name not in _METHODS:
    raise ValueError(f'unknown method {name!r}; expected one of {", ".join(NAMES)}')
  module, cls, _ = _METHODS[name]
  return getattr(importlib.import_module(module), cls)


def example_config(name: str) -> str:
  """The config file (under configs/, without .py) that runs method `name`."""
  get_method_class(name)
  return _METHODS[name][2]


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Applies each method's `resolve_config` until the method name is stable (in place)."""
  seen = []
  while config.method.name not in seen:
    seen.append(config.method.name)
    config = get_method_class(config.method.name).resolve_config(config)
  return config


def create_method(config, spec) -> base.Method:
  return get_method_class(config.method.name)(config, spec)
