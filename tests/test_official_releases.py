"""The official-release builders read files shaped exactly like the authors' releases.

Each test writes a tiny release (a few dialogues or utterances, random features of the real
dimensions) into a manual directory and reads it back through `registry.load`. MMSA's files are
checked against published SHA-256s, which a fake file never has: every test here runs with a
copy of `mosi_mosei.SHA256` (the `mmsa_sha256` fixture) into which `write_mmsa` puts the hash
of the file it writes.
"""

import hashlib
import logging
import pickle

import h5py
import numpy as np
import pytest

from mmer_jax.data import iemocap
from mmer_jax.data import meld
from mmer_jax.data import mmgcn_pkl
from mmer_jax.data import mosi_mosei
from mmer_jax.data import msp_improv
from mmer_jax.data import registry
from mmer_jax.data import schema


# ---------------------------------------------------------------- writers of release-shaped files

def write_iemocap6(manual, *, n_train=10, n_test=3, seed=0, edit=None):
  """MMGCN's IEMOCAP_features.pkl: a 9-tuple of dicts keyed by dialogue id (protocol 2)."""
  rng = np.random.default_rng(seed)
  fields = {f: {} for f in mmgcn_pkl.FIELDS[:7]}
  train, test = [], []
  for k in range(n_train + n_test):
    vid = f'Ses0{k % 5 + 1}{"FM"[k % 2]}_impro{k:02d}'
    n = int(rng.integers(2, 6))
    speakers = ['M' if rng.random() < 0.5 else 'F' for _ in range(n)]
    fields['videoIDs'][vid] = [f'{vid}_{speakers[t]}{t:03d}' for t in range(n)]
    fields['videoSpeakers'][vid] = speakers
    fields['videoLabels'][vid] = rng.integers(0, 6, n).tolist()
    fields['videoText'][vid] = [rng.normal(size=100).astype(np.float32) for _ in range(n)]
    fields['videoAudio'][vid] = rng.normal(size=(n, 1582)).astype(np.float32)
    fields['videoVisual'][vid] = rng.normal(size=(n, 342))  # float64, as some dumps are
    fields['videoSentence'][vid] = ['words'] * n
    (train if k < n_train else test).append(vid)
  data = [fields[f] for f in mmgcn_pkl.FIELDS[:7]] + [train, test]
  if edit:
    edit(data)
  (manual / 'IEMOCAP_features.pkl').write_bytes(pickle.dumps(tuple(data), protocol=2))
  return data


def write_meld(manual, *, n_train=10, n_test=2, seed=1):
  """MMGCN's MELD_features_raw1.pkl: a 10-tuple, int dialogue keys, one-hot speakers (9 slots)."""
  rng = np.random.default_rng(seed)
  fields = {f: {} for f in mmgcn_pkl.FIELDS[:7]}
  for vid in range(n_train + n_test):
    n = int(rng.integers(2, 6))
    fields['videoIDs'][vid] = list(range(n))
    fields['videoSpeakers'][vid] = [np.eye(9)[rng.integers(0, 9)].tolist() for _ in range(n)]
    fields['videoLabels'][vid] = rng.integers(0, 7, n).tolist()
    fields['videoText'][vid] = rng.normal(size=(n, 600)).astype(np.float32)
    fields['videoAudio'][vid] = rng.normal(size=(n, 300)).astype(np.float32)
    fields['videoVisual'][vid] = rng.normal(size=(n, 342)).astype(np.float32)
    fields['videoSentence'][vid] = ['words'] * n
  sentiment = {vid: [0] * len(v) for vid, v in fields['videoLabels'].items()}
  data = [fields[f] for f in mmgcn_pkl.FIELDS[:7]] + [list(range(n_train)),
                                                      list(range(n_train, n_train + n_test)),
                                                      sentiment]
  (manual / 'MELD_features_raw1.pkl').write_bytes(pickle.dumps(tuple(data)))
  return data


