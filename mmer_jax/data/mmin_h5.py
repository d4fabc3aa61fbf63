"""Reading MMIN's feature releases (IEMOCAP 4-class, MSP-IMPROV): h5 features + per-fold targets.

One release folder holds `A/`, `V/`, `L/` h5 files keyed by utterance id and
`target/<fold>/{trn,val,tst}_{int2name,label}.npy`. Labels are in the class order angry, happy,
neutral, sad. `audio_norm='train'` (default) standardises the ComParE frames with the fold's
training statistics, as MMIN's `--norm_method=trn` does; 'none' keeps raw values. Every corpus
here is utterance level: each utterance is its own dialogue (turn 0).

The layout, the label encodings and the normalisation:
docs/data.md#mmins-h5-releases-iemocap_4-msp_improv_4.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from mmer_jax.data import builder_base
from mmer_jax.data import safe_pickle
from mmer_jax.data import schema

SPLIT_FILES = {'train': 'trn', 'valid': 'val', 'test': 'tst'}
LABEL_NAMES = ('angry', 'happy', 'neutral', 'sad')
# Modality -> (release subfolder, feature dim, default padded length in the pipeline).
AUDIO = ('A', 130, 100)
VISUAL = ('V', 342, 50)
TEXT = ('L', 1024, 22)
AUDIO_NORMS = ('train', 'none')
CHUNK = 512


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where one release keeps its files, relative to the manual directory."""
  root: str  # folder inside manual_dir, e.g. 'IEMOCAP_features_2021'
  audio_files: tuple[str, ...]  # first existing one is used
  visual_file: str = 'denseface.h5'
  text_file: str = 'bert_large.h5'
  mean_std_file: str | None = None  # A/<file>, keyed by str(fold)
  num_folds: int = 10


def spec(name: str) -> schema.DatasetSpec:
  """The DatasetSpec shared by MMIN's releases (sequence level, 4 classes)."""
  mods = {}
  for modality, (_, dim, max_len) in (('audio', AUDIO), ('visual', VISUAL), ('text', TEXT)):
    mods[modality] = schema.ModalitySpec('sequence', dim, max_len)
  return schema.DatasetSpec(name=name, task='classification', modalities=mods,
                            label_names=LABEL_NAMES, conversational=False)


def load_npy(path: str) -> np.ndarray:
  """np.load without pickle; an object array's payload goes through the restricted unpickler.

  MMIN's target files are plain arrays, but an object array (lists of names saved by older
  numpy) is read too, without ever running pickle's unrestricted loader.
  """
  with open(path, 'rb') as f:
    try:
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      _, _, dtype = read_header(f)
    except ValueError as e:
      raise schema.DataError(path, 'npy', f'a readable .npy file ({e})') from e
    if dtype.hasobject:
      arr = safe_pickle.load_file(f, source=path)
      if not isinstance(arr, np.ndarray):
        raise schema.DataError(path, 'npy', f'an array, got {type(arr).__name__}')
      return arr
  try:
    return np.load(path, allow_pickle=False)
  except ValueError as e:
    raise schema.DataError(path, 'npy', f'a readable .npy file ({e})') from e


def utterance_names(path: str, raw: np.ndarray) -> list[str]:
  """int2name rows as str: [N] strings, or [N, k] rows whose element 0 is the name (IEMOCAP)."""
  if raw.ndim == 2 and raw.shape[1] >= 1:
    raw = raw[:, 0]
  if raw.ndim != 1:
    raise schema.DataError(path, 'int2name', f'utterance ids of shape [N] or [N, 1], got '
                           f'{list(raw.shape)}')
  out = []
  for i, x in enumerate(raw.tolist()):
    if isinstance(x, bytes):
      x = x.decode('utf-8')
    if not isinstance(x, str) or not x:
      raise schema.DataError(path, 'int2name', f'a non-empty utterance id, got {x!r}', row=i)
    out.append(x)
  return out


def class_labels(path: str, raw: np.ndarray, num_classes: int) -> np.ndarray:
  """Labels as class indices: [N] indices, or [N, C] one-hot rows (IEMOCAP)."""
  if raw.ndim == 2:
    if raw.shape[1] != num_classes:
      raise schema.DataError(path, 'label', f'one-hot rows of width {num_classes}, got '
                             f'{list(raw.shape)}')
    x = np.asarray(raw, np.float64)
    onehot = np.isin(x, (0.0, 1.0)).all(axis=1) & (x.sum(axis=1) == 1)
    if not onehot.all():
      bad = int(np.flatnonzero(~onehot)[0])
      raise schema.DataError(path, 'label', f'a one-hot row, got {raw[bad].tolist()}', row=bad)
    return x.argmax(axis=1).astype(np.int64)
  if raw.ndim != 1:
    raise schema.DataError(path, 'label', f'class indices [N] or one-hot [N, {num_classes}], got '
                           f'shape {list(raw.shape)}')
  if not np.issubdtype(raw.dtype, np.number):
    raise schema.DataError(path, 'label', f'numeric class indices, got dtype {raw.dtype}')
  return raw  # range and integrality are checked by schema.validate_chunk


