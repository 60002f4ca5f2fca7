"""MELD builder: the real annotation CSVs, and text / multimodal builds on small fixtures."""

import collections
import os
import pathlib

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # the encoder also passes local_files_only=True

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import meld as meld_configs
from data_prep import meld, sources
from data_prep.features import audio, egemaps, face, synthetic, text, vision
from fasca_jax import errors, input_pipeline

REAL_MELD = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'meld'
HEADER = (
  'Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,'
  'StartTime,EndTime'
)
# Rows in the released format: CRLF records, a multi-line quoted utterance, UTF-8 punctuation, and
# a C1 character (U+0092) as early releases stored a Windows-1252 right quote.
FIXTURE_ROWS = {
  'train': [
    '1,"Oh my God, he’s lost it.\nHe’s totally lost it.",Phoebe,surprise,negative,0,0,4,7,'
    '"00:13:12,471","00:13:15,808"',
    '2,You must\x92ve had your hands full.,The Interviewer,neutral,neutral,0,1,8,21,'
    '"00:16:21,940","00:16:23,442"',
    '3,"Okay, “café” time!",Monica,Joy ,positive,1,0,3,5,"00:01:02,000","00:01:04,500"',
  ],
  'validation': [
    '1,Why do all you’re coffee mugs have numbers on the bottom?,Mark,surprise,positive,0,0,'
    '3,19,"00:14:38,127","00:14:40,378"',
    '2,Oh. That’s so Monica can keep track.,Rachel,anger,negative,0,1,3,19,'
    '"00:14:40,629","00:14:47,385"',
  ],
  'test': [
    '1,Why is it so cold?,Ross,sadness,negative,0,0,1,1,"00:00:01,000","00:00:02,000"',
    '2,I hate this!,Ross,disgust,negative,0,1,1,1,"00:00:02,000","00:00:03,000"',
    '3,"Eh... fear, what?",Joey,fear,negative,1,0,1,1,"00:00:03,000","00:00:04,000"',
  ],
}
# id, raw_text, speaker, label, sentiment per split, as the builder must emit them
EXPECTED = {
  'train': [
    ('dia0_utt0', 'Oh my God, he’s lost it.\nHe’s totally lost it.', 'Phoebe', 1, 0),
    ('dia0_utt1', 'You must’ve had your hands full.', 'The Interviewer', 0, 1),
    ('dia1_utt0', 'Okay, “café” time!', 'Monica', 4, 2),
  ],
  'validation': [
    ('dia0_utt0', 'Why do all you’re coffee mugs have numbers on the bottom?', 'Mark', 1, 2),
    ('dia0_utt1', 'Oh. That’s so Monica can keep track.', 'Rachel', 6, 0),
  ],
  'test': [
    ('dia0_utt0', 'Why is it so cold?', 'Ross', 3, 0),
    ('dia0_utt1', 'I hate this!', 'Ross', 5, 0),
    ('dia1_utt0', 'Eh... fear, what?', 'Joey', 2, 0),
  ],
}
MISSING_CLIP = ('validation', 'dia0_utt1')


def _write_csvs(root: pathlib.Path, encoding: str = 'utf-8') -> None:
  """Writes the fixture rows as the three MELD CSVs (CRLF between records).

  With encoding='cp1252' (a file saved by Windows tools) the quote is the byte 0x92 itself.
  """
  root.mkdir(parents=True, exist_ok=True)
  for split, rows in FIXTURE_ROWS.items():
    if encoding == 'cp1252':
      rows = [row.replace('\x92', '’') for row in rows]
    body = '\r\n'.join([HEADER, *rows]) + '\r\n'
    (root / meld.SPLIT_FILES[split][0]).write_bytes(body.encode(encoding))


def _tone_hz(split: str, index: int) -> float:
  """A distinct tone per fixture clip, so features can be traced back to their clip."""
  return 150.0 + 50.0 * index + 10.0 * list(EXPECTED).index(split)


def _build(builder: meld.Meld, manual_dir: pathlib.Path) -> None:
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
    file_format='array_record',
  )


