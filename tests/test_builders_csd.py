"""CMU-MultimodalSDK `.csd` reader and the `csd` configs of cmu_mosi / cmu_mosei.

Fixtures are HDF5 files in the SDK's layout (<root>/data/<video>/{features, intervals},
<root>/metadata/<key> JSON strings); expected examples come from a plain loop over words and
frames, independent of the reader.
"""

import json
import os

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import cmu_mosei, cmu_mosi, csd
from data_prep.sources import RepairLog, SourceError

DIMS = {'text': 300, 'audio': 74, 'vision': 35}
EPS = 1e-5
# (word, start, end), stored shuffled. Segment 0 [0, 3] holds hello, world, again ('edge'
# straddles 3.0 and belongs to no segment); segment 1 [3, 6] holds nice, movie (no audio frame
# overlaps it) and yes (ends on the boundary); segment 2 [6, 7.5] holds only silence.
WORDS = [
  ('hello', 0.1, 0.5),
  ('sp', 0.5, 0.9),
  ('world', 0.9, 1.6),
  ('again', 1.6, 2.95),
  ('edge', 2.9, 3.2),
  ('nice', 3.2, 3.8),
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


def _frames(step, end, skip=None):
  """(n, 2) consecutive intervals of `step` seconds over [0, end], without those inside `skip`."""
  starts = np.arange(0, end - 1e-9, step)
  intervals = np.stack([starts, starts + step], axis=1)
  if skip:
    intervals = intervals[(intervals[:, 1] <= skip[0] + EPS) | (intervals[:, 0] >= skip[1] - EPS)]
  return intervals


def _video_streams(rng, label_width):
  """Sequences of one video: {key: (features, intervals)} with non-finite values planted."""
  order = rng.permutation(len(WORDS))
  words = np.array([[WORDS[i][0].encode()] for i in order], dtype='S')
  word_intervals = np.array([WORDS[i][1:] for i in order])
  audio_intervals = _frames(0.1, 7.5, AUDIO_GAP)
  audio = rng.standard_normal((len(audio_intervals), DIMS['audio']))
  audio[2, 3] = np.nan
  vision_intervals = _frames(0.3, 7.5)
  vision = rng.standard_normal((len(vision_intervals), DIMS['vision'])).astype(np.float32)
  vision[5, :2] = -np.inf
  labels = rng.uniform(-3, 3, (len(SEGMENTS), label_width)).astype(np.float32)
  return {
    'labels': (labels, SEGMENTS),
    'words': (words, word_intervals),
    'word_vectors': (rng.standard_normal((len(WORDS), DIMS['text'])), word_intervals),
    'audio': (audio, audio_intervals),
    'vision': (vision, vision_intervals),
  }


def _reference_examples(video, streams, split, repairs):
  """Expected examples of one video by a plain loop; adds expected repair counts."""
  labels, segments = streams['labels']
  words, word_intervals = streams['words']
  clean = {}
  for m, key in csd.MODALITY_SEQUENCE.items():
    features, intervals = streams[key]
    bad = int((~np.isfinite(features)).sum())
    if bad:
      repairs[(split, m, 'nonfinite_to_zero')] = (
        repairs.get((split, m, 'nonfinite_to_zero'), 0) + bad
      )
    clean[m] = np.where(np.isfinite(features), features, 0), intervals
  examples = []
  for k, (segment, label) in enumerate(zip(segments, labels)):
    if not np.isfinite(label).all():
      repairs[(split, 'labels', 'dropped_nonfinite_label')] = 1
      continue
    chosen = sorted(
      (iv[0], iv[1], w[0].decode())
      for w, iv in zip(words, word_intervals)
      if w[0] != b'sp' and iv[0] >= segment[0] - EPS and iv[1] <= segment[1] + EPS
    )
    if not chosen:
      key = (split, 'text', 'dropped_no_words')
      repairs[key] = repairs.get(key, 0) + 1
      continue
    example = {
      'id': f'{video}[{k}]',
      'raw_text': ' '.join(w for _, _, w in chosen),
      'regression': label[0],
    }
    if len(label) > 1:
      example['emotions'] = label[1:]
    for m, (features, intervals) in clean.items():
      rows = []
      for start, end, _ in chosen:
        hits = [f for f, (a, b) in zip(features, intervals) if min(end, b) - max(start, a) > EPS]
        rows.append(np.mean(hits, axis=0) if hits else np.zeros(features.shape[1]))
        if not hits:
          key = (split, m, 'word_without_rows_zeroed')
          repairs[key] = repairs.get(key, 0) + 1
      example[m] = np.array(rows, dtype=np.float32)
    examples.append(example)
  return examples


def write_sdk_dataset(directory, files: csd.CsdFiles, label_width):
  """Writes the five sequences and folds.json; returns expected examples and repairs."""
  rng = np.random.default_rng(7)
  streams = {video: _video_streams(rng, label_width) for video in VIDEOS}
  streams['vidB']['labels'][0][1, 0] = np.nan
  expected = {'train': [], 'validation': [], 'test': []}
  repairs = {
    ('unassigned', 'labels', 'video_not_in_folds'): 1,
    ('test', 'vision', 'dropped_video_missing'): 1,
  }
  for video, fold in VIDEOS.items():
    if fold and video != 'lost':
      tfds_split = {'valid': 'validation'}.get(fold, fold)
      expected[tfds_split] += _reference_examples(video, streams[video], fold, repairs)
  for key, name in files.sequences().items():
    data = {v: s[key] for v, s in streams.items() if not (key == 'vision' and v == 'lost')}
    write_csd(os.path.join(directory, name), data)
  folds = {fold: [v for v, f in VIDEOS.items() if f == fold] for fold in ('train', 'valid', 'test')}
  (directory / files.folds).write_text(json.dumps(folds))
  return expected, repairs


@pytest.mark.parametrize(
  'builder_cls, label_width', [(cmu_mosi.CmuMosi, 1), (cmu_mosei.CmuMosei, 7)]
)
def test_csd_builders(tmp_path, builder_cls, label_width):
  expected, repairs = write_sdk_dataset(
    tmp_path, builder_cls.BUILDER_CONFIGS[-1].csd_files, label_width
  )
  builder = builder_cls(config='csd', data_dir=os.fspath(tmp_path / 'out'))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path))
  )
  assert [len(v) for v in expected.values()] == [3, 2, 2]
  for split, examples in expected.items():
    source = builder.as_data_source(split)
    assert len(source) == len(examples)
    for i, want in enumerate(examples):
      got = source[i]
      assert set(got) == set(want)
      assert got['id'].decode() == want['id'] and got['raw_text'].decode() == want['raw_text']
      assert np.float32(got['regression']) == want['regression']
      for key in set(want) - {'id', 'raw_text', 'regression'}:
        assert got[key].dtype == np.float32 and got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)
  assert expected['train'][0]['raw_text'] == 'hello world again'
  assert expected['train'][1]['raw_text'] == 'nice movie yes'
  log = RepairLog.read(os.path.join(builder.data_dir, 'repairs.json'))
  assert log.counts() == repairs


