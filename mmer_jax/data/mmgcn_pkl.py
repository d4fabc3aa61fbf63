"""Reading MMGCN's conversation pickles (`IEMOCAP_features.pkl`, `MELD_features_raw1.pkl`).

Both releases are tuples of dicts keyed by dialogue id (the order of MMGCN's `dataloader.py`),
read with `safe_pickle`. There is no validation split in these files: we hold out one carved from
the *training* dialogues (`carve_valid`: `VALID_FRACTION` of them, seeded by `valid_seed`), so
the test dialogues are never looked at during model selection.

The fields and the carving: docs/data.md#mmgcns-pickles-iemocap_6-meld_7.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from mmer_jax.data import builder_base
from mmer_jax.data import safe_pickle
from mmer_jax.data import schema

VALID_FRACTION = 0.1
FIELDS = ('videoIDs', 'videoSpeakers', 'videoLabels', 'videoText', 'videoAudio', 'videoVisual',
          'videoSentence', 'trainVid', 'testVid')
# Pickle field per modality of the common format.
MODALITY_FIELDS = {'audio': 'videoAudio', 'visual': 'videoVisual', 'text': 'videoText'}


def load_release(path: str, *, extra_fields: int = 0) -> dict[str, Any]:
  """Reads the pickle (restricted) and names its elements; checks the tuple's shape."""
  data = safe_pickle.load(path)
  want = len(FIELDS) + extra_fields
  if not isinstance(data, (tuple, list)) or len(data) != want:
    got = f'a {len(data)}-element {type(data).__name__}' if isinstance(data, (tuple, list)) \
        else f'a {type(data).__name__}'
    raise schema.DataError(path, 'pickle', f'a {want}-tuple ({", ".join(FIELDS)}'
                           f'{", <unused>" * extra_fields}), got {got}')
  named = dict(zip(FIELDS, data))
  for field in FIELDS:
    if field in ('trainVid', 'testVid'):
      if isinstance(named[field], (dict, str, bytes)) or not hasattr(named[field], '__iter__'):
        raise schema.DataError(path, field, f'a collection of dialogue ids, got '
                               f'{type(named[field]).__name__}')
    elif not isinstance(named[field], dict):
      raise schema.DataError(path, field, f'a dict keyed by dialogue id, got '
                             f'{type(named[field]).__name__}')
  return named


def dialogue_ids(named: dict[str, Any], path: str, field: str) -> list:
  """The dialogue ids of `trainVid`/`testVid`, sorted (the files may hold sets)."""
  ids = list(named[field])
  for vid in ids:
    if vid not in named['videoLabels']:
      raise schema.DataError(path, field, f'dialogue ids that are keys of videoLabels; '
                             f'{vid!r} is not')
  if len(set(ids)) != len(ids):
    raise schema.DataError(path, field, 'each dialogue id once')
  return sorted(ids, key=str)


def carve_valid(train_ids: Sequence, *, seed: int,
                fraction: float = VALID_FRACTION) -> tuple[list, list]:
  """Splits training dialogues into (train, valid), deterministically for a seed.

  The ids are sorted first, so the result does not depend on how the pickle ordered them.
  """
  ids = sorted(train_ids, key=str)
  if len(ids) < 2:
    raise ValueError(f'need at least 2 training dialogues to carve a validation split, '
                     f'got {len(ids)}')
  n_valid = max(1, int(fraction * len(ids)))
  perm = np.random.default_rng(seed).permutation(len(ids))
  valid = set(perm[:n_valid].tolist())
  return ([d for i, d in enumerate(ids) if i not in valid],
          [d for i, d in enumerate(ids) if i in valid])


def _matrix(named: dict[str, Any], path: str, field: str, vid, n: int, dim: int) -> np.ndarray:
  """One dialogue's features as float32 [n, dim]; names field, dialogue and turn on errors."""
  where = f'{field}[{vid!r}]'
  if vid not in named[field]:
    raise schema.DataError(path, where, 'an entry for every dialogue in videoLabels (missing)')
  value = named[field][vid]
  try:
    x = np.asarray(value, dtype=np.float32)
  except (ValueError, TypeError) as e:
    rows = list(value) if hasattr(value, '__len__') else []
    for i, r in enumerate(rows):
      if np.ndim(r) != 1 or np.shape(r)[0] != dim:
        raise schema.DataError(path, where, f'a [{dim}] feature vector per turn, got shape '
                               f'{list(np.shape(r))}', row=i) from e
    raise schema.DataError(path, where, f'numeric features [{n}, {dim}] ({e})') from e
  if x.ndim != 2 or x.shape[1] != dim:
    raise schema.DataError(path, where, f'features of shape [{n}, {dim}] (turns, dim), got '
                           f'{list(x.shape)}')
  if x.shape[0] != n:
    raise schema.DataError(path, where, f'{n} rows (one per labelled turn), got {x.shape[0]}')
  finite = np.isfinite(x).all(axis=1)
  if not finite.all():
    raise schema.DataError(path, where, 'finite values (no NaN/Inf)',
                           row=int(np.flatnonzero(~finite)[0]))
  return x


