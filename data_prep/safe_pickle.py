"""Restricted unpickler for untrusted dataset pickles (MMSA, MulT).

`load(path)` admits only NumPy arrays, NumPy dtypes and scalars, and plain containers (dict, list,
tuple, str, bytes, int, float, bool, None). Plain containers need no globals; the only globals
admitted are the handful NumPy's own pickles reference, in both the NumPy 1.x (`numpy.core.*`)
and 2.x (`numpy._core.*`) spellings. Any other global (`os.system`, `builtins.eval`, any class)
stops loading before it is called, with an `UnsafePickleError` naming the file and the global.
"""

import os
import pickle
import struct

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global outside the allowlist; nothing in it ran."""


class CorruptPickleError(pickle.UnpicklingError):
  """The file is truncated or is not a readable pickle."""


def _latin1_bytes(text, encoding):
  """`_codecs.encode` as protocol-2 pickles use it for bytes: `(str, 'latin1') -> bytes` only."""
  if not isinstance(text, str) or encoding != 'latin1':
    raise ValueError(
      f'_codecs.encode admitted only as (str, "latin1"), got ({type(text).__name__}, {encoding!r})'
    )
  return text.encode('latin1')


class _Frozen:
  """Wraps an admitted Python function so the pickle's BUILD opcode cannot set its attributes
  (e.g. `__defaults__`); NumPy's C functions and types are immutable already."""

  __slots__ = ('_function',)

  def __init__(self, function):
    object.__setattr__(self, '_function', function)

  def __call__(self, *args):
    return self._function(*args)

  def __setattr__(self, name, value):
    raise UnsafePickleError(f'refused to set attribute {name!r} of an admitted global')


def _allowed_globals():
  """Returns {(module, name): object} for the globals NumPy array/scalar pickles reference."""
  allowed = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): _Frozen(_latin1_bytes),
  }
  for package in ('numpy.core', 'numpy._core'):
    allowed[(f'{package}.multiarray', '_reconstruct')] = _multiarray._reconstruct
    allowed[(f'{package}.multiarray', 'scalar')] = _multiarray.scalar
    allowed[(f'{package}.numeric', '_frombuffer')] = _Frozen(_numeric._frombuffer)
  return allowed


_ALLOWED = _allowed_globals()

# What a damaged file raises inside `pickle.Unpickler.load`.
_READ_ERRORS = (
  pickle.UnpicklingError,
  EOFError,
  ValueError,
  TypeError,
  KeyError,
  IndexError,
  AttributeError,
  struct.error,
  UnicodeDecodeError,
  MemoryError,
)


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler whose `find_class` resolves only the allowlisted globals."""

  def __init__(self, file):
    # latin1 keeps Python-2 pickled array buffers byte-exact (NumPy's documented requirement).
    super().__init__(file, encoding='latin1')

  def find_class(self, module, name):
    """Returns the allowlisted object for `module.name`; raises UnsafePickleError otherwise."""
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(
        f'refused global {module}.{name}; only NumPy arrays and plain containers '
        '(dict, list, tuple, str, bytes, int, float, bool, None) may be loaded'
      ) from None

  def persistent_load(self, pid):
    """Persistent ids name external objects; none are admitted."""
    raise UnsafePickleError(f'refused persistent id {pid!r}')


def load(path):
  """Loads the pickle at `path`, admitting only NumPy arrays and plain containers.

  Raises:
    UnsafePickleError: the pickle references any other global (named in the message).
    CorruptPickleError: the file is truncated or not a pickle (file named in the message).
    FileNotFoundError: `path` does not exist.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    try:
      return _RestrictedUnpickler(f).load()
    except UnsafePickleError as e:
      raise UnsafePickleError(f'{path}: {e}') from None
    except _READ_ERRORS as e:
      raise CorruptPickleError(
        f'{path}: truncated or not a readable pickle ({type(e).__name__}: {e})'
      ) from e
