"""Where the data lives during training: `config.data_placement`.

  'device'  every split, padded (`padded_split`), resident on the accelerators (replicated on
            each device); each train step gathers its batch by index inside the jitted program
            (`fasca_jax.indexing`) and evaluation is one call per split: no host work per step.
  'host'    the padded splits in host memory (memory-mapped from their cache); a thread gathers
            each call's batches by vectorised indexing and transfers them to the devices
            `PREFETCH_CALLS` calls ahead of the step.
  'stream'  grain reads and pads every example from the TFDS files
            (`input_pipeline.make_batches`), for data larger than memory; the same thread
            transfers ahead.
  'auto'    'device' when the padded splits fit DEVICE_FRACTION of a device's free memory (on a
            CPU, of the host's available memory shared by its local devices, each holding a copy),
            else 'host' when they fit HOST_FRACTION of the host's available memory, else
            'stream'. The choice and the bytes are logged; all processes take the same mode.

Every mode trains on the same batches in the same order (`fasca_jax.indexing`): the data
position is the train state's step, so resumption is exact, also in another mode.

The padded arrays of a split are built once per (dataset version, max_len) and cached beside the
TFDS data, one file per field, so that other max_len or modality subsets add files:

  <builder.data_dir>/padded-<split>/<m>.<L_m>.npy    float32 (N, L_m, D_m)
  <builder.data_dir>/padded-<split>/<target>.npy     the targets, (N,) or (N, 4)

with the lengths from the split summary (`input_pipeline.split_summary`). They are read
memory-mapped, so a second run starts in seconds.
"""

import math
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from fasca_jax import distributed
from fasca_jax import indexing
from fasca_jax import input_pipeline

MODES = ('auto', 'device', 'host', 'stream')
DEVICE_FRACTION = 0.5  # of a device's free memory that 'auto' lets the padded splits take.
HOST_FRACTION = 0.5  # of the host's available memory that 'auto' lets them take in 'host'.
PREFETCH_CALLS = 2  # host and stream: calls' batches on the devices ahead of the step.
SPLITS = ('train', 'validation', 'test')


# --- the padded arrays --------------------------------------------------------------------------
def padded_bytes(dataset: input_pipeline.Dataset, split: str) -> int:
  """Bytes of `split` as padded arrays (features, lengths, targets), from its shapes alone."""
  per_example = sum(
    4 * ((2 * n if m in dataset.tokens else n * dataset.widths[m]) + 1)
    for m, n in dataset.max_len.items()
  )
  per_example += sum(4 * math.prod(shape) for shape, _ in dataset.targets.values())
  return per_example * dataset.num_examples(split)


def padded_split(dataset: input_pipeline.Dataset, split: str) -> dict[str, np.ndarray]:
  """`split` as padded arrays (layout in `fasca_jax.indexing`), read memory-mapped from the
  cache (module docstring); the missing files are built first in one pass over the split."""
  directory = os.path.join(dataset.builder.data_dir, f'padded-{split}')
  files = {}
  for m, n in dataset.max_len.items():  # a token stream: its ids and segment ids, (N, L) int32
    names = (f'{m}_ids', f'{m}_segments') if m in dataset.tokens else (m,)
    files.update({k: f'{k}.{n}.npy' for k in names})
  files.update({t: f'{t}.npy' for t in dataset.targets})
  missing = {k: f for k, f in files.items() if not os.path.isfile(os.path.join(directory, f))}
  if missing:
    _build(dataset, split, directory, missing)
  lengths = input_pipeline.split_summary(dataset, split).lengths
  arrays = {k: np.load(os.path.join(directory, f), mmap_mode='r') for k, f in files.items()}
  arrays.update({f'{m}_len': lengths[m] for m in dataset.max_len})
  return arrays