def _read(builder: meld.Meld, split: str) -> list[dict]:
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope='module')
def encoder() -> text.TextEncoder:
  """The default MiniLM encoder, loaded once per process (the builder reuses it)."""
  return text.cached_encoder()


@pytest.mark.parametrize(
  'split,size,emotions,sentiments',
  [
    ('train', 9989, (4710, 1205, 268, 683, 1743, 271, 1109), (2945, 4710, 2334)),
    ('validation', 1109, (470, 150, 40, 111, 163, 22, 153), (406, 470, 233)),
    ('test', 2610, (1256, 281, 50, 208, 402, 68, 345), (833, 1256, 521)),
  ],
)
def test_real_csvs_match_the_paper(split, size, emotions, sentiments):
  if not REAL_MELD.is_dir():
    pytest.skip(f'real MELD CSVs not found at {REAL_MELD} (the shared/ folder beside the repo)')
  utterances, repairs = meld.read_split_csv(REAL_MELD / meld.SPLIT_FILES[split][0])
  assert len(utterances) == size
  assert repairs['csv_encoding'] == 'utf-8-sig' and repairs['c1_repaired'] == []
  emotion_counts = collections.Counter(u.label for u in utterances)
  assert tuple(emotion_counts[i] for i in range(7)) == emotions
  sentiment_counts = collections.Counter(u.sentiment for u in utterances)
  assert tuple(sentiment_counts[i] for i in range(3)) == sentiments
  assert len({u.id for u in utterances}) == size


@pytest.mark.parametrize('encoding', ['utf-8', 'cp1252'])
def test_read_csv_fixture(tmp_path, encoding):
  _write_csvs(tmp_path, encoding)
  for split, expected in EXPECTED.items():
    utterances, repairs = meld.read_split_csv(tmp_path / meld.SPLIT_FILES[split][0])
    assert [(u.id, u.raw_text, u.speaker, u.label, u.sentiment) for u in utterances] == expected
    ascii_only = all(row.isascii() for row in FIXTURE_ROWS[split])  # reads as UTF-8 either way
    windows = encoding == 'cp1252' and not ascii_only
    assert repairs['csv_encoding'] == ('cp1252' if windows else 'utf-8-sig')
    repaired = ['dia0_utt1'] if (split, encoding) == ('train', 'utf-8') else []
    assert repairs['c1_repaired'] == repaired


def test_read_csv_rejects_unknown_labels(tmp_path):
  path = tmp_path / 'bad.csv'
  path.write_text(f'{HEADER}\n1,Hi.,Ross,bored,neutral,0,0,1,1,"00:00:01,000","00:00:02,000"\n')
  with pytest.raises(ValueError, match=r"bad.csv:2: unknown emotion 'bored'"):
    meld.read_split_csv(path)


def test_build_text_config(tmp_path, encoder):
  manual = tmp_path / 'manual'
  _write_csvs(manual)
  builder = meld.Meld(config='text', data_dir=tmp_path / 'data')
  _build(builder, manual)
  features = builder.info.features
  assert features['text'].shape == (None, 384) and features['text'].np_dtype == np.float32
  assert features['label'].np_dtype == features['sentiment'].np_dtype == np.int32
  for split, expected in EXPECTED.items():
    examples = _read(builder, split)
    got = [
      (e['id'].decode(), e['raw_text'].decode(), e['speaker'].decode(), e['label'], e['sentiment'])
      for e in examples
    ]
    assert got == expected  # CSV order, every value
    for example, (_, raw_text, *_) in zip(examples, expected):
      want = encoder.encode([raw_text])[0]
      assert example['text'].shape == want.shape == (len(encoder.tokenize([raw_text])[0]), 384)
      np.testing.assert_allclose(example['text'], want, atol=1e-5)
      # Build-time tokens: the encoder's own ids, one per feature row ([CLS] first, [SEP] last).
      np.testing.assert_array_equal(example['text_ids'], encoder.tokenize([raw_text])[0])
      assert example['text_ids'][0] == 101 and example['text_ids'][-1] == 102
      np.testing.assert_array_equal(example['text_segments'], np.zeros_like(example['text_ids']))
  assert features['text_ids'].np_dtype == features['text_segments'].np_dtype == np.int32
  metadata = dict(builder.info.metadata)
  assert metadata['extractors'] == {}
  recorded = metadata['text_tokenizer']
  assert recorded == text.cached_tokenizer().describe() and recorded['vocab_size'] == 30522
  summary = builder.repair_summary()
  assert summary['train']['c1_repaired'] == ['dia0_utt1']
  assert {s: summary[s]['examples'] for s in EXPECTED} == {'train': 3, 'validation': 2, 'test': 3}
  log = sources.RepairLog.read(pathlib.Path(builder.data_dir) / sources.REPAIRS_FILE)
  assert log.counts() == {('train', 'raw_text', 'c1_to_cp1252'): 1}
  csvs = [name for name, _ in meld.SPLIT_FILES.values()]
  want = {name: sources.file_digest(manual / name) for name in csvs}
  assert log.sources == want and dict(builder.info.metadata)['sources'] == want


