"""Synthetic stand-ins for every feature release: same shapes, splits and labels, planted signal.

  python -c "from mmer_jax.data import registry; registry.load('synthetic/iemocap_6')"

One TFDS builder, `mmer_synthetic`, with one config per real release (`RELEASE_NAMES`). The data
come from `synthetic_generator` (pure numpy). Options (`make_builder(..., seed=, sizes=,
strengths=, noise=, ambiguous=, ...)`) override the release's defaults; any override gives the
config a distinct name `<release>_<hash>` so builds with different options never share a
directory under data_dir.

Default split sizes and the signal: docs/data.md#synthetic-stand-ins.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Iterator, Mapping, Sequence

import tensorflow_datasets as tfds

from mmer_jax.data import builder_base
from mmer_jax.data import schema
from mmer_jax.data import synthetic_generator as gen

RELEASE_NAMES = tuple(gen.RELEASES)
SIGNAL_OPTIONS = tuple(f.name for f in dataclasses.fields(gen.Signal))
OPTIONS = ('seed', 'sizes') + SIGNAL_OPTIONS
VERSION = tfds.core.Version('1.0.0')
SHARD_BYTES = 128 << 20  # target size of one array_record shard


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """A release plus the generator settings; `name` is derived from them (see `create_config`)."""
  release: str = ''
  seed: int = 0
  sizes: tuple[tuple[str, int], ...] = ()  # (split, count) in `schema.SPLITS` order
  signal: gen.Signal | None = None

  def settings(self) -> dict[str, Any]:
    """Everything that determines the data, as JSON-able values."""
    return {'release': self.release, 'seed': self.seed, 'sizes': dict(self.sizes),
            'signal': self.signal.to_dict()}


def _resolve_sizes(release: gen.Release, sizes) -> tuple[tuple[str, int], ...]:
  """Release defaults overridden by a {split: count} mapping (a dict, a ConfigDict) or a
  (train, valid, test) sequence."""
  out = dict(release.sizes)
  if sizes is not None:
    if hasattr(sizes, 'items'):
      sizes = dict(sizes.items())
      unknown = set(sizes) - set(schema.SPLITS)
      if unknown:
        raise ValueError(f'sizes for unknown splits {sorted(unknown)}; splits are {schema.SPLITS}')
      out.update(sizes)
    elif isinstance(sizes, Sequence) and len(sizes) == len(schema.SPLITS):
      out.update(zip(schema.SPLITS, sizes))
    else:
      raise ValueError(f'sizes must be a {{split: count}} mapping or (train, valid, test), got {sizes!r}')
  for split, count in out.items():
    if int(count) != count or count < 1:
      raise ValueError(f'sizes[{split!r}] must be a positive integer, got {count!r}')
  return tuple((split, int(out[split])) for split in schema.SPLITS)


def _resolve_signal(release: gen.Release, options: Mapping[str, Any]) -> gen.Signal:
  """Release defaults overridden by Signal fields; `strengths` may name only some modalities."""
  options = {k: v if k == 'strengths' else float(v) for k, v in options.items()}
  if 'strengths' in options:
    strengths = {k: float(v) for k, v in options['strengths'].items()}
    unknown = set(strengths) - set(release.dims)
    if unknown:
      raise ValueError(f'strengths for modalities {sorted(unknown)} that {release.name} lacks')
    options['strengths'] = {**release.signal.strengths, **strengths}
  return dataclasses.replace(release.signal, **options)


def create_config(release: str, *, seed: int = 0, sizes=None, **signal_options) -> SyntheticConfig:
  """The config for `release` with optional overrides; the defaults keep the plain release name."""
  if release not in gen.RELEASES:
    raise ValueError(f'unknown synthetic release {release!r}; expected one of {RELEASE_NAMES}')
  unknown = set(signal_options) - set(SIGNAL_OPTIONS)
  if unknown:
    raise TypeError(f'unknown synthetic option(s) {sorted(unknown)}; expected some of {OPTIONS}')
  if int(seed) != seed or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
  rel = gen.RELEASES[release]
  config = SyntheticConfig(
      name=release, release=release, seed=int(seed), sizes=_resolve_sizes(rel, sizes),
      signal=_resolve_signal(rel, signal_options))
  default = SyntheticConfig(name=release, release=release, sizes=_resolve_sizes(rel, None),
                            signal=rel.signal)
  if config.settings() != default.settings():
    text = json.dumps(config.settings(), sort_keys=True)
    config.name = f'{release}_{hashlib.sha256(text.encode()).hexdigest()[:10]}'
    config.version = VERSION
  config.description = f'Synthetic stand-in for {release}: {json.dumps(config.settings())}'
  return config


def create_spec(release: str) -> schema.DatasetSpec:
  """The DatasetSpec of a synthetic release: the real release's task, labels and modalities."""
  rel = gen.RELEASES[release]
  modalities = {
      m: schema.ModalitySpec(level=rel.level, dim=rel.dims[m],
                             max_len=rel.max_len[m] if rel.max_len else None)
      for m in schema.MODALITIES if m in rel.dims}
  return schema.DatasetSpec(
      name=f'synthetic/{release}', task=rel.task, modalities=modalities,
      label_names=rel.label_names, label_range=rel.label_range,
      conversational=rel.kind == 'conversation')


