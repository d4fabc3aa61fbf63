"""The restricted unpickler: release-shaped data loads, anything that would run code is refused."""

import builtins
import collections
import os
import pickle
import subprocess

import numpy as np
import pytest

from mmer_jax.data import safe_pickle
from mmer_jax.data import schema


def _release_like():
  return (
      {'Ses01F_impro01': ['Ses01F_impro01_F000', 'Ses01F_impro01_M001']},
      {'d': np.arange(6, dtype=np.float32).reshape(2, 3), 'o': np.array(['a', 1], dtype=object),
       'u': np.array(['x', 'yy']), 'b': np.array([b'k'])},
      [np.float32(1.5), np.int64(3), np.bool_(True), np.dtype('f8'),
       1.5, 2, None, True, 'é', b'x'],
      {1, 2}, frozenset({3}), range(4), complex(1, 2), bytearray(b'ab'),
      collections.OrderedDict(a=1), collections.defaultdict(list, {'k': [1]}),
  )


@pytest.mark.parametrize('protocol', [0, 2, 4, 5])
def test_release_shaped_data_round_trips(tmp_path, protocol):
  data = _release_like()
  path = tmp_path / 'x.pkl'
  path.write_bytes(pickle.dumps(data, protocol=protocol))
  got = safe_pickle.load(path)
  assert got[0] == data[0]
  for k in ('d', 'u', 'b'):
    np.testing.assert_array_equal(got[1][k], data[1][k])
    assert got[1][k].dtype == data[1][k].dtype
  assert got[1]['o'].tolist() == ['a', 1]
  assert got[2][:3] == data[2][:3] and type(got[2][0]) is np.float32
  assert got[2][3:] == data[2][3:]
  assert got[3:] == data[3:]
  assert isinstance(got[-1], collections.defaultdict) and got[-1].default_factory is list


def test_python2_names_are_mapped():
  # A protocol-2 pickle as Python 2 wrote it: `__builtin__.set([...])` and a str payload.
  data = b'\x80\x02c__builtin__\nset\nq\x00]q\x01(U\x01aq\x02U\x01bq\x03e\x85q\x04Rq\x05.'
  assert safe_pickle.loads(data) == {'a', 'b'}


class _System:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


class _Exec:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (builtins.exec, (f'open({str(self.marker)!r}, "w").close()',))


class _Subprocess:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (subprocess.call, (['touch', str(self.marker)],))


@pytest.mark.parametrize('payload,asked', [(_System, 'system'), (_Exec, 'builtins.exec'),
                                           (_Subprocess, 'subprocess.call')])
@pytest.mark.parametrize('protocol', [0, 2, 5])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload, asked, protocol):
  marker = tmp_path / 'pwned'
  path = tmp_path / 'IEMOCAP_features.pkl'
  # Hidden inside an otherwise release-shaped tuple, as a tampered download would be.
  path.write_bytes(pickle.dumps(({'d': np.zeros(3)}, [payload(marker)]), protocol=protocol))
  with pytest.raises(schema.DataError) as info:
    safe_pickle.load(path)
  assert not marker.exists()
  msg = str(info.value)
  assert str(path) in msg and 'only numpy arrays and builtin containers' in msg and asked in msg
  assert info.value.field == 'pickle'
  # The unrestricted loader really would have run it: the test's payload is live.
  if payload is _Exec:
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_other_globals_are_refused():
  for obj in (collections.Counter('ab'), np.random.default_rng(0), np.ma.array([1, 2])):
    with pytest.raises(schema.DataError, match='the file asks for'):
      safe_pickle.loads(pickle.dumps(obj))


def test_corrupt_file_is_a_data_error(tmp_path):
  path = tmp_path / 'x.pkl'
  path.write_bytes(pickle.dumps({'a': np.zeros(10)})[:-7])
  with pytest.raises(schema.DataError, match='a readable pickle'):
    safe_pickle.load(path)
