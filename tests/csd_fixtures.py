"""Hand-built CMU-MultimodalSDK `.csd` files for the builder and training tests.

`write_csd` writes the SDK's HDF5 layout (<root>/data/<video>/{features, intervals},
<root>/metadata/<key> JSON strings). `write_sdk_dataset` writes the five sequences of a csd
config (and optionally folds.json) for a few videos and returns the examples and repair counts
that the SDK's rules give, computed by `reference_examples`: a plain loop over words and frames
that applies the rules as the SDK's `align` + average, `impute` and `align` to the labels state
them (data_prep/csd.py docstring), independent of the reader's vectorised code.
"""

import json
import os

import h5py
import numpy as np

DIMS = {'text': 300, 'audio': 74, 'vision': 35}
EPS = 1e-5  # The SDK's epsilon.
SEQUENCE = {'text': 'word_vectors', 'audio': 'audio', 'vision': 'vision'}
# (word, start, end), stored shuffled. Segment 0 [0, 3] holds hello, world, again and 'edge',
# which straddles 3.0 and so is also in segment 1 [3, 6] with nice, movie (no audio frame
# overlaps it: zeros) and yes (ends on the boundary 6.0, so not in segment 2); 'blip' is shorter
# than the SDK's epsilon and skipped; segment 2 [6, 7.5] holds only silence and is dropped.
WORDS = [
  ('hello', 0.1, 0.5),
  ('sp', 0.5, 0.9),
  ('world', 0.9, 1.6),
  ('again', 1.6, 2.95),
  ('edge', 2.9, 3.2),
  ('nice', 3.2, 3.8),
  ('blip', 3.5, 3.5 + 4e-6),
  ('movie', 3.8, 4.5),
  ('yes', 4.5, 6.0),
  ('sp', 6.0, 7.5),
]
SEGMENTS = np.array([[0.0, 3.0], [3.0, 6.0], [6.0, 7.5]])
AUDIO_GAP = (3.8, 4.5)
# video -> fold; 'lost' is missing from the vision file, 'extra' is in no fold.
VIDEOS = {
  'vidA': 'train',
  'vidB': 'train',
  'vidC': 'valid',
  'vidD': 'test',
  'lost': 'test',
  'extra': None,
}


def write_csd(path, data, *, root=None):
  """Writes {video: (features, intervals)} as an SDK computational sequence."""
  root = root or os.path.basename(path)[:-4]
  with h5py.File(path, 'w') as f:
    group = f.create_group(root)
    videos = group.create_group('data')
    for video, (features, intervals) in data.items():
      videos.create_group(video).create_dataset('features', data=features)
      videos[video].create_dataset('intervals', data=intervals)
    metadata = group.create_group('metadata')
    for key, value in {
      'root name': root,
      'dimension names': ['f'],
      'alignment compatible': True,
      'md5': None,
    }.items():
      metadata.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))[0] = json.dumps(value)


def frames(step, end, skip=None):
  """(n, 2) consecutive intervals of `step` seconds over [0, end], without those inside `skip`."""
  starts = np.arange(0, end - 1e-9, step)
  intervals = np.stack([starts, starts + step], axis=1)
  if skip:
    intervals = intervals[(intervals[:, 1] <= skip[0] + EPS) | (intervals[:, 0] >= skip[1] - EPS)]
  return intervals


def video_streams(rng, label_width, *, emotions_present=0.4):
  """Sequences of one video: {key: (features, intervals)} with non-finite values planted.

  MOSEI labels (label_width 7) carry emotion intensities: each present (in (0, 3]) with
  probability `emotions_present`, else 0.
  """
  order = rng.permutation(len(WORDS))
  words = np.array([[WORDS[i][0].encode()] for i in order], dtype='S')
  word_intervals = np.array([WORDS[i][1:] for i in order])
  audio_intervals = frames(0.1, 7.5, AUDIO_GAP)
  audio = rng.standard_normal((len(audio_intervals), DIMS['audio']))
  audio[2, 3] = np.nan
  vision_intervals = frames(0.3, 7.5)
  vision = rng.standard_normal((len(vision_intervals), DIMS['vision'])).astype(np.float32)
  vision[5, :2] = -np.inf
  labels = rng.uniform(-3, 3, (len(SEGMENTS), label_width)).astype(np.float32)
  if label_width > 1:
    present = rng.random((len(SEGMENTS), label_width - 1)) < emotions_present
    labels[:, 1:] = np.where(present, rng.choice([0.33, 0.67, 1.0, 1.67, 3.0]), 0.0)
  return {
    'labels': (labels, SEGMENTS),
    'words': (words, word_intervals),
    'word_vectors': (rng.standard_normal((len(WORDS), DIMS['text'])), word_intervals),
    'audio': (audio, audio_intervals),
    'vision': (vision, vision_intervals),
  }