def test_build_text_tokens_config_and_open_it(tmp_path):
  """text_tokens: the token ids alone (no `text` features, no encoder run); configs/meld.py:
  text_finetune opens it (lengths counted from the ids); a frozen-feature config cannot."""
  manual = tmp_path / 'manual'
  _write_csvs(manual)
  builder = meld.Meld(config='text_tokens', data_dir=tmp_path / 'data')
  _build(builder, manual)
  features = builder.info.features
  assert 'text' not in features and features['text_ids'].np_dtype == np.int32
  tokenizer = text.cached_tokenizer()
  for split, expected in EXPECTED.items():
    examples = _read(builder, split)
    assert [e['id'].decode() for e in examples] == [uid for uid, *_ in expected]
    for example, (_, raw_text, *_) in zip(examples, expected):
      ((ids, segments),) = tokenizer([raw_text])
      np.testing.assert_array_equal(example['text_ids'], ids)
      np.testing.assert_array_equal(example['text_segments'], segments)
  assert dict(builder.info.metadata)['text_tokenizer'] == tokenizer.describe()
  config = meld_configs.get_config('text_finetune')
  assert (config.dataset.config, config.model.text_encoder) == ('text_tokens', 'minilm')
  config.data_dir = str(tmp_path / 'data')
  dataset = input_pipeline.open_dataset(config)
  assert dataset.tokens == ('text',) and dataset.widths == {'text': 0}
  summary = input_pipeline.split_summary(dataset, 'train')
  np.testing.assert_array_equal(
    summary.lengths['text'], [len(tokenizer([t])[0][0]) for _, t, *_ in EXPECTED['train']]
  )
  config.model.text_encoder = 'features'  # frozen features: this dataset has none
  with pytest.raises(errors.ConfigError, match=r"Modality 'text' of config.modalities is not in"):
    input_pipeline.open_dataset(config)


@pytest.mark.parametrize('placement', ['device', 'stream'])
def test_train_a_text_encoder_on_text_tokens(tmp_path, placement):
  """train.py's loop (train_lib) with a tiny random BERT (MiniLM's tokenizer) fine-tuned on the
  text_tokens build: the padded split arrays ('device') and the streamed batches carry the
  token ids; both placements give the same results, and the encoder's weights moved."""
  import text_encoder_fixtures  # pylint: disable=g-import-not-at-top

  from fasca_jax import checkpoints, train_lib  # pylint: disable=g-import-not-at-top
  from fasca_jax.models import text_encoder  # pylint: disable=g-import-not-at-top

  manual = tmp_path / 'manual'
  _write_csvs(manual)
  _build(meld.Meld(config='text_tokens', data_dir=tmp_path / 'data'), manual)
  config = meld_configs.get_config('text_finetune')
  config.data_dir = str(tmp_path / 'data')
  config.model.text_encoder = text_encoder_fixtures.tiny_bert_dir(tmp_path / 'bert', layers=1)
  config.dims.text, config.max_len.text = 32, 16
  config.model.update(d_model=16, num_heads=2, head_hidden=16, dropout=0.0)
  config.update(batch_size=2, num_epochs=2, data_placement=placement)
  results = {}
  for mode in (placement, 'host'):
    config.data_placement = mode
    workdir = str(tmp_path / mode)
    results[mode] = train_lib.train_and_evaluate(config, workdir)
    assert np.isfinite(results[mode]['test']['loss'])
  assert results[placement]['valid'] == pytest.approx(results['host']['valid'], rel=1e-5)
  trained = checkpoints.restore_best(config, workdir).state.params[text_encoder.NAME]
  start = text_encoder.load_pretrained(config.model.text_encoder)
  moved = np.abs(trained['layer_0']['ffn_up']['kernel'] - start['layer_0']['ffn_up']['kernel'])
  assert moved.max() > 0