def write_mmsa(manual, release, *, sizes=(6, 3, 3), seed=2, edit=None, official=True):
  """MMSA's aligned_50.pkl: {split: {text, audio, vision, regression_labels, id, ...}}.

  With `official`, the file's SHA-256 becomes the expected one of `release` in the test's copy
  of `mosi_mosei.SHA256` (the autouse `mmsa_sha256` fixture), so the file passes the check.
  """
  rng = np.random.default_rng(seed)
  dims = mosi_mosei.DIMS[release]
  data = {}
  for split, n in zip(('train', 'valid', 'test'), sizes):
    data[split] = {
        'raw_text': np.array(['a clip'] * n, dtype=object),
        'text': rng.normal(size=(n, 50, 768)).astype(np.float32),
        'text_bert': np.ones((n, 3, 50), np.float32),
        'audio': rng.normal(size=(n, 50, dims['audio'])).astype(np.float32),
        'vision': rng.normal(size=(n, 50, dims['visual'])).astype(np.float32),
        'regression_labels': rng.uniform(-3, 3, n).astype(np.float32),
        'classification_labels': np.zeros(n, np.float32),
        'annotations': np.array(['Neutral'] * n, dtype=object),
        'id': np.array([f'vid{split}{i // 2}$_${i}' for i in range(n)], dtype=object),
    }
  data['train']['audio'][1, 3, :2] = -np.inf
  if edit:
    edit(data)
  path = manual / mosi_mosei.FILES[release]
  path.parent.mkdir(parents=True, exist_ok=True)
  blob = pickle.dumps(data, protocol=4)
  path.write_bytes(blob)
  if official:
    assert mosi_mosei.SHA256 is not _PUBLISHED_SHA256  # only ever the fixture's copy
    mosi_mosei.SHA256[release] = hashlib.sha256(blob).hexdigest()
  return data


def write_mmin(manual, layout, *, folds, per_speaker=2, iemocap_style=True, seed=3,
               audio_name='comparE.h5', mean_std=True, edit=None):
  """MMIN's release: A/V/L h5 files keyed by utterance id and target/<fold>/{trn,val,tst}_*."""
  rng = np.random.default_rng(seed)
  root = manual / layout.root
  for sub in 'AVL':
    (root / sub).mkdir(parents=True, exist_ok=True)
  if iemocap_style:
    speakers = [(f'Ses0{s}', g) for s in range(1, 4) for g in 'FM']
    names = {f'{ses}{g}': [f'{ses}F_impro0{i}_{g}{i:03d}' for i in range(per_speaker)]
             for ses, g in speakers}
  else:
    names = {f'{g}0{s}': [f'MSP-IMPROV-S0{s}A-{g}0{s}-S-FM0{i}' for i in range(per_speaker)]
             for s in range(1, 4) for g in 'MF'}
  all_names = [n for v in names.values() for n in v]
  feats = {}
  for sub, fname, dim in (('A', audio_name, 130), ('V', 'denseface.h5', 342),
                          ('L', 'bert_large.h5', 1024)):
    feats[sub] = {}
    with h5py.File(root / sub / fname, 'w') as h5:
      for name in all_names:
        x = rng.normal(loc=3.0, size=(int(rng.integers(1, 7)), dim)).astype(np.float32)
        if edit:
          x = edit(sub, name, x)
        feats[sub][name] = x
        h5[name] = x
  spk = list(names)
  labels = {n: int(rng.integers(0, 4)) for n in all_names}
  stats = {}
  if mean_std:
    with h5py.File(root / 'A' / 'comparE_mean_std.h5', 'w') as h5:
      for fold in folds:
        mean, std = rng.normal(size=130), rng.uniform(0.5, 2, size=130)
        h5[f'{fold}/mean'], h5[f'{fold}/std'] = mean, std
        stats[fold] = (mean, std)
  split_names = {}
  for fold in folds:
    val, tst = spk[(2 * fold - 2) % len(spk)], spk[(2 * fold - 1) % len(spk)]
    parts = {'val': names[val], 'tst': names[tst],
             'trn': [n for s in spk if s not in (val, tst) for n in names[s]]}
    target = root / 'target' / str(fold)
    target.mkdir(parents=True, exist_ok=True)
    for short, ns in parts.items():
      y = np.array([labels[n] for n in ns])
      if iemocap_style:
        np.save(target / f'{short}_int2name.npy', np.array([[n.encode()] for n in ns]))
        np.save(target / f'{short}_label.npy', np.eye(4, dtype=np.float32)[y])
      else:
        np.save(target / f'{short}_int2name.npy', np.array(ns))
        np.save(target / f'{short}_label.npy', y)
    split_names[fold] = parts
  return feats, labels, split_names, stats