def dialogue_chunks(named: dict[str, Any], path: str, ids: Sequence,
                    dims: dict[str, int], *,
                    utterance_id: Callable[[Any, Any, int], str],
                    speaker_name: Callable[[Any, int, Any], str]) -> Iterator[schema.SplitData]:
  """One `SplitData` chunk per dialogue (errors then point at the dialogue and turn)."""
  for vid in ids:
    labels_raw = named['videoLabels'][vid]
    try:
      label = np.asarray(labels_raw)
    except (ValueError, TypeError) as e:
      raise schema.DataError(path, f'videoLabels[{vid!r}]', f'a list of class indices ({e})') from e
    if label.ndim != 1 or label.size == 0:
      raise schema.DataError(path, f'videoLabels[{vid!r}]', f'a non-empty list of class indices, '
                             f'got shape {list(label.shape)}')
    if not np.issubdtype(label.dtype, np.number):
      raise schema.DataError(path, f'videoLabels[{vid!r}]', f'integer class indices, got '
                             f'{label.dtype} values')
    n = len(label)
    for field in ('videoIDs', 'videoSpeakers'):
      if vid not in named[field]:
        raise schema.DataError(path, f'{field}[{vid!r}]', 'an entry for every dialogue in '
                               'videoLabels (missing)')
      if len(named[field][vid]) != n:
        raise schema.DataError(path, f'{field}[{vid!r}]', f'{n} entries (one per labelled turn), '
                               f'got {len(named[field][vid])}')
    features = {m: _matrix(named, path, MODALITY_FIELDS[m], vid, n, d) for m, d in dims.items()}
    ids_in_dia = list(named['videoIDs'][vid])
    speakers = list(named['videoSpeakers'][vid])
    yield schema.SplitData(
        utterance_id=[utterance_id(vid, ids_in_dia[t], t) for t in range(n)],
        dialogue_id=[str(vid)] * n,
        turn=np.arange(n, dtype=np.int32),
        speaker_name=[speaker_name(vid, t, speakers[t]) for t in range(n)],
        label=label,
        features=features,
        source=f'{path} (dialogue {vid!r})',
    )


def split_chunks(named: dict[str, Any], path: str, *, valid_seed: int, dims: dict[str, int],
                 utterance_id, speaker_name) -> dict[str, Iterator[schema.SplitData]]:
  """{train, valid, test}: chunk iterators, valid carved from trainVid (see module docstring)."""
  train_all = dialogue_ids(named, path, 'trainVid')
  test = dialogue_ids(named, path, 'testVid')
  overlap = set(train_all) & set(test)
  if overlap:
    raise schema.DataError(path, 'testVid', f'dialogues disjoint from trainVid; '
                           f'{sorted(overlap, key=str)[0]!r} is in both')
  try:
    train, valid = carve_valid(train_all, seed=valid_seed)
  except ValueError as e:
    raise schema.DataError(path, 'trainVid', str(e)) from e
  kw = dict(dims=dims, utterance_id=utterance_id, speaker_name=speaker_name)
  return {'train': dialogue_chunks(named, path, train, **kw),
          'valid': dialogue_chunks(named, path, valid, **kw),
          'test': dialogue_chunks(named, path, test, **kw)}


@dataclasses.dataclass(eq=False)
class ValidSeedConfig(tfds.core.BuilderConfig):
  """The seed of the carved validation split (it changes the stored splits)."""
  valid_seed: int = 0


def config_name(valid_seed: int) -> str:
  return f'valid_seed_{valid_seed}'


class MmgcnBuilder(builder_base.FeatureBuilder, skip_registration=True):
  """Base of the builders for MMGCN's pickles: subclasses set `name`, the file and the parsing."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [ValidSeedConfig(name=config_name(0), valid_seed=0,
                                     description='validation dialogues drawn with seed 0')]
  FILENAME: str
  EXTRA_FIELDS = 0  # elements after testVid that MMGCN ignores

  def _dims(self) -> dict[str, int]:
    return {m: s.dim for m, s in self.spec().modalities.items()}

  def _utterance_id(self, vid, utt, turn: int) -> str:
    raise NotImplementedError

  def _speaker_name(self, path: str, vid, turn: int, value) -> str:
    raise NotImplementedError

  def _load_splits(self, dl_manager):
    path = builder_base.manual_file(dl_manager, self.FILENAME, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    named = load_release(path, extra_fields=self.EXTRA_FIELDS)
    return split_chunks(
        named, path, valid_seed=self.builder_config.valid_seed, dims=self._dims(),
        utterance_id=self._utterance_id,
        speaker_name=lambda vid, t, value: self._speaker_name(path, vid, t, value))


def create_builder(cls: type[MmgcnBuilder], *, data_dir: str, valid_seed: int = 0,
                   file_format: str = 'array_record') -> MmgcnBuilder:
  """The builder whose validation dialogues are drawn with `valid_seed`."""
  if (isinstance(valid_seed, bool) or not isinstance(valid_seed, (int, np.integer))
      or valid_seed < 0):
    raise ValueError(f'{cls.name}: valid_seed must be a non-negative integer, got {valid_seed!r}')
  valid_seed = int(valid_seed)
  config = (config_name(0) if valid_seed == 0 else
            ValidSeedConfig(name=config_name(valid_seed), valid_seed=valid_seed,
                            version=cls.VERSION,
                            description=f'validation dialogues drawn with seed {valid_seed}'))
  return cls(data_dir=data_dir, config=config, file_format=file_format)
