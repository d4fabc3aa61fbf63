"""The generic feature directory: bring your own features as plain files.

A directory holds one dataset in the common format of `schema.py`: `meta.json` (name, task,
labels, modalities), `utterances.csv` (one row per utterance: split, dialogue_id, turn, speaker,
label) and one `.npy` per listed modality, with lengths files for sequences and optional presence
files. A modality that meta.json does not list is missing for every sample.

`read_directory` does every check; the TFDS builder `FeaturesDir` gets one BuilderConfig per
directory content (a changed directory is rebuilt, an unchanged one reused). Every defect is a
`schema.DataError` naming the file, the field (and row) and what was expected, raised before
TFDS writes anything.

The format in full and the decisions it leaves open: docs/data.md#the-directory-format-in-full.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
from typing import Any, Iterator, Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mmer_jax.data import builder_base
from mmer_jax.data import schema

DataError = schema.DataError

META_FILE = 'meta.json'
CSV_FILE = 'utterances.csv'
CSV_COLUMNS = ('split', 'dialogue_id', 'turn', 'speaker', 'label')
FORMAT_VERSION = '1.1.0'  # part of the fingerprint: bump when the stored examples change
_SCAN_BYTES = 64 << 20  # float32 bytes per block when scanning features for NaN/Inf
_CHUNK_BYTES = 64 << 20  # float32 feature bytes per SplitData chunk (whole dialogues, so approx.)


@dataclasses.dataclass(frozen=True)
class ModalityMeta:
  """One modality entry of meta.json."""
  name: str
  file: str
  level: str
  dim: int
  max_len: int | None = None
  present: str | None = None  # bool [N] file: False where a sample lacks this modality

  @property
  def lengths_file(self) -> str:
    return f'{self.name}_lengths.npy'


@dataclasses.dataclass(frozen=True)
class Meta:
  """meta.json, validated."""
  name: str
  task: str
  modalities: Mapping[str, ModalityMeta]
  label_names: tuple[str, ...] | None = None
  label_range: tuple[float, float] | None = None
  description: str | None = None


@dataclasses.dataclass
class Utterances:
  """utterances.csv, validated; `dialogues[split]` lists row indices per dialogue, sorted by turn."""
  split: np.ndarray  # [N] str
  dialogue_id: list[str]
  turn: np.ndarray  # [N] int64, as written in the csv
  speaker: list[str]
  label: np.ndarray  # [N] int64 (classification) | float32 (regression)
  dialogues: dict[str, list[np.ndarray]]

  def __len__(self) -> int:
    return len(self.label)


def _json_type(value: Any) -> str:
  return {dict: 'an object', list: 'a list', str: 'a string', bool: 'a boolean',
          type(None): 'null'}.get(type(value), type(value).__name__)


def _positive_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _real(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _check_directory(path: str) -> None:
  if not os.path.isdir(path):
    what = 'not found' if not os.path.exists(path) else 'not a directory'
    raise DataError(path, 'features_dir', f'a directory holding {META_FILE}, {CSV_FILE} and the '
                    f'.npy feature files; {what}')


def read_meta(path: str) -> Meta:
  """Reads and validates `<path>/meta.json`."""
  _check_directory(path)
  file = os.path.join(path, META_FILE)
  if not os.path.isfile(file):
    raise DataError(file, META_FILE, 'a meta.json file (name, task, label_names or label_range, '
                    'modalities) describing the dataset; not found')
  try:
    with open(file, 'rb') as f:
      raw = json.loads(f.read().decode('utf-8-sig'))
  except UnicodeDecodeError as e:
    raise DataError(file, 'json', f'UTF-8 text, got undecodable bytes at offset {e.start}') from e
  except json.JSONDecodeError as e:
    raise DataError(file, 'json', f'valid JSON: {e.msg} at line {e.lineno} column {e.colno}') from e
  if not isinstance(raw, dict):
    raise DataError(file, 'json', f'a JSON object at the top level, got {_json_type(raw)}')

  def need(key):
    if key not in raw:
      raise DataError(file, key, f'the key {key!r} (required), which is missing')
    return raw[key]

  name = need('name')
  if not isinstance(name, str) or not name.strip():
    raise DataError(file, 'name', f'a non-empty string, got {name!r}')
  task = need('task')
  if task not in schema.TASKS:
    raise DataError(file, 'task', f'one of {", ".join(schema.TASKS)}, got {task!r}')
  label_names = label_range = None
  if task == 'classification':
    label_names = need('label_names')
    if (not isinstance(label_names, list) or len(label_names) < 2
        or not all(isinstance(n, str) and n for n in label_names)
        or len(set(label_names)) != len(label_names)):
      raise DataError(file, 'label_names', 'a list of at least 2 distinct non-empty strings '
                      f'(label i = class i), got {label_names!r}')
    label_names = tuple(label_names)
  else:
    label_range = need('label_range')
    if (not isinstance(label_range, list) or len(label_range) != 2
        or not all(_real(v) for v in label_range) or not label_range[0] < label_range[1]):
      raise DataError(file, 'label_range', f'[low, high], two finite numbers with low < high, '
                      f'got {label_range!r}')
    label_range = (float(label_range[0]), float(label_range[1]))
  description = raw.get('description')
  if description is not None and not isinstance(description, str):
    raise DataError(file, 'description', f'a string, got {_json_type(description)}')

  entries = need('modalities')
  if not isinstance(entries, dict) or not entries:
    raise DataError(file, 'modalities', 'a non-empty object mapping modality names (audio, visual, '
                    f'text) to {{file, level, dim}}, got {entries!r}')
  modalities = {}
  for mod in sorted(entries, key=lambda m: schema.MODALITIES.index(m) if m in schema.MODALITIES
                    else len(schema.MODALITIES)):
    entry = entries[mod]
    field = f'modalities.{mod}'
    if mod not in schema.MODALITIES:
      raise DataError(file, 'modalities', f'modality names among {", ".join(schema.MODALITIES)}, '
                      f'got {mod!r}')
    if not isinstance(entry, dict):
      raise DataError(file, field, f'an object {{file, level, dim}}, got {_json_type(entry)}')
    for key in ('file', 'level', 'dim'):
      if key not in entry:
        raise DataError(file, f'{field}.{key}', f'the key {key!r} (required), which is missing')
    if not isinstance(entry['file'], str) or not entry['file']:
      raise DataError(file, f'{field}.file', f'a file name (.npy), got {entry["file"]!r}')
    if entry['level'] not in schema.LEVELS:
      raise DataError(file, f'{field}.level', f'one of {", ".join(schema.LEVELS)}, '
                      f'got {entry["level"]!r}')
    if not _positive_int(entry['dim']):
      raise DataError(file, f'{field}.dim', f'a positive integer, got {entry["dim"]!r}')
    max_len = entry.get('max_len')
    if max_len is not None:
      if entry['level'] != 'sequence':
        raise DataError(file, f'{field}.max_len', 'no max_len for an utterance-level modality '
                        '(it only sets the padded length of sequences)')
      if not _positive_int(max_len):
        raise DataError(file, f'{field}.max_len', f'a positive integer, got {max_len!r}')
    present = entry.get('present')
    if present is not None and (not isinstance(present, str) or not present):
      raise DataError(file, f'{field}.present', 'a file name (.npy, bool [N]: False where a sample '
                      f'lacks {mod}), got {present!r}')
    modalities[mod] = ModalityMeta(mod, entry['file'], entry['level'], entry['dim'], max_len,
                                   present)
  return Meta(name=name, task=task, modalities=modalities, label_names=label_names,
              label_range=label_range, description=description)


def _parse_label(meta: Meta, text: str) -> int | float | None:
  """The label of one csv cell, or None when it is not a valid label."""
  if meta.task == 'classification':
    try:
      value = float(text)
    except ValueError:
      return meta.label_names.index(text) if text in meta.label_names else None
    if not math.isfinite(value) or value != int(value) or not 0 <= value < len(meta.label_names):
      return meta.label_names.index(text) if text in meta.label_names else None
    return int(value)
  try:
    value = float(text)
  except ValueError:
    return None
  lo, hi = meta.label_range
  return value if math.isfinite(value) and lo <= value <= hi else None


def read_utterances(path: str, meta: Meta) -> Utterances:
  """Reads and validates `<path>/utterances.csv` against meta.json."""
  file = os.path.join(path, CSV_FILE)
  if not os.path.isfile(file):
    raise DataError(file, CSV_FILE, f'a csv file with columns {", ".join(CSV_COLUMNS)} (one row '
                    'per utterance); not found')
  try:
    with open(file, 'rb') as f:
      text = f.read().decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise DataError(file, 'encoding', f'UTF-8 text, got undecodable bytes at offset {e.start}') from e
  reader = csv.reader(io.StringIO(text, newline=''))
  try:
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
      header = next(reader, None)
    if header is None:
      raise DataError(file, 'header', f'a header line with columns {", ".join(CSV_COLUMNS)}; '
                      'the file is empty')
    header = [h.strip() for h in header]
    for col in CSV_COLUMNS:
      if col not in header:
        raise DataError(file, col, f'a column named {col!r} (header has {header})')
      if header.count(col) > 1:
        raise DataError(file, col, f'one column named {col!r}, the header has {header.count(col)}')
    index = {col: header.index(col) for col in CSV_COLUMNS}

    splits, dialogue_ids, turns, speakers, labels = [], [], [], [], []
    for fields in reader:
      if not any(f.strip() for f in fields):
        continue  # blank line
      row, line = len(labels), reader.line_num
      if len(fields) != len(header):
        raise DataError(file, 'row', f'{len(header)} fields like the header, got {len(fields)} '
                        f'(line {line})', row=row)
      split, dialogue_id, turn, speaker, label = (fields[index[c]].strip() for c in CSV_COLUMNS)
      if split not in schema.SPLITS and split:
        raise DataError(file, 'split', f'one of {", ".join(schema.SPLITS)} (or empty in every row '
                        f'for the 7:1:2 split), got {split!r} (line {line})', row=row)
      if not dialogue_id:
        raise DataError(file, 'dialogue_id', f'a non-empty dialogue id (line {line})', row=row)
      try:
        turn_value = int(turn)
      except ValueError:
        turn_value = None
      if turn_value is None or not -2**62 <= turn_value < 2**62:
        raise DataError(file, 'turn', f'an integer turn index (|turn| < 2**62), got {turn!r} '
                        f'(line {line})', row=row)
      label_value = _parse_label(meta, label)
      if label_value is None:
        if meta.task == 'classification':
          want = (f'a class index in [0, {len(meta.label_names) - 1}] or one of the label names '
                  f'{list(meta.label_names)}')
        else:
          want = f'a finite number in [{meta.label_range[0]}, {meta.label_range[1]}]'
        raise DataError(file, 'label', f'{want}, got {label!r} (line {line})', row=row)
      splits.append(split)
      dialogue_ids.append(dialogue_id)
      turns.append(turn_value)
      speakers.append(speaker)
      labels.append(label_value)
  except csv.Error as e:
    raise DataError(file, 'csv', f'well-formed csv: {e} (line {reader.line_num})') from e

  if '' in splits:
    if any(splits):
      row = next(i for i, x in enumerate(splits) if bool(x) != bool(splits[0]))
      raise DataError(file, 'split', 'a split in every row, or in none (then 7:1:2 by dialogue); '
                      'some rows have one and some do not', row=row)
    splits = ratio_split(dialogue_ids, file=file)

  # One split per dialogue, one row per (dialogue_id, turn); group and order the dialogues.
  first_row: dict[tuple[str, int], int] = {}
  rows_of: dict[str, list[int]] = {}
  for row, (dialogue_id, turn) in enumerate(zip(dialogue_ids, turns)):
    if (dialogue_id, turn) in first_row:
      raise DataError(file, 'turn', f'unique (dialogue_id, turn) pairs; ({dialogue_id!r}, {turn}) '
                      f'is also row {first_row[dialogue_id, turn]}', row=row)
    first_row[dialogue_id, turn] = row
    rows = rows_of.setdefault(dialogue_id, [])
    if rows and splits[rows[0]] != splits[row]:
      raise DataError(file, 'split', f'every row of dialogue {dialogue_id!r} in one split; row '
                      f'{rows[0]} is in {splits[rows[0]]!r}, this one in {splits[row]!r}', row=row)
    rows.append(row)
  turn_array = np.asarray(turns, np.int64)
  dialogues: dict[str, list[np.ndarray]] = {s: [] for s in schema.SPLITS}
  for rows in rows_of.values():  # csv order of first appearance
    rows = np.asarray(rows, np.int64)
    dialogues[splits[rows[0]]].append(rows[np.argsort(turn_array[rows], kind='stable')])
  for split in schema.SPLITS:
    if not dialogues[split]:
      raise DataError(file, 'split', f'at least one utterance in split {split!r}, found none '
                      f'(splits are {", ".join(schema.SPLITS)})')
  label_dtype = np.int64 if meta.task == 'classification' else np.float32
  return Utterances(split=np.asarray(splits), dialogue_id=dialogue_ids, turn=turn_array,
                    speaker=speakers, label=np.asarray(labels, label_dtype), dialogues=dialogues)


SPLIT_RATIO = (7, 1, 2)  # train : valid : test where the data has no split of its own (M3ER)


def ratio_split(dialogue_ids: list[str], seed: int = 0, file: str = 'utterances.csv') -> list[str]:
  """Each row's split when the csv gives none: whole dialogues, shuffled with a fixed seed, cut
  7:1:2 (`SPLIT_RATIO`; at least one dialogue per split), so a dataset's split never changes."""
  unique = list(dict.fromkeys(dialogue_ids))
  if len(unique) < len(schema.SPLITS):
    raise DataError(file, 'split', f'at least {len(schema.SPLITS)} dialogues for the '
                    f'7:1:2 split, got {len(unique)}')
  order = np.random.default_rng(seed).permutation(len(unique))
  total = sum(SPLIT_RATIO)
  valid = max(1, round(len(unique) * SPLIT_RATIO[1] / total))
  test = max(1, round(len(unique) * SPLIT_RATIO[2] / total))
  names = np.array(['train'] * (len(unique) - valid - test) + ['valid'] * valid + ['test'] * test)
  assigned = dict(zip((unique[i] for i in order), names))
  return [str(assigned[d]) for d in dialogue_ids]