def _build(dataset: input_pipeline.Dataset, split: str, directory: str, files: dict[str, str]):
  """Writes the padded arrays `files` (field -> file name) of `split` into `directory`."""
  n = dataset.num_examples(split)
  logging.info(
    'Padding %s/%s once into %s (%s: %.1f MiB); later runs read it.',
    dataset.name,
    split,
    directory,
    ', '.join(sorted(files)),
    padded_bytes(dataset, split) / 2**20,
  )
  os.makedirs(directory, exist_ok=True)
  suffix = f'.tmp-{os.getpid()}.npy'
  out = {}
  tokens = {f'{m}{suffix}': m for m in dataset.tokens for suffix in ('_ids', '_segments')}
  for k, name in files.items():
    if k in tokens:
      shape, dtype = (n, dataset.max_len[tokens[k]]), np.int32
    elif k in dataset.max_len:
      shape, dtype = (n, dataset.max_len[k], dataset.widths[k]), np.float32
    else:
      shape, dtype = (n, *dataset.targets[k][0]), dataset.targets[k][1]
    out[k] = np.lib.format.open_memmap(os.path.join(directory, name + suffix), 'w+', dtype, shape)
  batches = input_pipeline.make_batches(
    dataset, split, train=False, global_batch_size=64, seed=0, process_index=0, process_count=1
  )
  for batch in batches:
    rows = batch['index'][batch['valid']]
    for k, x in out.items():
      x[rows] = batch[k][batch['valid']]
  for k, name in files.items():
    out[k].flush()
    del out[k]
    os.replace(os.path.join(directory, name + suffix), os.path.join(directory, name))


# --- the choice -----------------------------------------------------------------------------------
def choose(config, dataset: input_pipeline.Dataset) -> str:
  """config.data_placement, with 'auto' resolved (module docstring) and logged."""
  mode = config.get('data_placement', 'auto')
  if mode not in MODES:
    raise ValueError(f'config.data_placement={mode!r}: expected one of {MODES}.')
  need = sum(padded_bytes(dataset, s) for s in SPLITS)
  device_free, shared = device_memory()
  host_free = host_memory()
  copies = jax.local_device_count() if shared else 1
  if mode == 'auto':
    if need * copies <= DEVICE_FRACTION * device_free:
      mode = 'device'
    elif need <= HOST_FRACTION * host_free:
      mode = 'host'
    else:
      mode = 'stream'
    if jax.process_count() > 1:  # every process takes the most conservative choice.
      ranks = multihost_utils.process_allgather(np.array([MODES.index(mode)]))
      mode = MODES[int(np.max(ranks))]
    how = (
      f'auto chose {mode!r}: the padded splits need {need / 2**20:.1f} MiB '
      f'(x{copies} device copies sharing host memory)'
      if shared
      else f'auto chose {mode!r}: the padded splits need {need / 2**20:.1f} MiB per device'
    )
  else:
    how = f'{mode!r} as configured: the padded splits take {need / 2**20:.1f} MiB'
  logging.info(
    'data_placement %s; device memory free %.1f MiB (%.0f%% allowed), host memory available '
    '%.1f MiB (%.0f%% allowed).',
    how,
    device_free / 2**20,
    100 * DEVICE_FRACTION,
    host_free / 2**20,
    100 * HOST_FRACTION,
  )
  return mode


def device_memory() -> tuple[int, bool]:
  """(free bytes on the fullest local device, whether the devices share host memory (CPU))."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  if all('bytes_limit' in s for s in stats):
    return min(s['bytes_limit'] - s.get('bytes_in_use', 0) for s in stats), False
  return host_memory(), True


def host_memory() -> int:
  """Bytes of host memory available (MemAvailable of /proc/meminfo, else free pages)."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


# --- training data --------------------------------------------------------------------------------
def replicated(arrays: dict, mesh: jax.sharding.Mesh) -> dict:
  """Host arrays -> global arrays replicated on every device of `mesh` (all processes)."""
  sharding = NamedSharding(mesh, P())
  return {
    k: jax.make_array_from_callback(x.shape, sharding, lambda index, x=x: np.asarray(x[index]))
    for k, x in arrays.items()
  }


def chunk_sharding(mesh: jax.sharding.Mesh, seeds: int = 0) -> NamedSharding:
  """Stacked batches (K, B, ...), or (S, K, B, ...) for a group of `seeds` > 0 seeds: the batch
  axis sharded over `data`."""
  return NamedSharding(mesh, P(*(None,) * (2 if seeds else 1), 'data'))


