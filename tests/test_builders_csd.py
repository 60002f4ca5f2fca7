"""CMU-MultimodalSDK `.csd` reader and the `csd` configs of cmu_mosi / cmu_mosei.

Fixtures are HDF5 files in the SDK's layout (tests/csd_fixtures.py). The builder is checked
against a plain-loop reference of the SDK's rules on a small randomised set, and the three rules
where it used to differ from the SDK (a word shorter than epsilon, a word across a segment
boundary, a non-finite frame) on hand-built files whose expected values are derived by hand
below. The shipped standard folds and the source digests are checked too.
"""

import json
import os

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from csd_fixtures import write_csd, write_sdk_dataset
from data_prep import build, cmu_mosei, cmu_mosi, csd, sources
from data_prep.sources import RepairLog, SourceError


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
  # 'edge' straddles the boundary 3.0: the SDK keeps it in both segments; 'blip' is too short.
  assert expected['train'][0]['raw_text'] == 'hello world again edge'
  assert expected['train'][1]['raw_text'] == 'edge nice movie yes'
  log = RepairLog.read(os.path.join(builder.data_dir, 'repairs.json'))
  assert log.counts() == repairs
  assert repairs[('train', 'text', 'word_too_short_skipped')] == 2  # 'blip' in vidA and vidB.
  assert repairs[('train', 'audio', 'word_without_rows_zeroed')] == 1  # 'movie' of vidA.
  assert repairs[('train', 'vision', 'nonfinite_mean_to_zero')] > 0


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


# --- the SDK's rules on hand-built files --------------------------------------------------------
HAND_DIMS = {'text': 1, 'audio': 2, 'vision': 1}
HAND_FILES = csd.CsdFiles(
  labels='labels.csd',
  words='words.csd',
  word_vectors='vectors.csd',
  audio='audio.csd',
  vision='vision.csd',
)


def _hand_examples(tmp_path, words, segments, audio, vision, vectors=None):
  """Writes one video 'v' (words: [(word, start, end)]; audio, vision: (features, intervals);
  vectors default: one row per word, value = its position) and reads it with the csd reader."""
  intervals = np.array([w[1:] for w in words], np.float64)
  if vectors is None:
    vectors = (np.arange(len(words), dtype=np.float64)[:, None], intervals)
  streams = {
    'labels': (np.arange(len(segments), dtype=np.float32)[:, None], np.array(segments)),
    'words': (np.array([[w[0].encode()] for w in words], dtype='S'), intervals),
    'word_vectors': vectors,
    'audio': audio,
    'vision': vision,
  }
  for key, name in HAND_FILES.sequences().items():
    write_csd(tmp_path / name, {'v': streams[key]})
  log = RepairLog()
  got = list(
    csd.examples(tmp_path, HAND_FILES, ['v'], split='train', dims=HAND_DIMS, label_width=1, log=log)
  )
  return got, log.counts()


def _steps(values, step):
  """(features (n, 1) = values, intervals [i * step, (i + 1) * step]): exact binary fractions."""
  values = np.asarray(values, np.float64).reshape(len(values), -1)
  starts = np.arange(len(values)) * step
  return values, np.stack([starts, starts + step], axis=1)


def test_word_shorter_than_epsilon_is_skipped(tmp_path):
  """(a) The SDK skips a word whose interval is shorter than its epsilon (1e-5 s)."""
  words = [('hi', 0.0, 0.5), ('blip', 0.5, 0.5 + 5e-6), ('there', 0.5, 1.0)]
  audio = _steps([[0, 10], [1, 11], [2, 12], [3, 13]], 0.25)  # frames of 0.25 s over [0, 1].
  vision = _steps([7, 9], 0.5)
  (got,), counts = _hand_examples(tmp_path, words, [[0.0, 1.0]], audio, vision)
  assert got['id'] == 'v[0]' and got['raw_text'] == 'hi there'
  # hi [0, 0.5] overlaps frames 0 and 1 (frame 2 only touches it): mean (0 + 1) / 2, (10 + 11) /
  # 2; there [0.5, 1] frames 2, 3. 'blip' has no row at all (the old reader gave it zeros).
  np.testing.assert_array_equal(got['audio'], [[0.5, 10.5], [2.5, 12.5]])
  np.testing.assert_array_equal(got['vision'], [[7.0], [9.0]])
  np.testing.assert_array_equal(got['text'], [[0.0], [2.0]])  # word vectors 0 and 2.
  assert counts == {('train', 'text', 'word_too_short_skipped'): 1}