# ---------------------------------------------------------------------------------- helpers

def read_split(ds, split):
  """{utterance_id: example} of one split."""
  src = ds.sources[split]
  out = {}
  for i in range(len(src)):
    ex = src[i]
    out[ex['utterance_id'].decode()] = ex
  return out


def load(name, tmp_path, manual, **options):
  return registry.load(name, data_dir=str(tmp_path / 'data'), manual_dir=str(manual), **options)


_PUBLISHED_SHA256 = mosi_mosei.SHA256


@pytest.fixture(autouse=True)
def mmsa_sha256(monkeypatch):
  """The expected MMSA hashes for one test: a copy of the published table, restored afterwards."""
  table = dict(_PUBLISHED_SHA256)
  monkeypatch.setattr(mosi_mosei, 'SHA256', table)
  return table


@pytest.fixture
def manual(tmp_path):
  path = tmp_path / 'manual'
  path.mkdir()
  return path


# ---------------------------------------------------------------------------------- iemocap_6

def test_iemocap6_reads_the_release_and_carves_valid(tmp_path, manual):
  data = write_iemocap6(manual)
  ids, speakers, labels, text, audio, visual = data[:6]
  train_vid, test_vid = data[7], data[8]
  ds = load('iemocap_6', tmp_path, manual)
  assert ds.spec.label_names == ('happy', 'sad', 'neutral', 'angry', 'excited', 'frustrated')
  assert ds.spec.conversational and ds.spec.modalities['audio'].dim == 1582
  splits = {s: read_split(ds, s) for s in schema.SPLITS}
  dias = {s: {ex['dialogue_id'].decode() for ex in splits[s].values()} for s in schema.SPLITS}
  # valid: 10% of the training dialogues (at least one), disjoint, never from test.
  assert len(dias['valid']) == 1
  assert dias['train'] | dias['valid'] == set(train_vid)
  assert not dias['train'] & dias['valid'] and dias['test'] == set(test_vid)
  for s in schema.SPLITS:
    assert len(splits[s]) == sum(len(labels[v]) for v in dias[s])
  # values, labels, speakers and turns equal to the file's.
  for s in schema.SPLITS:
    for uid, ex in splits[s].items():
      vid = ex['dialogue_id'].decode()
      t = int(ex['turn'])
      assert ids[vid][t] == uid
      assert int(ex['label']) == labels[vid][t]
      assert ex['speaker_name'].decode() == speakers[vid][t]
      # speaker index: order of first appearance inside the dialogue
      assert int(ex['speaker']) == list(dict.fromkeys(speakers[vid])).index(speakers[vid][t])
      np.testing.assert_array_equal(ex['text'], text[vid][t])
      np.testing.assert_array_equal(ex['audio'], audio[vid][t])
      np.testing.assert_allclose(ex['visual'], visual[vid][t].astype(np.float32))


def test_valid_split_is_deterministic_and_seeded():
  train = [f'd{i}' for i in range(120)]
  a_train, a_valid = mmgcn_pkl.carve_valid(train, seed=0)
  b_train, b_valid = mmgcn_pkl.carve_valid(list(reversed(train)), seed=0)  # order-independent
  assert a_valid == b_valid and a_train == b_train
  assert len(a_valid) == 12 and sorted(a_train + a_valid) == sorted(train)
  assert not set(a_train) & set(a_valid)
  assert mmgcn_pkl.carve_valid(train, seed=1)[1] != a_valid


