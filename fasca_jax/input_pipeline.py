"""Input pipeline: TFDS array_record data sources -> grain -> padded per-process NumPy batches.

Each process reads its own slice of a split and yields batches of B = global_batch_size //
process_count examples (big_vision style); the train loop turns them into global sharded arrays.
A batch is a dict of NumPy arrays:

  m, for m in config.modalities   float32 (B, L_m, D_m), L_m = config.max_len[m]: the first L_m
                                  steps, zero-padded at the end
  m + '_mask'                     bool (B, L_m), True on real steps
  m + '_len'                      int32 (B,), length before cropping (> L_m: truncated)
  'text_ids', 'text_segments'     int32 (B, L_t) token ids and segment ids, in place of 'text'
                                  when the model runs a text encoder (config.model.text_encoder
                                  not 'features'); padded with 0; 'text_mask' is the attention
                                  mask
  'regression', 'label',          those the dataset has: float32 (B,); int32 (B,) or (B, 4);
  'emotions'                      float32 (B, 6) (cmu_mosei/csd emotion intensities)
  'id'                            str (B,), host only: `to_global` leaves it (and m_len) out
  'index'                         int32 (B,), the example's position in its split; -1 on padding
  'valid'                         bool (B,), False on padding rows of the last eval batches

The dataset is opened once per run (`open_dataset`: the builder, built on first use, and its
feature widths checked against the config); every reader takes the returned `Dataset`.

Train mode: an endless stream of this process's rows of the global batches, in the order of
`fasca_jax.indexing` (a permutation of (seed, epoch) per epoch, n // B batches an epoch): a
function of the step, so `start_step` resumes exactly. Eval mode: one pass over every example
of the process's shard, in stored order unless `shuffle`; every process yields the same number
of batches, ceil(ceil(n / process_count) / B), completed with `valid=False` rows (id '').

`split_summary` reads a split once (ids and every modality's length) and caches that beside the
TFDS data: evaluation names gathered examples by it, training counts the cropped examples by it.
"""

import dataclasses
import functools
import importlib
import math
import os
from collections.abc import Iterator

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from data_prep import registry
from fasca_jax import errors
from fasca_jax import indexing
from fasca_jax import modalities
from fasca_jax.models import text_encoder

# Cast to these whatever is stored.
TARGETS = {'regression': np.float32, 'label': np.int32, 'emotions': np.float32}
HOST_KEYS = ('id',)  # batch fields that stay on the host (and every m + '_len').
# Batches decoded ahead of the consumer, per process. Bounds host memory to a few batches
# whatever the split size (grain's default ReadOptions read 500 elements ahead).
READ_AHEAD_BATCHES = 2


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Builder `config.dataset.name`/`config.dataset.config` in `config.data_dir`.

  The builder class lives in module `data_prep.<name>`; importing it registers it with TFDS.

  Raises:
    ConfigError: an unknown dataset or builder config; the message lists the valid ones.
  """
  name = config.dataset.name
  registry.check(
    name, config.dataset.config, flags=('config.dataset.name', 'config.dataset.config')
  )
  importlib.import_module(f'data_prep.{name}')
  return tfds.builder(name, config=config.dataset.config, data_dir=config.data_dir)


def ensure_built(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """`get_builder`, building the dataset first when it has no manual files.

  Builders that set the class attribute `BUILD_AUTOMATICALLY = True` (the synthetic ones) are
  built as array_record into `config.data_dir`. Not safe to call from several processes on the
  first build into one shared directory: build on one process first.

  Raises:
    MissingError (a FileNotFoundError): the dataset is not built and needs manual files; the
      message gives the command that builds it.
    ConfigError: an unknown dataset or builder config (`get_builder`).
  """
  builder = get_builder(config)
  if builder.is_prepared():
    return builder
  if not getattr(builder, 'BUILD_AUTOMATICALLY', False):
    variant = config.dataset.config
    raise errors.MissingError(
      f'Dataset {_name(config)} is not built under data_dir={config.data_dir}. Build it from '
      f'the manually downloaded files with:\n  python -m data_prep.build '
      f'--dataset={config.dataset.name}{f" --config={variant}" if variant else ""} '
      f'--manual_dir=DIR --data_dir={config.data_dir}'
    )
  tfds.disable_progress_bar()  # TFDS's bars name its temporary incomplete.* folders.
  builder.download_and_prepare(file_format='array_record')  # logs a line before and after.
  return builder


def _name(config: ml_collections.ConfigDict) -> str:
  """'name/config' of the configured dataset ('name' without a builder config)."""
  variant = config.dataset.config
  return f'{config.dataset.name}/{variant}' if variant else config.dataset.name


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """The configured dataset, opened once per run.

  Attributes:
    name: 'name/config'.
    builder: the prepared TFDS builder.
    max_len: modality -> L_m; its keys are the modalities read (config.modalities).
    widths: modality -> D_m, as stored.
    targets: target field -> (shape as stored, dtype of the batch), for those the dataset has.
    num_workers: grain worker processes (0: read in this process).
    tokens: the modalities read as token ids (`m_ids`, `m_segments`) instead of features.
  """

  name: str
  builder: tfds.core.DatasetBuilder
  max_len: dict[str, int]
  widths: dict[str, int]
  targets: dict[str, tuple[tuple[int, ...], type]]
  num_workers: int = 0
  tokens: tuple[str, ...] = ()

  def num_examples(self, split: str) -> int:
    return self.builder.info.splits[split].num_examples

  def steps_per_epoch(self, global_batch_size: int) -> int:
    """Global train batches per epoch: N // global_batch_size (`fasca_jax.indexing`; the last
    partial batch is dropped).

    Raises:
      ConfigError: the batch is not positive, or larger than the train split (no step).
    """
    n = self.num_examples('train')
    if global_batch_size < 1:
      raise errors.ConfigError(f'config.batch_size={global_batch_size}: it must be positive.')
    steps = indexing.steps_per_epoch(n, global_batch_size)
    if not steps:
      raise errors.ConfigError(
        f'config.batch_size={global_batch_size} is larger than the {n} training examples of '
        f'{self.name}: an epoch would have no step. Use at most '
        f'--config.batch_size={n // jax.device_count() * jax.device_count()}.'
      )
    return steps

  def source(self, split: str):
    """The split's random-access TFDS source (array_record, decoded on demand)."""
    return self.builder.as_data_source(split)


