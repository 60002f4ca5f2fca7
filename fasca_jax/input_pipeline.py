"""Input pipeline: TFDS array_record data sources -> grain -> padded per-process NumPy batches.

Each process reads its own slice of a split and yields batches of B = global_batch_size //
process_count examples (big_vision style); the train loop turns them into global sharded arrays.
A batch is a dict of NumPy arrays:

  m, for m in config.modalities   float32 (B, L_m, D_m), L_m = config.max_len[m]: the first L_m
                                  steps, zero-padded at the end
  m + '_mask'                     bool (B, L_m), True on real steps
  m + '_len'                      int32 (B,), length before cropping (> L_m: truncated)
  'regression', 'label'           those the dataset has: float32 (B,); int32 (B,) or (B, 4)
  'id'                            str (B,), host only: strip it before sending to devices
  'valid'                         bool (B,), False on padding rows of the last eval batches

Train mode: an endless stream over this process's n // process_count examples (the
n % process_count left over are never read), reshuffled every epoch from `seed`; batches run on
across epoch boundaries. The iterator is a grain `DataLoaderIterator` whose `get_state()` /
`set_state()` resume exactly. Eval mode: one pass over every example of the process's shard, in
stored order unless `shuffle`; every process yields the same number of batches,
ceil(ceil(n / process_count) / B), completed with `valid=False` rows (id '').
"""
import dataclasses
import functools
import importlib
import math
from collections.abc import Iterator

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