def _write_clips(manual: pathlib.Path, skip=()) -> None:
  """A 1-second synthetic clip per fixture utterance, its tone `_tone_hz`, in MELD's clip
  folders; the (split, id) pairs in `skip` get none."""
  for split, expected in EXPECTED.items():
    clip_dir = manual / meld.SPLIT_FILES[split][1]
    clip_dir.mkdir()
    for index, (uid, *_) in enumerate(expected):
      if (split, uid) not in skip:
        synthetic.write_clip(clip_dir / f'{uid}.mp4', 1.0, tone_hz=_tone_hz(split, index))


def test_build_multimodal_config(tmp_path, encoder):
  manual = tmp_path / 'manual'
  _write_csvs(manual)
  _write_clips(manual, skip=(MISSING_CLIP,))
  builder = meld.Meld(config='multimodal', data_dir=tmp_path / 'data', num_workers=0)
  _build(builder, manual)

  summary = builder.repair_summary()
  split, uid = MISSING_CLIP
  assert list(summary[split]['dropped']) == [uid]
  reason = summary[split]['dropped'][uid]
  assert 'missing file' in reason and f'{uid}.mp4' in reason
  assert {s: summary[s]['examples'] for s in EXPECTED} == {'train': 3, 'validation': 1, 'test': 3}
  log = sources.RepairLog.read(pathlib.Path(builder.data_dir) / sources.REPAIRS_FILE)
  assert log.counts() == {
    ('train', 'raw_text', 'c1_to_cp1252'): 1,
    ('dev', 'clip', 'dropped_clip_unusable'): 1,
  }
  assert log.to_json()[1]['files'] == [f'{uid}.mp4'] and log.to_json()[1]['examples'] == [uid]
  pitch = audio.AUDIO_COLUMNS.index('pitch_hz')
  for split, expected in EXPECTED.items():
    examples = _read(builder, split)
    kept = [(index, row) for index, row in enumerate(expected) if (split, row[0]) != MISSING_CLIP]
    assert [e['id'].decode() for e in examples] == [row[0] for _, row in kept]
    for example, (index, (uid, raw_text, *_)) in zip(examples, kept):
      clip = manual / meld.SPLIT_FILES[split][1] / f'{uid}.mp4'
      np.testing.assert_array_equal(example['audio'], audio.audio_features(clip))
      np.testing.assert_array_equal(example['vision'], vision.vision_features(clip))
      assert example['vision'].shape == (5, vision.VISION_DIM)
      tone = np.median(example['audio'][10:-10, pitch])
      np.testing.assert_allclose(tone, _tone_hz(split, index), rtol=0.02)
      np.testing.assert_allclose(example['text'], encoder.encode([raw_text])[0], atol=1e-5)
      assert (manual / 'feature_cache' / split / 'audio' / f'{uid}.npy').is_file()


