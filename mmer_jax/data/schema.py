"""The one example format every dataset is stored in, and the checks that guard it.

Every builder (synthetic, official releases, generic feature directory) produces the same
per-utterance records (`utterance_id`, `dialogue_id`, `turn`, `speaker`, `speaker_name`, `label`,
the present modalities' features and presence flags), so the input pipeline and the methods never
care where the data came from. Modality order is fixed everywhere: audio, visual, text
(`MODALITIES`). A defect in the data is a `DataError`.

The fields: docs/data.md#the-example-format.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

MODALITIES = ('audio', 'visual', 'text')
SPLITS = ('train', 'valid', 'test')
TASKS = ('classification', 'regression')
LEVELS = ('utterance', 'sequence')


class DataError(ValueError):
  """Bad input data: names the file, the field (and row) and what was expected."""

  def __init__(self, file: str, field: str, expected: str, row: int | None = None):
    where = f'{file}: field {field!r}'
    if row is not None:
      where += f', row {row}'
    super().__init__(f'{where}: {expected}')
    self.file, self.field, self.row, self.expected = file, field, row, expected


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
  """One present modality: its level, feature dimension and default padded length."""
  level: str  # 'utterance' | 'sequence'
  dim: int
  max_len: int | None = None  # default pipeline padding length for sequences

  def __post_init__(self):
    if self.level not in LEVELS:
      raise ValueError(f'level must be one of {LEVELS}, got {self.level!r}')
    if self.level == 'sequence' and self.max_len is None:
      raise ValueError('sequence modalities need a default max_len')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset holds: the task, labels and present modalities."""
  name: str
  task: str
  modalities: Mapping[str, ModalitySpec]
  label_names: tuple[str, ...] | None = None  # classification
  label_range: tuple[float, float] | None = None  # regression
  conversational: bool = False  # dialogue context is meaningful (ERC datasets)
  # Modalities some samples lack in the data itself (a face not found, a silent clip); their
  # examples carry `<modality>_present` and batches' `modality_mask` follows it.
  incomplete: tuple[str, ...] = ()

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f'task must be one of {TASKS}, got {self.task!r}')
    unknown = set(self.modalities) - set(MODALITIES)
    if unknown:
      raise ValueError(f'unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}')
    if self.task == 'classification' and not self.label_names:
      raise ValueError('a classification dataset needs label_names')
    if self.task == 'regression' and self.label_range is None:
      raise ValueError('a regression dataset needs label_range')
    if set(self.incomplete) - set(self.modalities):
      raise ValueError(f'incomplete modalities {sorted(set(self.incomplete) - set(self.modalities))} '
                       f'are not among the dataset\'s modalities {sorted(self.modalities)}')

  @property
  def num_classes(self) -> int | None:
    return len(self.label_names) if self.label_names else None

  @property
  def available(self) -> np.ndarray:
    """Boolean [3] in `MODALITIES` order: which modalities the dataset has at all."""
    return np.array([m in self.modalities for m in MODALITIES])

  def ordered_modalities(self) -> list[str]:
    return [m for m in MODALITIES if m in self.modalities]

  def to_json(self) -> str:
    d = dataclasses.asdict(self)
    d['modalities'] = {k: dataclasses.asdict(v) for k, v in self.modalities.items()}
    return json.dumps(d, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'DatasetSpec':
    d = json.loads(text)
    d['modalities'] = {k: ModalitySpec(**v) for k, v in d['modalities'].items()}
    for key in ('label_names', 'label_range', 'incomplete'):
      if d.get(key) is not None:
        d[key] = tuple(d[key])
    return cls(**d)

  def describe(self) -> dict:
    """The JSON-able summary the dataset CLI prints."""
    mods = {}
    for name in self.ordered_modalities():
      m = self.modalities[name]
      shape = [m.dim] if m.level == 'utterance' else [None, m.dim]
      mods[name] = {'level': m.level, 'shape': shape, 'max_len': m.max_len}
    out = {'name': self.name, 'task': self.task, 'modalities': mods}
    if self.incomplete:
      out['incomplete'] = list(self.incomplete)
    if self.task == 'classification':
      out['labels'] = list(self.label_names)
    else:
      out['label_range'] = list(self.label_range)
    return out


@dataclasses.dataclass
class SplitData:
  """A chunk of one split, as columns. Chunks hold whole dialogues.

  `features[m]` is an array [N, D] (utterance level) or [N, T, D] (sequence level, with
  `lengths[m]` [N] giving the valid frames), or a list of N arrays [T_i, D].
  `source` names the file the rows came from, for error messages. `present[m]` (bool [N], only
  for the spec's incomplete modalities) is False where a row lacks modality m; such rows' features
  may hold anything (NaN included): they are never checked and are stored as zeros.
  """
  utterance_id: Sequence[str]
  dialogue_id: Sequence[str]
  turn: np.ndarray
  speaker_name: Sequence[str]
  label: np.ndarray
  features: dict[str, np.ndarray | list[np.ndarray]]
  source: str
  lengths: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  present: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.label)