TARGETS = {'regression': np.float32, 'label': np.int32}  # Cast to these whatever is stored.
# Batches decoded ahead of the consumer, per process. Bounds host memory to a few batches
# whatever the split size (grain's default ReadOptions read 500 elements ahead).
READ_AHEAD_BATCHES = 2


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Builder `config.dataset.name`/`config.dataset.config` in `config.data_dir`.

  The builder class lives in module `data_prep.<name>`; importing it registers it with TFDS.
  """
  name = config.dataset.name
  importlib.import_module(f'data_prep.{name}')
  return tfds.builder(name, config=config.dataset.config, data_dir=config.data_dir)


def ensure_built(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """`get_builder`, building the dataset first when it has no manual files.

  Builders that set the class attribute `BUILD_AUTOMATICALLY = True` (the synthetic ones) are
  built as array_record into `config.data_dir`. Not safe to call from several processes on the
  first build into one shared directory: build on one process first.

  Raises:
    FileNotFoundError: the dataset is not built and needs manual files; the message gives the
      command that builds it.
  """
  builder = get_builder(config)
  if builder.is_prepared():
    return builder
  if not getattr(builder, 'BUILD_AUTOMATICALLY', False):
    variant = config.dataset.config
    raise FileNotFoundError(
        f'Dataset {_name(config)} is not built under data_dir={config.data_dir}. Build it from '
        f'the manually downloaded files with:\n  python -m data_prep.build '
        f'--dataset={config.dataset.name}{f" --config={variant}" if variant else ""} '
        f'--manual_dir=DIR --data_dir={config.data_dir}')
  logging.info('Building %s into %s (first use).', _name(config), config.data_dir)
  builder.download_and_prepare(file_format='array_record')
  return builder


def _name(config: ml_collections.ConfigDict) -> str:
  """'name/config' of the configured dataset ('name' without a builder config)."""
  variant = config.dataset.config
  return f'{config.dataset.name}/{variant}' if variant else config.dataset.name


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Number of examples in `split` (builds the dataset if needed, see `ensure_built`)."""
  return ensure_built(config).info.splits[split].num_examples


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  """Train batches per epoch for global batch `config.batch_size` over all processes."""
  count = jax.process_count()
  return (num_examples(config, 'train') // count) // (config.batch_size // count)


@dataclasses.dataclass(frozen=True)
class _ToExample(grain.transforms.Map):
  """Decoded TFDS record -> one row of the batch layout (module docstring).

  Attributes:
    max_len: modality -> L_m; its keys are the modalities kept.
    targets: target name -> (shape as stored in the dataset, dtype of the batch).
  """
  max_len: dict[str, int]
  targets: dict[str, tuple[tuple[int, ...], type]]

  def map(self, record: dict) -> dict:
    example_id = record['id'].decode()
    row = {'id': example_id, 'valid': np.True_}
    for m, max_len in self.max_len.items():
      x = _finite(record[m], example_id, m)  # (T_m, D_m)
      keep = min(len(x), max_len)
      row[m] = np.zeros((max_len, x.shape[1]), np.float32)
      row[m][:keep] = x[:keep]
      row[m + '_mask'] = np.arange(max_len) < keep
      row[m + '_len'] = np.int32(len(x))
    for name, (_, dtype) in self.targets.items():
      row[name] = _finite(record[name], example_id, name).astype(dtype)
    return row

  def blank(self, widths: dict[str, int]) -> dict:
    """A padding row: zeros, masks False, id '', valid False. `widths`: modality -> D_m."""
    row = {'id': '', 'valid': np.False_}
    for m, max_len in self.max_len.items():
      row[m] = np.zeros((max_len, widths[m]), np.float32)
      row[m + '_mask'] = np.zeros((max_len,), bool)
      row[m + '_len'] = np.int32(0)
    for name, (shape, dtype) in self.targets.items():
      row[name] = np.zeros(shape, dtype)
    return row


def _finite(x, example_id: str, field: str) -> np.ndarray:
  """`x` as an array; raises ValueError naming the example and field if it is not finite."""
  x = np.asarray(x)
  if x.dtype.kind == 'f' and not np.isfinite(x).all():
    raise ValueError(f'Non-finite values in field {field!r} of example {example_id!r}.')
  return x


def _check_features(config: ml_collections.ConfigDict,
                    builder: tfds.core.DatasetBuilder) -> dict[str, int]:
  """Checks the config's modalities against the dataset; returns modality -> D_m."""
  features = builder.info.features
  dataset = _name(config)
  dims = config.get('dims') or {}
  widths = {}
  for m in config.modalities:
    if m not in features:
      raise ValueError(f'Modality {m!r} of config.modalities is not in dataset {dataset} '
                       f'(features: {sorted(features.keys())}).')
    shape = tuple(features[m].shape)
    if m in dims and shape[1:] != (dims[m],):
      raise ValueError(f'Dataset {dataset}: field {m!r} has shape {shape} but config.dims.{m} '
                       f'expects {(None, dims[m])}.')
    widths[m] = shape[1]
  return widths


def make_batches(config: ml_collections.ConfigDict, split: str, *, train: bool,
                 global_batch_size: int, seed: int, process_index: int | None = None,
                 process_count: int | None = None, shuffle: bool | None = None) -> Iterator[dict]:
  """This process's batches of `split` (layout and modes in the module docstring).

  Args:
    config: needs dataset.{name, config}, data_dir, modalities, max_len; optional dims,
      num_workers (grain worker processes, default 0).
    split: 'train', 'validation' or 'test'.
    train: infinite shuffled stream (True) or one padded pass (False).
    global_batch_size: batch over all processes; must divide by process_count.
    seed: shuffle seed (non-negative, 32 bits).
    process_index: this process; default `jax.process_index()`.
    process_count: number of processes; default `jax.process_count()`.
    shuffle: default `train`.

  Returns:
    An iterator of batch dicts; in train mode a grain `DataLoaderIterator` (get_state/set_state).
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f'Global batch size {global_batch_size} does not divide over '
                     f'{process_count} processes.')
  batch_size = global_batch_size // process_count
  shuffle = train if shuffle is None else shuffle
  builder = ensure_built(config)
  widths = _check_features(config, builder)
  features = builder.info.features
  to_example = _ToExample(
      max_len={m: int(config.max_len[m]) for m in config.modalities},
      targets={t: (tuple(features[t].shape), dtype)
               for t, dtype in TARGETS.items() if t in features})
  source = builder.as_data_source(split)
  workers = config.get('num_workers', 0)
  if train:
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
    loader = grain.DataLoader(
        data_source=source,
        sampler=grain.samplers.IndexSampler(
            len(source), shard_options=shard, shuffle=shuffle, num_epochs=None, seed=seed),
        operations=[to_example, grain.transforms.Batch(batch_size, drop_remainder=True)],
        worker_count=workers,
        shard_options=shard,
        read_options=grain.ReadOptions(num_threads=min(16, READ_AHEAD_BATCHES * batch_size),
                                       prefetch_buffer_size=READ_AHEAD_BATCHES * batch_size))
    return iter(loader)
  return _eval_batches(source, to_example, to_example.blank(widths), batch_size,
                       process_index, process_count, shuffle, seed, workers)


def _eval_batches(source, to_example: _ToExample, blank: dict, batch_size: int,
                  process_index: int, process_count: int, shuffle: bool, seed: int,
                  workers: int) -> Iterator[dict]:
  """One pass over this process's shard, padded to the same batch count on every process."""
  per_process, extra = divmod(len(source), process_count)
  start = process_index * per_process + min(process_index, extra)
  end = start + per_process + (process_index < extra)
  num_batches = math.ceil(math.ceil(len(source) / process_count) / batch_size)
  ds = grain.MapDataset.source(source)[start:end]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.map(to_example).batch(
      batch_size, batch_fn=functools.partial(_pad_and_stack, batch_size=batch_size, blank=blank))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=READ_AHEAD_BATCHES,
                                            prefetch_buffer_size=READ_AHEAD_BATCHES))
  if workers:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  yield from ds
  for _ in range(num_batches - math.ceil((end - start) / batch_size)):
    yield _stack([blank] * batch_size)


def _pad_and_stack(rows, *, batch_size: int, blank: dict) -> dict:
  """Stacks up to `batch_size` rows, completing the batch with `blank` rows."""
  rows = list(rows)
  return _stack(rows + [blank] * (batch_size - len(rows)))


def _stack(rows: list[dict]) -> dict:
  """Rows of the batch layout -> a batch: each field stacked on a new leading axis."""
  return {k: np.stack([row[k] for row in rows]) for k in rows[0]}