def open_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """The dataset of `config` (built on first use, see `ensure_built`), checked against it.

  Reads config.dataset.{name, config}, data_dir, modalities, max_len, and the optional dims
  (widths to check) and num_workers.

  Raises:
    ConfigError: a modality of the config is not in the dataset, or its width differs from
      config.dims; or the config runs a text encoder and the dataset stores no token ids.
  """
  builder = ensure_built(config)
  features = builder.info.features
  dataset = _name(config)
  dims = config.get('dims') or {}
  widths = {}
  tokens = ('text',) if text_encoder.enabled(config) else ()
  if tokens and 'text_ids' not in features:
    raise errors.ConfigError(
      f'config.model.text_encoder={config.model.text_encoder!r} reads token ids, but dataset '
      f'{dataset} stores none (no text_ids field). Datasets with token ids: meld (every '
      "config) and cmu_mosi / cmu_mosei 'mmsa_aligned' / 'mmsa_unaligned' (from MMSA's "
      'text_bert); or use --config.model.text_encoder=features.'
    )
  if tokens:
    _check_tokenizer(config, builder, dataset)
  _check_extractors(config, builder, dataset)
  for m in config.modalities:
    if m in tokens:
      widths[m] = 0  # not read: the encoder's width is the model's business.
      continue
    if m not in features:
      raise errors.ConfigError(
        f'Modality {m!r} of config.modalities is not in dataset {dataset} '
        f'(features: {sorted(features.keys())}).'
      )
    shape = tuple(features[m].shape)
    if m in dims and shape[1:] != (dims[m],):
      raise errors.ConfigError(
        f'Dataset {dataset}: field {m!r} has shape {shape} but config.dims.{m} '
        f'expects {(None, dims[m])}.'
      )
    widths[m] = shape[1]
  return Dataset(
    name=dataset,
    builder=builder,
    widths=widths,
    max_len={m: int(config.max_len[m]) for m in config.modalities},
    targets={t: (tuple(features[t].shape), dtype) for t, dtype in TARGETS.items() if t in features},
    num_workers=config.get('num_workers', 0),
    tokens=tokens,
  )


