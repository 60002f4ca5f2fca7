"""data_prep.safe_pickle: NumPy arrays and plain containers load; nothing else runs."""

import builtins
import collections
import os
import pickle

import numpy as np
from numpy._core import numeric
import pytest

from data_prep import safe_pickle


class _System:
  """Unpickling this would run a shell command creating `marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


class _Eval:
  """Unpickling this would evaluate Python code creating `marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return builtins.eval, (f'open({str(self.marker)!r}, "w").close()',)


def _payload():
  """Arrays of the dtypes the released pickles hold, NumPy scalars and plain containers."""
  rng = np.random.default_rng(0)
  return {
    'train': {
      'text': rng.standard_normal((2, 3, 4)).astype(np.float32),
      'audio': np.array([[[-np.inf, 1.5]]], dtype=np.float64),
      'lengths': np.array([3, 1], dtype=np.int64),
      'mask': np.array([True, False]),
      'id': np.array(['a$_$1', 'b$_$2'], dtype=object),
      'raw': np.array([b'vid', b'x']),
      'unicode': np.array(['caf\u00e9']),
      'fortran': np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    },
    'scalars': [np.float32(1.25), np.int64(-3), np.bool_(True)],
    'plain': (None, True, 1, 2.5, 'text', b'bytes', [1, (2, 3)], {'k': {}}),
  }


def _assert_same(a, b):
  """Recursive equality with dtype and type checks."""
  assert type(a) is type(b), (type(a), type(b))
  if isinstance(a, dict):
    assert a.keys() == b.keys()
    for k in a:
      _assert_same(a[k], b[k])
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      _assert_same(x, y)
  elif isinstance(a, np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  else:
    assert a == b


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_round_trip(tmp_path, protocol):
  path = tmp_path / 'data.pkl'
  path.write_bytes(pickle.dumps(_payload(), protocol=protocol))
  _assert_same(safe_pickle.load(path), _payload())


def test_numpy1_spelling(tmp_path):
  """Pickles written by NumPy 1.x name `numpy.core.multiarray` (MMSA, MulT)."""
  data = pickle.dumps(_payload(), protocol=2)
  assert b'numpy._core.multiarray' in data
  path = tmp_path / 'old.pkl'
  path.write_bytes(data.replace(b'numpy._core.', b'numpy.core.'))
  _assert_same(safe_pickle.load(path), _payload())


@pytest.mark.parametrize(
  'make, refused',
  [
    (_System, 'system'),
    (_Eval, 'builtins.eval'),
    (lambda marker: {'train': {'id': np.array([_System(marker)], dtype=object)}}, 'system'),
  ],
)
def test_refuses_code(tmp_path, make, refused):
  marker = tmp_path / 'executed'
  path = tmp_path / 'evil.pkl'
  path.write_bytes(pickle.dumps(make(marker), protocol=4))
  with pytest.raises(safe_pickle.UnsafePickleError) as err:
    safe_pickle.load(path)
  assert str(path) in str(err.value) and refused in str(err.value)
  assert not marker.exists()


def test_refuses_other_classes(tmp_path):
  path = tmp_path / 'class.pkl'
  path.write_bytes(pickle.dumps({'a': collections.OrderedDict(b=1)}, protocol=4))
  with pytest.raises(
    safe_pickle.UnsafePickleError, match=r'refused global collections\.OrderedDict'
  ):
    safe_pickle.load(path)


def test_codecs_encode_only_latin1(tmp_path):
  path = tmp_path / 'codec.pkl'
  data = pickle.dumps(b'\xff', protocol=2)
  assert b'latin1' in data
  path.write_bytes(data.replace(b'latin1', b'utf_16'))
  with pytest.raises(safe_pickle.CorruptPickleError, match='latin1'):
    safe_pickle.load(path)


@pytest.mark.parametrize(
  'content', [pickle.dumps(_payload(), protocol=4)[:200], b'', b'not a pickle at all']
)
def test_corrupt(tmp_path, content):
  path = tmp_path / 'broken.pkl'
  path.write_bytes(content)
  with pytest.raises(safe_pickle.CorruptPickleError, match=str(path)):
    safe_pickle.load(path)


def test_admitted_functions_cannot_be_modified(tmp_path):
  """BUILD on an admitted global (setting `_frombuffer.__defaults__`) is refused."""
  path = tmp_path / 'tamper.pkl'
  # GLOBAL numpy._core.numeric _frombuffer; BUILD with slot state {'__defaults__': (1,)}.
  path.write_bytes(
    b'\x80\x02cnumpy._core.numeric\n_frombuffer\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b.'
  )
  with pytest.raises(
    safe_pickle.UnsafePickleError, match=f"{path}: refused to set attribute '__defaults__'"
  ):
    safe_pickle.load(path)
  assert numeric._frombuffer.__defaults__ == (None,)