def test_build_with_the_field_extractors(tmp_path, encoder):
  """multimodal_egemaps_face: eGeMAPS LLDs and face-centred vision; the fixture clips have no
  face, so every sampled frame falls back to the whole frame and is counted."""
  manual = tmp_path / 'manual'
  _write_csvs(manual)
  _write_clips(manual)
  builder = meld.Meld(config='multimodal_egemaps_face', data_dir=tmp_path / 'data', num_workers=0)
  _build(builder, manual)
  features = builder.info.features
  assert features['audio'].shape == (None, egemaps.EGEMAPS_DIM)
  assert features['vision'].shape == (None, face.FACE_DIM)
  assert dict(builder.info.metadata)['extractors'] == {'audio': 'egemaps', 'vision': 'face'}
  for split in EXPECTED:
    for index, example in enumerate(_read(builder, split)):
      clip = manual / meld.SPLIT_FILES[split][1] / f'{example["id"].decode()}.mp4'
      np.testing.assert_array_equal(example['audio'], egemaps.egemaps_features(clip))
      np.testing.assert_array_equal(example['vision'], face.face_features(clip))
      tone = np.median(egemaps.pitch_hz(example['audio'])[10:-10])
      np.testing.assert_allclose(tone, _tone_hz(split, index), rtol=0.02)
      assert (example['vision'][:, 0] == 0).all()  # no face in the fixture clips
      cached = manual / 'feature_cache' / split / 'vision_face' / f'{example["id"].decode()}.npy'
      assert cached.is_file()
  summary = builder.repair_summary()
  assert summary['train']['no_face'] == {uid: (5, 5) for uid, *_ in EXPECTED['train']}
  log = sources.RepairLog.read(pathlib.Path(builder.data_dir) / sources.REPAIRS_FILE)
  assert log.counts()[('train', 'vision', 'no_face_whole_frame')] == 15  # 3 clips x 5 frames
  # The run config of the same name reads it; one naming other extractors is refused.
  config = meld_configs.get_config('multimodal_egemaps_face')
  config.data_dir = str(tmp_path / 'data')
  dataset = input_pipeline.open_dataset(config)
  assert dataset.widths == {'text': 384, 'audio': 25, 'vision': 32}
  config.dataset.extractors.vision = 'frame'
  config.dims.vision = 32
  with pytest.raises(errors.ConfigError, match=r"holds vision features of the 'face' extractor"):
    input_pipeline.open_dataset(config)


def test_build_from_user_features_only(tmp_path):
  """A custom audio-only config fed entirely by user .npy files: no clips, no text model."""
  manual = tmp_path / 'manual'
  _write_csvs(manual)
  user = tmp_path / 'user'
  mine = {}
  for split, expected in EXPECTED.items():
    (user / split / 'audio').mkdir(parents=True)
    for index, (uid, *_) in enumerate(expected):
      mine[split, uid] = np.full((index + 2, 5), float(index), np.float32)
      np.save(user / split / 'audio' / f'{uid}.npy', mine[split, uid])
  mine['test', 'dia0_utt1'][0, 0] = np.nan
  np.save(user / 'test' / 'audio' / 'dia0_utt1.npy', mine['test', 'dia0_utt1'])
  config = meld.MeldConfig(name='user_audio', modalities=('audio',))
  builder = meld.Meld(config=config, data_dir=tmp_path / 'data', features_dir=str(user))
  _build(builder, manual)
  assert builder.info.features['audio'].shape == (None, 5) and 'text' not in builder.info.features
  for split, expected in EXPECTED.items():
    examples = _read(builder, split)
    assert [e['id'].decode() for e in examples] == [uid for uid, *_ in expected]
    for example in examples:
      want = np.nan_to_num(mine[split, example['id'].decode()], nan=0.0)
      np.testing.assert_array_equal(example['audio'], want)
  summary = builder.repair_summary()
  assert summary['test']['nonfinite_replaced'] == {'audio': {'dia0_utt1': 1}}
  assert summary['train']['nonfinite_replaced'] == {'audio': {}}
  assert not (manual / 'feature_cache').exists()  # nothing was extracted