def _load_npy(file: str, field: str, what: str) -> np.ndarray:
  """Memory-maps one .npy file; a missing or unreadable file is a DataError."""
  if not os.path.isfile(file):
    raise DataError(file, field, f'{what}; not found')
  try:
    return np.load(file, mmap_mode='r', allow_pickle=False)
  except Exception as e:  # numpy raises ValueError/OSError/EOFError/... on a damaged file
    raise DataError(file, field, f'{what}; could not read it as a .npy array: '
                    f'{type(e).__name__}: {e}') from e


def read_present(path: str, mod: ModalityMeta, num_rows: int) -> np.ndarray:
  """The modality's presence file, bool [N] (all True when meta.json names none)."""
  if mod.present is None:
    return np.ones(num_rows, bool)
  file = os.path.join(path, mod.present)
  field = f'modalities.{mod.name}.present'
  present = _load_npy(file, field, f'the per-sample presence of {mod.name} ({META_FILE} {field} = '
                      f'{mod.present!r}), bool [N]')
  if present.dtype != np.bool_:
    raise DataError(file, field, f'a bool array (True = the sample has {mod.name}), got dtype '
                    f'{present.dtype}; write it with np.save(file, array.astype(bool))')
  if present.shape != (num_rows,):
    raise DataError(file, field, f'shape [{num_rows}] (one flag per row of {CSV_FILE}), got '
                    f'{list(present.shape)}')
  return np.asarray(present)


