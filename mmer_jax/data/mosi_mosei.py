"""CMU-MOSI and CMU-MOSEI from MMSA's word-aligned release `aligned_50.pkl` (sentiment regression).

The pickle is a dict of splits 'train', 'valid', 'test', each a dict of arrays over N utterances
(BERT text, COVAREP audio, Facet vision, all aligned to 50 word slots; labels in [-3, 3]). Every
length is 50; `-inf` in audio becomes 0, any other NaN/Inf is an error. Each clip is its own
dialogue; its speaker is the video id.

Before the pickle is read, its SHA-256 is compared with the one MMSA publishes (`SHA256`); a
mismatch is a DataError, or a logged warning with the builder option `verify_checksum=False`.

  registry.load('mosi', manual_dir=DIR)    # DIR/MOSI/Processed/aligned_50.pkl (MMSA's layout)

The keys and the checks: docs/data.md#mmsas-aligned_50pkl-mosi-mosei.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from mmer_jax.data import builder_base
from mmer_jax.data import safe_pickle
from mmer_jax.data import schema

RELEASES = ('mosi', 'mosei')
SEQ_LEN = 50
DIMS = {'mosi': {'audio': 5, 'visual': 20, 'text': 768},
        'mosei': {'audio': 74, 'visual': 35, 'text': 768}}
KEYS = {'audio': 'audio', 'visual': 'vision', 'text': 'text'}  # our modality -> MMSA key
LENGTH_KEYS = {'audio': 'audio_lengths', 'visual': 'vision_lengths'}
FILES = {'mosi': 'MOSI/Processed/aligned_50.pkl', 'mosei': 'MOSEI/Processed/aligned_50.pkl'}
# SHA-256 of each release file as published by MMSA (thuiar/MMSA README, section "Datasets", at
# commit a94e65d). Read at build time, so tests can substitute the hashes of their fake files.
SHA256 = {
    'mosi': 'd3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9',
    'mosei': '45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791',
}
LABEL_RANGE = (-3.0, 3.0)
CHUNK = 1024
HASH_BLOCK = 1 << 20  # bytes read at a time: MOSEI's file is several GB, never held whole


def _instructions(release: str) -> str:
  upper = release.upper()
  return f"""\
{release} needs MMSA's word-aligned feature file for CMU-{upper}, `aligned_50.pkl`
(https://github.com/thuiar/MMSA, "Datasets": the {upper}/Processed/ folder of the MMSA download).
Keep MMSA's folder layout inside the manual directory: <manual_dir>/{FILES[release]}
"""


def file_sha256(path: str) -> str:
  """Hex SHA-256 of a file, read in HASH_BLOCK pieces so memory stays flat for any file size."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(HASH_BLOCK):
      digest.update(block)
  return digest.hexdigest()


def check_checksum(path: str, release: str, *, verify: bool = True) -> None:
  """Compares `path` with MMSA's published SHA-256 of `release`'s file (module docstring).

  A mismatch raises DataError, or with `verify=False` is logged as a warning and the file used.
  """
  expected = SHA256[release]
  logging.info('checking the SHA-256 of %s against MMSA\'s', path)  # MOSEI's takes a while
  actual = file_sha256(path)
  if actual == expected:
    return
  if verify:
    raise schema.DataError(
        path, 'sha256',
        f'MMSA\'s published {FILES[release]} (SHA-256 {expected}), but this file\'s SHA-256 is '
        f'{actual}: it is a different or corrupted copy of MMSA\'s file (an incomplete download, '
        'another version, or re-extracted features). Download it again from MMSA, or, to use '
        'this file anyway, set the builder option verify_checksum=False '
        '(--config.data.options.verify_checksum=False).')
  logging.warning('%s is not MMSA\'s published %s (SHA-256 %s, expected %s); using it anyway '
                  'because verify_checksum=False: results may not be comparable with the papers\'.',
                  path, FILES[release], actual, expected)


def _array(path: str, split: str, data: dict, key: str) -> np.ndarray:
  if key not in data:
    raise schema.DataError(path, f'{split}/{key}', f'a key {key!r} in split {split!r} '
                           f'(found {sorted(map(str, data))})')
  return np.asarray(data[key])


def split_chunks(path: str, split: str, data: Any,
                 dims: dict[str, int]) -> Iterator[schema.SplitData]:
  """Chunks of one MMSA split, checked against the release's shapes."""
  if not isinstance(data, dict):
    raise schema.DataError(path, split, f'a dict of arrays, got {type(data).__name__}')
  label = _array(path, split, data, 'regression_labels').astype(np.float32)
  if label.ndim == 2 and label.shape[1] == 1:
    label = label[:, 0]
  if label.ndim != 1:
    raise schema.DataError(path, f'{split}/regression_labels', f'one score per clip [N], got '
                           f'shape {list(label.shape)}')
  n = len(label)
  ids = [x.decode('utf-8') if isinstance(x, bytes) else str(x)
         for x in _array(path, split, data, 'id').reshape(-1).tolist()]
  if len(ids) != n:
    raise schema.DataError(path, f'{split}/id', f'{n} ids (one per label), got {len(ids)}')
  feats, lengths = {}, {}
  for name, dim in dims.items():
    key = KEYS[name]
    x = _array(path, split, data, key)
    if x.ndim != 3 or x.shape[0] != n or x.shape[2] != dim:
      raise schema.DataError(path, f'{split}/{key}', f'shape [{n}, T, {dim}] (clips, steps, dim), '
                             f'got {list(x.shape)}')
    if not np.issubdtype(x.dtype, np.number):
      raise schema.DataError(path, f'{split}/{key}', f'numeric features, got dtype {x.dtype}')
    feats[name] = x
    if name in LENGTH_KEYS and LENGTH_KEYS[name] in data:
      lengths[name] = np.asarray(data[LENGTH_KEYS[name]]).reshape(-1).astype(np.int64)
    else:
      lengths[name] = np.full(n, x.shape[1], np.int64)
  for start in range(0, n, CHUNK):
    sl = slice(start, min(start + CHUNK, n))
    chunk_feats = {}
    for name, x in feats.items():
      x = np.asarray(x[sl], dtype=np.float32)
      if name == 'audio':
        x = np.where(x == -np.inf, np.float32(0), x)  # as MMSA does (module docstring)
      finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
      if not finite.all():
        raise schema.DataError(path, f'{split}/{KEYS[name]}', 'finite values (no NaN/Inf; -inf in '
                               'audio becomes 0)', row=start + int(np.flatnonzero(~finite)[0]))
      chunk_feats[name] = x
    chunk_ids = ids[sl]
    yield schema.SplitData(
        utterance_id=chunk_ids,
        dialogue_id=chunk_ids,
        turn=np.zeros(len(chunk_ids), np.int32),
        speaker_name=[i.split('$_$')[0] for i in chunk_ids],
        label=label[sl],
        features=chunk_feats,
        lengths={m: v[sl] for m, v in lengths.items()},
        source=f'{path} (split {split!r}, rows {start}..{sl.stop - 1})',
    )


class _MmsaBuilder(builder_base.FeatureBuilder, skip_registration=True):
  """Base of the MOSI/MOSEI builders; subclasses set `name`."""

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, verify_checksum: bool = True, **kwargs):
    # Not a BuilderConfig field: the check changes no byte of the built dataset, so it must not
    # give the same data another config name or directory.
    self.verify_checksum = verify_checksum
    super().__init__(**kwargs)
    self._original_state['verify_checksum'] = self.verify_checksum  # kept when pickled

  def spec(self) -> schema.DatasetSpec:
    return schema.DatasetSpec(
        name=self.name, task='regression',
        modalities={m: schema.ModalitySpec('sequence', d, SEQ_LEN)
                    for m, d in DIMS[self.name].items()},
        label_range=LABEL_RANGE)

  def _load_splits(self, dl_manager):
    path = builder_base.manual_file(dl_manager, FILES[self.name], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    check_checksum(path, self.name, verify=self.verify_checksum)  # before any unpickling
    data = safe_pickle.load(path)
    if not isinstance(data, dict):
      raise schema.DataError(path, 'pickle', f'a dict of splits train/valid/test, got '
                             f'{type(data).__name__}')
    splits = {}
    for split in schema.SPLITS:
      if split not in data:
        raise schema.DataError(path, split, f'a split {split!r} (found {sorted(map(str, data))})')
      splits[split] = split_chunks(path, split, data[split], DIMS[self.name])
    return splits


class Mosi(_MmsaBuilder, skip_registration=True):
  """CMU-MOSI sentiment regression from MMSA's aligned_50.pkl."""
  name = 'mosi'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions('mosi')


class Mosei(_MmsaBuilder, skip_registration=True):
  """CMU-MOSEI sentiment regression from MMSA's aligned_50.pkl."""
  name = 'mosei'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions('mosei')


def make_builder(*, data_dir: str, release: str, file_format: str = 'array_record',
                 verify_checksum: bool = True) -> tfds.core.DatasetBuilder:
  """The builder of `release` ('mosi' or 'mosei').

  `verify_checksum=False` accepts a file whose SHA-256 differs from MMSA's (logged as a warning).
  """
  builders = {'mosi': Mosi, 'mosei': Mosei}
  if release not in builders:
    raise ValueError(f'unknown MMSA release {release!r}; expected one of {RELEASES}')
  if not isinstance(verify_checksum, bool):  # e.g. the string 'False', which bool() makes True
    raise ValueError(f'{release}: verify_checksum must be True or False, got {verify_checksum!r}')
  return builders[release](data_dir=data_dir, file_format=file_format,
                           verify_checksum=verify_checksum)