def batch_spec(
  dataset: input_pipeline.Dataset, global_batch_size: int, sharding, leading: tuple = ()
) -> dict:
  """The global device batch of `dataset` (abstract: `jax.ShapeDtypeStruct`s with `sharding`),
  with `leading` axes before the batch axis (K stacked batches: (K,))."""
  shape = (*leading, global_batch_size)
  spec = {'valid': (shape, bool), 'index': (shape, np.int32)}
  for m, n in dataset.max_len.items():
    if m in dataset.tokens:
      spec[m + '_ids'] = spec[m + '_segments'] = ((*shape, n), np.int32)
    else:
      spec[m] = ((*shape, n, dataset.widths[m]), np.float32)
    spec[m + '_mask'] = ((*shape, n), bool)
  for t, (target_shape, dtype) in dataset.targets.items():
    spec[t] = ((*shape, *target_shape), dtype)
  return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding) for k, (s, d) in spec.items()}


class TrainData:
  """What each call of the train program reads, call after call (`calls`: steps per call).

  'device': the same resident split every call (`resident` True). 'host' and 'stream': the
  call's k global batches stacked (k, B, ...), sharded `chunk_sharding`, made ahead by a thread.
  `seed` a sequence of S seeds (a group trained stacked, `fasca_jax.seed_group`; 'device' and
  'host'): each seed's own batches, (S, k, B, ...). `spec(k)` is what a call of k steps takes,
  for compiling ahead of time. Close it when done.
  """

  def __init__(
    self,
    mode: str,
    dataset: input_pipeline.Dataset,
    *,
    seed: int | Sequence[int],
    global_batch_size: int,
    start_step: int,
    calls: Sequence[int],
    mesh: jax.sharding.Mesh,
  ):
    self.resident = mode == 'device'
    group = isinstance(seed, Sequence)
    self._sharding = chunk_sharding(mesh, seeds=len(seed) if group else 0)
    self._prefetch = None
    if self.resident:
      self.arrays = replicated(padded_split(dataset, 'train'), mesh)
      return
    rows = indexing.local_rows(global_batch_size, jax.process_index(), jax.process_count())
    if mode == 'host':
      arrays = padded_split(dataset, 'train')
      batches = [
        host_batches(arrays, s, global_batch_size, start_step=start_step, rows=rows)
        for s in (seed if group else [seed])
      ]
    elif group:
      raise ValueError("a group of seeds trains from 'device' or 'host' data, not 'stream'.")
    else:
      batches = [
        input_pipeline.make_batches(
          dataset,
          'train',
          train=True,
          global_batch_size=global_batch_size,
          seed=seed,
          start_step=start_step,
        )
      ]
    leading = (len(seed),) if group else ()
    self._spec = lambda k: batch_spec(dataset, global_batch_size, self._sharding, (*leading, k))
    self._prefetch = _Prefetch(self._chunks(batches, calls, group), PREFETCH_CALLS)

  def _chunks(self, batches: list[Iterator[dict]], calls: Sequence[int], group: bool):
    """Each call's chunk: (k, B, ...), or (S, k, B, ...) seed after seed for a group."""
    for k in calls:
      chunks = []
      for seed_batches in batches:
        rows = [next(seed_batches) for _ in range(k)]
        chunks.append({key: np.stack([r[key] for r in rows]) for key in rows[0]})
      chunk = {key: np.stack([c[key] for c in chunks]) for key in chunks[0]} if group else chunks[0]
      yield self._global(chunk)

  def _global(self, chunk: dict) -> dict:
    return {
      k: jax.make_array_from_process_local_data(self._sharding, v)
      for k, v in chunk.items()
      if k not in input_pipeline.HOST_KEYS and not k.endswith('_len')
    }

  def spec(self, k: int) -> dict:
    """The (abstract) data of a call of `k` steps."""
    return self.arrays if self.resident else self._spec(k)

  def __iter__(self):
    return self

  def __next__(self):
    return self.arrays if self.resident else next(self._prefetch)

  def close(self):
    if self._prefetch is not None:
      self._prefetch.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def compile_programs(
  jitted, state, train_data: TrainData, lengths, eval_data: dict, *, seeds: bool = False
) -> dict:
  """The train program of `jitted` (`steps.JittedSteps`) for each call length in `lengths`
  (call length -> compiled program) and the evaluation programs of `eval_data` (split ->
  `EvalData`), compiled or loaded from the persistent cache before the first step, so that
  nothing compiles during training; the processes then start stepping together. `seeds`: the
  `_seeds` programs, for a state stacked over the seeds of a group."""
  t = time.perf_counter()
  suffix = '_seeds' if seeds else ''
  name = ('train_resident' if train_data.resident else 'train_chunk') + suffix
  programs = {
    k: jitted.program(
      name, state, train_data.spec(k), **({'num_steps': k} if train_data.resident else {})
    )
    for k in sorted(lengths)
  }
  for data in eval_data.values():
    if data.resident:
      jitted.program(
        'evaluate_resident' + suffix,
        state.params,
        data.arrays,
        batch_size=data.global_batch_size,
      )
    else:
      jitted.program('evaluate' + suffix, state.params, data.spec(jitted.data_sharding))
  logging.info('Train and evaluation programs ready in %.1f s.', time.perf_counter() - t)
  distributed.barrier('compiled')
  return programs