def test_missing_manual_files_are_named(tmp_path):
  manual = tmp_path / 'manual'
  _write_csvs(manual)
  (manual / 'dev_sent_emo.csv').unlink()
  for config, missing in (('text', "['dev_sent_emo.csv']"), ('multimodal', "'train_splits'")):
    builder = meld.Meld(config=config, data_dir=tmp_path / 'data')
    with pytest.raises(FileNotFoundError, match=missing):
      _build(builder, manual)


def test_mixed_encodings_decode_per_line(tmp_path):
  """One latin-1 byte in an otherwise UTF-8 CSV: only that byte is read as cp1252, so every '’'
  stays intact (also on the same line), and the line is counted in the repair log by number."""
  rows = [
    '1,It’s fine.,Ross,neutral,neutral,0,0,1,1,"00:00:01,000","00:00:02,000"',
    '2,"Caf\udce9 au lait?\nIt’s Monica’s.",Rachel,joy,positive,0,1,1,1,"00:00:02,000",'
    '"00:00:03,000"',
    '3,“Pivot!”,Ross,anger,negative,1,0,1,1,"00:00:03,000","00:00:04,000"',
  ]
  path = tmp_path / 'train_sent_emo.csv'
  body = '\r\n'.join([HEADER, *rows]) + '\r\n'
  path.write_bytes(body.encode('utf-8', errors='surrogateescape'))  # \udce9 -> the byte 0xe9
  utterances, repairs = meld.read_split_csv(path)
  assert [u.raw_text for u in utterances] == [
    'It’s fine.',
    'Café au lait?\nIt’s Monica’s.',
    '“Pivot!”',
  ]
  assert repairs['csv_encoding'] == 'utf-8-sig+cp1252'
  assert repairs['not_utf8'] == [(3, 'dia0_utt1', "byte 0xe9 at column 7 read as 'é'")]
  log = meld.repair_log({'train': {**repairs, 'dropped': {}, 'nonfinite_replaced': {}}})
  assert log.counts() == {('train', 'csv_line', 'not_utf8_to_cp1252'): 1}
  assert log.to_json()[0]['examples'] == ['line 3 (dia0_utt1)']
  assert (
    'train  csv_line  not_utf8_to_cp1252      1  train_sent_emo.csv; e.g. line 3 (dia0_utt1)'
    in (log.summary())
  )


def test_real_csv_with_one_latin1_byte_keeps_every_other_line(tmp_path):
  if not REAL_MELD.is_dir():
    pytest.skip(f'real MELD CSVs not found at {REAL_MELD} (the shared/ folder beside the repo)')
  clean = (REAL_MELD / 'train_sent_emo.csv').read_bytes()
  lines = clean.split(b'\n')
  target = next(i for i, line in enumerate(lines) if b'Monica' in line and i > 1000)
  lines[target] = lines[target].replace(b'Monica', b'M\xf3nica', 1)  # latin-1 'ó'
  mixed = tmp_path / 'train_sent_emo.csv'
  mixed.write_bytes(b'\n'.join(lines))
  want, _ = meld.read_split_csv(REAL_MELD / 'train_sent_emo.csv')
  got, repairs = meld.read_split_csv(mixed)
  changed = [(a.id, a.raw_text, b.raw_text) for a, b in zip(want, got) if a != b]
  assert len(got) == len(want) == 9989 and len(changed) == 1
  uid, before, after = changed[0]
  assert after == before.replace('Monica', 'Mónica', 1)
  assert sum('’' in u.raw_text for u in got) == sum('’' in u.raw_text for u in want) > 2000
  assert not any('â€' in u.raw_text for u in got)
  column = lines[target].index(b'\xf3') + 1
  assert repairs['not_utf8'] == [(target + 1, uid, f"byte 0xf3 at column {column} read as 'ó'")]
  assert repairs['csv_encoding'] == 'utf-8-sig+cp1252'


def test_loading_the_encoder_prints_no_expected_warnings(capfd, caplog):
  text.TextEncoder()  # a fresh load, not the cached one
  out, err = capfd.readouterr()
  logged = out + err + caplog.text
  assert 'were not used when initializing' not in logged
  assert 'TensorFlow and JAX classes are deprecated' not in logged
