"""Batches taken by index from a padded split: which examples each step trains on, and the gather.

The training order is a function of (seed, step) only, the same in every data placement
(`fasca_jax.placement`) and on any number of devices or processes:

  steps per epoch   E = N // B  (N examples, B the global batch; the N % B left over in an epoch
                    are a different set each epoch)
  epoch e           a permutation of range(N) from (seed, e): `permutation`
  global batch s    permutation(seed, s // E)[(s % E) * B : (s % E + 1) * B]: `batch_indices`
  process p of P    rows [p * B / P, (p + 1) * B / P) of the global batch (disjoint per step and,
                    within an epoch, over the run)

so a resumed run continues with the batch of its step, and every mode yields the same batches for
the same seed. `permutation` is pure JAX: the 'device' placement computes it inside the jitted
step from the state's seed (so a vmap over seeds gives each seed its own order); the host
placements compute the same bits with `HostOrder` on the CPU.

Padded split arrays (`placement.padded_split`), N examples in stored order:

  m, for m in the modalities    float32 (N, L_m, D_m): the first L_m steps, zero-padded at the end
  m + '_len'                    int32 (N,): length before cropping
  m + '_ids', m + '_segments'   int32 (N, L_m) instead of m for a token stream (a text encoder
                                in the model, `input_pipeline.Dataset.tokens`)
  'regression', 'label'         the targets the dataset has: float32 (N,); int32 (N,) or (N, 4)

`take` turns them and (B,) indices into the batch layout of `fasca_jax.input_pipeline`.

Imports only JAX and NumPy (steps.py uses it inside the jitted step).
"""

import functools
import threading

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# Data keys are fold_in(key(seed), DATA_KEY_OFFSET + epoch); dropout keys are fold_in(key(seed),
# step) with step < 2**31, so the two never share a key.
DATA_KEY_OFFSET = 2**31
ORDER = 'seed-epoch-permutation-v1'  # names this order in checkpoints (`checkpoints`).
TARGETS = ('regression', 'label')


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Global batches per epoch: N // B."""
  return num_examples // global_batch_size


def permutation(seed, epoch, num_examples: int) -> jax.Array:
  """(N,) int32: a permutation of range(N) drawn from (seed, epoch).  seed, epoch: () int.

  Random 32-bit keys sorted with the example index as tie-break: the same bits on every backend
  (a sort by keys alone may order ties differently on CPU and GPU).
  """
  data = jnp.uint32(DATA_KEY_OFFSET) + jnp.asarray(epoch).astype(jnp.uint32)
  key = jax.random.fold_in(jax.random.key(seed), data)
  bits = jax.random.bits(key, (num_examples,), jnp.uint32)
  return lax.sort((bits, jnp.arange(num_examples, dtype=jnp.int32)), num_keys=2)[1]


def batch_indices(seed, step, *, num_examples: int, global_batch_size: int) -> jax.Array:
  """(B,) int32: the examples of global batch `step` (module docstring).  seed, step: () int."""
  per_epoch = steps_per_epoch(num_examples, global_batch_size)
  if per_epoch < 1:
    raise ValueError(
      f'{num_examples} training examples make no batch of {global_batch_size}: lower '
      f'config.batch_size to at most {num_examples}.'
    )
  step = jnp.asarray(step, jnp.int32)
  order = permutation(seed, step // per_epoch, num_examples)
  start = (step % per_epoch) * global_batch_size
  return lax.dynamic_slice(order, (start,), (global_batch_size,))


class HostOrder:
  """`batch_indices` on the host (NumPy), computed on the CPU with the same bits; the last two
  epochs' permutations are kept. Safe to share between threads."""

  def __init__(self, seed: int, *, num_examples: int, global_batch_size: int):
    self.seed, self.num_examples, self.global_batch_size = seed, num_examples, global_batch_size
    self.steps_per_epoch = steps_per_epoch(num_examples, global_batch_size)
    if self.steps_per_epoch < 1:
      batch_indices(0, 0, num_examples=num_examples, global_batch_size=global_batch_size)  # raises
    self._orders, self._lock = {}, threading.Lock()

  def __getstate__(self):  # grain worker processes get a copy without the lock.
    return {k: v for k, v in self.__dict__.items() if k not in ('_orders', '_lock')}

  def __setstate__(self, state):
    self.__dict__.update(state, _orders={}, _lock=threading.Lock())

  def epoch_order(self, epoch: int) -> np.ndarray:
    """(N,) int32: `permutation(seed, epoch, N)`."""
    with self._lock:
      if epoch not in self._orders:
        with jax.default_device(_cpu()):
          order = _permutation_jit(np.int32(self.seed), np.int32(epoch), self.num_examples)
        self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
        self._orders[epoch] = np.asarray(order)
      return self._orders[epoch]

  def indices(self, step: int) -> np.ndarray:
    """(B,) int32: the examples of global batch `step`."""
    epoch, i = divmod(step, self.steps_per_epoch)
    b = self.global_batch_size
    return self.epoch_order(epoch)[i * b : (i + 1) * b]


_permutation_jit = jax.jit(permutation, static_argnums=2)


def _cpu():
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:  # JAX_PLATFORMS without cpu: the default device gives the same bits.
    return jax.local_devices()[0]


def local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process `process_index` of `process_count` feeds."""
  per_process = global_batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


def take(arrays: dict, indices, valid=None, *, xp=jnp) -> dict:
  """The batch of `indices` from padded split `arrays` (module docstring), in the batch layout
  of `fasca_jax.input_pipeline` without its host fields (id, m_len).

  Args:
    arrays: padded split arrays (JAX or NumPy).
    indices: (B,) int32 positions in the split.
    valid: (B,) bool, False on padding rows (evaluation); those rows come out as the input
      pipeline's blank rows: zero features, masks False, targets 0, index -1. None: all valid.
    xp: jnp inside a jitted function, np on the host.

  Returns:
    m (B, L_m, D_m), m + '_mask' (B, L_m) bool, the targets, 'valid' (B,) bool, 'index' (B,).
  """
  take_rows = functools.partial(xp.take, indices=indices, axis=0)
  if xp is jnp:
    take_rows = functools.partial(take_rows, mode='clip')  # indices are in range.
  n = indices.shape[0]
  if valid is None:
    valid, keep = xp.ones((n,), bool), lambda x: x
  else:
    keep = lambda x: xp.where(valid.reshape((n,) + (1,) * (x.ndim - 1)), x, xp.zeros((), x.dtype))
  batch = {'valid': valid, 'index': xp.where(valid, indices, -1).astype(xp.int32)}
  for name, x in arrays.items():
    if name in TARGETS:
      batch[name] = keep(take_rows(x))
    elif name.endswith('_len'):
      m = name[: -len('_len')]
      length = (arrays[m] if m in arrays else arrays[m + '_ids']).shape[1]  # features or tokens
      batch[m + '_mask'] = keep(xp.arange(length)[None, :] < take_rows(x)[:, None])
    else:
      batch[name] = keep(take_rows(x))
  return batch