class Synthetic(builder_base.FeatureBuilder):
  """Synthetic multimodal emotion data shaped like the real feature releases."""

  name = 'mmer_synthetic'
  VERSION = VERSION
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [create_config(name) for name in RELEASE_NAMES]

  def spec(self) -> schema.DatasetSpec:
    return create_spec(self.builder_config.release)

  def _load_splits(self, dl_manager):
    del dl_manager  # nothing to download; shards generate their own chunks
    return {split: None for split in schema.SPLITS}

  def _shard_generators(self, split: str, chunks=None) -> list[Any]:
    """One callable per shard, each generating and yielding the examples of its own chunks."""
    del chunks
    config = self.builder_config
    release = gen.RELEASES[config.release]
    size = dict(config.sizes)[split]
    count = gen.num_chunks(release, size)
    step = chunks_per_shard(release)
    return [functools.partial(self._shard_examples, split, range(i, min(i + step, count)))
            for i in range(0, count, step)]

  @functools.cached_property
  def _world(self) -> gen.World:
    config = self.builder_config
    return gen.create_world(gen.RELEASES[config.release], config.signal, config.seed)

  def _shard_examples(self, split: str, chunk_indices: range) -> Iterator[tuple[str, dict]]:
    config = self.builder_config
    release = gen.RELEASES[config.release]
    size = dict(config.sizes)[split]
    chunks = (gen.generate_chunk(release, config.signal, self._world, config.seed, split, i, size)
              for i in chunk_indices)
    yield from schema.iter_examples(self.spec(), split, chunks)


def chunks_per_shard(release: gen.Release) -> int:
  """Chunks per shard so that a shard holds about SHARD_BYTES of features."""
  if release.max_len is None:
    frames = {m: 1 for m in release.dims}
  elif release.fixed_length:
    frames = dict(release.max_len)
  else:
    frames = {m: (t // 4 + t) / 2 for m, t in release.max_len.items()}
  utterance_bytes = 4 * sum(d * frames[m] for m, d in release.dims.items())
  return max(1, int(SHARD_BYTES // (utterance_bytes * gen.CHUNK_UTTERANCES)))


def make_builder(*, data_dir: str, release: str, **options) -> Synthetic:
  """The builder for `release` (registry entry point); options as in `create_config`."""
  config = create_config(release, **options)
  if config.name == release:
    config = release  # the registered config itself (TFDS rejects equal-named copies)
  return Synthetic(data_dir=data_dir, config=config, file_format='array_record')