def test_iemocap6_valid_seed_option(tmp_path, manual):
  train_vid = write_iemocap6(manual, n_train=20)[7]

  def valid_dialogues(run, seed):
    ds = load('iemocap_6', tmp_path / run, manual, valid_seed=seed)
    return sorted({ex['dialogue_id'].decode() for ex in read_split(ds, 'valid').values()})

  first, again, other = valid_dialogues('a', 0), valid_dialogues('b', 0), valid_dialogues('c', 5)
  assert len(first) == 2 and first == again  # same seed, fresh build: same split
  assert other == sorted(mmgcn_pkl.carve_valid(train_vid, seed=5)[1])
  assert first == sorted(mmgcn_pkl.carve_valid(train_vid, seed=0)[1])


# ------------------------------------------------------------------------------------- meld_7

def test_meld_reads_the_ten_tuple(tmp_path, manual):
  data = write_meld(manual)
  ds = load('meld_7', tmp_path, manual)
  assert ds.spec.label_names == ('neutral', 'surprise', 'fear', 'sadness', 'joy', 'disgust',
                                 'anger')
  assert {m: s.dim for m, s in ds.spec.modalities.items()} == {'audio': 300, 'visual': 342,
                                                                'text': 600}
  splits = {s: read_split(ds, s) for s in schema.SPLITS}
  assert sum(len(v) for v in splits.values()) == sum(len(v) for v in data[2].values())
  assert {ex['dialogue_id'].decode() for ex in splits['test'].values()} == {'10', '11'}
  ex = splits['test']['dia11_utt1']
  assert ex['speaker_name'].decode() == str(int(np.argmax(data[1][11][1])))
  assert int(ex['label']) == data[2][11][1]
  np.testing.assert_array_equal(ex['text'], data[3][11][1])
  np.testing.assert_array_equal(ex['audio'], data[4][11][1])
  np.testing.assert_array_equal(ex['visual'], data[5][11][1])


# ---------------------------------------------------------------------------------- mosi/mosei

def test_mosi_reads_aligned_50_and_zeroes_minus_inf(tmp_path, manual):
  data = write_mmsa(manual, 'mosi')
  ds = load('mosi', tmp_path, manual)
  assert ds.spec.task == 'regression' and ds.spec.label_range == (-3.0, 3.0)
  assert {m: (s.level, s.dim, s.max_len) for m, s in ds.spec.modalities.items()} == {
      'audio': ('sequence', 5, 50), 'visual': ('sequence', 20, 50), 'text': ('sequence', 768, 50)}
  for split, n in zip(schema.SPLITS, (6, 3, 3)):
    assert len(ds.sources[split]) == n
  train = read_split(ds, 'train')
  ex = train['vidtrain0$_$1']
  want_audio = data['train']['audio'][1].copy()
  want_audio[want_audio == -np.inf] = 0
  assert ex['audio'][3, 0] == 0 and ex['audio'][3, 1] == 0
  np.testing.assert_array_equal(ex['audio'], want_audio)
  np.testing.assert_array_equal(ex['visual'], data['train']['vision'][1])
  np.testing.assert_array_equal(ex['text'], data['train']['text'][1])
  assert ex['label'] == pytest.approx(float(data['train']['regression_labels'][1]))
  assert ex['speaker_name'].decode() == 'vidtrain0' and ex['audio'].shape == (50, 5)


def test_mosei_dims(tmp_path, manual):
  write_mmsa(manual, 'mosei', sizes=(2, 1, 1))
  ds = load('mosei', tmp_path, manual)
  ex = ds.sources['test'][0]
  assert ex['audio'].shape == (50, 74) and ex['visual'].shape == (50, 35)
  assert ex['text'].shape == (50, 768)


def test_mmsa_published_sha256_table():
  assert set(_PUBLISHED_SHA256) == set(mosi_mosei.RELEASES) == set(mosi_mosei.FILES)
  assert _PUBLISHED_SHA256['mosi'].startswith('d3994fd2') and \
      _PUBLISHED_SHA256['mosei'].startswith('45eccfb7')
  for digest in _PUBLISHED_SHA256.values():
    assert len(digest) == 64 and set(digest) <= set('0123456789abcdef')


