"""Dataset names users type, mapped to TFDS builders; building on first use and reading back.

Names: the synthetic stand-ins `synthetic/<release>`, the generic `features_dir`, and the official
releases `iemocap_6`, `meld_7`, `iemocap_4`, `msp_improv_4`, `mosi`, `mosei` (manual_dir).
Each builder module exposes `make_builder(*, data_dir, **options)`; the options it accepts are
its own (synthetic: seed, sizes, strengths; official: fold; features_dir: the path).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

import tensorflow_datasets as tfds

from mmer_jax.data import builder_base
from mmer_jax.data import schema

SYNTHETIC_NAMES = ('iemocap_6', 'meld_7', 'iemocap_4', 'msp_improv_4', 'mosi', 'mosei', 'mosei_emotions')

_MODULES: dict[str, tuple[str, dict[str, Any]]] = {
    **{f'synthetic/{n}': ('mmer_jax.data.synthetic', {'release': n}) for n in SYNTHETIC_NAMES},
    'features_dir': ('mmer_jax.data.features_dir', {}),
    'iemocap_6': ('mmer_jax.data.iemocap', {'release': 'iemocap_6'}),
    'iemocap_4': ('mmer_jax.data.iemocap', {'release': 'iemocap_4'}),
    'meld_7': ('mmer_jax.data.meld', {}),
    'msp_improv_4': ('mmer_jax.data.msp_improv', {}),
    'mosi': ('mmer_jax.data.mosi_mosei', {'release': 'mosi'}),
    'mosei': ('mmer_jax.data.mosi_mosei', {'release': 'mosei'}),
}
NAMES = tuple(_MODULES)


@dataclasses.dataclass
class Dataset:
  """A built dataset: what it holds and random-access sources per split."""
  name: str
  spec: schema.DatasetSpec
  sources: Mapping[str, Any]  # split -> tfds data source (len, __getitem__, __getitems__)
  builder: tfds.core.DatasetBuilder


def create_builder(name: str, *, data_dir: str | None = None, features_dir: str | None = None,
                   **options) -> tfds.core.DatasetBuilder:
  """The (unbuilt) TFDS builder for a dataset name."""
  if name not in _MODULES:
    raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(NAMES)}')
  module_name, fixed = _MODULES[name]
  if name == 'features_dir':
    if not features_dir:
      raise ValueError('dataset features_dir needs --features_dir=PATH (or --config.data.features_dir)')
    options = {**options, 'features_dir': features_dir}
  module = importlib.import_module(module_name)
  return module.make_builder(data_dir=data_dir or builder_base.DEFAULT_DATA_DIR, **fixed, **options)


def load(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
         features_dir: str | None = None, **options) -> Dataset:
  """Builds the dataset if it is not built yet, then opens every split for random access."""
  builder = create_builder(name, data_dir=data_dir, features_dir=features_dir, **options)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=download_config)
  sources = builder.as_data_source()
  return Dataset(name=name, spec=builder_base.spec_of(builder),
                 sources={s: sources[s] for s in schema.SPLITS}, builder=builder)