def test_average_over_matches_sdk_overlap():
  """Touching intervals do not overlap; a partial overlap counts the whole row."""
  targets = np.array([[1.0, 2.0], [5.0, 6.0]])
  intervals = np.array([[0.0, 1.0], [0.5, 1.5], [1.5, 2.5], [2.0, 3.0]])
  features = np.array([[100.0], [1.0], [3.0], [100.0]])
  means, covered = csd.average_over(targets, intervals, features)
  np.testing.assert_array_equal(means, [[2.0], [0.0]])
  np.testing.assert_array_equal(covered, [True, False])


def _write_folds(tmp_path, folds):
  path = tmp_path / 'folds.json'
  path.write_text(json.dumps(folds))
  return path


@pytest.mark.parametrize(
  'folds, message',
  [
    ({'train': ['a'], 'valid': []}, r"missing keys \['test'\]"),
    (
      {'train': ['a'], 'valid': ['a'], 'test': []},
      r'split valid, example a: video listed twice '
      r'\(also in train\)',
    ),
    ({'train': 'a', 'valid': [], 'test': []}, r'split train: expected a list'),
  ],
)
def test_folds_errors(tmp_path, folds, message):
  with pytest.raises(SourceError, match=message):
    csd.read_folds(_write_folds(tmp_path, folds))


def test_sequence_errors(tmp_path):
  good = tmp_path / 'good.csd'
  write_csd(
    good,
    {
      'v': (np.zeros((3, 74)), np.zeros((3, 2))),
      'short': (np.zeros((3, 74)), np.zeros((2, 2))),
      'rank': (np.zeros(3), np.zeros((3, 2))),
    },
  )
  with csd.Sequence(good, 'audio') as seq:
    assert seq.videos() == ['rank', 'short', 'v'] and 'v' in seq and 'x' not in seq
    with pytest.raises(
      SourceError,
      match=rf'file {good}, split train, example v, field audio '
      r'features: expected shape \(N, 35\), found \(3, 74\)',
    ):
      seq.read('v', split='train', width=35)
    with pytest.raises(
      SourceError,
      match=r'example short, field audio intervals: expected shape '
      r'\(3, 2\), found \(2, 2\)',
    ):
      seq.read('short', split='train', width=74)
    with pytest.raises(SourceError, match=r'example rank, field audio features: expected shape'):
      seq.read('rank', split='train', width=74)
  not_hdf5 = tmp_path / 'text.csd'
  not_hdf5.write_text('hello')
  with pytest.raises(SourceError, match=rf'file {not_hdf5}: not a readable HDF5'):
    csd.Sequence(not_hdf5, 'audio')
  no_data = tmp_path / 'nodata.csd'
  with h5py.File(no_data, 'w') as f:
    f.create_group('root').create_group('metadata')
  with pytest.raises(SourceError, match=r'expected a group <root>/data'):
    csd.Sequence(no_data, 'audio')


def test_builder_reports_width_mismatch(tmp_path):
  files = cmu_mosi.CSD_FILES
  write_sdk_dataset(tmp_path, files, 1)
  audio = tmp_path / files.audio
  write_csd(audio, {'vidA': (np.zeros((4, 73)), np.zeros((4, 2)))})
  builder = cmu_mosi.CmuMosi(config='csd', data_dir=os.fspath(tmp_path / 'out'))
  with pytest.raises(
    SourceError,
    match=rf'file {audio}, split train, example vidA, field audio '
    r'features: expected shape \(N, 74\), found \(4, 73\)',
  ):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path))
    )