def test_file_sha256_reads_in_blocks(tmp_path, monkeypatch):
  monkeypatch.setattr(mosi_mosei, 'HASH_BLOCK', 7)  # many blocks and a short last one
  blob = np.random.default_rng(0).bytes(100)
  (tmp_path / 'f').write_bytes(blob)
  assert mosi_mosei.file_sha256(str(tmp_path / 'f')) == hashlib.sha256(blob).hexdigest()
  (tmp_path / 'empty').write_bytes(b'')
  assert mosi_mosei.file_sha256(str(tmp_path / 'empty')) == hashlib.sha256(b'').hexdigest()


def test_mmsa_file_with_the_expected_sha256_builds(tmp_path, manual, mmsa_sha256):
  write_mmsa(manual, 'mosi', official=False)
  mmsa_sha256['mosi'] = hashlib.sha256((manual / mosi_mosei.FILES['mosi']).read_bytes()).hexdigest()
  ds = load('mosi', tmp_path, manual)
  assert len(ds.sources['train']) == 6


def test_mmsa_sha256_mismatch_names_file_and_both_hashes(tmp_path, manual, mmsa_sha256):
  write_mmsa(manual, 'mosi', official=False)
  path = manual / mosi_mosei.FILES['mosi']
  actual = hashlib.sha256(path.read_bytes()).hexdigest()
  expected = mmsa_sha256['mosi']
  assert expected == _PUBLISHED_SHA256['mosi'] and actual != expected
  with pytest.raises(schema.DataError) as info:
    load('mosi', tmp_path, manual)
  msg = str(info.value)
  assert info.value.field == 'sha256' and info.value.file == str(path)
  assert str(path) in msg and expected in msg and actual in msg
  assert 'different or corrupted copy' in msg and 'verify_checksum=False' in msg
  assert not list((tmp_path / 'data').rglob('*.array_record*'))  # nothing was written


def test_mmsa_sha256_mismatch_with_verify_checksum_false_warns_and_builds(tmp_path, manual,
                                                                          caplog):
  data = write_mmsa(manual, 'mosi', official=False)
  path = manual / mosi_mosei.FILES['mosi']
  actual = hashlib.sha256(path.read_bytes()).hexdigest()
  with caplog.at_level(logging.WARNING):
    ds = load('mosi', tmp_path, manual, verify_checksum=False)
  assert len(ds.sources['train']) == 6
  assert read_split(ds, 'test')['vidtest0$_$1']['label'] == pytest.approx(
      float(data['test']['regression_labels'][1]))
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(str(path) in w and actual in w and _PUBLISHED_SHA256['mosi'] in w and
             'verify_checksum=False' in w for w in warnings), warnings


def test_verify_checksum_is_a_builder_argument_not_a_config(tmp_path):
  on = registry.create_builder('mosei', data_dir=str(tmp_path))
  off = registry.create_builder('mosei', data_dir=str(tmp_path), verify_checksum=False)
  assert on.verify_checksum is True and off.verify_checksum is False
  assert on.data_dir == off.data_dir and on.version == off.version  # the same built dataset
  assert pickle.loads(pickle.dumps(off)).verify_checksum is False
  with pytest.raises(ValueError, match='verify_checksum'):
    registry.create_builder('mosi', data_dir=str(tmp_path), verify_checksum='False')


# ------------------------------------------------------------------------- iemocap_4 / msp (MMIN)

