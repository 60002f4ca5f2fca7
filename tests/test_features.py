"""Route B features: audio, vision, text, and the cached parallel folder extractor with its CLI."""

import json
import os
import pathlib
import subprocess
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # the encoder also passes local_files_only=True

import av
import numpy as np
import pytest
from safetensors.numpy import load_file

from data_prep.features import audio, extract, synthetic, text, vision
from data_prep.features.media import MediaError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TONE_HZ = 220.0


@pytest.fixture(scope='module')
def clips(tmp_path_factory) -> dict[str, pathlib.Path]:
  """1 s test clips: moving square + tone, still square + tone, no audio, not media at all."""
  root = tmp_path_factory.mktemp('clips')
  paths = {name: root / f'{name}.mp4' for name in ('moving', 'still', 'silent_film', 'broken')}
  synthetic.write_clip(paths['moving'], 1.0, tone_hz=TONE_HZ, moving=True)
  synthetic.write_clip(paths['still'], 1.0, tone_hz=TONE_HZ, moving=False)
  synthetic.write_clip(paths['silent_film'], 1.0, tone_hz=None, moving=True)
  paths['broken'].write_bytes(b'this is not a media file')
  return paths


@pytest.fixture(scope='module')
def encoder() -> text.TextEncoder:
  """The default MiniLM encoder, loaded once per process."""
  return text.cached_encoder()


