"""Reader for CMU-MultimodalSDK computational sequences (`.csd`) of CMU-MOSI and CMU-MOSEI.

A `.csd` file is HDF5 holding one computational sequence:
  <root>/data/<video>/features   (n, d)  one row per interval
  <root>/data/<video>/intervals  (n, 2)  [start, end] in seconds
  <root>/metadata/<key>          (1,) JSON strings (not needed here)
where <root>, the sequence name, is the file's first key.

Sequences read (file names configurable through `CsdFiles`):
  labels        one row per labelled opinion segment: MOSI (n, 1) sentiment; MOSEI (n, 7)
                sentiment, happy, sad, anger, surprise, disgust, fear
  words         (n, 1) bytes, one row per word; 'sp' marks silence
  word_vectors  (n, 300) GloVe, one row per word interval
  audio         (n, 74) COVAREP frames
  vision        (n, D_v) Facet frames

Examples. Segment k of video v (row k of the labels sequence, in stored order) becomes the example
with id f'{v}[{k}]', the SDK's own naming after `align`. Its words are the non-'sp' words whose
interval lies inside the segment (tolerance `EPSILON` seconds), in start order; a segment with no
such word is dropped and counted. Each modality gets one row per word: the unweighted mean of the
rows (word vectors, audio or vision frames) whose interval overlaps the word's interval by more
than `EPSILON`, which is what the SDK's `align` with an averaging collapse computes. Where the SDK
would then drop a word no row overlaps, here that word gets zeros in that modality and is counted
('word_without_rows_zeroed'), so all modalities keep one row per word. `raw_text` joins the
words with spaces. Non-finite values in a sequence become 0 (counted per video) before averaging;
a segment with a non-finite label is dropped and counted.

Folds. The SDK's standard folds (`standard_train_fold`, `standard_valid_fold`,
`standard_test_fold`: MOSI 52/10/31 videos, MOSEI 2249/300/678) are lists of video ids; they are
read from `folds.json` in the manual dir: {"train": [...], "valid": [...], "test": [...]}.
Labelled videos in no fold are counted under split 'unassigned'; a fold video missing from any
sequence is dropped and counted (the SDK's `unify` drops such videos too).
"""

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping

import h5py
import numpy as np

from data_prep import sources
from data_prep.sources import MODALITIES, RepairLog, SourceError, where

EPSILON = 1e-5  # The SDK's tolerance when comparing interval ends, in seconds.
SILENCE = 'sp'
# Sequence read for each modality.
MODALITY_SEQUENCE = {'text': 'word_vectors', 'audio': 'audio', 'vision': 'vision'}


@dataclasses.dataclass(frozen=True)
class CsdFiles:
  """Names, inside the manual dir, of the files one build reads."""

  labels: str
  words: str
  word_vectors: str
  audio: str
  vision: str
  folds: str = 'folds.json'

  def sequences(self) -> dict[str, str]:
    """{sequence key: file name} for the five `.csd` files."""
    return {k: v for k, v in dataclasses.asdict(self).items() if k != 'folds'}


class Sequence(contextlib.AbstractContextManager):
  """One open computational sequence; `read(video)` gives validated (features, intervals)."""

  def __init__(self, path, key: str):
    self.path, self.key = os.fspath(path), key
    try:
      self._file = h5py.File(self.path, 'r')
    except OSError as e:
      raise SourceError(f'{where(path)}: not a readable HDF5 computational sequence ({e})') from e
    roots = list(self._file.keys())
    if (
      not roots
      or not isinstance(self._file[roots[0]], h5py.Group)
      or ('data' not in self._file[roots[0]])
    ):
      self._file.close()
      raise SourceError(
        f'{where(path)}: expected a group <root>/data, found top-level keys {roots}'
      )
    self._data = self._file[roots[0]]['data']

  def __exit__(self, *exc_info):
    self._file.close()

  def __contains__(self, video: str) -> bool:
    return video in self._data

  def videos(self) -> list[str]:
    """Video ids in the sequence, in file order."""
    return list(self._data.keys())

  def read(self, video: str, *, split: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, width), intervals (n, 2) float64) of `video`; SourceError if malformed."""
    group = self._data[video]
    context = where(self.path, split, video, self.key)
    sources.require_keys(dict(group), ('features', 'intervals'), context)
    features = sources.check_array(
      group['features'][()], rank=2, last_dim=width, context=f'{context} features'
    )
    intervals = sources.check_array(
      group['intervals'][()], rank=2, num=len(features), last_dim=2, context=f'{context} intervals'
    )
    return features, intervals.astype(np.float64)


def read_folds(path) -> dict[str, list[str]]:
  """{'train' | 'valid' | 'test': video ids} from a folds JSON file; no video in two folds."""
  try:
    with open(path) as f:
      folds = json.load(f)
  except json.JSONDecodeError as e:
    raise SourceError(f'{where(path)}: not valid JSON ({e})') from e
  sources.require_keys(folds, tuple(sources.SPLIT_NAMES), where(path))
  seen = {}
  for fold in sources.SPLIT_NAMES:
    videos = folds[fold]
    if not isinstance(videos, list) or not all(isinstance(v, str) for v in videos):
      raise SourceError(f'{where(path, fold)}: expected a list of video id strings')
    for video in videos:
      if video in seen:
        raise SourceError(f'{where(path, fold, video)}: video listed twice (also in {seen[video]})')
      seen[video] = fold
  return {fold: folds[fold] for fold in sources.SPLIT_NAMES}


def segment_words(words: np.ndarray, intervals: np.ndarray, segment: np.ndarray) -> np.ndarray:
  """Indices, in start order, of the non-silence words inside `segment`.

  Args:
    words: (n,) str.
    intervals: (n, 2) word intervals.
    segment: (2,) segment interval; a word inside it may overrun each end by `EPSILON`.
  """
  inside = (intervals[:, 0] >= segment[0] - EPSILON) & (intervals[:, 1] <= segment[1] + EPSILON)
  index = np.flatnonzero(inside & (words != SILENCE))
  return index[np.argsort(intervals[index, 0], kind='stable')]


def average_over(
  targets: np.ndarray, intervals: np.ndarray, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Mean of the `features` rows whose interval overlaps each target interval by > EPSILON.

  Args:
    targets: (W, 2) word intervals, W >= 1.
    intervals: (F, 2) row intervals.
    features: (F, D) rows.

  Returns:
    (W, D) float32 means, zeros where no row overlaps, and (W,) bool: some row overlapped.
  """
  near = (intervals[:, 1] - targets[:, 0].min() > EPSILON) & (
    targets[:, 1].max() - intervals[:, 0] > EPSILON
  )
  intervals, features = intervals[near], features[near]
  overlap = (
    np.minimum(targets[:, None, 1], intervals[None, :, 1])
    - np.maximum(targets[:, None, 0], intervals[None, :, 0])
  ) > EPSILON  # (W, F')
  counts = overlap.sum(axis=1)
  means = (overlap @ features.astype(np.float64)) / np.maximum(counts, 1)[:, None]
  return means.astype(np.float32), counts > 0