def speaker_order(dialogue_id: Sequence[str], turn: np.ndarray, speaker_name: Sequence[str]) -> np.ndarray:
  """Speaker index by order of first appearance inside each dialogue (0 = who speaks first)."""
  out = np.zeros(len(dialogue_id), np.int32)
  seen: dict[str, dict[str, int]] = {}
  for i in np.lexsort((np.asarray(turn), np.asarray(dialogue_id, dtype=object).astype(str))):
    names = seen.setdefault(dialogue_id[i], {})
    out[i] = names.setdefault(speaker_name[i], len(names))
  return out


def _rows(value, lengths) -> Iterator[np.ndarray]:
  if isinstance(value, np.ndarray) and lengths is not None:
    for x, n in zip(value, lengths):
      yield x[: int(n)]
  else:
    yield from value


def validate_chunk(spec: DatasetSpec, split: str, chunk: SplitData) -> None:
  """Raises DataError for the defects users actually ship: shapes, NaN/Inf, labels, counts."""
  src, n = chunk.source, len(chunk.label)
  for field in ('utterance_id', 'dialogue_id', 'turn', 'speaker_name'):
    if len(getattr(chunk, field)) != n:
      raise DataError(src, field, f'{len(getattr(chunk, field))} rows, but there are {n} labels '
                      f'in split {split!r}')
  label = np.asarray(chunk.label)
  if spec.task == 'classification':
    if not np.issubdtype(label.dtype, np.integer):
      if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
        bad = int(np.flatnonzero(~np.isfinite(label) | (label != np.round(label)))[0])
        raise DataError(src, 'label', f'an integer class index, got {label[bad].item()!r}', row=bad)
    bad = np.flatnonzero((label < 0) | (label >= spec.num_classes))
    if bad.size:
      raise DataError(src, 'label', f'a class index in [0, {spec.num_classes - 1}] '
                      f'({len(spec.label_names)} labels), got {label[bad[0]].item()!r}', row=int(bad[0]))
  else:
    lo, hi = spec.label_range
    bad = np.flatnonzero(~np.isfinite(label) | (label < lo) | (label > hi))
    if bad.size:
      raise DataError(src, 'label', f'a finite score in [{lo}, {hi}], got {label[bad[0]].item()!r}',
                      row=int(bad[0]))
  missing = set(spec.modalities) - set(chunk.features)
  if missing:
    raise DataError(src, sorted(missing)[0], 'features for this modality (listed in the spec)')
  for name in spec.incomplete:
    present = chunk.present.get(name)
    if present is None or np.asarray(present).dtype != bool or np.shape(present) != (n,):
      got = 'none' if present is None else f'{np.asarray(present).dtype} {list(np.shape(present))}'
      raise DataError(src, f'{name}_present', f'a bool [{n}] presence per utterance (the spec '
                      f'lists {name} as incomplete), got {got}')
  for name, mspec in spec.modalities.items():
    value = chunk.features[name]
    lengths = chunk.lengths.get(name)
    present = np.asarray(chunk.present[name]) if name in spec.incomplete else np.ones(n, bool)
    count = len(value)
    if count != n:
      raise DataError(src, name, f'{n} feature rows (one per utterance), got {count}')
    if isinstance(value, np.ndarray):
      want_ndim = 2 if mspec.level == 'utterance' else 3
      if value.ndim != want_ndim or value.shape[-1] != mspec.dim:
        want = f'[N, {mspec.dim}]' if mspec.level == 'utterance' else f'[N, T, {mspec.dim}]'
        raise DataError(src, name, f'shape {want}, got {list(value.shape)}')
      finite = np.isfinite(value).reshape(n, -1).all(axis=1) if n else np.ones(0, bool)
      finite |= ~present
      if not finite.all():
        raise DataError(src, name, 'finite values (no NaN/Inf)', row=int(np.flatnonzero(~finite)[0]))
      if lengths is not None:
        lengths = np.asarray(lengths)
        if len(lengths) != n:
          raise DataError(src, f'{name}_lengths', f'{n} lengths (one per utterance), got {len(lengths)}')
        bad = np.flatnonzero(((lengths < 1) | (lengths > value.shape[1])) & present)
        if bad.size:
          raise DataError(src, f'{name}_lengths', f'a length in [1, {value.shape[1]}], '
                          f'got {lengths[bad[0]].item()}', row=int(bad[0]))
    else:
      for i, x in enumerate(value):
        if not present[i]:
          continue
        x = np.asarray(x)
        want_ndim = 1 if mspec.level == 'utterance' else 2
        if x.ndim != want_ndim or x.shape[-1] != mspec.dim or (want_ndim == 2 and x.shape[0] < 1):
          want = f'[{mspec.dim}]' if mspec.level == 'utterance' else f'[T>=1, {mspec.dim}]'
          raise DataError(src, name, f'shape {want}, got {list(x.shape)}', row=i)
        if not np.isfinite(x).all():
          raise DataError(src, name, 'finite values (no NaN/Inf)', row=i)


