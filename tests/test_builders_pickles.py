"""MMSA / MulT readers, the cmu_mosi, cmu_mosei and iemocap builders, and data_prep.build.

Fixtures are written in the released formats (keys, dtypes, shapes, padding, MMSA's -inf audio,
byte-string ids, NumPy-1.x pickles); every build is read back value for value.
"""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import build, cmu_mosei, cmu_mosi, iemocap, mmsa, mult, registry, safe_pickle
from data_prep.sources import RepairLog, SourceError, file_digest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = {'train': 'train', 'valid': 'validation', 'test': 'test'}
MOSI_MMSA = {'text': 768, 'audio': 5, 'vision': 20}
MOSEI_MMSA = {'text': 768, 'audio': 74, 'vision': 35}
MOSI_MULT = {'text': 300, 'audio': 74, 'vision': 47}
IEMOCAP_MULT = {'text': 300, 'audio': 74, 'vision': 35}


def _write_numpy1_pickle(path, obj):
  """Pickles `obj` as MMSA/MulT did: protocol 2, NumPy 1.x module names."""
  data = pickle.dumps(obj, protocol=2).replace(b'numpy._core.', b'numpy.core.')
  path.write_bytes(data)


def _zeroed(x):
  """`x` as float32 with non-finite values 0, and how many there were."""
  x = np.asarray(x, np.float32)
  return np.where(np.isfinite(x), x, 0).astype(np.float32), int((~np.isfinite(x)).sum())


class Expected:
  """Expected examples per TFDS split and repair counts, filled while writing a fixture."""

  def __init__(self):
    self.examples = {split: [] for split in SPLITS.values()}
    self.repairs = {}

  def count(self, split, field, kind, n=1):
    if n:
      key = (split, field, kind)
      self.repairs[key] = self.repairs.get(key, 0) + n

  def features(self, split, example, **arrays):
    """Adds `arrays` to `example`, zeroing and counting their non-finite values."""
    for field, value in arrays.items():
      example[field], bad = _zeroed(value)
      self.count(split, field, 'nonfinite_to_zero', bad)
    return example


def _mmsa_split(rng, split, n, *, aligned, dims, expected, id_dtype):
  """One MMSA split dict (N = n), recording its expected examples."""
  steps = (50, 50, 50) if aligned else (50, 375, 500)
  text_len = rng.integers(5, 50, n)
  text = rng.standard_normal((n, steps[0], dims['text'])).astype(np.float32)
  text_bert = np.zeros((n, 3, steps[0]))
  for i, length in enumerate(text_len):
    text[i, length:] = 0
    text_bert[i, 0, :length] = rng.integers(100, 30000, length)
    text_bert[i, 1, :length] = 1
    text_bert[i, 2, :length] = rng.integers(0, 2, length)  # segment ids reach the dataset too.
  audio = rng.standard_normal((n, steps[1], dims['audio'])).astype(np.float32)
  audio[:, :3, 0] = -np.inf  # Inside every sequence: repaired and counted.
  audio[:, -1, :] = -np.inf  # Padding: cut, not counted.
  vision = rng.standard_normal((n, steps[2], dims['vision'])).astype(np.float32)
  lengths = (
    {'audio': text_len, 'vision': text_len}
    if aligned
    else {'audio': rng.integers(0, steps[1] - 1, n), 'vision': rng.integers(1, steps[2], n)}
  )
  ids = np.array([f'vid{split}{i // 2}$_$clip{i}' for i in range(n)], dtype=id_dtype)
  raw_text = np.array([f'words of {split} {i}' for i in range(n)], dtype=object)
  labels = rng.uniform(-3, 3, n).astype(np.float32)
  labels[-1] = np.nan
  part = {
    'id': ids,
    'raw_text': raw_text,
    'text': text,
    'text_bert': text_bert,
    'audio': audio,
    'vision': vision,
    'regression_labels': labels,
    'classification_labels': labels > 0,
    'annotations': np.array(['Positive'] * n, dtype=object),
  }
  if not aligned:
    part['audio_lengths'] = lengths['audio']
    part['vision_lengths'] = lengths['vision']
  tfds_split = SPLITS[split]
  for i in range(n - 1):
    example = {
      'id': f'vid{split}{i // 2}$_$clip{i}',
      'raw_text': raw_text[i],
      'regression': labels[i],
      'text_ids': text_bert[i, 0, : text_len[i]].astype(np.int32),  # text_bert rows 0 and 2
      'text_segments': text_bert[i, 2, : text_len[i]].astype(np.int32),
    }
    expected.examples[tfds_split].append(
      expected.features(
        split,
        example,
        text=text[i, : text_len[i]],
        audio=audio[i, : lengths['audio'][i]],
        vision=vision[i, : lengths['vision'][i]],
      )
    )
  expected.count(split, 'regression_labels', 'dropped_nonfinite_label')
  return part