def _check_extractors(config, builder: tfds.core.DatasetBuilder, dataset: str):
  """Refuses a config whose `dataset.extractors` name other Route B extractors than the ones the
  dataset's features come from (recorded as metadata['extractors'] by the MELD builder), since
  predict.py extracts what the config names. Datasets that record none are not checked.

  Raises:
    ConfigError: naming the modality, both extractors and the config arg that matches.
  """
  recorded = dict(builder.info.metadata or {}).get('extractors') or {}
  wanted = config.dataset.get('extractors') or {}
  for m in config.modalities:
    if m in recorded and m in wanted and recorded[m] != wanted[m]:
      raise errors.ConfigError(
        f'Dataset {dataset} holds {m} features of the {recorded[m]!r} extractor but '
        f'config.dataset.extractors.{m}={wanted[m]!r}: set --config.dataset.extractors.{m}='
        f'{recorded[m]} (the meld configs set it to match their dataset config), or build the '
        f'dataset config with the {wanted[m]!r} extractor.'
      )


def _check_tokenizer(config, builder: tfds.core.DatasetBuilder, dataset: str):
  """Refuses an encoder whose tokenizer maps tokens to other ids than the one the dataset was
  tokenised with (recorded as metadata['text_tokenizer'] by the MELD builder; MMSA's text_bert
  records none). An encoder directory without tokenizer files is not checked.

  Raises:
    ConfigError: the vocabularies differ; names both directories.
  """
  recorded = dict(builder.info.metadata or {}).get('text_tokenizer') or {}
  if 'vocab_sha256' not in recorded:
    return
  from data_prep.features import text as text_lib  # pylint: disable=g-import-not-at-top

  directory = text_encoder.model_dir(config.model.text_encoder)
  try:
    mine = text_lib.cached_tokenizer(directory).describe()
  except (OSError, ValueError) as e:
    logging.warning('Not checking the tokenizer of %s against %s: %s', directory, dataset, e)
    return
  if mine['vocab_sha256'] != recorded['vocab_sha256']:
    raise errors.ConfigError(
      f'config.model.text_encoder={config.model.text_encoder!r} ({directory}) has another '
      f'vocabulary ({mine["vocab_size"]} tokens) than the tokenizer dataset {dataset} was '
      f'tokenised with ({recorded["model_dir"]}, {recorded["vocab_size"]} tokens): rebuild the '
      f'dataset with --text_model_dir={directory} (into another --data_dir) or use that encoder.'
    )


@dataclasses.dataclass(frozen=True)
class _ToExample(grain.transforms.Map):
  """(index, decoded TFDS record) -> one row of the batch layout (module docstring).

  Attributes:
    max_len: modality -> L_m; its keys are the modalities kept.
    targets: target name -> (shape as stored in the dataset, dtype of the batch).
    tokens: modalities read as token ids: `m_ids` and `m_segments` (T,) int32 in the record
      (segments 0 when absent) -> (L_m,) int32 each, zero-padded.
  """

  max_len: dict[str, int]
  targets: dict[str, tuple[tuple[int, ...], type]]
  tokens: tuple[str, ...] = ()

  def map(self, element: tuple[int, dict]) -> dict:
    index, record = element
    example_id = record['id'].decode()
    row = {'id': example_id, 'index': np.int32(index), 'valid': np.True_}
    for m, max_len in self.max_len.items():
      if m in self.tokens:
        self._tokens(row, record, m, max_len, example_id)
        continue
      x = _finite(record[m], example_id, m)  # (T_m, D_m)
      keep = min(len(x), max_len)
      row[m] = np.zeros((max_len, x.shape[1]), np.float32)
      row[m][:keep] = x[:keep]
      row[m + '_mask'] = np.arange(max_len) < keep
      row[m + '_len'] = np.int32(len(x))
    for name, (_, dtype) in self.targets.items():
      row[name] = _finite(record[name], example_id, name).astype(dtype)
    return row

  @staticmethod
  def _tokens(row: dict, record: dict, m: str, max_len: int, example_id: str):
    """Fills row[m_ids], row[m_segments], row[m_mask], row[m_len] from the record's tokens."""
    ids = np.asarray(record[f'{m}_ids'], np.int32)  # (T,)
    if not len(ids):
      raise ValueError(
        f'Example {example_id!r} has no token ids ({m}_ids is empty): its dataset was built from '
        'a source without them (an MMSA pickle without text_bert); use '
        '--config.model.text_encoder=features.'
      )
    segments = np.asarray(record.get(f'{m}_segments', np.zeros_like(ids)), np.int32)
    keep = min(len(ids), max_len)
    for name, value in (('ids', ids), ('segments', segments)):
      row[f'{m}_{name}'] = np.zeros((max_len,), np.int32)
      row[f'{m}_{name}'][:keep] = value[:keep]
    row[m + '_mask'] = np.arange(max_len) < keep
    row[m + '_len'] = np.int32(len(ids))

  def blank(self, widths: dict[str, int]) -> dict:
    """A padding row: zeros, masks False, id '', index -1, valid False. widths: m -> D_m."""
    row = {'id': '', 'index': np.int32(-1), 'valid': np.False_}
    for m, max_len in self.max_len.items():
      if m in self.tokens:
        row[f'{m}_ids'] = np.zeros((max_len,), np.int32)
        row[f'{m}_segments'] = np.zeros((max_len,), np.int32)
        row[m + '_mask'] = np.zeros((max_len,), bool)
        row[m + '_len'] = np.int32(0)
        continue
      row[m] = np.zeros((max_len, widths[m]), np.float32)
      row[m + '_mask'] = np.zeros((max_len,), bool)
      row[m + '_len'] = np.int32(0)
    for name, (shape, dtype) in self.targets.items():
      row[name] = np.zeros(shape, dtype)
    return row