def test_word_across_a_segment_boundary_is_in_both_segments(tmp_path):
  """(b) The SDK keeps a word in every segment its span overlaps by more than epsilon; the
  span is per modality (the word clipped to that modality's frames)."""
  words = [('one', 0.25, 0.75), ('straddle', 0.75, 1.25), ('two', 1.25, 1.75)]
  audio = _steps([[i, -i] for i in range(16)], 0.125)  # frames of 0.125 s over [0, 2].
  # Vision frames [0, 0.5] = 1, [0.5, 1] = 2, [1.5, 2] = 4: none over [1, 1.5], so the
  # straddling word's vision span is its part [0.75, 1] before the boundary.
  vision = (np.array([[1.0], [2.0], [4.0]]), np.array([[0.0, 0.5], [0.5, 1.0], [1.5, 2.0]]))
  (first, second), counts = _hand_examples(tmp_path, words, [[0.0, 1.0], [1.0, 2.0]], audio, vision)
  assert first['raw_text'] == 'one straddle' and second['raw_text'] == 'straddle two'
  # Audio: one [0.25, 0.75] = frames 2..5, mean 3.5; straddle [0.75, 1.25] = frames 6..9, 7.5;
  # two [1.25, 1.75] = frames 10..13, 11.5 (second column negated).
  np.testing.assert_array_equal(first['audio'], [[3.5, -3.5], [7.5, -7.5]])
  np.testing.assert_array_equal(second['audio'], [[7.5, -7.5], [11.5, -11.5]])
  np.testing.assert_array_equal(first['text'], [[0.0], [1.0]])
  np.testing.assert_array_equal(second['text'], [[1.0], [2.0]])
  # Vision: one overlaps frames 0 and 1 -> 1.5; straddle overlaps frame 1 only -> 2, span
  # [0.75, 1.0], inside the first segment and touching the second (overlap 0): so the second
  # segment's vision holds 'two' alone (frame 2 -> 4), one row fewer than its text, as in the SDK.
  np.testing.assert_array_equal(first['vision'], [[1.5], [2.0]])
  np.testing.assert_array_equal(second['vision'], [[4.0]])
  assert counts == {}


def test_nonfinite_frames_give_nonfinite_means_repaired_after_averaging(tmp_path):
  """(c) A non-finite frame makes the SDK's word mean non-finite; it becomes 0 afterwards
  (counted), instead of zeroing the frame before averaging."""
  words = [('a', 0.0, 0.5), ('b', 0.5, 1.0), ('c', 1.0, 1.5)]
  audio = _steps([[1, 2], [np.nan, 4], [-np.inf, 5], [np.inf, -np.inf], [2, 6], [4, 8]], 0.25)
  vision = _steps([3, 5, 7], 0.5)
  (got,), counts = _hand_examples(tmp_path, words, [[0.0, 1.5]], audio, vision)
  # a: mean of [1, 2] and [nan, 4] = [nan, 3] -> [0, 3] (zeroing first would give [0.5, 3]).
  # b: mean of [-inf, 5] and [inf, -inf] = [nan, -inf] -> [0, 0]. c: [3, 7].
  np.testing.assert_array_equal(got['audio'], [[0.0, 3.0], [0.0, 0.0], [3.0, 7.0]])
  assert got['audio'].dtype == np.float32
  assert counts == {('train', 'audio', 'nonfinite_mean_to_zero'): 3}


def test_word_without_frames_gets_zeros_as_the_sdk_impute(tmp_path):
  words = [('a', 0.0, 0.5), ('b', 0.5, 1.0)]
  audio = (np.array([[1.0, 2.0]]), np.array([[0.0, 0.5]]))  # nothing over b.
  vision = _steps([3, 5], 0.5)
  (got,), counts = _hand_examples(tmp_path, words, [[0.0, 1.0]], audio, vision)
  np.testing.assert_array_equal(got['audio'], [[1.0, 2.0], [0.0, 0.0]])
  assert counts == {('train', 'audio', 'word_without_rows_zeroed'): 1}


def test_overlaps_is_the_sdk_intersection():
  rows = np.array([[0.0, 1.0], [1.0, 2.0], [0.999995, 1.5], [2.0, 3.0], [1.5, 1.500004]])
  # Against [1, 2]: [0, 1] touches (width 0); [1, 2] overlaps; [0.999995, 1.5] overlaps by
  # 0.5; [2, 3] touches; [1.5, 1.500004] lies inside but is shorter than epsilon.
  np.testing.assert_array_equal(
    csd.overlaps(np.array([1.0, 2.0]), rows), [False, True, True, False, False]
  )
  # An overlap of 5e-6 is not enough; 2e-5 is.
  assert not csd.overlaps(np.array([1.0, 2.0]), np.array([[0.5, 1.000005]]))[0]
  assert csd.overlaps(np.array([1.0, 2.0]), np.array([[0.5, 1.00002]]))[0]