def speaker_of(utterance: str) -> str:
  """The speaker encoded in an utterance id, or 'unknown'.

  IEMOCAP: 'Ses01F_impro01_M003' -> 'Ses01M' (session + gender of the turn's speaker).
  MSP-IMPROV: 'MSP-IMPROV-S01A-F01-S-FM01' -> 'F01'.
  """
  parts = utterance.split('_')
  if len(parts) >= 3 and parts[0].startswith('Ses') and parts[-1][:1] in ('M', 'F'):
    return parts[0][:5] + parts[-1][0]
  parts = utterance.split('-')
  if len(parts) >= 4 and parts[0] == 'MSP':
    return parts[3]
  return 'unknown'


class FeatureFile:
  """One h5 file of per-utterance [T, D] matrices."""

  def __init__(self, path: str, dim: int):
    import h5py  # pylint: disable=g-import-not-at-top
    self.path, self.dim = path, dim
    try:
      self._h5 = h5py.File(path, 'r')
    except OSError as e:
      raise schema.DataError(path, 'h5', f'a readable HDF5 file ({e})') from e

  def get(self, utterance: str, *, split_file: str, row: int) -> np.ndarray:
    if utterance not in self._h5:
      raise schema.DataError(self.path, utterance, f'a dataset for utterance {utterance!r} '
                             f'(listed in {split_file})', row=row)
    node = self._h5[utterance]
    if not hasattr(node, 'shape'):
      raise schema.DataError(self.path, utterance, 'a [T, D] dataset, got a group', row=row)
    x = np.asarray(node[()], dtype=np.float32)
    if x.ndim == 2 and x.shape[0] == 0 and x.shape[1] in (0, self.dim):
      x = np.zeros((1, self.dim), np.float32)  # no frames: one zero frame (module docstring)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise schema.DataError(self.path, utterance, f'features of shape [T, {self.dim}], got '
                             f'{list(x.shape)}', row=row)
    if not np.isfinite(x).all():
      raise schema.DataError(self.path, utterance, 'finite values (no NaN/Inf)', row=row)
    return x

  def close(self):
    self._h5.close()


def _mean_std_from_file(path: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, 'r') as h5:
    if str(fold) not in h5:
      raise schema.DataError(path, str(fold), f'a group for fold {fold} with mean and std')
    group = h5[str(fold)]
    out = []
    for key in ('mean', 'std'):
      if key not in group:
        raise schema.DataError(path, f'{fold}/{key}', f'a [{AUDIO[1]}] vector')
      v = np.asarray(group[key][()], np.float64).reshape(-1)
      if v.shape != (AUDIO[1],) or not np.isfinite(v).all():
        raise schema.DataError(path, f'{fold}/{key}', f'a finite [{AUDIO[1]}] vector, got shape '
                               f'{list(v.shape)}')
      out.append(v)
  return out[0], out[1]


