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

Alignment: the SDK's own pipeline (its `process_mosi.py` / `process_mosei.py` examples, and
MISA's data code): `align` to the words with an averaging collapse, `impute` with zeros, then
`align` to the label segments without collapse and `hard_unify`. Its rules, with the SDK's
epsilon `EPSILON` = 1e-5 s, reproduced here (`overlaps`, `align_to_words`, `segment_rows`):

  1. Words. The non-silence words of the `words` sequence, in stored order (silence markers
     'sp' are not words here; the SDK keeps whatever rows its reference sequence has). A word
     whose interval is shorter than EPSILON (|end - start| < EPSILON) is skipped: the SDK makes
     no entry for it in any sequence ('word_too_short_skipped', counted per video).
  2. A row (frame or word vector) with interval [s0, s1] overlaps a target [t0, t1] when
     t1 - s0 > -EPSILON, s1 - t0 > -EPSILON and |min(s1, t1) - max(s0, t0)| > EPSILON: any
     overlap longer than EPSILON, touching intervals excluded.
  3. Each modality's value for a word is `numpy.average` of the overlapping rows (in start
     order, in the sequence's stored dtype), so a non-finite value in any of them makes that
     mean value non-finite (-inf, +inf or NaN), as in the SDK. Those values are set to 0 after
     averaging, as the field's pickles hold them repaired, and counted
     ('nonfinite_mean_to_zero': values, per example). The word's span in that modality is the
     SDK's collapsed interval: [min, max] of the overlapping rows' intervals clipped to the word.
     A word no row overlaps gets zeros and the word's own interval (the SDK's `impute` with
     `numpy.zeros`, which its example pipelines call; without it the SDK would drop the word);
     counted per example row ('word_without_rows_zeroed').
  4. Segments. Segment k of video v (row k of the labels sequence, stored order) becomes the
     example with id f'{v}[{k}]', the SDK's naming. A segment shorter than EPSILON is skipped
     ('segment_too_short_skipped'). In each modality the segment holds every word whose span in
     that modality overlaps the segment (rule 2), in order of that span's start: a word that
     straddles a segment boundary is in both segments. The rows per modality are therefore the
     same words unless a straddling word's frames all lie on one side of the boundary (then,
     as in the SDK, that modality has one row fewer there). A segment with no row in some
     modality is dropped ('dropped_no_words', field = that modality), as `hard_unify` does.
  `raw_text` joins the words of the text rows with spaces. A segment with a non-finite label is
  dropped ('dropped_nonfinite_label').