# --- shipped standard folds and source digests ---------------------------------------------------
@pytest.mark.parametrize(
  'name, sizes', [('cmu_mosi', (52, 10, 31)), ('cmu_mosei', (2249, 300, 678))]
)
def test_shipped_standard_folds(name, sizes):
  folds = csd.read_folds(csd.shipped_folds(name))  # raises if a video is in two folds.
  assert tuple(len(folds[f]) for f in ('train', 'valid', 'test')) == sizes
  videos = [v for f in folds.values() for v in f]
  assert len(set(videos)) == len(videos) == sum(sizes)
  assert os.path.isfile(os.fspath(csd.shipped_folds(name)))


def _mosi_videos():
  """One real CMU-MOSI video id of each standard fold, and one in none."""
  folds = csd.read_folds(csd.shipped_folds('cmu_mosi'))
  return {folds['train'][0]: 'train', folds['valid'][0]: 'valid', folds['test'][0]: 'test'}


def test_build_without_folds_json_uses_the_shipped_folds(tmp_path):
  files = cmu_mosi.CSD_FILES
  videos = _mosi_videos()
  expected, repairs = write_sdk_dataset(tmp_path, files, 1, videos=videos, folds=False)
  assert not (tmp_path / files.folds).exists()
  builder = cmu_mosi.CmuMosi(config='csd', data_dir=os.fspath(tmp_path / 'out'))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path))
  )
  for split, examples in expected.items():
    assert [e['id'].decode() for e in builder.as_data_source(split)] == [e['id'] for e in examples]
  assert [len(v) for v in expected.values()] == [2, 2, 2]
  log = RepairLog.read(os.path.join(builder.data_dir, sources.REPAIRS_FILE))
  # The other 51/9/30 fold videos are not in these files: dropped and counted.
  missing = {
    (f, 'labels', 'dropped_video_missing'): n for f, n in zip(videos.values(), (51, 9, 30))
  }
  assert log.counts() == {**repairs, **missing}
  assert 'shipped standard folds data_prep/standard_folds/cmu_mosi.json' in log.notes['folds']
  shipped = sources.file_digest(csd.shipped_folds('cmu_mosi'))
  assert log.sources['cmu_mosi.json'] == shipped
  text = build.repairs_text(os.path.join(builder.data_dir, sources.REPAIRS_FILE))
  assert f'{shipped["sha256"]}  ' in text and 'folds: no folds.json in the manual dir' in text


@pytest.mark.parametrize(
  'builder_cls, label_width', [(cmu_mosi.CmuMosi, 1), (cmu_mosei.CmuMosei, 7)]
)
def test_user_folds_json_wins_and_sources_are_digested(tmp_path, builder_cls, label_width):
  files = builder_cls.BUILDER_CONFIGS[-1].csd_files
  # Videos of no standard fold: the build finds them only through the user's folds.json.
  videos = {'vidA': 'train', 'vidC': 'valid', 'vidD': 'test', 'extra': None}
  expected, repairs = write_sdk_dataset(tmp_path, files, label_width, videos=videos)
  builder = builder_cls(config='csd', data_dir=os.fspath(tmp_path / 'out'))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path))
  )
  for split, examples in expected.items():
    assert [e['id'].decode() for e in builder.as_data_source(split)] == [e['id'] for e in examples]
    assert len(examples) == 2
  log = RepairLog.read(os.path.join(builder.data_dir, sources.REPAIRS_FILE))
  assert log.counts() == repairs
  assert log.notes['folds'].startswith('folds.json from the manual dir')
  names = [*files.sequences().values(), files.folds]
  want = {name: sources.file_digest(tmp_path / name) for name in names}
  assert log.sources == want
  assert want['folds.json']['bytes'] == (tmp_path / 'folds.json').stat().st_size
  # The same digests in the dataset's metadata, also when the built dataset is opened again.
  assert dict(builder.info.metadata)['sources'] == want
  again = tfds.builder(builder.name, config='csd', data_dir=os.fspath(tmp_path / 'out'))
  assert again.version == '1.1.0' and dict(again.info.metadata)['sources'] == want