def write_mmsa(directory, *, aligned, dims, seed=0):
  """Writes an MMSA pickle (N = 4/3/3) into `directory`; returns its `Expected`."""
  rng = np.random.default_rng(seed)
  expected = Expected()
  data = {
    split: _mmsa_split(
      rng, split, n, aligned=aligned, dims=dims, expected=expected, id_dtype=id_dtype
    )
    for split, n, id_dtype in (('train', 4, object), ('valid', 3, 'S'), ('test', 3, 'U'))
  }
  name = 'aligned_50.pkl' if aligned else 'unaligned_50.pkl'
  _write_numpy1_pickle(directory / name, data)
  return expected


def _one_hot(rng, n):
  """(n, 4, 2) float32 one-hot emotion rows."""
  present = rng.integers(0, 2, (n, 4))
  return np.eye(2, dtype=np.float32)[present], present.astype(np.int32)


def _mult_split(rng, split, n, *, aligned, dims, task, id_kind, expected):
  """One MulT split dict (N = n), front-padded when unaligned, recording expected examples."""
  steps = (20, 20, 20) if aligned else (50, 375, 500)
  arrays = {}
  for m, t, dtype in zip(('text', 'audio', 'vision'), steps, (np.float32, np.float64, np.float32)):
    arrays[m] = rng.standard_normal((n, t, dims[m])).astype(dtype)
    if not aligned:
      arrays[m][:, : t // 3] = 0  # MulT pads at the front.
  arrays['audio'][0, -1, :4] = np.nan
  arrays['vision'][-1, 2, 1] = np.inf
  if task == 'iemocap':
    arrays['labels'], targets = _one_hot(rng, n)
  else:
    targets = rng.uniform(-3, 3, n).astype(np.float32)
    arrays['labels'] = targets.reshape(n, 1, 1)
  if id_kind == 'parts':
    arrays['id'] = np.array([[f'v{split}{i}', f'{i}.5', f'{i + 3}'] for i in range(n)], dtype='S')
    ids = [f'v{split}{i}$_${i}.5$_${i + 3}' for i in range(n)]
  else:
    ids = [f'{split}_{i:05d}' for i in range(n)]
    expected.count(split, 'id', 'generated_id', n)
  for i in range(n):
    example = {'id': ids[i], ('label' if task == 'iemocap' else 'regression'): targets[i]}
    expected.examples[SPLITS[split]].append(
      expected.features(split, example, **{m: arrays[m][i] for m in ('text', 'audio', 'vision')})
    )
  return arrays


def write_mult(path, *, aligned, dims, task='regression', id_kind='parts', seed=1):
  """Writes a MulT pickle (N = 3/2/2) at `path`; returns its `Expected`."""
  rng = np.random.default_rng(seed)
  expected = Expected()
  data = {
    split: _mult_split(
      rng, split, n, aligned=aligned, dims=dims, task=task, id_kind=id_kind, expected=expected
    )
    for split, n in (('train', 3), ('valid', 2), ('test', 2))
  }
  _write_numpy1_pickle(path, data)
  return expected


def _build(builder_cls, config, manual_dir, data_dir):
  """Builds with the builder's defaults (array_record) from `manual_dir`."""
  builder = builder_cls(config=config, data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  )
  return builder


def assert_built(builder, expected):
  """Every split of `builder` equals `expected.examples`, in order; repairs.json its repairs."""
  for split, examples in expected.examples.items():
    source = builder.as_data_source(split)
    assert len(source) == len(examples), split
    for i, want in enumerate(examples):
      got = source[i]
      assert set(got) == set(want), (split, i)
      for key, value in want.items():
        if isinstance(value, str):
          assert got[key].decode() == value, (split, i, key)
        elif np.ndim(value) == 0:  # TFDS decodes scalars to Python numbers.
          assert np.asarray(got[key], np.asarray(value).dtype) == value, (split, i, key)
        else:
          assert got[key].dtype == value.dtype and got[key].shape == value.shape, (split, i, key)
          np.testing.assert_array_equal(got[key], value, err_msg=f'{split} {i} {key}')
  repairs = RepairLog.read(os.path.join(builder.data_dir, 'repairs.json'))
  assert repairs.counts() == expected.repairs


def assert_sources(builder, manual_dir):
  """The build log and the dataset's metadata hold the pickle's SHA-256 and size."""
  name = builder.builder_config.pickle_name
  want = {name: file_digest(manual_dir / name)}
  assert want[name]['bytes'] == (manual_dir / name).stat().st_size
  assert RepairLog.read(os.path.join(builder.data_dir, 'repairs.json')).sources == want
  assert dict(builder.info.metadata)['sources'] == want


@pytest.mark.parametrize(
  'builder_cls, config, dims',
  [
    (cmu_mosi.CmuMosi, 'mmsa_aligned', MOSI_MMSA),
    (cmu_mosi.CmuMosi, 'mmsa_unaligned', MOSI_MMSA),
    (cmu_mosei.CmuMosei, 'mmsa_unaligned', MOSEI_MMSA),
  ],
)
def test_mmsa_builders(tmp_path, builder_cls, config, dims):
  expected = write_mmsa(tmp_path, aligned=config == 'mmsa_aligned', dims=dims)
  builder = _build(builder_cls, config, tmp_path, tmp_path / 'out')
  assert_built(builder, expected)
  assert_sources(builder, tmp_path)


@pytest.mark.parametrize(
  'builder_cls, config, file, dims, task, id_kind',
  [
    (cmu_mosi.CmuMosi, 'mult_aligned', 'mosi_data.pkl', MOSI_MULT, 'regression', 'parts'),
    (cmu_mosi.CmuMosi, 'mult_unaligned', 'mosi_data_noalign.pkl', MOSI_MULT, 'regression', 'none'),
    (
      cmu_mosei.CmuMosei,
      'mult_aligned',
      'mosei_senti_data.pkl',
      IEMOCAP_MULT,
      'regression',
      'parts',
    ),
    (iemocap.Iemocap, 'mult_aligned', 'iemocap_data.pkl', IEMOCAP_MULT, 'iemocap', 'none'),
    (
      iemocap.Iemocap,
      'mult_unaligned',
      'iemocap_data_noalign.pkl',
      IEMOCAP_MULT,
      'iemocap',
      'parts',
    ),
  ],
)
def test_mult_builders(tmp_path, builder_cls, config, file, dims, task, id_kind):
  expected = write_mult(
    tmp_path / file, aligned=config == 'mult_aligned', dims=dims, task=task, id_kind=id_kind
  )
  builder = _build(builder_cls, config, tmp_path, tmp_path / 'out')
  assert_built(builder, expected)
  assert_sources(builder, tmp_path)


def _mmsa_valid(tmp_path, aligned=False):
  """The 'valid' split of a MOSI MMSA fixture, as loaded, and the pickle's path."""
  write_mmsa(tmp_path, aligned=aligned, dims=MOSI_MMSA)
  path = tmp_path / ('aligned_50.pkl' if aligned else 'unaligned_50.pkl')
  return safe_pickle.load(path)['valid'], path


def _drop_vision(part):
  del part['vision']


def _rank2_audio(part):
  part['audio'] = part['audio'][:, :, 0]


def _short_labels(part):
  part['regression_labels'] = part['regression_labels'][:-1]


def _long_audio(part):
  part['audio_lengths'][1] = 376


def _wide_vision(part):
  part['vision'] = np.zeros((3, 500, 35), np.float32)


def _bad_mask(part):
  part['text_bert'] = part['text_bert'][:, :2]


def _short_ids(part):
  part['id'] = part['id'][:-1]


@pytest.mark.parametrize(
  'corrupt, message',
  [
    (_drop_vision, r"split valid: missing keys \['vision'\]"),
    (_rank2_audio, r'split valid, field audio: expected shape \(3, \?, 5\), found \(3, 375\)'),
    (_short_labels, r'field regression_labels: expected shape \(3\), found \(2,\)'),
    (
      _long_audio,
      r'example vidvalid0\$_\$clip1, field audio_lengths: length 376 is not an '
      r'integer in \[0, 375\]',
    ),
    (_wide_vision, r'field vision: expected shape \(3, \?, 20\), found \(3, 500, 35\)'),
    (_bad_mask, r'field text_bert: expected shape \(3, 3, 50\), found \(3, 2, 50\)'),
    (_short_ids, r'split valid, field id: expected shape \(3\), found \(2,\)'),
  ],
)
def test_mmsa_errors(tmp_path, corrupt, message):
  part, path = _mmsa_valid(tmp_path)
  corrupt(part)
  with pytest.raises(SourceError, match=message) as err:
    mmsa.examples(part, path=path, split='valid', dims=MOSI_MMSA, aligned=False, log=RepairLog())
  assert str(err.value).startswith(f'file {path}, ')


def test_mmsa_aligned_needs_equal_steps(tmp_path):
  part, path = _mmsa_valid(tmp_path, aligned=True)
  part['vision'] = np.zeros((3, 49, 20), np.float32)
  with pytest.raises(SourceError, match='aligned pickle needs equal steps'):
    mmsa.examples(part, path=path, split='valid', dims=MOSI_MMSA, aligned=True, log=RepairLog())


def _mult_part(tmp_path, task='regression'):
  """The 'train' split of a MulT fixture, as loaded, and the pickle's path."""
  path = tmp_path / 'm.pkl'
  write_mult(path, aligned=True, dims=IEMOCAP_MULT, task=task)
  return safe_pickle.load(path)['train'], path


@pytest.mark.parametrize(
  'task, corrupt, message',
  [
    ('regression', lambda p: p.pop('labels'), r"missing keys \['labels'\]"),
    (
      'regression',
      lambda p: p.update(labels=p['labels'][:2]),
      r'field labels: expected shape \(3, 1, 1\), found \(2, 1, 1\)',
    ),
    (
      'regression',
      lambda p: p.update(vision=p['vision'][:, :5]),
      r'aligned pickle needs equal steps',
    ),
    ('regression', lambda p: p.update(id=p['id'][:2]), r'field id: expected 3 rows'),
    (
      'regression',
      lambda p: p.update(text=p['text'][:2]),
      r'field text: expected shape \(3, \?, 300\), found \(2, 20, 300\)',
    ),
    (
      'iemocap',
      lambda p: p.update(labels=p['labels'][:, :, 0]),
      r'field labels: expected shape \(3, 4, 2\), found \(3, 4\)',
    ),
  ],
)
def test_mult_errors(tmp_path, task, corrupt, message):
  part, path = _mult_part(tmp_path, task)
  corrupt(part)
  with pytest.raises(SourceError, match=message):
    mult.examples(
      part, path=path, split='train', dims=IEMOCAP_MULT, aligned=True, task=task, log=RepairLog()
    )


def test_iemocap_label_must_be_one_hot(tmp_path):
  part, path = _mult_part(tmp_path, 'iemocap')
  part['labels'][1, 2] = [1, 1]
  examples = mult.examples(
    part, path=path, split='train', dims=IEMOCAP_MULT, aligned=True, task='iemocap', log=RepairLog()
  )
  next(examples)
  with pytest.raises(
    SourceError,
    match=r'example vtrain1\$_\$1\.5\$_\$4, field labels: '
    r'expected one-hot',
  ):
    next(examples)


def test_builder_reports_width_mismatch(tmp_path):
  """MOSEI widths in the MOSI config: the error names file, field, expected and found shape."""
  write_mmsa(tmp_path, aligned=True, dims=MOSEI_MMSA)
  with pytest.raises(
    SourceError,
    match=(
      rf'file {tmp_path / "aligned_50.pkl"}, split train, field audio: expected shape '
      r'\(4, \?, 5\), found \(4, 50, 74\)'
    ),
  ):
    _build(cmu_mosi.CmuMosi, 'mmsa_aligned', tmp_path, tmp_path / 'out')


def test_builder_names_missing_file(tmp_path):
  (tmp_path / 'unrelated.txt').write_text('x')
  with pytest.raises(FileNotFoundError, match=r"\['iemocap_data_noalign.pkl'\] not found"):
    _build(iemocap.Iemocap, 'mult_unaligned', tmp_path, tmp_path / 'out')


class _Evil:
  """Unpickling this would create `marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def test_builder_refuses_malicious_pickle(tmp_path):
  marker = tmp_path / 'executed'
  (tmp_path / 'aligned_50.pkl').write_bytes(pickle.dumps({'train': _Evil(marker)}))
  with pytest.raises(safe_pickle.UnsafePickleError, match='aligned_50.pkl: refused global'):
    _build(cmu_mosei.CmuMosei, 'mmsa_aligned', tmp_path, tmp_path / 'out')
  assert not marker.exists()


def test_build_cli(tmp_path):
  expected = write_mmsa(tmp_path, aligned=True, dims=MOSI_MMSA)
  command = [
    sys.executable,
    '-m',
    'data_prep.build',
    '--dataset=cmu_mosi',
    '--config=mmsa_aligned',
    f'--manual_dir={tmp_path}',
    f'--data_dir={tmp_path}/out',
  ]
  for _ in range(2):  # Built, then reused: the same summary.
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    header = f'cmu_mosi/mmsa_aligned 1.2.0 at {tmp_path}/out/cmu_mosi/mmsa_aligned/1.2.0'
    lines = lines[lines.index(header) :]  # After TFDS's own messages.
    assert lines[1:5] == [
      '  train: 3 examples',
      '  validation: 2 examples',
      '  test: 2 examples',
      'Repairs and drops:',
    ]
    sources_at = lines.index('Source files (SHA-256, bytes, name) and notes:')
    rows = [line.split()[:4] for line in lines[6:sources_at]]
    assert sorted(rows) == sorted(
      [split, field, kind, str(count)] for (split, field, kind), count in expected.repairs.items()
    )
    digest = file_digest(tmp_path / 'aligned_50.pkl')
    assert lines[sources_at + 1 :] == [
      f'{digest["sha256"]}  {digest["bytes"]:>13,d}  aligned_50.pkl'
    ]


def test_empty_split_fails_in_one_line_naming_the_drops(tmp_path):
  """Every 'valid' label non-finite: the split would be empty. The CLI says so in one line with
  what was dropped (not TFDS's bare AssertionError) and exits 1; nothing is built."""
  write_mmsa(tmp_path, aligned=True, dims=MOSI_MMSA)
  data = safe_pickle.load(tmp_path / 'aligned_50.pkl')
  data['valid']['regression_labels'][:] = np.nan
  _write_numpy1_pickle(tmp_path / 'aligned_50.pkl', data)
  with pytest.raises(SourceError, match="split 'valid' has no examples left"):
    _build(cmu_mosi.CmuMosi, 'mmsa_aligned', tmp_path, tmp_path / 'lib')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'data_prep.build',
      '--dataset=cmu_mosi',
      '--config=mmsa_aligned',
      f'--manual_dir={tmp_path}',
      f'--data_dir={tmp_path}/out',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert errors == [
    "error: cmu_mosi/mmsa_aligned: split 'valid' has no examples left after the repairs and "
    'drops: dropped_nonfinite_label of regression_labels: 3 (e.g. vidvalid0$_$clip0, '
    'vidvalid0$_$clip1, vidvalid1$_$clip2). Check the source files; nothing was written.'
  ]
  assert 'Traceback' not in result.stderr
  assert not list((tmp_path / 'out').glob('cmu_mosi/mmsa_aligned/*'))


def test_unknown_dataset_or_config_lists_the_valid_ones(tmp_path):
  with pytest.raises(ValueError, match=r"--dataset='mosi' is not a dataset .* are cmu_mosi, "):
    build.build('mosi', data_dir=str(tmp_path))
  with pytest.raises(
    ValueError,
    match=r"--config='mult' is not a builder config of iemocap; its configs are mult_aligned, "
    r'mult_unaligned\.',
  ):
    build.build('iemocap', 'mult', data_dir=str(tmp_path))
  for name in registry.DATASETS:  # every listed dataset is a builder of its own module.
    assert registry.builder_class(name).name == name


def test_build_cli_help():
  result = subprocess.run(
    [sys.executable, '-m', 'data_prep.build', '--help'], cwd=REPO, capture_output=True, text=True
  )  # absl exits 1 after --help.
  assert '--manual_dir' in result.stdout and '--dataset' in result.stdout


def test_builder_class():
  assert build.builder_class('iemocap') is iemocap.Iemocap
  with pytest.raises(ValueError, match='defines no TFDS builder'):
    build.builder_class('sources')


def test_repairs_text(tmp_path):
  """RepairLog rows print as a table; another builder's JSON (e.g. meld's) prints as JSON."""
  log = RepairLog()
  log.add(
    'nonfinite_to_zero', path='/x/a.pkl', split='train', example='v$_$1', field='audio', count=4
  )
  log.write(tmp_path / 'log.json')
  assert build.repairs_text(tmp_path / 'log.json').splitlines() == [
    'split  field  kind               count  files; e.g. examples',
    'train  audio  nonfinite_to_zero      4  a.pkl; e.g. v$_$1',
  ]
  (tmp_path / 'other.json').write_text('{"train": {"dropped": ["dia1_utt2"]}}')
  assert '"dia1_utt2"' in build.repairs_text(tmp_path / 'other.json')


def test_repair_log_round_trip_and_the_older_list_form(tmp_path):
  """The log keeps repairs, source digests and notes; a log written before sources were
  recorded (a plain list of rows) still reads."""
  pickle_path = tmp_path / 'a.pkl'
  pickle_path.write_bytes(b'abc')
  log = RepairLog()
  log.add('generated_id', path='/x/a.pkl', split='test', example='test_00000', field='id', count=2)
  assert log.add_source(pickle_path) == {
    'sha256': 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',  # SHA-256('abc')
    'bytes': 3,
  }
  log.note('folds', 'shipped')
  log.write(tmp_path / 'log.json')
  again = RepairLog.read(tmp_path / 'log.json')
  assert again.to_record() == log.to_record()
  assert again.sources == {'a.pkl': log.sources['a.pkl']} and again.notes == {'folds': 'shipped'}
  (tmp_path / 'old.json').write_text(json.dumps(log.to_json()))
  old = RepairLog.read(tmp_path / 'old.json')
  assert old.counts() == log.counts() and old.sources == {} and old.notes == {}
  assert build.repairs_text(tmp_path / 'old.json') == log.summary()


def test_build_rejects_options_the_builder_does_not_take(tmp_path):
  with pytest.raises(
    ValueError, match=r"builder 'iemocap' does not take the options \['text_model_dir'\]"
  ):
    build.build('iemocap', 'mult_aligned', data_dir=str(tmp_path), text_model_dir='/models/bert')