Folds. The standard folds (the SDK's `standard_train_fold`, `standard_valid_fold`,
`standard_test_fold`: MOSI 52/10/31 videos, MOSEI 2249/300/678) are lists of video ids. A
`folds.json` in the manual dir ({"train": [...], "valid": [...], "test": [...]}) is used when
present; otherwise the standard folds shipped in `data_prep/standard_folds/` (`shipped_folds`).
The build log notes which, and records the folds file's digest. Labelled videos in no fold are
counted under split 'unassigned'; a fold video missing from any sequence is dropped and counted
(the SDK's `unify` drops such videos too).
"""

import contextlib
import dataclasses
import importlib.resources
import json
import os
from collections.abc import Iterator, Mapping

import h5py
import numpy as np

from data_prep import sources
from data_prep.sources import MODALITIES, RepairLog, SourceError, where

EPSILON = 1e-5  # The SDK's `epsilon=10e-6`, in seconds.
SILENCE = 'sp'
# Sequence read for each modality.
MODALITY_SEQUENCE = {'text': 'word_vectors', 'audio': 'audio', 'vision': 'vision'}
# Words aligned at once: bounds the (words, rows) overlap matrix of a long video.
WORD_BLOCK = 64
# Standard folds shipped with the builders (package data, see standard_folds/README.md).
STANDARD_FOLDS_DIR = 'standard_folds'


@dataclasses.dataclass(frozen=True)
class CsdFiles:
  """Names, inside the manual dir, of the files one build reads.

  `folds` is optional in the manual dir; without it the shipped `standard_folds` are used.
  """

  labels: str
  words: str
  word_vectors: str
  audio: str
  vision: str
  standard_folds: str = ''  # 'cmu_mosi' or 'cmu_mosei': data_prep/standard_folds/<name>.json
  folds: str = 'folds.json'

  def sequences(self) -> dict[str, str]:
    """{sequence key: file name} for the five `.csd` files."""
    return {
      k: v for k, v in dataclasses.asdict(self).items() if k not in ('folds', 'standard_folds')
    }


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
    """(features (n, width), intervals (n, 2)) of `video` in their stored dtypes (integer
    intervals as float64), as the SDK computes with them; SourceError if malformed."""
    group = self._data[video]
    context = where(self.path, split, video, self.key)
    sources.require_keys(dict(group), ('features', 'intervals'), context)
    features = sources.check_array(
      group['features'][()], rank=2, last_dim=width, context=f'{context} features'
    )
    intervals = sources.check_array(
      group['intervals'][()], rank=2, num=len(features), last_dim=2, context=f'{context} intervals'
    )
    return features, intervals if intervals.dtype.kind == 'f' else intervals.astype(np.float64)


def shipped_folds(name: str):
  """The shipped standard folds file `data_prep/standard_folds/<name>.json` (a Traversable that
  `open` and `os.fspath` accept in a checkout and in an installed package)."""
  return importlib.resources.files('data_prep') / STANDARD_FOLDS_DIR / f'{name}.json'


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


def overlaps(target: np.ndarray, intervals: np.ndarray) -> np.ndarray:
  """The SDK's intersection test (rule 2 of the module docstring): (F,) bool.

  Args:
    target: (2,) [t0, t1], or (W, 1, 2) for W targets at once (then the result is (W, F)).
    intervals: (F, 2) row intervals [s0, s1].
  """
  t0, t1 = target[..., 0], target[..., 1]
  s0, s1 = intervals[:, 0], intervals[:, 1]
  width = np.minimum(s1, t1) - np.maximum(s0, t0)
  return (t1 - s0 > -EPSILON) & (s1 - t0 > -EPSILON) & (np.abs(width) > EPSILON)


@dataclasses.dataclass(frozen=True)
class WordAligned:
  """One sequence collapsed onto W words (rule 3 of the module docstring).

  Attributes:
    means: (W, D) `numpy.average` of each word's overlapping rows, in the sequence's dtype;
      non-finite where a row was; 0 where no row overlaps.
    spans: (W, 2) the collapsed interval of each word; the word's own where no row overlaps.
    covered: (W,) bool, some row overlaps the word.
  """

  means: np.ndarray
  spans: np.ndarray
  covered: np.ndarray


def align_to_words(targets: np.ndarray, intervals: np.ndarray, features: np.ndarray):
  """Collapses the rows of one sequence onto word intervals as the SDK's `align` + average.

  Args:
    targets: (W, 2) word intervals, each at least EPSILON long.
    intervals: (F, 2) row intervals.
    features: (F, D) rows.

  Returns:
    `WordAligned`.
  """
  order = np.argsort(intervals[:, 0], kind='stable')  # The SDK sorts rows by start, stably.
  intervals, features = intervals[order], features[order]
  dtype = np.result_type(features.dtype, np.float32)
  means = np.zeros((len(targets), features.shape[1]), dtype)
  spans = targets.astype(np.result_type(targets.dtype, intervals.dtype))  # a copy.
  covered = np.zeros(len(targets), bool)
  for lo in range(0, len(targets), WORD_BLOCK):
    block = targets[lo : lo + WORD_BLOCK]
    # Rows that can overlap some word of the block: a cheap superset, then the exact test.
    near = np.flatnonzero(
      (block[:, 1].max() - intervals[:, 0] > -2 * EPSILON)
      & (intervals[:, 1] - block[:, 0].min() > -2 * EPSILON)
    )
    hits = overlaps(block[:, None, :], intervals[near])  # (w, F')
    for i in np.flatnonzero(hits.any(axis=1)):
      rows = near[hits[i]]
      clipped = np.stack(
        [
          np.maximum(intervals[rows, 0], block[i, 0]),
          np.minimum(intervals[rows, 1], block[i, 1]),
        ],
        axis=1,
      )
      with np.errstate(invalid='ignore', over='ignore'):  # inf - inf: NaN, as in the SDK.
        means[lo + i] = np.average(features[rows], axis=0)
      spans[lo + i] = clipped.min(), clipped.max()
      covered[lo + i] = True
  return WordAligned(means=means, spans=spans, covered=covered)


def average_over(
  targets: np.ndarray, intervals: np.ndarray, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """(W, D) float32 word means (`align_to_words`, zeros where no row overlaps) and (W,) covered."""
  aligned = align_to_words(targets, intervals, features)
  return aligned.means.astype(np.float32), aligned.covered


def segment_rows(segment: np.ndarray, spans: np.ndarray) -> np.ndarray:
  """Indices of the words whose span overlaps `segment` (rule 4), in order of span start.

  Args:
    segment: (2,) the segment's interval.
    spans: (W, 2) the words' spans in one modality (`WordAligned.spans`), in stored word order.
  """
  index = np.flatnonzero(overlaps(segment, spans))
  return index[np.argsort(spans[index, 0], kind='stable')]


def _words(seqs, video, *, split, log):
  """(words (W,) str, intervals (W, 2)) of the video's words that the SDK aligns to."""
  raw_words, intervals = seqs['words'].read(video, split=split, width=1)
  words = np.array([sources.decode(w) for w in raw_words[:, 0]], dtype=object)
  speech = words != SILENCE
  too_short = speech & (np.abs(intervals[:, 0] - intervals[:, 1]) < EPSILON)
  if too_short.any():
    log.add(
      'word_too_short_skipped',
      path=seqs['words'].path,
      split=split,
      example=video,
      field='text',
      count=too_short.sum(),
    )
  keep = speech & ~too_short
  return words[keep], intervals[keep]


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
  words, word_intervals = _words(seqs, video, split=split, log=log)
  aligned = {}
  for m in MODALITIES:
    features, intervals = seqs[MODALITY_SEQUENCE[m]].read(video, split=split, width=dims[m])
    aligned[m] = align_to_words(word_intervals, intervals, features)
  for k, (segment, label) in enumerate(zip(segments, labels)):
    example_id = f'{video}[{k}]'
    context = dict(split=split, example=example_id)
    if abs(segment[0] - segment[1]) < EPSILON:
      log.add('segment_too_short_skipped', path=seqs['labels'].path, field='labels', **context)
      continue
    if not np.isfinite(label).all():
      log.add('dropped_nonfinite_label', path=seqs['labels'].path, field='labels', **context)
      continue
    rows = {m: segment_rows(segment, aligned[m].spans) for m in MODALITIES}
    empty = [m for m in MODALITIES if not rows[m].size]
    if empty:
      path = seqs[MODALITY_SEQUENCE[empty[0]]].path
      log.add('dropped_no_words', path=path, field=empty[0], **context)
      continue
    example = {'id': example_id, 'raw_text': ' '.join(words[rows['text']])}
    example['regression'] = float(label[0])
    if label_width > 1:
      example['emotions'] = label[1:].astype(np.float32)
    for m in MODALITIES:
      path = seqs[MODALITY_SEQUENCE[m]].path
      values = aligned[m].means[rows[m]]
      bad = ~np.isfinite(values)
      if bad.any():
        values = np.where(bad, 0, values)
        log.add('nonfinite_mean_to_zero', path=path, field=m, count=bad.sum(), **context)
      imputed = ~aligned[m].covered[rows[m]]
      if imputed.any():
        log.add('word_without_rows_zeroed', path=path, field=m, count=imputed.sum(), **context)
      example[m] = values.astype(np.float32)
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
    {'id' f'{video}[{k}]', 'raw_text', 'text' (T_t, 300), 'audio' (T_a, 74), 'vision'
     (T_v, D_v), 'regression'} and, when `label_width` is 7 (MOSEI), 'emotions' (6,) float32;
    T_m is the segment's number of words in modality m (module docstring, rule 4).
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


def folds_file(manual_dir, files: CsdFiles):
  """(path, note): the manual dir's folds file when present, else the shipped standard folds."""
  user = os.path.join(manual_dir, files.folds)
  if os.path.exists(user):
    return user, f'{files.folds} from the manual dir (it takes precedence over the shipped folds)'
  if not files.standard_folds:
    raise FileNotFoundError(f'{user} not found and this config ships no standard folds')
  path = shipped_folds(files.standard_folds)
  return path, (
    f'no {files.folds} in the manual dir: the shipped standard folds '
    f'data_prep/{STANDARD_FOLDS_DIR}/{files.standard_folds}.json (CMU-MultimodalSDK)'
  )


def split_examples(
  manual_dir, files: CsdFiles, *, dims: Mapping[str, int], label_width: int, log: RepairLog
) -> dict[str, Iterator[dict]]:
  """{TFDS split: iterator of contract examples}, one split per fold (`folds_file`).

  Every sequence file is opened once here, so a malformed file fails before any split is made.
  The folds file used and its digest go to `log` (note 'folds', source 'folds.json' or the
  shipped file's name).
  """
  path, note = folds_file(manual_dir, files)
  folds = read_folds(path)
  log.note('folds', note)
  log.add_source(path)
  for key, name in files.sequences().items():
    with Sequence(os.path.join(manual_dir, name), key) as seq:
      if key == 'labels':
        labelled = seq.videos()
  assigned = {video for videos in folds.values() for video in videos}
  for video in labelled:
    if video not in assigned:
      log.add(
        'video_not_in_folds',
        path=os.path.basename(os.fspath(path)),
        split='unassigned',
        example=video,
        field='labels',
      )
  return {
    sources.SPLIT_NAMES[fold]: examples(
      manual_dir, files, videos, split=fold, dims=dims, label_width=label_width, log=log
    )
    for fold, videos in folds.items()
  }