class _Indexed(grain.sources.RandomAccessDataSource):
  """A TFDS data source whose records come with their position: i -> (i, record)."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __repr__(self) -> str:  # grain checks it when a saved iterator state is restored.
    return f'_Indexed({self._source!r})'

  def __getitem__(self, index: int):
    return index, self._source[index]

  def __getitems__(self, indices):
    return list(zip(indices, self._source.__getitems__(indices)))


@dataclasses.dataclass(frozen=True)
class _OrderedRead(grain.transforms.Map):
  """Element j of this process's train stream -> (index, record): row j % b of its rows of
  global batch j // b (b = rows per process) in the order of `indexing`."""

  source: _Indexed
  order: indexing.HostOrder
  rows: slice

  def map(self, j: int) -> tuple[int, dict]:
    per_process = self.rows.stop - self.rows.start
    step, row = divmod(int(j), per_process)
    return self.source[int(self.order.indices(step)[self.rows][row])]


def _finite(x, example_id: str, field: str) -> np.ndarray:
  """`x` as an array; raises ValueError naming the example and field if it is not finite."""
  x = np.asarray(x)
  if x.dtype.kind == 'f' and not np.isfinite(x).all():
    raise ValueError(f'Non-finite values in field {field!r} of example {example_id!r}.')
  return x


def make_batches(
  dataset: Dataset,
  split: str,
  *,
  train: bool,
  global_batch_size: int,
  seed: int,
  process_index: int | None = None,
  process_count: int | None = None,
  shuffle: bool | None = None,
  start_step: int = 0,
) -> Iterator[dict]:
  """This process's batches of `split` (layout and modes in the module docstring).

  Args:
    dataset: from `open_dataset`.
    split: 'train', 'validation' or 'test'.
    train: infinite shuffled stream (True) or one padded pass (False).
    global_batch_size: batch over all processes; must divide by process_count.
    seed: shuffle seed (non-negative, 32 bits).
    process_index: this process; default `jax.process_index()`.
    process_count: number of processes; default `jax.process_count()`.
    shuffle: eval mode only: a shuffled pass (default: stored order).
    start_step: train mode: the first global batch (a resumed run's step).

  Returns:
    An iterator of batch dicts.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(
      f'Global batch size {global_batch_size} does not divide over {process_count} processes.'
    )
  batch_size = global_batch_size // process_count
  to_example = _ToExample(max_len=dataset.max_len, targets=dataset.targets, tokens=dataset.tokens)
  source = _Indexed(dataset.source(split))
  if train:
    order = indexing.HostOrder(seed, num_examples=len(source), global_batch_size=global_batch_size)
    rows = indexing.local_rows(global_batch_size, process_index, process_count)
    ds = (
      grain.MapDataset.range(start_step * batch_size, 2**62)
      .map(_OrderedRead(source, order, rows))
      .map(to_example)
      .to_iter_dataset(  # examples read in parallel, READ_AHEAD_BATCHES batches ahead.
        grain.ReadOptions(
          num_threads=min(16, READ_AHEAD_BATCHES * batch_size),
          prefetch_buffer_size=READ_AHEAD_BATCHES * batch_size,
        )
      )
      .batch(batch_size, drop_remainder=True)
    )
    if dataset.num_workers:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=dataset.num_workers))
    return iter(ds)
  return _eval_batches(
    source,
    to_example,
    to_example.blank(dataset.widths),
    batch_size,
    process_index,
    process_count,
    bool(shuffle),
    seed,
    dataset.num_workers,
  )


def _eval_batches(
  source,
  to_example: _ToExample,
  blank: dict,
  batch_size: int,
  process_index: int,
  process_count: int,
  shuffle: bool,
  seed: int,
  workers: int,
) -> Iterator[dict]:
  """One pass over this process's shard, padded to the same batch count on every process."""
  per_process, extra = divmod(len(source), process_count)
  start = process_index * per_process + min(process_index, extra)
  end = start + per_process + (process_index < extra)
  num_batches = math.ceil(math.ceil(len(source) / process_count) / batch_size)
  ds = grain.MapDataset.source(source)[start:end]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.map(to_example).batch(
    batch_size, batch_fn=functools.partial(_pad_and_stack, batch_size=batch_size, blank=blank)
  )
  ds = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=READ_AHEAD_BATCHES, prefetch_buffer_size=READ_AHEAD_BATCHES)
  )
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