def open_features(path: str, meta: Meta, num_rows: int
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Memory-maps every listed modality (and its lengths) and checks dtypes, shapes and lengths.

  Returns ({modality: array [N, D] | [N, T, D]}, {modality: int64 lengths [N]} for sequences,
  {modality: bool presence [N]} for modalities with a presence file); the feature values
  themselves are checked by `check_values`. Rows a presence file marks absent are never checked.
  """
  features, lengths, presence = {}, {}, {}
  for name, mod in meta.modalities.items():
    present = read_present(path, mod, num_rows)
    if mod.present is not None:
      presence[name] = present
    file = os.path.join(path, mod.file)
    x = _load_npy(file, name, f'the {name} features listed in {META_FILE} '
                  f'(modalities.{name}.file = {mod.file!r})')
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
      raise DataError(file, name, f'a real-valued (float or integer) array, got dtype {x.dtype}')
    ndim, shape = (2, '[N, D]') if mod.level == 'utterance' else (3, '[N, T, D]')
    if x.ndim != ndim:
      raise DataError(file, name, f'a {ndim}-d array {shape} for a {mod.level}-level modality, '
                      f'got shape {list(x.shape)}')
    if x.shape[-1] != mod.dim:
      raise DataError(file, name, f'feature dimension {mod.dim} ({META_FILE} modalities.{name}.dim),'
                      f' got shape {list(x.shape)}')
    if x.shape[0] != num_rows:
      raise DataError(file, name, f'{num_rows} rows, one per row of {CSV_FILE}, got {x.shape[0]} '
                      f'(shape {list(x.shape)})')
    if mod.level == 'sequence':
      if x.shape[1] < 1:
        raise DataError(file, name, f'at least one frame per sequence, got shape {list(x.shape)}')
      lfile = os.path.join(path, mod.lengths_file)
      field = f'{name}_lengths'
      n = _load_npy(lfile, field, f'the valid-frame counts [N] of the sequence-level {name} '
                    f'features ({mod.file})')
      if n.ndim != 1 or n.shape[0] != num_rows:
        raise DataError(lfile, field, f'shape [{num_rows}] (one length per row of {CSV_FILE}), '
                        f'got {list(n.shape)}')
      if np.issubdtype(n.dtype, np.floating):
        bad = np.flatnonzero((~np.isfinite(n) | (n != np.round(n))) & present)
        if bad.size:
          raise DataError(lfile, field, f'an integer length, got {n[bad[0]]!r}', row=int(bad[0]))
      elif not np.issubdtype(n.dtype, np.integer):
        raise DataError(lfile, field, f'integer lengths, got dtype {n.dtype}')
      with np.errstate(invalid='ignore'):  # huge floats cast to garbage, then fail the range
        n = np.where(present, np.nan_to_num(np.asarray(n, np.float64)), 1).astype(np.int64)
      bad = np.flatnonzero((n < 1) | (n > x.shape[1]))
      if bad.size:
        raise DataError(lfile, field, f'a length in [1, {x.shape[1]}] (the T of {mod.file}), '
                        f'got {n[bad[0]]}', row=int(bad[0]))
      lengths[name] = n
    features[name] = x
  return features, lengths, presence


def check_values(path: str, meta: Meta, features: Mapping[str, np.ndarray],
                 lengths: Mapping[str, np.ndarray],
                 presence: Mapping[str, np.ndarray] | None = None) -> None:
  """NaN/Inf (after the cast to float32) in any valid frame is a DataError naming the row.

  Scans in blocks so memory-mapped files are never loaded whole; sequence frames past a row's
  length are padding and rows `presence` marks absent are never read, so neither is checked.
  """
  presence = presence or {}
  for name, x in features.items():
    file = os.path.join(path, meta.modalities[name].file)
    row_bytes = 4 * max(1, int(np.prod(x.shape[1:])))
    step = max(1, _SCAN_BYTES // row_bytes)
    for start in range(0, x.shape[0], step):
      with np.errstate(over='ignore', invalid='ignore'):  # out of float32 range -> inf -> error
        block = np.asarray(x[start:start + step], np.float32)
      finite = np.isfinite(block)
      if name in lengths:
        frame_ok = finite.all(axis=2)  # [n, T]
        valid = np.arange(x.shape[1])[None, :] < lengths[name][start:start + step, None]
        ok = (frame_ok | ~valid).all(axis=1)
      else:
        ok = finite.all(axis=1)
      if name in presence:
        ok |= ~presence[name][start:start + step]
      if not ok.all():
        row = start + int(np.flatnonzero(~ok)[0])
        raise DataError(file, name, 'finite values (no NaN/Inf, within float32 range)', row=row)


def create_spec(meta: Meta, utterances: Utterances, lengths: Mapping[str, np.ndarray]
                ) -> schema.DatasetSpec:
  # A modality with a presence file is `incomplete` even when every flag is True: the stored
  # format follows meta.json, not the data's values.
  """The DatasetSpec of a directory; conversational when some dialogue has several turns."""
  modalities = {}
  for name, mod in meta.modalities.items():
    max_len = None
    if mod.level == 'sequence':
      max_len = mod.max_len or int(lengths[name].max())
    modalities[name] = schema.ModalitySpec(level=mod.level, dim=mod.dim, max_len=max_len)
  conversational = any(len(rows) > 1 for split in schema.SPLITS
                       for rows in utterances.dialogues[split])
  return schema.DatasetSpec(name=meta.name, task=meta.task, modalities=modalities,
                            label_names=meta.label_names, label_range=meta.label_range,
                            conversational=conversational,
                            incomplete=tuple(m for m, mod in meta.modalities.items() if mod.present))


@dataclasses.dataclass
class Directory:
  """A read and validated feature directory; features stay memory-mapped."""
  path: str
  meta: Meta
  utterances: Utterances
  features: dict[str, np.ndarray]
  lengths: dict[str, np.ndarray]
  presence: dict[str, np.ndarray]  # bool [N] for modalities with a presence file
  spec: schema.DatasetSpec

  def check_values(self) -> None:
    check_values(self.path, self.meta, self.features, self.lengths, self.presence)

  def iter_chunks(self, split: str, chunk_rows: int | None = None) -> Iterator[schema.SplitData]:
    """SplitData chunks of whole dialogues (csv order), each dialogue sorted by turn.

    `chunk_rows` defaults to what keeps about 64 MiB of float32 features per chunk.
    """
    if chunk_rows is None:
      row_bytes = sum(4 * int(np.prod(x.shape[1:])) for x in self.features.values())
      chunk_rows = max(1, _CHUNK_BYTES // max(1, row_bytes))
    dialogues = self.utterances.dialogues[split]
    start = 0
    while start < len(dialogues):
      stop, size = start, 0
      while stop < len(dialogues) and (size == 0 or size + len(dialogues[stop]) <= chunk_rows):
        size += len(dialogues[stop])
        stop += 1
      yield self._chunk(dialogues[start:stop])
      start = stop

  def _chunk(self, dialogues: Sequence[np.ndarray]) -> schema.SplitData:
    u = self.utterances
    rows = np.concatenate(dialogues)
    turn = np.concatenate([np.arange(len(d), dtype=np.int32) for d in dialogues])
    dialogue_id = [u.dialogue_id[i] for i in rows]
    features, lengths = {}, {}
    present = {name: p[rows] for name, p in self.presence.items()}
    for name, x in self.features.items():
      with np.errstate(over='ignore', invalid='ignore'):  # absent rows may hold anything
        if name in self.lengths:
          n = self.lengths[name][rows]
          value = np.array(x[rows, :int(n.max())], np.float32)
          value[np.arange(value.shape[1])[None, :] >= n[:, None]] = 0  # padding: never read
          lengths[name] = n
        else:
          value = np.array(x[rows], np.float32)
      if name in present:
        value[~present[name]] = 0  # absent rows: never read
      features[name] = value
    return schema.SplitData(
        utterance_id=[f'{d}/{t}' for d, t in zip(dialogue_id, u.turn[rows])],
        dialogue_id=dialogue_id,
        turn=turn,
        speaker_name=[u.speaker[i] for i in rows],
        label=u.label[rows],
        features=features,
        source=self.path,
        lengths=lengths,
        present=present)


def read_directory(path: str, *, values: bool = True) -> Directory:
  """Reads and validates a feature directory; `values=False` skips the NaN/Inf scan."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  meta = read_meta(path)
  utterances = read_utterances(path, meta)
  features, lengths, presence = open_features(path, meta, len(utterances))
  if values:
    check_values(path, meta, features, lengths, presence)
  return Directory(path=path, meta=meta, utterances=utterances, features=features,
                   lengths=lengths, presence=presence, spec=create_spec(meta, utterances, lengths))


def fingerprint(path: str, meta: Meta | None = None) -> str:
  """A short hash of the directory: meta.json and the csv by content, .npy files by size+mtime.

  Files that do not exist are hashed as missing, so this never fails on a broken directory (the
  validation reports those); hashing .npy content would read gigabytes on every load.
  """
  meta = meta or read_meta(path)
  h = hashlib.sha256(f'features_dir {FORMAT_VERSION}\n'.encode())
  for name in (META_FILE, CSV_FILE):
    h.update(f'{name}\n'.encode())
    try:
      with open(os.path.join(path, name), 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          h.update(block)
    except OSError:
      h.update(b'<missing>')
  files = set()
  for mod in meta.modalities.values():
    files.add(mod.file)
    if mod.level == 'sequence':
      files.add(mod.lengths_file)
    if mod.present:
      files.add(mod.present)
  for name in sorted(files):
    try:
      st = os.stat(os.path.join(path, name))
      h.update(f'{name} {st.st_size} {st.st_mtime_ns}\n'.encode())
    except OSError:
      h.update(f'{name} <missing>\n'.encode())
  return h.hexdigest()[:12]


def config_name(name: str, digest: str) -> str:
  """A TFDS-safe config name: the lowercased dataset name ([a-z0-9_], <= 40 chars) + digest."""
  clean = re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')[:40].strip('_') or 'dataset'
  if not clean[0].isalpha():
    clean = 'd_' + clean
  return f'{clean}_{digest}'


@dataclasses.dataclass(eq=False)
class FeaturesDirConfig(tfds.core.BuilderConfig):
  """One feature directory at one content: the path and its fingerprint."""
  features_dir: str = ''
  fingerprint: str = ''


def create_config(features_dir: str) -> FeaturesDirConfig:
  """The BuilderConfig for a directory (reads meta.json; DataError if it is absent or invalid)."""
  path = os.path.abspath(os.path.expanduser(os.fspath(features_dir)))
  meta = read_meta(path)
  digest = fingerprint(path, meta)
  return FeaturesDirConfig(name=config_name(meta.name, digest), description=meta.description,
                           features_dir=path, fingerprint=digest)


class FeaturesDir(builder_base.FeatureBuilder, skip_registration=True):
  """A dataset in the generic feature-directory format (bring your own features)."""

  name = 'features_dir'
  STANDARDIZE = True  # raw features on their own scales: standardised unless the config says not
  VERSION = tfds.core.Version(FORMAT_VERSION)
  RELEASE_NOTES = {'1.0.0': 'meta.json + utterances.csv + one .npy per modality.',
                   '1.1.0': 'optional per-sample presence files (`<modality>_present` examples).'}
  # TFDS 4.9.10 looks this up through `importlib_resources`, which it does not install on
  # Python >= 3.9 (tensorflow/datasets#11212); nothing is downloaded, so name this file directly.
  code_path = epath.Path(__file__)

  def __init__(self, *, config: FeaturesDirConfig, **kwargs):
    self._directory: Directory | None = None
    self._values_checked = False
    super().__init__(config=config, **kwargs)

  @property
  def directory(self) -> Directory:
    """The validated directory (structure and shapes; values are scanned before a build)."""
    if self._directory is None:
      self._directory = read_directory(self.builder_config.features_dir, values=False)
    return self._directory

  def spec(self) -> schema.DatasetSpec:
    return self.directory.spec

  def _info(self) -> tfds.core.DatasetInfo:
    info = super()._info()
    meta = self.directory.meta
    info.as_proto.description = meta.description or f'{meta.name} (feature directory)'
    info.metadata['features_dir'] = self.builder_config.features_dir
    info.metadata['fingerprint'] = self.builder_config.fingerprint
    return info

  def _load_splits(self, dl_manager) -> dict[str, Iterator[schema.SplitData]]:
    del dl_manager  # the data is local
    directory = self.directory
    if not self._values_checked:  # before TFDS writes anything
      directory.check_values()
      self._values_checked = True
    return {split: directory.iter_chunks(split) for split in schema.SPLITS}


def make_builder(*, data_dir: str, features_dir: str) -> FeaturesDir:
  """The builder for one feature directory, stored as array_record under `data_dir`.

  Raises DataError at once for a broken directory (everything but the value scan, which runs
  when the dataset is built).
  """
  return FeaturesDir(config=create_config(features_dir), data_dir=data_dir,
                     file_format='array_record')