def test_iemocap4_fold_selection_onehot_labels_and_norm(tmp_path, manual):
  feats, labels, split_names, stats = write_mmin(manual, iemocap.LAYOUT_4, folds=(1, 2))
  ds1 = load('iemocap_4', tmp_path, manual)  # fold 1 by default
  ds2 = load('iemocap_4', tmp_path, manual, fold=2)
  assert ds1.spec.label_names == ('angry', 'happy', 'neutral', 'sad')
  assert {m: (s.dim, s.max_len) for m, s in ds1.spec.modalities.items()} == {
      'audio': (130, 100), 'visual': (342, 50), 'text': (1024, 22)}
  for fold, ds in ((1, ds1), (2, ds2)):
    for split, short in (('train', 'trn'), ('valid', 'val'), ('test', 'tst')):
      got = read_split(ds, split)
      assert sorted(got) == sorted(split_names[fold][short])
      for name, ex in got.items():
        assert int(ex['label']) == labels[name]
        assert ex['dialogue_id'].decode() == name and int(ex['turn']) == 0
        np.testing.assert_array_equal(ex['visual'], feats['V'][name])
        np.testing.assert_array_equal(ex['text'], feats['L'][name])
        mean, std = stats[fold]  # the fold's comparE_mean_std.h5 entry
        np.testing.assert_allclose(ex['audio'], (feats['A'][name] - mean) / std, rtol=1e-5,
                                   atol=1e-5)
  assert sorted(read_split(ds1, 'test')) != sorted(read_split(ds2, 'test'))
  name = split_names[1]['tst'][0]
  assert read_split(ds1, 'test')[name]['speaker_name'].decode() == name[:5] + name[-4]
  raw = read_split(load('iemocap_4', tmp_path, manual, audio_norm='none'), 'train')
  for name, ex in raw.items():
    np.testing.assert_array_equal(ex['audio'], feats['A'][name])


def test_msp_improv_int_labels_raw_audio_and_train_stats(tmp_path, manual):
  feats, labels, split_names, _ = write_mmin(
      manual, msp_improv.LAYOUT, folds=(12,), iemocap_style=False, audio_name='comparE_raw.h5',
      mean_std=False)
  ds = load('msp_improv_4', tmp_path, manual, fold=12)
  train = np.concatenate([feats['A'][n] for n in split_names[12]['trn']]).astype(np.float64)
  mean, std = train.mean(axis=0), train.std(axis=0)
  for split, short in (('train', 'trn'), ('valid', 'val'), ('test', 'tst')):
    got = read_split(ds, split)
    assert sorted(got) == sorted(split_names[12][short])
    for name, ex in got.items():
      assert int(ex['label']) == labels[name]
      assert ex['speaker_name'].decode() == name.split('-')[3]
      np.testing.assert_allclose(ex['audio'], (feats['A'][name] - mean) / std, rtol=1e-4,
                                 atol=1e-4)
  with pytest.raises(ValueError, match=r'1\.\.12'):
    registry.create_builder('msp_improv_4', data_dir=str(tmp_path), fold=13)


def test_empty_sequence_becomes_one_zero_frame(tmp_path, manual):
  empty = lambda sub, name, x: x[:0] if sub == 'V' and name.endswith('000') else x
  write_mmin(manual, iemocap.LAYOUT_4, folds=(1,), edit=empty)
  got = read_split(load('iemocap_4', tmp_path, manual), 'train')
  zero = [ex for name, ex in got.items() if name.endswith('000')]
  assert zero and all(ex['visual'].shape == (1, 342) and not ex['visual'].any() for ex in zero)


# ------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize('name,filename,instructions', [
    ('iemocap_6', 'IEMOCAP_features.pkl', iemocap.INSTRUCTIONS_6),
    ('meld_7', 'MELD_features_raw1.pkl', meld.INSTRUCTIONS),
    ('mosi', 'MOSI/Processed/aligned_50.pkl', mosi_mosei.Mosi.MANUAL_DOWNLOAD_INSTRUCTIONS),
    ('mosei', 'MOSEI/Processed/aligned_50.pkl', mosi_mosei.Mosei.MANUAL_DOWNLOAD_INSTRUCTIONS),
    ('iemocap_4', 'IEMOCAP_features_2021/A/comparE.h5', iemocap.INSTRUCTIONS_4),
    ('msp_improv_4', 'MSP-IMPROV_features_2021/A/comparE.h5', msp_improv.INSTRUCTIONS),
])
def test_missing_manual_file_names_file_and_instructions(tmp_path, manual, name, filename,
                                                         instructions):
  with pytest.raises(schema.DataError) as info:
    load(name, tmp_path, manual)
  msg = str(info.value)
  assert filename in msg and instructions.strip() in msg