def _video_examples(
  video: str,
  seqs: Mapping[str, Sequence],
  *,
  split: str,
  dims: Mapping[str, int],
  label_width: int,
  log: RepairLog,
):
  """Yields the contract examples of the labelled segments of one video."""
  labels, segments = seqs['labels'].read(video, split=split, width=label_width)
  raw_words, word_intervals = seqs['words'].read(video, split=split, width=1)
  words = np.array([sources.decode(w) for w in raw_words[:, 0]], dtype=object)
  streams = {}
  for m in MODALITIES:
    seq = seqs[MODALITY_SEQUENCE[m]]
    features, intervals = seq.read(video, split=split, width=dims[m])
    streams[m] = (
      intervals,
      sources.finite_features(
        features, log=log, path=seq.path, split=split, example=video, field=m
      ),
    )
  for k, (segment, label) in enumerate(zip(segments, labels)):
    example_id = f'{video}[{k}]'
    if not np.isfinite(label).all():
      log.add(
        'dropped_nonfinite_label',
        path=seqs['labels'].path,
        split=split,
        example=example_id,
        field='labels',
      )
      continue
    index = segment_words(words, word_intervals, segment)
    if not index.size:
      log.add(
        'dropped_no_words', path=seqs['words'].path, split=split, example=example_id, field='text'
      )
      continue
    example = {'id': example_id, 'raw_text': ' '.join(words[index]), 'regression': float(label[0])}
    if label_width > 1:
      example['emotions'] = label[1:].astype(np.float32)
    for m in MODALITIES:
      example[m], covered = average_over(word_intervals[index], *streams[m])
      if not covered.all():
        log.add(
          'word_without_rows_zeroed',
          path=seqs[MODALITY_SEQUENCE[m]].path,
          split=split,
          example=example_id,
          field=m,
          count=np.sum(~covered),
        )
    yield example


def examples(
  manual_dir,
  files: CsdFiles,
  videos: list[str],
  *,
  split: str,
  dims: Mapping[str, int],
  label_width: int,
  log: RepairLog,
) -> Iterator[dict]:
  """Contract examples of the labelled segments of `videos` (one fold, named `split`).

  Yields:
    {'id' f'{video}[{k}]', 'raw_text', 'text' (W, 300), 'audio' (W, 74), 'vision' (W, D_v),
     'regression'} and, when `label_width` is 7 (MOSEI), 'emotions' (6,) float32, with W the
    segment's number of words.
  """
  with contextlib.ExitStack() as stack:
    seqs = {
      key: stack.enter_context(Sequence(os.path.join(manual_dir, name), key))
      for key, name in files.sequences().items()
    }
    for video in videos:
      absent = [key for key, seq in seqs.items() if video not in seq]
      if absent:
        log.add(
          'dropped_video_missing',
          path=seqs[absent[0]].path,
          split=split,
          example=video,
          field=absent[0],
        )
        continue
      yield from _video_examples(
        video, seqs, split=split, dims=dims, label_width=label_width, log=log
      )


def split_examples(
  manual_dir, files: CsdFiles, *, dims: Mapping[str, int], label_width: int, log: RepairLog
) -> dict[str, Iterator[dict]]:
  """{TFDS split: iterator of contract examples}, one split per fold of `folds.json`.

  Every sequence file is opened once here, so a malformed file fails before any split is made.
  """
  folds = read_folds(os.path.join(manual_dir, files.folds))
  for key, name in files.sequences().items():
    with Sequence(os.path.join(manual_dir, name), key) as seq:
      if key == 'labels':
        labelled = seq.videos()
  assigned = {video for videos in folds.values() for video in videos}
  for video in labelled:
    if video not in assigned:
      log.add(
        'video_not_in_folds', path=files.folds, split='unassigned', example=video, field='labels'
      )
  return {
    sources.SPLIT_NAMES[fold]: examples(
      manual_dir, files, videos, split=fold, dims=dims, label_width=label_width, log=log
    )
    for fold, videos in folds.items()
  }