def _write_wav(path: pathlib.Path, samples: np.ndarray, rate: int) -> None:
  """Writes mono float samples as 16-bit PCM WAV with PyAV."""
  with av.open(str(path), mode='w') as container:
    stream = container.add_stream('pcm_s16le', rate=rate, layout='mono')
    pcm = (samples * 32767).astype(np.int16)[None]
    frame = av.AudioFrame.from_ndarray(pcm, format='s16', layout='mono')
    frame.sample_rate = rate
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def test_audio_frame_features_of_a_tone():
  y = synthetic.sine_tone(1.0, audio.SAMPLE_RATE, 440.0, amplitude=0.5)
  feats = audio.frame_features(y)
  assert feats.shape == (1 + 16_000 // audio.HOP_LENGTH, audio.AUDIO_DIM) == (101, 46)
  assert feats.dtype == np.float32 and np.isfinite(feats).all()
  col = {name: feats[10:-10, i] for i, name in enumerate(audio.AUDIO_COLUMNS)}
  np.testing.assert_allclose(np.median(col['pitch_hz']), 440.0, rtol=0.01)
  np.testing.assert_allclose(col['rms'], 0.5 / np.sqrt(2), rtol=0.02)
  np.testing.assert_allclose(col['zcr'], 2 * 440.0 / audio.SAMPLE_RATE, rtol=0.1)
  np.testing.assert_allclose(np.median(col['centroid_hz']), 440.0, rtol=0.1)
  assert np.all(col['flatness'] < 0.01)  # a pure tone is as far from noise as it gets


def test_audio_features_decode_and_resample(clips, tmp_path):
  feats = audio.audio_features(clips['moving'])  # AAC at 44.1 kHz in MP4
  assert feats.shape[1] == audio.AUDIO_DIM and feats.dtype == np.float32
  assert abs(feats.shape[0] - 101) <= 8  # 1 s at a 10 ms hop, plus AAC encoder priming
  pitch = feats[10:-10, audio.AUDIO_COLUMNS.index('pitch_hz')]
  np.testing.assert_allclose(np.median(pitch), TONE_HZ, rtol=0.01)
  wav = tmp_path / 'tone.wav'
  _write_wav(wav, synthetic.sine_tone(2.0, 8000, 300.0), rate=8000)  # PCM: no priming
  feats = audio.audio_features(wav)
  assert abs(feats.shape[0] - 201) <= 1
  pitch = feats[10:-10, audio.AUDIO_COLUMNS.index('pitch_hz')]
  np.testing.assert_allclose(np.median(pitch), 300.0, rtol=0.01)


def test_vision_descriptors_of_known_frames():
  frames = np.full((3, 32, 32, 3), 0.25, np.float32)
  frames[2] = 0.75
  feats = vision.frame_descriptors(frames)
  assert feats.shape == (3, vision.VISION_DIM) == (3, 27)
  col = {name: feats[:, i] for i, name in enumerate(vision.VISION_COLUMNS)}
  thumbs = np.repeat([[0.25], [0.25], [0.75]], 16, axis=1)
  np.testing.assert_allclose(feats[:, :16], thumbs, atol=1e-6)
  np.testing.assert_allclose(col['mean_g'], [0.25, 0.25, 0.75], atol=1e-6)
  for name in ('std_r', 'skew_b', 'gradient'):
    np.testing.assert_allclose(col[name], 0.0, atol=1e-6)
  np.testing.assert_allclose(col['motion'], [0.0, 0.0, 0.5], atol=1e-6)


def test_vision_features_see_motion(clips):
  moving = vision.vision_features(clips['moving'])
  still = vision.vision_features(clips['still'])
  assert moving.shape == still.shape == (5, vision.VISION_DIM)  # 1 s at 5 fps
  assert moving.dtype == np.float32
  motion = vision.VISION_COLUMNS.index('motion')
  assert moving[0, motion] == 0.0 and np.all(moving[1:, motion] > 0.01)
  assert np.all(still[:, motion] < 1e-3)
  assert np.all((moving[:, :16] >= 0) & (moving[:, :16] <= 1))
  assert np.ptp(moving[:, :16], axis=0).max() > 0.1  # the square crosses the thumbnail cells


def test_unusable_media_errors_name_the_file(clips, tmp_path):
  with pytest.raises(MediaError, match='broken.mp4: cannot open media'):
    audio.audio_features(clips['broken'])
  with pytest.raises(MediaError, match='silent_film.mp4: no audio stream'):
    audio.audio_features(clips['silent_film'])
  with pytest.raises(MediaError, match='nothing_here.mp4'):
    vision.vision_features(tmp_path / 'nothing_here.mp4')
  wav = tmp_path / 'only_sound.wav'
  _write_wav(wav, synthetic.sine_tone(0.5, 8000, 300.0), rate=8000)
  with pytest.raises(MediaError, match='only_sound.wav: no video stream'):
    vision.vision_features(wav)


def test_text_encoder_offline_token_features(encoder):
  assert type(encoder.model).__name__ == 'FlaxBertModel' and encoder.dim == 384
  checkpoint = load_file(str(text.default_model_dir() / 'model.safetensors'))
  embedding = encoder.model.params['embeddings']['word_embeddings']['embedding']  # not random init
  np.testing.assert_array_equal(embedding, checkpoint['embeddings.word_embeddings.weight'])
  texts = ['Hello world.', 'You must’ve had your hands full.', '']
  feats = encoder.encode(texts)
  ids = encoder.tokenize(texts)
  assert [f.shape for f in feats] == [(len(i), 384) for i in ids]
  tokenizer = encoder.tokenizer
  assert all(i[0] == tokenizer.cls_token_id and i[-1] == tokenizer.sep_token_id for i in ids)
  assert feats[2].shape == (2, 384)  # [CLS] [SEP]
  alone = encoder.encode([texts[1]])[0]
  np.testing.assert_allclose(alone, feats[1], atol=1e-5)  # padding and batch-mates do not leak


def test_text_encoder_is_the_sentence_model(encoder):
  def sentence(s):
    v = encoder.encode([s])[0][1:-1].mean(axis=0)
    return v / np.linalg.norm(v)

  guitar = sentence('A man is playing a guitar.')
  assert guitar @ sentence('Someone plays the guitar.') > 0.6
  assert guitar @ sentence('The stock market fell sharply today.') < 0.2


def test_extract_folder_caches_resumes_and_reports(clips, tmp_path):
  paths = {
    'moving': clips['moving'],
    'still': clips['still'],
    'broken': clips['broken'],
    'gone': tmp_path / 'gone.mp4',
  }
  cache = tmp_path / 'cache'
  report = extract.extract_folder(paths, cache, ('audio', 'vision'), num_workers=0)
  assert report.extracted == {'audio': 2, 'vision': 2}
  for modality in ('audio', 'vision'):
    assert set(report.skipped[modality]) == {'broken', 'gone'}
    assert 'broken.mp4' in report.skipped[modality]['broken']
    assert report.skipped[modality]['gone'].startswith('missing file:')
  np.testing.assert_array_equal(
    np.load(cache / 'audio' / 'moving.npy'), audio.audio_features(clips['moving'])
  )
  np.testing.assert_array_equal(
    extract.load_features(cache, None, 'vision', 'still'), vision.vision_features(clips['still'])
  )
  assert not list(cache.rglob('*.tmp.npy'))

  interrupted = cache / 'vision' / 'still.npy'
  interrupted.unlink()  # as if the first run had stopped before this clip
  mtimes = {p: p.stat().st_mtime_ns for p in cache.rglob('*.npy')}
  again = extract.extract_folder(paths, cache, ('audio', 'vision'), num_workers=0)
  assert again.extracted == {'audio': 0, 'vision': 1}
  assert again.cached == {'audio': 2, 'vision': 1}
  assert interrupted.is_file()
  assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing else was rewritten


def test_extract_folder_worker_processes_match_in_process(clips, tmp_path):
  paths = {'moving': clips['moving'], 'broken': clips['broken']}
  report = extract.extract_folder(paths, tmp_path / 'par', ('audio', 'vision'), num_workers=2)
  assert report.extracted == {'audio': 1, 'vision': 1}
  assert set(report.skipped['audio']) == set(report.skipped['vision']) == {'broken'}
  for modality, fn in (('audio', audio.audio_features), ('vision', vision.vision_features)):
    cached = np.load(tmp_path / 'par' / modality / 'moving.npy')
    np.testing.assert_array_equal(cached, fn(clips['moving']))


def test_user_npy_features_override_extraction(clips, tmp_path):
  user = tmp_path / 'user'
  (user / 'audio').mkdir(parents=True)
  mine = np.arange(21, dtype=np.float64).reshape(7, 3)
  np.save(user / 'audio' / 'moving.npy', mine)
  np.save(user / 'audio' / 'still.npy', np.zeros(5))  # not (T, D)
  paths = {'moving': clips['moving'], 'still': clips['still']}
  cache = tmp_path / 'cache'
  report = extract.extract_folder(paths, cache, ('audio',), num_workers=0, features_dir=user)
  assert report.overridden == {'audio': 1} and report.extracted == {'audio': 0}
  reason = report.skipped['audio']['still']
  assert 'still.npy' in reason and '(5,)' in reason
  assert not (cache / 'audio' / 'moving.npy').exists()
  loaded = extract.load_features(cache, user, 'audio', 'moving')
  assert loaded.dtype == np.float32
  np.testing.assert_array_equal(loaded, mine)


def test_extract_cli(clips, tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  for name in ('moving', 'broken'):
    (folder / f'{name}.mp4').write_bytes(clips[name].read_bytes())
  (folder / 'notes.txt').write_text('not a clip')
  cache = tmp_path / 'out'
  cmd = [
    sys.executable,
    '-m',
    'data_prep.features.extract',
    f'--input_dir={folder}',
    f'--cache_dir={cache}',
    '--num_workers=0',
    '--modalities=vision',
  ]
  subprocess.run(cmd, check=True, cwd=REPO_ROOT, capture_output=True)
  report = json.loads((cache / 'extract_report.json').read_text())
  assert report['extracted'] == {'vision': 1}
  assert set(report['skipped']['vision']) == {'broken'}
  assert np.load(cache / 'vision' / 'moving.npy').shape == (5, vision.VISION_DIM)
