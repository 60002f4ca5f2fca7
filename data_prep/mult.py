"""Reader for the MulT feature pickles (CMU-MOSI, CMU-MOSEI, IEMOCAP).

Files: `mosi_data.pkl`, `mosei_senti_data.pkl`, `iemocap_data.pkl` (word-aligned) and their
`*_noalign.pkl` twins. Format: a dict with splits 'train', 'valid', 'test' ('valid' becomes TFDS
'validation'); each split a dict of arrays with N rows:
  text     (N, T_t, 300) GloVe
  audio    (N, T_a, 74) COVAREP
  vision   (N, T_v, D_v) Facet (MOSI 47, MOSEI and IEMOCAP 35)
  labels   (N, 1, 1) sentiment (MOSI, MOSEI) or (N, 4, 2) one-hot per emotion (IEMOCAP:
           Neutral, Happy, Sad, Angry; [1, 0] = absent, [0, 1] = present)
  id       (N,) or (N, k) ids (optional)
In the aligned files T_t = T_a = T_v. The unaligned files are zero-padded at the front and carry
no lengths, so their sequences are kept at full length, padding included.

Ids: a row of k parts (e.g. [video, start, end]) is joined with '$_$' after decoding bytes (as
UTF-8) and formatting numbers with `str`, so the video stays recoverable as
`id.split('$_$')[0]`, as in MMSA ids. A split without `id` gets '{split}_{index:05d}' (counted in
the repair log under kind 'generated_id').

Non-finite feature values become 0 and are counted; a sentiment example with a non-finite label
is dropped and counted; an IEMOCAP label that is not one-hot is an error.
"""

from collections.abc import Iterator, Mapping

import numpy as np

from data_prep import sources
from data_prep.sources import MODALITIES, RepairLog, SourceError, where

REQUIRED_KEYS = ('text', 'audio', 'vision', 'labels')
ID_SEPARATOR = '$_$'
IEMOCAP_LABEL_SHAPE = (4, 2)


def join_id(raw) -> str:
  """One id (a scalar, or an array of parts joined with `ID_SEPARATOR`) as str."""
  parts = np.asarray(raw).ravel()
  return ID_SEPARATOR.join(sources.decode(p) for p in parts)


def _ids(part, num, *, path, split, log) -> list[str]:
  """The N ids of a split, generated ('{split}_{i:05d}') and counted when absent."""
  if 'id' not in part:
    ids = [f'{split}_{i:05d}' for i in range(num)]
    if ids:
      log.add('generated_id', path=path, split=split, example=ids[0], field='id', count=num)
    return ids
  raw = np.asarray(part['id'])
  if raw.ndim == 0 or len(raw) != num:
    raise SourceError(
      f'{where(path, split, field="id")}: expected {num} rows, found shape {raw.shape}'
    )
  return [join_id(row) for row in raw]


def _check_labels(part, num, *, path, split, task) -> np.ndarray:
  """Labels: (N,) sentiment for task 'regression', (N, 4, 2) one-hot for task 'iemocap'."""
  context = where(path, split, field='labels')
  labels = np.asarray(part['labels'])
  if task == 'iemocap':
    if labels.shape != (num, *IEMOCAP_LABEL_SHAPE):
      raise SourceError(f'{context}: expected shape ({num}, 4, 2), found {labels.shape}')
    return labels
  if labels.ndim == 0 or len(labels) != num or labels.size != num:  # One value per row.
    raise SourceError(f'{context}: expected shape ({num}, 1, 1), found {labels.shape}')
  return labels.reshape(num)


def _emotion_label(one_hot, *, path, split, example) -> np.ndarray:
  """(4,) int32 argmax of a (4, 2) one-hot label; SourceError if it is not one-hot."""
  is_binary = np.isin(one_hot, (0, 1)).all()
  if not is_binary or not (one_hot.sum(axis=-1) == 1).all():
    raise SourceError(
      f'{where(path, split, example, "labels")}: expected one-hot rows (4, 2), '
      f'found {one_hot.tolist()}'
    )
  return one_hot.argmax(axis=-1).astype(np.int32)


def examples(
  part, *, path, split: str, dims: Mapping[str, int], aligned: bool, task: str, log: RepairLog
) -> Iterator[dict]:
  """Contract examples of one MulT split (`split` as named in the file, e.g. 'valid').

  The split's arrays are validated when this is called; examples are made lazily.

  Args:
    part: the split's dict, as loaded.
    path: the pickle's path (for messages).
    split: split name in the file.
    dims: {'text': 300, 'audio': 74, 'vision': D_v} expected widths.
    aligned: True for the word-aligned files (equal steps per modality are checked).
    task: 'regression' (MOSI, MOSEI) or 'iemocap'.
    log: receives repairs and drops.

  Returns:
    iterator of {'id', 'text' (T_t, 300), 'audio' (T_a, 74), 'vision' (T_v, D_v)} plus
    'regression' (float) or 'label' ((4,) int32), features float32.
  """
  sources.require_keys(part, REQUIRED_KEYS, where(path, split))
  num = sources.row_count(part, (*REQUIRED_KEYS, 'id'), where(path, split))
  features = {
    m: sources.check_array(
      part[m], rank=3, num=num, last_dim=dims[m], context=where(path, split, field=m)
    )
    for m in MODALITIES
  }
  steps = {m: features[m].shape[1] for m in MODALITIES}
  if aligned and len(set(steps.values())) != 1:
    raise SourceError(
      f'{where(path, split)}: an aligned pickle needs equal steps per modality, '
      f'found {steps} (is this the _noalign pickle?)'
    )
  labels = _check_labels(part, num, path=path, split=split, task=task)
  ids = _ids(part, num, path=path, split=split, log=log)
  return _generate(ids, features, labels, path=path, split=split, task=task, log=log)


def _generate(ids, features, labels, *, path, split, task, log):
  """Yields the examples of validated split arrays."""
  for i, example_id in enumerate(ids):
    context = dict(path=path, split=split, example=example_id)
    example = {'id': example_id}
    if task == 'iemocap':
      example['label'] = _emotion_label(labels[i], **context)
    else:
      example['regression'] = sources.finite_label(labels[i], field='labels', log=log, **context)
      if example['regression'] is None:
        continue
    for m in MODALITIES:
      example[m] = sources.finite_features(features[m][i], field=m, log=log, **context)
    yield example


def split_examples(
  path, *, dims: Mapping[str, int], aligned: bool, task: str, log: RepairLog
) -> dict[str, Iterator[dict]]:
  """{TFDS split: iterator of contract examples} for the MulT pickle at `path`."""
  data = sources.load_pickle_splits(path)
  return {
    tfds_split: examples(
      data[split], path=path, split=split, dims=dims, aligned=aligned, task=task, log=log
    )
    for split, tfds_split in sources.SPLIT_NAMES.items()
  }