def test_missing_target_file_of_a_fold(tmp_path, manual):
  write_mmin(manual, iemocap.LAYOUT_4, folds=(1,))
  with pytest.raises(schema.DataError, match=r'target/4/trn_int2name\.npy'):
    load('iemocap_4', tmp_path, manual, fold=4)


def test_missing_dialogue_in_a_pickle_dict(tmp_path, manual):
  def drop(data):
    del data[4][data[8][0]]  # videoAudio of the first test dialogue
  data = write_iemocap6(manual, edit=drop)
  with pytest.raises(schema.DataError, match=rf"videoAudio\['{data[8][0]}'\].*missing"):
    load('iemocap_6', tmp_path, manual)


def test_missing_key_in_mmsa_split(tmp_path, manual):
  write_mmsa(manual, 'mosi', edit=lambda d: d['valid'].pop('vision'))
  with pytest.raises(schema.DataError, match=r"valid/vision.*'vision'"):
    load('mosi', tmp_path, manual)


def test_wrong_tuple_length(tmp_path, manual):
  write_iemocap6(manual, edit=lambda d: d.pop())
  with pytest.raises(schema.DataError, match='9-tuple'):
    load('iemocap_6', tmp_path, manual)


def test_wrong_feature_dim_names_field_and_dialogue(tmp_path, manual):
  def shrink(data):
    vid = data[7][2]
    data[5][vid] = data[5][vid][:, :300]
  data = write_iemocap6(manual, edit=shrink)
  with pytest.raises(schema.DataError) as info:
    load('iemocap_6', tmp_path, manual)
  msg = str(info.value)
  assert f"videoVisual['{data[7][2]}']" in msg and '342' in msg and '300' in msg


def test_wrong_text_vector_names_turn(tmp_path, manual):
  def shrink(data):
    vid = data[7][0]
    data[3][vid][1] = data[3][vid][1][:99]
  data = write_iemocap6(manual, edit=shrink)
  with pytest.raises(schema.DataError) as info:
    load('iemocap_6', tmp_path, manual)
  assert f"videoText['{data[7][0]}']" in str(info.value) and info.value.row == 1


def test_wrong_dim_in_mmsa(tmp_path, manual):
  write_mmsa(manual, 'mosei', sizes=(2, 1, 1))
  (manual / 'MOSI' / 'Processed').mkdir(parents=True)
  (manual / mosi_mosei.FILES['mosei']).rename(manual / mosi_mosei.FILES['mosi'])
  with pytest.raises(schema.DataError, match='sha256'):  # MOSEI's hash is not MOSI's
    load('mosi', tmp_path, manual)
  with pytest.raises(schema.DataError, match=r'train/audio.*\[2, T, 5\].*74'):
    load('mosi', tmp_path / 'again', manual, verify_checksum=False)


def test_wrong_dim_in_h5(tmp_path, manual):
  write_mmin(manual, iemocap.LAYOUT_4, folds=(1,),
             edit=lambda sub, name, x: x[:, :1000] if sub == 'L' else x)
  with pytest.raises(schema.DataError, match=r'bert_large\.h5.*\[T, 1024\]'):
    load('iemocap_4', tmp_path, manual)


def test_nan_in_features(tmp_path, manual):
  def poison(data):
    vid = data[8][1]
    data[4][vid] = data[4][vid].copy()
    data[4][vid][1, 7] = np.nan
  data = write_iemocap6(manual, edit=poison)
  with pytest.raises(schema.DataError) as info:
    load('iemocap_6', tmp_path, manual)
  assert f"videoAudio['{data[8][1]}']" in str(info.value) and info.value.row == 1
  assert 'NaN' in str(info.value)