def tfds_features(spec: DatasetSpec):
  """The TFDS FeaturesDict for `spec` (raw-bytes tensors: fast to write, exact to read)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  f = tfds.features
  label = (f.Scalar(dtype=np.int64) if spec.task == 'classification' else f.Scalar(dtype=np.float32))
  feats = {
      'utterance_id': f.Text(),
      'dialogue_id': f.Text(),
      'turn': f.Scalar(dtype=np.int32),
      'speaker': f.Scalar(dtype=np.int32),
      'speaker_name': f.Text(),
      'label': label,
  }
  for name, m in spec.modalities.items():
    shape = (m.dim,) if m.level == 'utterance' else (None, m.dim)
    feats[name] = f.Tensor(shape=shape, dtype=np.float32, encoding=f.Encoding.BYTES)
  for name in spec.incomplete:
    feats[f'{name}_present'] = f.Scalar(dtype=np.bool_)
  return f.FeaturesDict(feats)


def iter_examples(spec: DatasetSpec, split: str, chunks: Iterable[SplitData]) -> Iterator[tuple[str, dict]]:
  """Validates chunks and yields TFDS (key, example) pairs; an empty split is an error."""
  total, source = 0, '<no data>'
  seen_ids: set[str] = set()
  for chunk in chunks:
    source = chunk.source
    validate_chunk(spec, split, chunk)
    speaker = speaker_order(chunk.dialogue_id, chunk.turn, chunk.speaker_name)
    rows = {name: _rows(chunk.features[name], chunk.lengths.get(name)) for name in spec.modalities}
    for i in range(len(chunk)):
      uid = str(chunk.utterance_id[i])
      if uid in seen_ids:
        raise DataError(chunk.source, 'utterance_id', f'unique ids, {uid!r} appears twice', row=i)
      seen_ids.add(uid)
      label = chunk.label[i]
      ex = {
          'utterance_id': uid,
          'dialogue_id': str(chunk.dialogue_id[i]),
          'turn': int(chunk.turn[i]),
          'speaker': int(speaker[i]),
          'speaker_name': str(chunk.speaker_name[i]),
          'label': int(label) if spec.task == 'classification' else float(label),
      }
      for name in spec.modalities:
        x = np.asarray(next(rows[name]), np.float32)
        if name in spec.incomplete:
          present = bool(chunk.present[name][i])
          ex[f'{name}_present'] = present
          if not present:  # whatever the row held is never read: store zeros (one frame)
            x = np.zeros(x.shape if x.ndim == 1 else (1, x.shape[-1]), np.float32)
        ex[name] = x
      yield uid, ex
    total += len(chunk)
  if total == 0:
    raise DataError(source, 'split', f'at least one utterance in split {split!r}, found none')