def sdk_overlap(target, row) -> bool:
  """The SDK's intersection test of one row interval against one target interval."""
  (t0, t1), (s0, s1) = target, row
  return t1 - s0 > -EPS and s1 - t0 > -EPS and abs(min(s1, t1) - max(s0, t0)) > EPS


def _count(repairs, key, n=1):
  if n:
    repairs[key] = repairs.get(key, 0) + int(n)


def reference_examples(video, streams, split, repairs):
  """Expected examples of one video by the SDK's rules, in plain loops; adds repair counts."""
  labels, segments = streams['labels']
  raw_words, word_intervals = streams['words']
  words = []  # (name, (start, end)) the SDK aligns to, in stored order.
  for raw, (start, end) in zip(raw_words[:, 0], word_intervals):
    if raw == b'sp':
      continue
    if abs(start - end) < EPS:
      _count(repairs, (split, 'text', 'word_too_short_skipped'))
      continue
    words.append((raw.decode(), (start, end)))
  per_word = {}  # modality -> [(mean, span, covered)] per word
  for m, key in SEQUENCE.items():
    features, intervals = streams[key]
    per_word[m] = []
    for _, (start, end) in words:
      hits = sorted(
        (row for row in range(len(intervals)) if sdk_overlap((start, end), intervals[row])),
        key=lambda row: intervals[row][0],
      )
      if hits:
        clipped = [(max(intervals[r][0], start), min(intervals[r][1], end)) for r in hits]
        mean = np.mean(np.stack([features[r] for r in hits]), axis=0)
        span = (min(min(c) for c in clipped), max(max(c) for c in clipped))
        per_word[m].append((mean, span, True))
      else:
        per_word[m].append((np.zeros(features.shape[1]), (start, end), False))
  examples = []
  for k, (segment, label) in enumerate(zip(segments, labels)):
    if abs(segment[0] - segment[1]) < EPS:
      _count(repairs, (split, 'labels', 'segment_too_short_skipped'))
      continue
    if not np.isfinite(label).all():
      _count(repairs, (split, 'labels', 'dropped_nonfinite_label'))
      continue
    chosen = {}
    for m in SEQUENCE:
      inside = [j for j, (_, span, _) in enumerate(per_word[m]) if sdk_overlap(segment, span)]
      chosen[m] = sorted(inside, key=lambda j, m=m: per_word[m][j][1][0])
    empty = [m for m in SEQUENCE if not chosen[m]]
    if empty:
      _count(repairs, (split, empty[0], 'dropped_no_words'))
      continue
    example = {
      'id': f'{video}[{k}]',
      'raw_text': ' '.join(words[j][0] for j in chosen['text']),
      'regression': label[0],
    }
    if len(label) > 1:
      example['emotions'] = label[1:]
    for m in SEQUENCE:
      rows = np.stack([per_word[m][j][0] for j in chosen[m]])
      bad = ~np.isfinite(rows)
      _count(repairs, (split, m, 'nonfinite_mean_to_zero'), bad.sum())
      _count(
        repairs,
        (split, m, 'word_without_rows_zeroed'),
        sum(not per_word[m][j][2] for j in chosen[m]),
      )
      example[m] = np.where(bad, 0, rows).astype(np.float32)
    examples.append(example)
  return examples


def write_sdk_dataset(directory, files, label_width, *, videos=None, seed=7, folds=True):
  """Writes the five sequences (and folds.json unless `folds` is False) of `videos` (video ->
  fold, default `VIDEOS`); returns (expected examples per TFDS split, expected repair counts)."""
  videos = VIDEOS if videos is None else videos
  rng = np.random.default_rng(seed)
  streams = {video: video_streams(rng, label_width) for video in videos}
  if 'vidB' in streams:
    streams['vidB']['labels'][0][1, 0] = np.nan
  expected = {'train': [], 'validation': [], 'test': []}
  repairs = {}
  if None in videos.values():
    repairs[('unassigned', 'labels', 'video_not_in_folds')] = list(videos.values()).count(None)
  if 'lost' in videos:
    repairs[(videos['lost'], 'vision', 'dropped_video_missing')] = 1
  for video, fold in videos.items():
    if fold and video != 'lost':
      tfds_split = {'valid': 'validation'}.get(fold, fold)
      expected[tfds_split] += reference_examples(video, streams[video], fold, repairs)
  for key, name in files.sequences().items():
    data = {v: s[key] for v, s in streams.items() if not (key == 'vision' and v == 'lost')}
    write_csd(os.path.join(directory, name), data)
  if folds:
    folds = {f: [v for v, g in videos.items() if g == f] for f in ('train', 'valid', 'test')}
    (directory / files.folds).write_text(json.dumps(folds))
  return expected, repairs