def test_nan_in_mmsa_vision_and_plus_inf_audio(tmp_path, manual):
  def poison(d):
    d['test']['vision'][2, 0, 0] = np.nan
  write_mmsa(manual, 'mosi', edit=poison)
  with pytest.raises(schema.DataError) as info:
    load('mosi', tmp_path, manual)
  assert 'test/vision' in str(info.value) and info.value.row == 2
  write_mmsa(manual, 'mosi', edit=lambda d: d['valid']['audio'].__setitem__((1, 0, 0), np.inf))
  with pytest.raises(schema.DataError, match='valid/audio'):
    load('mosi', tmp_path / 'again', manual)


def test_labels_out_of_range(tmp_path, manual):
  def bad(data):
    data[2][data[7][0]][0] = 6
  write_iemocap6(manual, edit=bad)
  with pytest.raises(schema.DataError, match=r"label.*\[0, 5\]"):
    load('iemocap_6', tmp_path, manual)
  write_mmsa(manual, 'mosi', edit=lambda d: d['train']['regression_labels'].__setitem__(0, 3.5))
  with pytest.raises(schema.DataError, match=r'label.*\[-3\.0, 3\.0\]'):
    load('mosi', tmp_path / 'again', manual)


def test_bad_one_hot_label_rows(tmp_path, manual):
  write_mmin(manual, iemocap.LAYOUT_4, folds=(1,))
  path = manual / iemocap.LAYOUT_4.root / 'target' / '1' / 'val_label.npy'
  y = np.load(path)
  y[1] = [0.5, 0.5, 0, 0]
  np.save(path, y)
  with pytest.raises(schema.DataError, match='one-hot') as info:
    load('iemocap_4', tmp_path, manual)
  assert info.value.row == 1


def test_bad_speaker_values(tmp_path, manual):
  def bad(data):
    data[1][data[7][0]][0] = 'X'
  write_iemocap6(manual, edit=bad)
  with pytest.raises(schema.DataError, match="'M' or 'F'"):
    load('iemocap_6', tmp_path, manual)


def test_malicious_release_pickle_runs_nothing(tmp_path, manual):
  marker = tmp_path / 'pwned'

  class Payload:
    def __reduce__(self):
      import os  # pylint: disable=g-import-not-at-top
      return (os.system, (f'touch {marker}',))

  (manual / 'MELD_features_raw1.pkl').write_bytes(pickle.dumps((Payload(),) * 10))
  with pytest.raises(schema.DataError, match='only numpy arrays and builtin containers'):
    load('meld_7', tmp_path, manual)
  assert not marker.exists()


def test_options_are_checked():
  with pytest.raises(ValueError, match='iemocap_4 only'):
    registry.create_builder('iemocap_6', data_dir='/tmp/unused', fold=2)
  with pytest.raises(ValueError, match=r'1\.\.10'):
    registry.create_builder('iemocap_4', data_dir='/tmp/unused', fold=11)
  with pytest.raises(ValueError, match='audio_norm'):
    registry.create_builder('iemocap_4', data_dir='/tmp/unused', audio_norm='utt')
  with pytest.raises(ValueError, match='valid_seed'):
    registry.create_builder('meld_7', data_dir='/tmp/unused', valid_seed=-1)


def test_object_npy_targets_go_through_the_restricted_unpickler(tmp_path, manual):
  _, labels, split_names, _ = write_mmin(manual, msp_improv.LAYOUT, folds=(1,),
                                         iemocap_style=False, mean_std=False)
  target = manual / msp_improv.LAYOUT.root / 'target' / '1'
  names = split_names[1]['val']
  np.save(target / 'val_int2name.npy', np.array(names, dtype=object), allow_pickle=True)
  got = read_split(load('msp_improv_4', tmp_path, manual), 'valid')
  assert sorted(got) == sorted(names)

  marker = tmp_path / 'pwned'

  class Payload:
    def __reduce__(self):
      import os  # pylint: disable=g-import-not-at-top
      return (os.system, (f'touch {marker}',))

  np.save(target / 'tst_int2name.npy', np.array([Payload()], dtype=object), allow_pickle=True)
  with pytest.raises(schema.DataError, match='only numpy arrays and builtin containers'):
    load('msp_improv_4', tmp_path / 'again', manual)
  assert not marker.exists()