def host_batches(
  arrays: dict, seed: int, global_batch_size: int, *, start_step: int, rows: slice
) -> Iterator[dict]:
  """This process's rows of every global batch from `start_step` on, gathered from the padded
  split `arrays` by vectorised indexing (the batch layout, without the host fields)."""
  num_examples = len(next(iter(arrays.values())))
  order = indexing.HostOrder(seed, num_examples=num_examples, global_batch_size=global_batch_size)
  step = start_step
  while True:
    yield indexing.take(arrays, order.indices(step)[rows], xp=np)
    step += 1


class _Prefetch:
  """Runs an iterator in a daemon thread, `depth` items ahead of the consumer."""

  _DONE = object()

  def __init__(self, items: Iterator, depth: int):
    self._queue, self._stop = queue.Queue(depth), threading.Event()
    self._thread = threading.Thread(target=self._run, args=(items,), daemon=True)
    self._thread.start()

  def _run(self, items):
    try:
      for item in items:
        if not self._put(item):
          return
      self._put(self._DONE)
    except BaseException as e:  # pylint: disable=broad-except
      self._put(e)

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def __next__(self):
    item = self._queue.get()
    if item is self._DONE:
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self):
    self._stop.set()
    self._thread.join(timeout=10)


# --- evaluation data ------------------------------------------------------------------------------
class EvalData:
  """One split for evaluation, every example exactly once in global batches of
  `global_batch_size` (the last completed with padding rows, `valid` False, index -1).

  'device': `arrays` resident (one call evaluates the split). 'host': `batches()` gathers this
  process's rows of each global batch from the padded arrays. 'stream': `batches()` is
  `input_pipeline.make_batches` (each process its contiguous slice of the split).
  """

  def __init__(
    self,
    mode: str,
    dataset: input_pipeline.Dataset,
    split: str,
    *,
    global_batch_size: int,
    mesh: jax.sharding.Mesh,
  ):
    self.mode, self.dataset, self.split = mode, dataset, split
    self.resident = mode == 'device'
    self.global_batch_size = global_batch_size
    self.num_examples = dataset.num_examples(split)
    if mode == 'stream':
      return
    self._host = padded_split(dataset, split)
    if self.resident:
      self.arrays = replicated(self._host, mesh)

  def spec(self, sharding) -> dict:
    """The global batch `evaluate` takes (abstract), with `sharding` (not for 'device')."""
    return batch_spec(self.dataset, self.global_batch_size, sharding)

  def batches(self) -> Iterator[dict]:
    """This process's host batches (not for 'device')."""
    b = self.global_batch_size
    if self.mode == 'stream':
      yield from input_pipeline.make_batches(
        self.dataset, self.split, train=False, global_batch_size=b, seed=0
      )
      return
    rows = indexing.local_rows(b, jax.process_index(), jax.process_count())
    for start in range(0, self.num_examples, b):
      index = np.arange(start, start + b, dtype=np.int32)[rows]
      valid = index < self.num_examples
      yield indexing.take(self._host, np.where(valid, index, 0), valid, xp=np)
