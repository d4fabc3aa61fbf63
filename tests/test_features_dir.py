"""Tests for the generic feature directory (`mmer_jax/data/features_dir.py`).

The real MELD text release must build with the published counts; a hand-made directory with a
sequence modality must round-trip exactly; every defect a user can ship must be a DataError that
names the file and field (checked case by case, then by hypothesis on random directories).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

from hypothesis import HealthCheck, assume, given, settings, strategies as st
import numpy as np
import pytest

from mmer_jax.data import features_dir
from mmer_jax.data import registry
from mmer_jax.data import schema

DataError = schema.DataError
HEADER = list(features_dir.CSV_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Helpers: write and edit directories, read built datasets back.


def write_csv(path, rows, header=HEADER):
  with open(os.path.join(path, 'utterances.csv'), 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def read_csv(path):
  with open(os.path.join(path, 'utterances.csv'), newline='', encoding='utf-8') as f:
    header, *rows = list(csv.reader(f))
  return header, rows


def edit_csv(path, fn):
  """Applies fn(header, rows) in place (both lists of lists/strings) and rewrites the csv."""
  header, rows = read_csv(path)
  fn(header, rows)
  write_csv(path, rows, header)


def write_meta(path, meta):
  with open(os.path.join(path, 'meta.json'), 'w') as f:
    json.dump(meta, f)


def edit_meta(path, fn):
  with open(os.path.join(path, 'meta.json')) as f:
    meta = json.load(f)
  fn(meta)
  write_meta(path, meta)


def edit_npy(path, name, fn):
  file = os.path.join(path, name)
  np.save(file, fn(np.array(np.load(file))))


def load(path, data_dir):
  return registry.load('features_dir', features_dir=str(path), data_dir=str(data_dir))


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def read_split(dataset, split):
  """All examples of a split as {utterance_id: example} (text fields decoded)."""
  source = dataset.sources[split]
  out = {}
  for ex in source.__getitems__(list(range(len(source)))):
    ex = dict(ex)
    for key in ('utterance_id', 'dialogue_id', 'speaker_name'):
      ex[key] = _text(ex[key])
    out[ex['utterance_id']] = ex
  return out


# ---------------------------------------------------------------------------------------------
# The real dataset: ../shared/data/meld_text.


@pytest.fixture(scope='module')
def meld(shared_data_dir, tmp_path_factory):
  path = shared_data_dir / 'meld_text'
  if not (path / 'meta.json').exists():
    pytest.skip('meld_text not found in shared/data')
  data_dir = tmp_path_factory.mktemp('tfds')
  return path, data_dir, load(path, data_dir)


def test_meld_text_counts_and_spec(meld):
  _, _, dataset = meld
  spec = dataset.spec
  assert spec.name == 'meld_text' and spec.task == 'classification'
  assert spec.num_classes == 7 and spec.label_names[0] == 'neutral'
  assert list(spec.modalities) == ['text']
  assert spec.modalities['text'] == schema.ModalitySpec(level='utterance', dim=384)
  assert spec.available.tolist() == [False, False, True]
  assert spec.conversational
  want = {'train': (9989, 1038), 'valid': (1109, 114), 'test': (2610, 280)}
  for split, (utterances, dialogues) in want.items():
    examples = read_split(dataset, split)
    assert len(dataset.sources[split]) == len(examples) == utterances
    assert len({ex['dialogue_id'] for ex in examples.values()}) == dialogues
    # Turns are renumbered 0..n-1 inside each dialogue.
    turns = {}
    for ex in examples.values():
      turns.setdefault(ex['dialogue_id'], []).append(int(ex['turn']))
    assert all(sorted(t) == list(range(len(t))) for t in turns.values())


def test_meld_text_values_equal_float16_file(meld):
  path, _, dataset = meld
  _, rows = read_csv(path)
  row_of = {f'{r[1]}/{int(r[2])}': i for i, r in enumerate(rows)}
  text = np.load(path / 'text.npy', mmap_mode='r')
  assert text.dtype == np.float16
  for split in schema.SPLITS:
    source = dataset.sources[split]
    for k in (0, len(source) // 2, len(source) - 1):
      ex = source[k]
      i = row_of[_text(ex['utterance_id'])]
      assert ex['text'].dtype == np.float32
      np.testing.assert_array_equal(ex['text'], text[i].astype(np.float32))
      assert int(ex['label']) == int(rows[i][4])
      assert _text(ex['speaker_name']) == rows[i][3] and rows[i][0] == split


def test_meld_text_rebuild_reuses(meld, monkeypatch):
  path, data_dir, dataset = meld
  info_file = os.path.join(dataset.builder.data_path, 'dataset_info.json')
  before = os.stat(info_file).st_mtime_ns

  def fail(*args, **kwargs):
    raise AssertionError('the dataset was generated again')

  monkeypatch.setattr(features_dir.FeaturesDir, '_load_splits', fail)
  again = load(path, data_dir)
  assert again.builder.data_path == dataset.builder.data_path
  assert os.stat(info_file).st_mtime_ns == before
  assert {s: len(again.sources[s]) for s in schema.SPLITS} == {'train': 9989, 'valid': 1109,
                                                               'test': 2610}


# ---------------------------------------------------------------------------------------------
# A small hand-made directory: sequence-level audio with lengths, utterance-level float16 text.

SMALL_ROWS = [  # split, dialogue_id, turn, speaker, label
    ['train', 'd0', '5', 'Ann', 'pos'],
    ['train', 'd0', '0', 'Bob', '0'],
    ['train', 'd1', '0', 'Cy', '1'],
    ['train', 'd0', '2', 'Ann', '2'],
    ['valid', 'v0', '1', 'Dee', 'neu'],
    ['valid', 'v0', '0', 'Eve', '0'],
    ['test', 't,0', '0', 'Fay "F"', '2'],
    ['test', 't,0', '3', 'Fay "F"', '1.0'],
]
SMALL_LENGTHS = np.array([5, 1, 3, 2, 4, 5, 1, 2], np.int32)


def make_small(path):
  """Writes the small directory; padding frames are NaN (never read, so never an error)."""
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  write_meta(path, {
      'name': 'Small set (hand-made)',
      'task': 'classification',
      'label_names': ['neg', 'neu', 'pos'],
      'description': 'two modalities, three splits',
      'modalities': {
          'text': {'file': 'text.npy', 'level': 'utterance', 'dim': 4},
          'audio': {'file': 'audio.npy', 'level': 'sequence', 'dim': 3},
      },
  })
  write_csv(path, SMALL_ROWS)
  rng = np.random.default_rng(0)
  audio = rng.normal(size=(8, 5, 3)).astype(np.float32)
  for i, n in enumerate(SMALL_LENGTHS):
    audio[i, n:] = np.nan
  np.save(path / 'audio.npy', audio)
  np.save(path / 'audio_lengths.npy', SMALL_LENGTHS)
  np.save(path / 'text.npy', rng.normal(size=(8, 4)).astype(np.float16))
  return path


@pytest.fixture
def small(tmp_path):
  return make_small(tmp_path / 'small')


def test_small_round_trip(small, tmp_path):
  dataset = load(small, tmp_path / 'tfds')
  spec = dataset.spec
  assert spec.name == 'Small set (hand-made)' and spec.label_names == ('neg', 'neu', 'pos')
  assert spec.ordered_modalities() == ['audio', 'text']
  assert spec.modalities['audio'] == schema.ModalitySpec('sequence', 3, max_len=5)
  assert spec.modalities['text'] == schema.ModalitySpec('utterance', 4)
  assert spec.conversational
  assert dataset.builder.info.description == 'two modalities, three splits'
  assert dataset.builder.builder_config.name.startswith('small_set_hand_made_')

  audio, text = np.load(small / 'audio.npy'), np.load(small / 'text.npy')
  labels = [2, 0, 1, 2, 1, 0, 2, 1]
  # (new turn, speaker index) per csv row: d0 is turns 0, 2, 5 -> 0, 1, 2 spoken by Bob, Ann, Ann.
  turn_speaker = [(2, 1), (0, 0), (0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (1, 0)]
  seen = 0
  for split in schema.SPLITS:
    examples = read_split(dataset, split)
    for i, (row_split, dialogue_id, turn, speaker, _) in enumerate(SMALL_ROWS):
      if row_split != split:
        continue
      ex = examples[f'{dialogue_id}/{turn}']
      seen += 1
      assert ex['dialogue_id'] == dialogue_id and ex['speaker_name'] == speaker
      assert (int(ex['turn']), int(ex['speaker'])) == turn_speaker[i]
      assert int(ex['label']) == labels[i]
      assert ex['audio'].dtype == np.float32 and ex['audio'].shape == (SMALL_LENGTHS[i], 3)
      np.testing.assert_array_equal(ex['audio'], audio[i, :SMALL_LENGTHS[i]])
      np.testing.assert_array_equal(ex['text'], text[i].astype(np.float32))
    assert len(examples) == sum(r[0] == split for r in SMALL_ROWS)
  assert seen == len(SMALL_ROWS)


def test_max_len_from_meta_and_regression(small, tmp_path):
  def to_regression(meta):
    meta.update(task='regression', label_range=[-3, 3])
    del meta['label_names']
    meta['modalities']['audio']['max_len'] = 3

  edit_meta(small, to_regression)
  values = ['-3', '0.5', '3', '1e-3', '-0.25', '2', '0', '-1.5']
  edit_csv(small, lambda h, rows: [r.__setitem__(4, v) for r, v in zip(rows, values)])
  dataset = load(small, tmp_path / 'tfds')
  assert dataset.spec.task == 'regression' and dataset.spec.label_range == (-3.0, 3.0)
  assert dataset.spec.modalities['audio'].max_len == 3
  examples = read_split(dataset, 'train')
  assert examples['d0/5']['label'] == np.float32(-3.0)
  assert examples['d0/5']['audio'].shape == (5, 3)  # stored whole; max_len is for padding


def test_chunks_hold_whole_dialogues_sorted_by_turn(small):
  directory = features_dir.read_directory(small)
  chunks = list(directory.iter_chunks('train', chunk_rows=2))
  # d0 (3 rows) exceeds the budget and goes alone; d1 follows in its own chunk.
  assert [list(c.dialogue_id) for c in chunks] == [['d0', 'd0', 'd0'], ['d1']]
  assert list(chunks[0].utterance_id) == ['d0/0', 'd0/2', 'd0/5']
  assert chunks[0].turn.tolist() == [0, 1, 2] and chunks[0].label.tolist() == [0, 2, 2]
  assert chunks[0].lengths['audio'].tolist() == [1, 2, 5]
  assert chunks[0].features['audio'].shape == (3, 5, 3)
  assert not chunks[0].features['audio'][0, 1:].any()  # padding zeroed, not NaN
  for chunk in chunks:
    schema.validate_chunk(directory.spec, 'train', chunk)


def test_single_turn_dialogues_are_not_conversational(small):
  edit_csv(small, lambda h, rows: [r.__setitem__(1, f'u{i}') for i, r in enumerate(rows)])
  assert not features_dir.read_directory(small).spec.conversational


def test_changed_directory_rebuilds_copy_reuses(small, tmp_path):
  name = features_dir.create_config(small).name
  copy = tmp_path / 'copy'
  shutil.copytree(small, copy)  # copy2: same content, same mtimes
  assert features_dir.create_config(copy).name == name
  edit_csv(copy, lambda h, rows: rows[0].__setitem__(3, 'Anna'))
  assert features_dir.create_config(copy).name != name
  changed = tmp_path / 'changed'
  shutil.copytree(small, changed)
  edit_npy(changed, 'text.npy', lambda x: x + 1)
  assert features_dir.create_config(changed).name != name


def test_data_error_raised_while_generating_reaches_the_caller(small, tmp_path, monkeypatch):
  """TFDS does not wrap generator errors: a DataError from inside the build arrives unchanged."""
  edit_npy(small, 'text.npy', lambda x: np.where(np.arange(8)[:, None] == 6, np.inf, x))
  monkeypatch.setattr(features_dir.Directory, 'check_values', lambda self: None)
  builder = features_dir.make_builder(data_dir=str(tmp_path / 'tfds'), features_dir=str(small))
  with pytest.raises(DataError, match='text') as e:
    builder.download_and_prepare()
  assert type(e.value) is DataError and e.value.field == 'text'
  assert not builder.data_path.exists()  # nothing half-written is left to be reused


# ---------------------------------------------------------------------------------------------
# Bad input: each defect is a DataError naming the file and the field (and the row).


def _drop_column(column):
  def fn(header, rows):
    k = header.index(column)
    header.pop(k)
    for r in rows:
      r.pop(k)
  return fn


def _set_cell(row, column, value):
  return lambda header, rows: rows[row].__setitem__(header.index(column), value)


def _remove_rows(path, keep):
  keep = np.asarray(keep)
  edit_csv(path, lambda h, rows: rows.__setitem__(slice(None), [r for r, k in zip(rows, keep) if k]))
  for name in ('audio.npy', 'audio_lengths.npy', 'text.npy'):
    edit_npy(path, name, lambda x: x[keep])


def _regression_label(path, value):
  def fn(meta):
    meta.update(task='regression', label_range=[-1, 1])
    del meta['label_names']
  edit_meta(path, fn)
  edit_csv(path, lambda h, rows: [r.__setitem__(4, value if i == 3 else '0.5')
                                  for i, r in enumerate(rows)])


def _rename_modality(old, new):
  def fn(meta):
    meta['modalities'][new] = meta['modalities'].pop(old)
  return fn


BAD_CASES = {
    # case: (corrupt(path), file, field, row)
    'missing_dir': (lambda p: shutil.rmtree(p), 'small', 'features_dir', None),
    'missing_meta': (lambda p: os.remove(p / 'meta.json'), 'meta.json', 'meta.json', None),
    'missing_csv': (lambda p: os.remove(p / 'utterances.csv'), 'utterances.csv', 'utterances.csv',
                    None),
    'missing_npy': (lambda p: os.remove(p / 'text.npy'), 'text.npy', 'text', None),
    'invalid_json': (lambda p: (p / 'meta.json').write_text('{"name": "x", task'), 'meta.json',
                     'json', None),
    'json_not_object': (lambda p: (p / 'meta.json').write_text('[1, 2]'), 'meta.json', 'json', None),
    'missing_meta_key': (lambda p: edit_meta(p, lambda m: m.pop('task')), 'meta.json', 'task', None),
    'missing_label_names': (lambda p: edit_meta(p, lambda m: m.pop('label_names')), 'meta.json',
                            'label_names', None),
    'unknown_task': (lambda p: edit_meta(p, lambda m: m.update(task='ranking')), 'meta.json', 'task',
                     None),
    'unknown_level': (lambda p: edit_meta(p, lambda m: m['modalities']['text'].update(level='word')),
                      'meta.json', 'modalities.text.level', None),
    'unknown_modality': (lambda p: edit_meta(p, _rename_modality('text', 'speech')), 'meta.json',
                         'modalities', None),
    'bad_dim_value': (lambda p: edit_meta(p, lambda m: m['modalities']['text'].update(dim='4')),
                      'meta.json', 'modalities.text.dim', None),
    'max_len_on_utterance': (
        lambda p: edit_meta(p, lambda m: m['modalities']['text'].update(max_len=3)), 'meta.json',
        'modalities.text.max_len', None),
    'missing_column': (lambda p: edit_csv(p, _drop_column('speaker')), 'utterances.csv', 'speaker',
                       None),
    'ragged_row': (lambda p: edit_csv(p, lambda h, rows: rows[3].append('extra')), 'utterances.csv',
                   'row', 3),
    'bad_split': (lambda p: edit_csv(p, _set_cell(2, 'split', 'dev')), 'utterances.csv', 'split', 2),
    'non_integer_turn': (lambda p: edit_csv(p, _set_cell(4, 'turn', '1.5')), 'utterances.csv', 'turn',
                         4),
    'empty_dialogue_id': (lambda p: edit_csv(p, _set_cell(5, 'dialogue_id', ' ')), 'utterances.csv',
                          'dialogue_id', 5),
    'label_unparseable': (lambda p: edit_csv(p, _set_cell(1, 'label', 'happy?')), 'utterances.csv',
                          'label', 1),
    'label_out_of_range': (lambda p: edit_csv(p, _set_cell(6, 'label', '3')), 'utterances.csv',
                           'label', 6),
    'label_not_integer': (lambda p: edit_csv(p, _set_cell(6, 'label', '1.5')), 'utterances.csv',
                          'label', 6),
    'regression_label_out_of_range': (lambda p: _regression_label(p, '1.5'), 'utterances.csv',
                                      'label', 3),
    'regression_label_nan': (lambda p: _regression_label(p, 'nan'), 'utterances.csv', 'label', 3),
    'duplicate_turn': (lambda p: edit_csv(p, _set_cell(3, 'turn', '5')), 'utterances.csv', 'turn',
                       3),
    'dialogue_in_two_splits': (lambda p: edit_csv(p, _set_cell(2, 'dialogue_id', 'v0')),
                               'utterances.csv', 'split', 4),
    'empty_split': (lambda p: _remove_rows(p, [r[0] != 'valid' for r in SMALL_ROWS]),
                    'utterances.csv', 'split', None),
    'split_in_some_rows_only': (lambda p: edit_csv(p, _set_cell(2, 'split', '')), 'utterances.csv',
                                'split', 2),
    'not_utf8_csv': (lambda p: (p / 'utterances.csv').write_bytes(b'split,\xff\xfe\n'),
                     'utterances.csv', 'encoding', None),
    'wrong_dim': (lambda p: edit_npy(p, 'text.npy', lambda x: x[:, :3]), 'text.npy', 'text', None),
    'wrong_ndim_utterance': (lambda p: edit_npy(p, 'text.npy', lambda x: x[:, None]), 'text.npy',
                             'text', None),
    'wrong_ndim_sequence': (lambda p: edit_npy(p, 'audio.npy', lambda x: x[:, 0]), 'audio.npy',
                            'audio', None),
    'string_dtype': (lambda p: edit_npy(p, 'text.npy', lambda x: x.astype(str)), 'text.npy', 'text',
                     None),
    'garbage_npy': (lambda p: (p / 'text.npy').write_bytes(b'\x93NUMPY garbage'), 'text.npy', 'text',
                    None),
    'nan_utterance': (lambda p: edit_npy(p, 'text.npy', lambda x: _put(x, (3, 1), np.nan)),
                      'text.npy', 'text', 3),
    'inf_sequence': (lambda p: edit_npy(p, 'audio.npy', lambda x: _put(x, (4, 3, 2), -np.inf)),
                     'audio.npy', 'audio', 4),
    'npy_rows_mismatch': (lambda p: edit_npy(p, 'text.npy', lambda x: x[:-2]), 'text.npy', 'text',
                          None),
    'missing_lengths': (lambda p: os.remove(p / 'audio_lengths.npy'), 'audio_lengths.npy',
                        'audio_lengths', None),
    'lengths_too_long': (lambda p: edit_npy(p, 'audio_lengths.npy', lambda x: _put(x, 2, 6)),
                         'audio_lengths.npy', 'audio_lengths', 2),
    'lengths_zero': (lambda p: edit_npy(p, 'audio_lengths.npy', lambda x: _put(x, 7, 0)),
                     'audio_lengths.npy', 'audio_lengths', 7),
    'lengths_count': (lambda p: edit_npy(p, 'audio_lengths.npy', lambda x: x[:-1]),
                      'audio_lengths.npy', 'audio_lengths', None),
}


def _put(x, index, value):
  x = x.copy()
  x[index] = value
  return x


@pytest.mark.parametrize('case', sorted(BAD_CASES))
def test_bad_input_is_a_clear_data_error(case, small, tmp_path):
  corrupt, file, field, row = BAD_CASES[case]
  corrupt(small)
  with pytest.raises(DataError) as e:
    load(small, tmp_path / 'tfds')
  message = str(e.value)
  assert type(e.value) is DataError
  assert os.path.basename(e.value.file) == file and file in message
  assert e.value.field == field and repr(field) in message
  assert e.value.row == row
  if row is not None:
    assert f'row {row}' in message
  assert e.value.expected and e.value.expected in message


# ---------------------------------------------------------------------------------------------
# Property-based: random valid directories build; random corruptions give DataError only.


@dataclasses.dataclass
class Made:
  """What `write_directory` wrote, for corrupting it and checking a build."""
  path: pathlib.Path
  meta: dict
  rows: list
  arrays: dict  # file name -> array (features and lengths)

  def npy_files(self):
    return sorted(self.arrays)


@st.composite
def directories(draw):
  """The shape of a small valid directory; the values come from a seeded numpy generator."""
  task = draw(st.sampled_from(schema.TASKS))
  names = draw(st.lists(st.sampled_from(schema.MODALITIES), min_size=1, max_size=3, unique=True))
  modalities = {
      name: dict(level=draw(st.sampled_from(schema.LEVELS)), dim=draw(st.integers(1, 4)),
                 frames=draw(st.integers(1, 4)),
                 dtype=draw(st.sampled_from(['float16', 'float32', 'float64', 'int16'])))
      for name in names}
  turns = {split: draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
           for split in schema.SPLITS}
  return dict(task=task, modalities=modalities, turns=turns,
              num_classes=draw(st.integers(2, 5)), shuffle=draw(st.booleans()),
              seed=draw(st.integers(0, 2**32 - 1)))


def write_directory(path, params) -> Made:
  rng = np.random.default_rng(params['seed'])
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  meta = {'name': f'random {params["seed"]}', 'task': params['task'], 'modalities': {}}
  k = params['num_classes']
  if params['task'] == 'classification':
    meta['label_names'] = [f'class {i}' for i in range(k)]
  else:
    meta['label_range'] = [-float(k), float(k)]
  rows = []
  for split, counts in params['turns'].items():
    for d, n in enumerate(counts):
      dialogue_id = f'{split}-{d}' if rng.random() < 0.7 else f'{split} "{d}", x'
      for turn in rng.choice(50, size=n, replace=False):
        if params['task'] == 'classification':
          c = int(rng.integers(k))
          label = str(c) if rng.random() < 0.5 else f'class {c}'
        else:
          label = repr(float(np.float32(rng.uniform(-k, k))))
        rows.append([split, dialogue_id, str(turn), str(rng.choice(['A', 'B', 'C, Jr.'])), label])
  if params['shuffle']:
    rows = [rows[i] for i in rng.permutation(len(rows))]
  write_csv(path, rows)
  arrays = {}
  for name, m in params['modalities'].items():
    entry = {'file': f'{name}_features.npy', 'level': m['level'], 'dim': m['dim']}
    shape = (len(rows), m['dim']) if m['level'] == 'utterance' else (len(rows), m['frames'],
                                                                      m['dim'])
    arrays[entry['file']] = (rng.normal(size=shape) * 10).astype(m['dtype'])
    if m['level'] == 'sequence':
      arrays[f'{name}_lengths.npy'] = rng.integers(1, m['frames'] + 1, size=len(rows))
    meta['modalities'][name] = entry
  write_meta(path, meta)
  for file, x in arrays.items():
    np.save(path / file, x)
  return Made(path, meta, rows, arrays)


def _save(made, file, x):
  np.save(made.path / file, x)


def corrupt_drop_column(made, rng):
  edit_csv(made.path, _drop_column(str(rng.choice(HEADER))))


def corrupt_wrong_dim(made, rng):
  file = str(rng.choice([f for f in made.npy_files() if not f.endswith('_lengths.npy')]))
  x = made.arrays[file]
  _save(made, file, np.concatenate([x, x[..., :1]], axis=-1))


def corrupt_wrong_ndim(made, rng):
  file = str(rng.choice([f for f in made.npy_files() if not f.endswith('_lengths.npy')]))
  x = made.arrays[file]
  _save(made, file, x[:, None] if x.ndim == 2 else x[:, 0])


def corrupt_inject_nan(made, rng):
  file = str(rng.choice([f for f in made.npy_files() if not f.endswith('_lengths.npy')]))
  x = made.arrays[file].astype(np.float32)
  i = int(rng.integers(len(x)))
  value = rng.choice([np.nan, np.inf, -np.inf])
  if x.ndim == 2:
    x[i, rng.integers(x.shape[1])] = value
  else:
    lengths = made.arrays[file.replace('_features.npy', '_lengths.npy')]
    x[i, rng.integers(lengths[i]), rng.integers(x.shape[2])] = value
  _save(made, file, x)


def corrupt_label_out_of_range(made, rng):
  i = int(rng.integers(len(made.rows)))
  if made.meta['task'] == 'classification':
    value = str(rng.choice([-1, len(made.meta['label_names']), 99]))
  else:
    value = repr(made.meta['label_range'][1] + float(rng.uniform(0.01, 5)))
  edit_csv(made.path, _set_cell(i, 'label', value))


def corrupt_truncate_rows(made, rng):
  file = str(rng.choice(made.npy_files()))
  x = made.arrays[file]
  _save(made, file, x[: -int(rng.integers(1, len(x) + 1))])


def corrupt_empty_split(made, rng):
  split = str(rng.choice(schema.SPLITS))
  keep = np.array([r[0] != split for r in made.rows])
  write_csv(made.path, [r for r, k in zip(made.rows, keep) if k])
  for file, x in made.arrays.items():
    _save(made, file, x[keep])


def corrupt_delete_file(made, rng):
  os.remove(made.path / str(rng.choice(['meta.json', 'utterances.csv'] + made.npy_files())))


def corrupt_garbage_json(made, rng):
  text = (made.path / 'meta.json').read_bytes()
  if rng.random() < 0.5:
    data = text[: int(rng.integers(len(text)))]
  else:
    data = rng.integers(0, 256, size=int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
  (made.path / 'meta.json').write_bytes(data)


def corrupt_bad_split(made, rng):
  i = int(rng.integers(len(made.rows)))
  edit_csv(made.path, _set_cell(i, 'split', str(rng.choice(['dev', 'Train', 'all', '']))))


def corrupt_bad_turn(made, rng):
  i = int(rng.integers(len(made.rows)))
  edit_csv(made.path, _set_cell(i, 'turn', str(rng.choice(['1.5', 'x', '', 'nan']))))


def corrupt_duplicate_turn(made, rng):
  i, j = rng.choice(len(made.rows), size=2, replace=False)
  def fn(header, rows):
    rows[j][:3] = rows[i][:3]
  edit_csv(made.path, fn)


def corrupt_bad_lengths(made, rng):
  files = [f for f in made.npy_files() if f.endswith('_lengths.npy')]
  assume(files)
  file = str(rng.choice(files))
  x = made.arrays[file].copy()
  frames = made.arrays[file.replace('_lengths.npy', '_features.npy')].shape[1]
  x[rng.integers(len(x))] = rng.choice([0, -1, frames + 1])
  _save(made, file, x)


def corrupt_garbage_npy(made, rng):
  file = str(rng.choice(made.npy_files()))
  data = rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
  (made.path / file).write_bytes((b'\x93NUMPY' if rng.random() < 0.5 else b'') + data)


CORRUPTIONS = {f.__name__[len('corrupt_'):]: f for f in (
    corrupt_drop_column, corrupt_wrong_dim, corrupt_wrong_ndim, corrupt_inject_nan,
    corrupt_label_out_of_range, corrupt_truncate_rows, corrupt_empty_split, corrupt_delete_file,
    corrupt_garbage_json, corrupt_bad_split, corrupt_bad_turn, corrupt_duplicate_turn,
    corrupt_bad_lengths, corrupt_garbage_npy)}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(params=directories(), corruption=st.sampled_from(sorted(CORRUPTIONS)),
       seed=st.integers(0, 2**32 - 1))
def test_corrupted_directories_raise_only_data_error(params, corruption, seed):
  with tempfile.TemporaryDirectory() as tmp:
    made = write_directory(pathlib.Path(tmp) / 'd', params)
    directory = features_dir.read_directory(made.path)  # valid before the corruption
    assert sum(len(d) for s in schema.SPLITS for d in directory.utterances.dialogues[s]) == len(
        made.rows)
    CORRUPTIONS[corruption](made, np.random.default_rng(seed))
    with pytest.raises(DataError) as e:
      features_dir.read_directory(made.path)
    assert e.value.file.startswith(str(made.path)) and e.value.file in str(e.value)
    try:  # the config (fingerprint) never fails on a broken directory but through meta.json
      features_dir.create_config(made.path)
    except DataError as e:
      assert os.path.basename(e.file) == 'meta.json'


@FAST
@given(params=directories(), target=st.sampled_from(['meta.json', 'utterances.csv', 'npy']),
       seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 4))
def test_random_byte_edits_give_data_error_or_a_valid_directory(params, target, seed, edits):
  """Mutations that may or may not break the directory: no exception but DataError escapes."""
  rng = np.random.default_rng(seed)
  with tempfile.TemporaryDirectory() as tmp:
    made = write_directory(pathlib.Path(tmp) / 'd', params)
    file = made.path / (str(rng.choice(made.npy_files())) if target == 'npy' else target)
    data = bytearray(file.read_bytes())
    for _ in range(edits):
      pos = int(rng.integers(len(data) + 1))
      op = rng.integers(3)
      if op == 0 and pos < len(data):
        data[pos] = int(rng.integers(256))
      elif op == 1:
        data[pos:pos] = bytes([int(rng.choice(list(b',"\n\r0-.{}[]:x\xff')))])
      else:
        del data[pos:pos + int(rng.integers(1, 4))]
    file.write_bytes(bytes(data))
    try:
      directory = features_dir.read_directory(made.path)
    except DataError:
      return
    directory.check_values()
    for split in schema.SPLITS:
      for chunk in directory.iter_chunks(split):
        schema.validate_chunk(directory.spec, split, chunk)


def check_build(dataset, made):
  """Every csv row comes back once, with its label and float32 features cropped to length."""
  meta = made.meta
  assert dataset.spec.task == meta['task']
  assert dataset.spec.ordered_modalities() == [m for m in schema.MODALITIES if m in meta['modalities']]
  for split in schema.SPLITS:
    examples = read_split(dataset, split)
    rows = [(i, r) for i, r in enumerate(made.rows) if r[0] == split]
    assert len(examples) == len(rows)
    for i, (_, dialogue_id, turn, _, label) in rows:
      ex = examples[f'{dialogue_id}/{turn}']
      if meta['task'] == 'classification':
        names = meta['label_names']
        assert int(ex['label']) == (names.index(label) if label in names else int(label))
      else:
        assert ex['label'] == np.float32(float(label))
      for name, entry in meta['modalities'].items():
        x = made.arrays[entry['file']][i].astype(np.float32)
        if entry['level'] == 'sequence':
          x = x[: made.arrays[f'{name}_lengths.npy'][i]]
        np.testing.assert_array_equal(ex[name], x)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=directories())
def test_random_valid_directories_build(params):
  with tempfile.TemporaryDirectory() as tmp:
    made = write_directory(pathlib.Path(tmp) / 'd', params)
    check_build(load(made.path, pathlib.Path(tmp) / 'tfds'), made)


def test_no_split_of_its_own_is_cut_7_1_2_by_dialogue():
  """An empty split column: whole dialogues, a fixed shuffle, 7:1:2 (M3ER's split)."""
  ids = [f'd{i // 3}' for i in range(300)]  # 100 dialogues of 3 rows
  splits = features_dir.ratio_split(ids)
  assert splits == features_dir.ratio_split(ids)  # fixed
  by_dialogue = {}
  for d, s in zip(ids, splits):
    assert by_dialogue.setdefault(d, s) == s  # a dialogue stays in one split
  counts = {s: list(by_dialogue.values()).count(s) for s in schema.SPLITS}
  assert counts == {'train': 70, 'valid': 10, 'test': 20}
  small = features_dir.ratio_split(['a', 'b', 'c'])
  assert sorted(small) == ['test', 'train', 'valid']  # one each
  with pytest.raises(schema.DataError, match='at least 3 dialogues'):
    features_dir.ratio_split(['a', 'a', 'b'])


def test_a_csv_without_splits_loads_with_the_7_1_2_split(small, tmp_path):
  edit_csv(small, lambda h, rows: [r.__setitem__(h.index('split'), '') for r in rows])
  dataset = load(small, tmp_path / 'tfds')
  counts = {split: len(read_split(dataset, split)) for split in schema.SPLITS}
  assert sum(counts.values()) == len(SMALL_ROWS) and all(counts.values())
