"""The `synthetic_affect` builder: contract, determinism, and a label that needs aligned cues."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import synthetic_affect as sa


def _build(data_dir) -> tfds.core.DatasetBuilder:
  builder = tfds.builder('synthetic_affect', config='tiny', data_dir=str(data_dir))
  builder.download_and_prepare(file_format='array_record')
  return builder


@pytest.fixture(scope='module')
def builder(tmp_path_factory):
  return _build(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def examples(builder):
  """split -> list of decoded examples."""
  return {split: list(builder.as_data_source(split)) for split in sa.SPLITS}


def test_split_sizes(builder):
  sizes = {split: builder.info.splits[split].num_examples for split in sa.SPLITS}
  assert sizes == {'train': 96, 'validation': 32, 'test': 32}


def test_examples_follow_the_contract(examples):
  ids = set()
  for split, exs in examples.items():
    for ex in exs:
      num_words = len(ex['raw_text'].split())
      assert ex['text'].shape == (num_words, 768) and 6 <= num_words <= 12
      assert ex['audio'].shape[1:] == (74,) and 10 <= len(ex['audio']) <= 30
      assert ex['vision'].shape[1:] == (35,) and 10 <= len(ex['vision']) <= 30
      for m in ('text', 'audio', 'vision'):
        assert ex[m].dtype == np.float32 and np.isfinite(ex[m]).all()
      assert -3 <= ex['regression'] <= 3
      assert ex['label'] == sa.sentiment_class(ex['regression'])
      assert ex['id'].decode().startswith(split + '_')
      ids.add(ex['id'])
  assert len(ids) == 160
  everything = [ex for exs in examples.values() for ex in exs]
  for m in ('text', 'audio', 'vision'):
    assert len({len(ex[m]) for ex in everything}) > 4, f'{m} lengths do not vary'
  assert np.bincount([ex['label'] for ex in everything], minlength=3).min() > 20
  assert np.mean([abs(ex['regression']) < 0.05 for ex in everything]) < 0.1


def test_rebuild_gives_identical_data(examples, tmp_path):
  rebuilt = _build(tmp_path)
  for split in sa.SPLITS:
    again = {ex['id']: ex for ex in rebuilt.as_data_source(split)}
    for ex in examples[split]:
      other = again[ex['id']]
      for key in ('text', 'audio', 'vision'):
        np.testing.assert_array_equal(ex[key], other[key])
      assert (ex['regression'], ex['label'], ex['raw_text']) == (
        other['regression'],
        other['label'],
        other['raw_text'],
      )


def test_label_needs_aligned_audio_and_vision(examples):
  everything = [ex for exs in examples.values() for ex in exs]
  target = np.array([ex['regression'] for ex in everything])

  def corr(score):
    return np.corrcoef([score(ex) for ex in everything], target)[0, 1]

  aligned = corr(sa.oracle_score)
  assert aligned > 0.95
  assert corr(lambda ex: sa.oracle_parts(ex)['text']) < 0.7
  assert corr(lambda ex: sa.oracle_score(ex, align=False)) < aligned - 0.15


@pytest.mark.parametrize('lag', [-3.6, -0.6, 0.1, 2.2, 3.7])  # |lag| <= 1.5 * 30 / 12
def test_sync_codes_recover_the_lag(lag):
  rng = np.random.default_rng(0)
  num_words, num_frames = 12, 30
  codes = rng.standard_normal((num_words, sa.CODE_DIM))
  stream = 0.3 * rng.standard_normal((num_frames, sa.CODE_DIM))
  edges = np.clip(sa.word_edges(num_words, num_frames, lag), 0, num_frames)
  for (start, end), code in zip(edges, codes):
    stream[start:end] += code
  found = sa.estimate_lag(codes, stream)
  np.testing.assert_array_equal(
    np.clip(sa.word_edges(num_words, num_frames, found), 0, num_frames), edges
  )


def test_word_edges_tile_the_stream():
  edges = sa.word_edges(7, 19, 0.0)
  assert edges.shape == (7, 2) and edges[0, 0] == 0 and edges[-1, 1] == 19
  np.testing.assert_array_equal(edges[1:, 0], edges[:-1, 1])
  np.testing.assert_array_equal(sa.word_edges(7, 19, 2.0), edges + 2)


def test_default_config_lengths():
  config = sa.SyntheticAffect.builder_configs['default']
  assert config.num_examples == (2000, 400, 600)
  rng = np.random.default_rng(0)
  for _ in range(20):
    ex = sa.generate_example(rng, config)
    num_words = len(ex['text'])
    assert 16 <= num_words <= 40
    for m in ('audio', 'vision'):
      assert 2 * num_words <= len(ex[m]) <= 3 * num_words
