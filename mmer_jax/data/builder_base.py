"""The TFDS builder shape shared by every dataset: a spec, chunks per split, array_record files.

A concrete builder says what it holds (`spec()`) and where its rows come from (`_load_splits`);
this base turns that into validated TFDS examples in the common format of `schema.py`. Datasets are
written as array_record and read back with `tfds.data_source`, so TensorFlow is never needed.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable, Mapping

import tensorflow_datasets as tfds
from tensorflow_datasets.core import split_builder as split_builder_lib
from tensorflow_datasets.core import splits as splits_lib
from tensorflow_datasets.core import writer as writer_lib

from mmer_jax.data import schema

DEFAULT_DATA_DIR = os.path.join(os.path.expanduser('~'), 'tensorflow_datasets')


class FeatureBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base class: subclasses implement `spec()` and `_load_splits(dl_manager)`."""

  # Nothing is downloaded, so there is no checksums file beside the code to look up (TFDS finds it
  # through `code_path`, which needs the optional `importlib_resources` package).
  code_path = None

  def spec(self) -> schema.DatasetSpec:
    raise NotImplementedError

  def _load_splits(self, dl_manager) -> Mapping[str, Iterable[schema.SplitData]]:
    """Returns {split: iterable of SplitData chunks}; splits are `schema.SPLITS`."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.spec()
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or '').strip().splitlines()[0] if self.__doc__ else spec.name,
        features=schema.tfds_features(spec),
        metadata=tfds.core.MetadataDict(spec=spec.to_json()),
    )

  def _split_generators(self, dl_manager):
    splits = self._load_splits(dl_manager)
    return {split: self._generate_examples(split=split, chunks=splits[split]) for split in schema.SPLITS}

  def _download_and_prepare(self, dl_manager, download_config=None):
    """Writes every split shard by shard, in generation order (as tfds.core.ShardBasedBuilder).

    GeneratorBasedBuilder routes examples through TFDS's shuffler, which keeps up to 1 GB in
    memory and then spills to temporary files through tf.io.gfile, i.e. TensorFlow, which we do
    not depend on (MOSEI's training split is ~2.9 GB). Order does not matter to us: the input
    pipeline shuffles by (seed, epoch). Nothing larger than a chunk is held in memory.
    """
    del download_config
    splits = self._load_splits(dl_manager)
    builder = split_builder_lib.SplitBuilder(
        split_dict=self.info.splits, features=self.info.features,
        dataset_size=self.info.dataset_size, beam_options=None, beam_runner=None,
        example_writer=writer_lib.ExampleWriter(file_format=self.info.file_format),
        ignore_duplicates=None, max_examples_per_split=None, shard_config=None)
    futures = [
        builder.submit_shard_based_generation(
            split_name=split, example_gen_per_shard=self._shard_generators(split, splits[split]),
            filename_template=self._get_filename_template(split_name=split))
        for split in schema.SPLITS]
    self.info.set_splits(splits_lib.SplitDict([f.result() for f in futures]))

  def _shard_generators(self, split: str, chunks: Iterable[schema.SplitData]) -> list:
    """Callables, one per output shard, each yielding (key, example) pairs; default one shard."""
    return [functools.partial(self._generate_examples, split=split, chunks=chunks)]

  def _generate_examples(self, split: str, chunks: Iterable[schema.SplitData]):
    yield from schema.iter_examples(self.spec(), split, chunks)


def spec_of(builder: tfds.core.DatasetBuilder) -> schema.DatasetSpec:
  """The DatasetSpec stored with a built dataset."""
  return schema.DatasetSpec.from_json(builder.info.metadata['spec'])


def manual_file(dl_manager, filename: str, instructions: str) -> str:
  """Path of a user-provided release file, or a clear error carrying the download instructions."""
  manual_dir = getattr(dl_manager, '_manual_dir', None)
  manual_dir = os.fspath(manual_dir) if manual_dir else None
  path = os.path.join(manual_dir, filename) if manual_dir else filename
  if not manual_dir or not os.path.exists(path):
    where = manual_dir or '<no manual_dir given>'
    raise schema.DataError(
        path, 'manual_dir',
        f'the release file {filename!r} in the manual directory {where}; it is licensed data that '
        f'you download yourself.\n{instructions.strip()}\nPass --manual_dir=DIR (or '
        f'--config.data.manual_dir=DIR), or use the synthetic stand-in (add `:synthetic` to a config).')
  return path