class Release:
  """One fold of an MMIN release, opened from the manual directory."""

  def __init__(self, dl_manager, layout: Layout, *, fold: int, audio_norm: str, instructions: str):
    self.layout, self.fold, self.audio_norm = layout, fold, audio_norm
    manual = lambda rel: builder_base.manual_file(dl_manager, f'{layout.root}/{rel}', instructions)
    audio_path = None
    manual_dir = getattr(dl_manager, '_manual_dir', None)
    for name in layout.audio_files:  # first that exists; the error names the first
      candidate = os.path.join(os.fspath(manual_dir), layout.root, 'A', name) if manual_dir else ''
      if candidate and os.path.exists(candidate):
        audio_path = candidate
        break
    if audio_path is None:
      audio_path = manual(f'A/{layout.audio_files[0]}')
    self.mean_std_path = None
    if layout.mean_std_file and manual_dir:
      candidate = os.path.join(os.fspath(manual_dir), layout.root, 'A', layout.mean_std_file)
      if os.path.exists(candidate):
        self.mean_std_path = candidate
    self.paths = {'audio': audio_path, 'visual': manual(f'V/{layout.visual_file}'),
                  'text': manual(f'L/{layout.text_file}')}
    self.targets = {}
    for split, short in SPLIT_FILES.items():
      self.targets[split] = (manual(f'target/{fold}/{short}_int2name.npy'),
                             manual(f'target/{fold}/{short}_label.npy'))
    self.dims = {'audio': AUDIO[1], 'visual': VISUAL[1], 'text': TEXT[1]}
    self._stats = None

  def split_index(self, split: str) -> tuple[list[str], np.ndarray]:
    names_path, label_path = self.targets[split]
    names = utterance_names(names_path, load_npy(names_path))
    labels = class_labels(label_path, load_npy(label_path), len(LABEL_NAMES))
    if len(names) != len(labels):
      raise schema.DataError(label_path, 'label', f'{len(names)} labels (one per utterance in '
                             f'{os.path.basename(names_path)}), got {len(labels)}')
    return names, labels

  def audio_stats(self, audio: FeatureFile) -> tuple[np.ndarray, np.ndarray] | None:
    """Training statistics for the ComParE frames (see `audio_norm`), computed once."""
    if self.audio_norm == 'none':
      return None
    if self._stats is not None:
      return self._stats
    if self.mean_std_path:
      mean, std = _mean_std_from_file(self.mean_std_path, self.fold)
    else:
      names, _ = self.split_index('train')
      total, total_sq, count = np.zeros(AUDIO[1]), np.zeros(AUDIO[1]), 0
      for i, name in enumerate(names):
        x = audio.get(name, split_file=self.targets['train'][0], row=i).astype(np.float64)
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)
        count += len(x)
      mean = total / count
      std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    std = np.where(std == 0, 1.0, std)
    self._stats = (mean, std)
    return self._stats

  def splits(self) -> dict[str, Iterator[schema.SplitData]]:
    return {split: self._chunks(split) for split in SPLIT_FILES}

  def _chunks(self, split: str) -> Iterator[schema.SplitData]:
    files = {m: FeatureFile(p, self.dims[m]) for m, p in self.paths.items()}
    try:
      stats = self.audio_stats(files['audio'])
      names, labels = self.split_index(split)
      split_file = self.targets[split][0]
      for start in range(0, len(names), CHUNK):
        rows = range(start, min(start + CHUNK, len(names)))
        feats = {m: [f.get(names[i], split_file=split_file, row=i) for i in rows]
                 for m, f in files.items()}
        if stats is not None:
          mean, std = stats
          feats['audio'] = [((x - mean) / std).astype(np.float32) for x in feats['audio']]
        chunk_names = [names[i] for i in rows]
        yield schema.SplitData(
            utterance_id=chunk_names,
            dialogue_id=chunk_names,
            turn=np.zeros(len(rows), np.int32),
            speaker_name=[speaker_of(n) for n in chunk_names],
            label=labels[start:start + len(rows)],
            features=feats,
            source=f'{split_file} (rows {start}..{rows[-1]})',
        )
    finally:
      for f in files.values():
        f.close()


@dataclasses.dataclass(eq=False)
class FoldConfig(tfds.core.BuilderConfig):
  """One cross-validation fold and the audio normalisation (both change the stored data)."""
  fold: int = 1
  audio_norm: str = 'train'


def config_name(fold: int, audio_norm: str) -> str:
  return f'fold_{fold}' if audio_norm == 'train' else f'fold_{fold}_{audio_norm}'


def fold_configs(num_folds: int) -> list[FoldConfig]:
  """Every (fold, audio_norm) as a BuilderConfig: each gets its own prepared directory."""
  return [FoldConfig(name=config_name(k, norm), fold=k, audio_norm=norm,
                     description=f'fold {k} of {num_folds}, audio_norm={norm}')
          for norm in AUDIO_NORMS for k in range(1, num_folds + 1)]


class MminBuilder(builder_base.FeatureBuilder, skip_registration=True):
  """Base of the MMIN-format builders: subclasses set `name`, `LAYOUT`, instructions, configs."""

  VERSION = tfds.core.Version('1.0.0')
  LAYOUT: Layout

  def spec(self) -> schema.DatasetSpec:
    return spec(self.name)

  def _load_splits(self, dl_manager):
    config = self.builder_config
    release = Release(dl_manager, self.LAYOUT, fold=config.fold, audio_norm=config.audio_norm,
                      instructions=self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return release.splits()


def create_builder(cls: type[MminBuilder], *, data_dir: str, fold: int = 1,
                   audio_norm: str = 'train', file_format: str = 'array_record') -> MminBuilder:
  """The builder for one fold; `fold` is 1-based as in MMIN's `--cvNo`."""
  fold = check_fold(cls.name, fold, cls.LAYOUT.num_folds)
  audio_norm = check_audio_norm(cls.name, audio_norm)
  return cls(data_dir=data_dir, config=config_name(fold, audio_norm), file_format=file_format)


def check_fold(name: str, fold, num_folds: int) -> int:
  """`fold` as an int in 1..num_folds, or a ValueError naming the valid range."""
  if (isinstance(fold, bool) or not isinstance(fold, (int, np.integer))
      or not 1 <= fold <= num_folds):
    raise ValueError(f'{name}: fold must be an integer in 1..{num_folds} (MMIN\'s cross-validation '
                     f'folds), got {fold!r}')
  return int(fold)


def check_audio_norm(name: str, audio_norm: str) -> str:
  if audio_norm not in AUDIO_NORMS:
    raise ValueError(f'{name}: audio_norm must be one of {AUDIO_NORMS}, got {audio_norm!r}')
  return audio_norm
