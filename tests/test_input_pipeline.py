"""Input pipeline on the tiny synthetic dataset: layout, eval coverage, sharding, resume, errors."""

import sys
import types

from absl import flags
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fasca_jax import input_pipeline

MAX_LEN = {'text': 8, 'audio': 20, 'vision': 32}  # Tiny lengths: text 6-12, streams 12-30.


def _config(data_dir, name='synthetic_affect', variant='tiny', **overrides):
  config = ml_collections.ConfigDict(
    {
      'dataset': {'name': name, 'config': variant},
      'data_dir': str(data_dir),
      'modalities': ('text', 'audio', 'vision'),
      'max_len': MAX_LEN,
      'dims': {'text': 768, 'audio': 74, 'vision': 35},
      'batch_size': 16,
      'seed': 0,
    }
  )
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  """Tiny config; the first `make_batches` builds the dataset into a fresh data_dir."""
  return _config(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def source(config):
  """split -> {id: decoded example}."""
  builder = input_pipeline.ensure_built(config)
  return {
    split: {ex['id'].decode(): ex for ex in builder.as_data_source(split)}
    for split in ('train', 'validation', 'test')
  }


def _batches(config, split, **kwargs):
  return input_pipeline.make_batches(input_pipeline.open_dataset(config), split, **kwargs)


def _eval(config, split='validation', batch_size=10, **kwargs):
  return list(_batches(config, split, train=False, global_batch_size=batch_size, seed=0, **kwargs))


def _ids(batches):
  return [i for batch in batches for i, valid in zip(batch['id'], batch['valid']) if valid]


def test_batch_layout_matches_source(config, source):
  batch = next(_batches(config, 'train', train=True, global_batch_size=16, seed=1))
  assert batch['id'].shape == (16,) and isinstance(batch['id'][0], str)
  assert batch['valid'].dtype == bool and batch['valid'].all()
  assert batch['regression'].dtype == np.float32 and batch['regression'].shape == (16,)
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (16,)
  for m, max_len in MAX_LEN.items():
    dim = config.dims[m]
    assert batch[m].dtype == np.float32 and batch[m].shape == (16, max_len, dim)
    assert batch[m + '_mask'].dtype == bool and batch[m + '_mask'].shape == (16, max_len)
    assert batch[m + '_len'].dtype == np.int32 and batch[m + '_len'].shape == (16,)
  cropped = 0
  for row, example_id in enumerate(batch['id']):
    ex = source['train'][example_id]
    assert batch['regression'][row] == ex['regression'] and batch['label'][row] == ex['label']
    for m, max_len in MAX_LEN.items():
      length, keep = len(ex[m]), min(len(ex[m]), max_len)
      cropped += length > max_len
      assert batch[m + '_len'][row] == length
      assert batch[m + '_mask'][row].sum() == keep and batch[m + '_mask'][row, :keep].all()
      np.testing.assert_array_equal(batch[m][row, :keep], ex[m][:keep])
      assert not batch[m][row, keep:].any()
  assert cropped > 0


@pytest.mark.parametrize('batch_size', [10, 32, 7])
def test_eval_covers_every_example_once(config, source, batch_size):
  batches = _eval(config, batch_size=batch_size)
  assert len(batches) == -(-32 // batch_size)
  ids = _ids(batches)
  assert sorted(ids) == sorted(source['validation'])
  padding = np.concatenate([~b['valid'] for b in batches])
  assert padding.sum() == len(batches) * batch_size - 32
  last = batches[-1]
  for row in np.flatnonzero(~last['valid']):
    assert last['id'][row] == ''
    assert not last['text_mask'][row].any() and not last['audio'][row].any()


@pytest.mark.parametrize('count', [2, 3])
def test_eval_processes_split_the_data(config, source, count):
  per_process = [
    _eval(config, batch_size=6 * count, process_index=i, process_count=count) for i in range(count)
  ]
  assert len({len(batches) for batches in per_process}) == 1  # No deadlock in collective eval.
  ids = [_ids(batches) for batches in per_process]
  assert sum(len(i) for i in ids) == 32
  assert set().union(*ids) == set(source['validation'])
  assert all(batch['id'].shape == (6,) for batches in per_process for batch in batches)


def test_eval_pads_with_invalid_batches_when_a_shard_is_short(config):
  # 32 examples over 3 processes: 11, 11, 10; a local batch of 10 gives 2, 2 and 1 real batches.
  last = _eval(config, batch_size=30, process_index=2, process_count=3)
  assert len(last) == 2 and last[0]['valid'].all() and not last[1]['valid'].any()


def test_train_processes_read_disjoint_slices(config, source):
  epochs = []
  for index in range(2):
    it = _batches(
      config,
      'train',
      train=True,
      global_batch_size=16,
      seed=3,
      process_index=index,
      process_count=2,
    )
    ids = [i for _ in range(6) for i in next(it)['id']]  # 48 examples per process, 8 per batch.
    assert len(set(ids)) == 48
    epochs.append(set(ids))
  assert not epochs[0] & epochs[1]
  assert epochs[0] | epochs[1] == set(source['train'])


def test_shuffle_is_deterministic_per_seed(config):
  def first_ids(seed, train=True):
    it = _batches(config, 'train', train=train, global_batch_size=16, seed=seed, shuffle=True)
    return [list(next(it)['id']) for _ in range(3)]

  assert first_ids(1) == first_ids(1)
  assert first_ids(1) != first_ids(2)
  assert first_ids(1, train=False) == first_ids(1, train=False)


def test_get_state_set_state_resumes_exactly(config):
  def batches():
    return _batches(config, 'train', train=True, global_batch_size=16, seed=5)

  it = batches()
  for _ in range(9):  # Past the first epoch (6 batches).
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = batches()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    assert list(got['id']) == list(want['id'])
    np.testing.assert_array_equal(got['audio'], want['audio'])


def test_counts(config):
  dataset = input_pipeline.open_dataset(config)
  assert dataset.num_examples('train') == 96
  assert dataset.steps_per_epoch(config.batch_size) == 6


def test_batch_must_divide_over_processes(config):
  with pytest.raises(ValueError, match='does not divide'):
    _batches(
      config, 'train', train=True, global_batch_size=15, seed=0, process_index=0, process_count=2
    )


def test_width_mismatch_is_reported(config):
  wrong = _config(config.data_dir, dims={'text': 768, 'audio': 5, 'vision': 35})
  message = r"synthetic_affect/tiny.*'audio'.*\(None, 74\).*\(None, 5\)"
  with pytest.raises(ValueError, match=message):
    input_pipeline.open_dataset(wrong)


# Two small builders registered under data_prep.<name> for the error paths.


class ManualOnlyAffect(tfds.core.GeneratorBasedBuilder):
  """Stands for a builder that needs manually downloaded files."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Place the pickles in the manual dir.'
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='aligned')]

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self, features=tfds.features.FeaturesDict({'id': tfds.features.Text()})
    )

  def _split_generators(self, dl_manager):
    raise AssertionError('must not be built by the input pipeline')

  def _generate_examples(self):
    raise AssertionError('must not be built by the input pipeline')


class TextOnlyAffect(tfds.core.GeneratorBasedBuilder):
  """Auto-built text-only data with one non-finite example ('nan')."""

  VERSION = tfds.core.Version('1.0.0')
  BUILD_AUTOMATICALLY = True

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          'id': tfds.features.Text(),
          'text': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
          'regression': tfds.features.Scalar(np.float32),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {'test': self._generate_examples()}

  def _generate_examples(self):
    for i, value in enumerate([0.0, 1.0, np.nan]):
      example_id = 'nan' if np.isnan(value) else str(i)
      yield (
        example_id,
        {'id': example_id, 'regression': 0.0, 'text': np.full((3, 4), value, np.float32)},
      )


@pytest.fixture
def dummy_modules(monkeypatch):
  for name in ('manual_only_affect', 'text_only_affect'):
    monkeypatch.setitem(sys.modules, f'data_prep.{name}', types.ModuleType(name))


def test_unbuilt_manual_dataset_names_the_build_command(dummy_modules, tmp_path):
  del dummy_modules
  config = _config(tmp_path, name='manual_only_affect', variant='aligned')
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.open_dataset(config)
  assert f'manual_only_affect/aligned is not built under data_dir={tmp_path}' in str(error.value)
  assert (
    f'python -m data_prep.build --dataset=manual_only_affect --config=aligned '
    f'--manual_dir=DIR --data_dir={tmp_path}'
  ) in str(error.value)


def test_missing_modality_and_non_finite_values(dummy_modules, tmp_path):
  del dummy_modules
  config = _config(tmp_path, name='text_only_affect', variant=None, dims={'text': 4})
  with pytest.raises(ValueError, match=r"Modality 'audio'.*dataset text_only_affect \("):
    input_pipeline.open_dataset(config)
  config.modalities, config.max_len = ('text',), {'text': 2}
  with pytest.raises(ValueError, match="field 'text' of example 'nan'"):
    _eval(config, split='test', batch_size=4)


def test_worker_processes_give_the_same_batches(config):
  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags; train.py parses them in app.run.
  with_workers = _config(config.data_dir, num_workers=1)
  want, got = (
    _batches(c, 'test', train=True, global_batch_size=8, seed=2) for c in (config, with_workers)
  )
  pairs = [(next(want), next(got)) for _ in range(2)]
  pairs += zip(_eval(config, split='test'), _eval(with_workers, split='test'), strict=True)
  for a, b in pairs:
    assert list(a['id']) == list(b['id'])
    np.testing.assert_array_equal(a['vision'], b['vision'])


def test_index_is_the_position_in_the_split(config, source):
  batches = _eval(config, batch_size=10)
  index = np.concatenate([b['index'] for b in batches])
  valid = np.concatenate([b['valid'] for b in batches])
  assert list(index[valid]) == list(range(32)) and set(index[~valid]) == {-1}
  stored = list(source['validation'])  # the source's ids, in stored order
  assert [stored[i] for i in index[valid]] == _ids(batches)
  train = next(_batches(config, 'train', train=True, global_batch_size=16, seed=1))
  ids = input_pipeline.split_summary(input_pipeline.open_dataset(config), 'train').ids
  assert list(ids[train['index']]) == list(train['id'])


def test_split_summary_is_read_once_and_counts_cropped_examples(config, source, monkeypatch):
  dataset = input_pipeline.open_dataset(config)
  summary = input_pipeline.split_summary(dataset, 'train')
  examples = source['train']
  assert list(summary.ids) == list(examples)
  for m in MAX_LEN:
    assert list(summary.lengths[m]) == [len(ex[m]) for ex in examples.values()]
  assert summary.cropped(MAX_LEN) == {
    m: sum(len(ex[m]) > n for ex in examples.values()) for m, n in MAX_LEN.items()
  }
  assert summary.cropped(MAX_LEN)['text'] > 0  # tiny texts have 6-12 words, MAX_LEN 8.
  # The second call reads the cache, not the split.
  monkeypatch.setattr(
    type(dataset.source('train')), '__getitem__', lambda *a: pytest.fail('read the split again')
  )
  again = input_pipeline.split_summary(dataset, 'train')
  assert list(again.ids) == list(summary.ids)
  np.testing.assert_array_equal(again.lengths['audio'], summary.lengths['audio'])