def example_batch(
  record: dict,
  *,
  max_len: dict[str, int],
  targets: dict | None = None,
  index: int = -1,
  tokens: tuple[str, ...] = (),
) -> dict:
  """One record as a batch of 1 in the batch layout, cropped and padded as training does.

  Args:
    record: `id` (bytes) and modality -> (T_m, D_m), plus the `targets` fields; for a modality
      in `tokens`, `m_ids` and `m_segments` (T,) instead.
    max_len: modality -> L_m (`Dataset.max_len`).
    targets: `Dataset.targets`, to read the record's targets too.
    index: its position in its split, if any.
    tokens: `Dataset.tokens`.
  """
  to_example = _ToExample(max_len=dict(max_len), targets=targets or {}, tokens=tuple(tokens))
  return {k: np.asarray(v)[None] for k, v in to_example.map((index, record)).items()}


def to_global(batch: dict, sharding: jax.sharding.NamedSharding) -> dict:
  """Per-process NumPy batch -> global arrays sharded as `sharding`, without the host fields
  (`id`, every `m_len`)."""
  return {
    k: jax.make_array_from_process_local_data(sharding, v)
    for k, v in batch.items()
    if k not in HOST_KEYS and not k.endswith('_len')
  }


# --- what a split holds -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SplitSummary:
  """Every example of a split, in stored order.

  Attributes:
    ids: (N,) str.
    lengths: modality -> (N,) int32 steps before cropping, for every modality of the dataset.
  """

  ids: np.ndarray
  lengths: dict[str, np.ndarray]

  def cropped(self, max_len: dict[str, int]) -> dict[str, int]:
    """modality -> how many examples are longer than max_len[m] (and so cropped)."""
    return {m: int((self.lengths[m] > n).sum()) for m, n in max_len.items()}


def split_summary(dataset: Dataset, split: str) -> SplitSummary:
  """The ids and lengths of `split`, read in one pass the first time and cached as
  `<dataset dir>/summary-<split>.npz` (a few bytes per example) for every later run."""
  path = os.path.join(dataset.builder.data_dir, f'summary-{split}.npz')
  if os.path.isfile(path):
    with np.load(path) as f:
      return SplitSummary(
        ids=f['ids'], lengths={k[len('len_') :]: f[k] for k in f.files if k.startswith('len_')}
      )
  features = dataset.builder.info.features
  # A stream's length: its features' rows, or its token ids' count where only those are stored.
  fields = {m: m if m in features else f'{m}_ids' for m in modalities.MODALITIES}
  streams = [m for m, field in fields.items() if field in features]
  logging.info(
    'Reading the ids and lengths of %s/%s once (cached in %s).', dataset.name, split, path
  )
  ds = grain.MapDataset.source(dataset.source(split)).map(
    lambda r: (r['id'].decode(), [len(r[fields[m]]) for m in streams])
  )
  rows = list(ds.to_iter_dataset(grain.ReadOptions(num_threads=8, prefetch_buffer_size=64)))
  summary = SplitSummary(
    ids=np.array([r[0] for r in rows], dtype=str),
    lengths={m: np.array([r[1][i] for r in rows], np.int32) for i, m in enumerate(streams)},
  )
  tmp = f'{path}.tmp-{os.getpid()}.npz'
  try:
    np.savez(tmp, ids=summary.ids, **{f'len_{m}': v for m, v in summary.lengths.items()})
    os.replace(tmp, path)
  except OSError as e:  # e.g. a read-only shared data_dir: read again next time.
    logging.warning('Could not cache the summary of %s/%s in %s: %s', dataset.name, split, path, e)
  return summary
