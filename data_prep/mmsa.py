"""Reader for the MMSA feature pickles `aligned_50.pkl` / `unaligned_50.pkl` (MOSI, MOSEI).

Format: a dict with splits 'train', 'valid', 'test' ('valid' becomes TFDS 'validation'); each
split a dict of arrays with N rows:
  id                 (N,) str or bytes, 'video$_$clip'
  raw_text           (N,) str or bytes
  text               (N, L_t, 768) BERT features (L_t = 50)
  text_bert          (N, 3, L_t) token ids / attention mask / segment ids (optional)
  audio, vision      (N, L_a, D_a), (N, L_v, D_v); right-padded with zeros
  audio_lengths, vision_lengths  (N,) real steps (unaligned pickles only)
  regression_labels  (N,) sentiment in [-3, 3]
Other keys (classification labels, annotations, ...) are ignored.

Padding is cut: text keeps the first sum(attention mask) steps when `text_bert` is present (all
L_t otherwise). `text_bert` also gives each example's `text_ids` and `text_segments` (T_t,)
int32 (rows 0 and 2, cut to the same steps: the token ids of MMSA's BERT tokenizer,
bert-base-uncased WordPiece, whose vocabulary the bundled MiniLM shares), read by a run that
fine-tunes its text encoder; without `text_bert` both are empty and a note says so. In the
unaligned pickle audio and vision keep their `*_lengths` steps; in the
aligned pickle all three modalities share the text's steps, so all three are cut to the text
length. Non-finite feature values (MMSA audio holds -inf) become 0 and are counted; an example
with a non-finite label is dropped and counted.
"""

from collections.abc import Iterator, Mapping

import numpy as np

from data_prep import sources
from data_prep.sources import MODALITIES, RepairLog, SourceError, where

REQUIRED_KEYS = ('id', 'raw_text', 'text', 'audio', 'vision', 'regression_labels')
LENGTH_KEYS = ('audio_lengths', 'vision_lengths')


def _text_lengths(part, text, ids, *, path, split) -> tuple[np.ndarray, np.ndarray | None]:
  """(N,) text steps: sum of `text_bert` row 1 (attention mask) if present, else L_t; and the
  validated `text_bert` (N, 3, L_t) or None."""
  num, steps = text.shape[:2]
  if 'text_bert' not in part:
    return np.full(num, steps), None
  bert = sources.check_array(
    part['text_bert'], rank=3, num=num, context=where(path, split, field='text_bert')
  )
  if bert.shape[1:] != (3, steps):
    raise SourceError(
      f'{where(path, split, field="text_bert")}: expected shape '
      f'({num}, 3, {steps}), found {bert.shape}'
    )
  lengths = sources.check_lengths(
    bert[:, 1].sum(axis=1), steps, ids, path=path, split=split, field='text_bert'
  )
  return lengths, bert


def _split_arrays(part, *, path, split, dims, aligned):
  """Validated arrays of one split.

  Returns:
    ids (N,), raw_text (N,), labels (N,), features {m: (N, L_m, D_m)}, lengths {m: (N,) int},
    text_bert (N, 3, L_t) or None.
  """
  required = REQUIRED_KEYS + (() if aligned else LENGTH_KEYS)
  sources.require_keys(part, required, where(path, split))
  row_keys = ('text', 'audio', 'vision', 'regression_labels', 'raw_text', 'id')
  num = sources.row_count(part, row_keys + required[len(REQUIRED_KEYS) :], where(path, split))
  ids = sources.check_array(part['id'], rank=1, num=num, context=where(path, split, field='id'))
  features = {
    m: sources.check_array(
      part[m], rank=3, num=num, last_dim=dims[m], context=where(path, split, field=m)
    )
    for m in MODALITIES
  }
  raw_text = sources.check_array(
    part['raw_text'], rank=1, num=num, context=where(path, split, field='raw_text')
  )
  labels = sources.check_array(
    part['regression_labels'],
    rank=1,
    num=num,
    context=where(path, split, field='regression_labels'),
  )
  text_len, bert = _text_lengths(part, features['text'], ids, path=path, split=split)
  if aligned:
    steps = {m: features[m].shape[1] for m in MODALITIES}
    if len(set(steps.values())) != 1:
      raise SourceError(
        f'{where(path, split)}: an aligned pickle needs equal steps per modality, '
        f'found {steps} (is this the unaligned pickle?)'
      )
    lengths = dict.fromkeys(MODALITIES, text_len)
  else:
    lengths = {'text': text_len}
    for m in ('audio', 'vision'):
      lengths[m] = sources.check_lengths(
        part[f'{m}_lengths'],
        features[m].shape[1],
        ids,
        path=path,
        split=split,
        field=f'{m}_lengths',
      )
  return ids, raw_text, labels, features, lengths, bert


def examples(
  part, *, path, split: str, dims: Mapping[str, int], aligned: bool, log: RepairLog
) -> Iterator[dict]:
  """Contract examples of one MMSA split (`split` as named in the file, e.g. 'valid').

  The split's arrays are validated when this is called; examples are made lazily.

  Args:
    part: the split's dict, as loaded.
    path: the pickle's path (for messages).
    split: split name in the file.
    dims: {'text': 768, 'audio': D_a, 'vision': D_v} expected widths.
    aligned: True for `aligned_50.pkl`.
    log: receives repairs and drops.

  Returns:
    iterator of {'id', 'raw_text', 'text' (T_t, 768), 'audio' (T_a, D_a), 'vision' (T_v, D_v),
    'regression', 'text_ids', 'text_segments' (T_t,) int32} with float32 features.
  """
  arrays = _split_arrays(part, path=path, split=split, dims=dims, aligned=aligned)
  if arrays[-1] is None:
    log.note(
      'text_ids',
      f'{path} split {split}: no text_bert, so text_ids / text_segments are empty (a run that '
      'fine-tunes its text encoder cannot read this dataset)',
    )
  return _generate(*arrays, path=path, split=split, log=log)


def _generate(ids, raw_text, labels, features, lengths, bert, *, path, split, log):
  """Yields the examples of validated split arrays (see `_split_arrays`), padding cut."""
  empty = np.zeros((0,), np.int32)
  for i, raw_id in enumerate(ids):
    example_id = sources.decode(raw_id)
    context = dict(log=log, path=path, split=split, example=example_id)
    label = sources.finite_label(labels[i], field='regression_labels', **context)
    if label is None:
      continue
    example = {'id': example_id, 'raw_text': sources.decode(raw_text[i]), 'regression': label}
    for m in MODALITIES:
      example[m] = sources.finite_features(features[m][i, : lengths[m][i]], field=m, **context)
    steps = lengths['text'][i]
    example['text_ids'] = empty if bert is None else bert[i, 0, :steps].astype(np.int32)
    example['text_segments'] = empty if bert is None else bert[i, 2, :steps].astype(np.int32)
    yield example


def split_examples(
  path, *, dims: Mapping[str, int], aligned: bool, log: RepairLog
) -> dict[str, Iterator[dict]]:
  """{TFDS split: iterator of contract examples} for the MMSA pickle at `path`."""
  data = sources.load_pickle_splits(path)
  return {
    tfds_split: examples(data[split], path=path, split=split, dims=dims, aligned=aligned, log=log)
    for split, tfds_split in sources.SPLIT_NAMES.items()
  }
