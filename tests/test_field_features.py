"""The field's extractors: openSMILE eGeMAPS LLDs (data_prep/features/egemaps.py) and
face-centred vision (data_prep/features/face.py), alone and through the cached extractor."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import skimage.data

from data_prep.features import audio, egemaps, extract, face, synthetic, vision

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# scikit-image ships this photo inside its wheel (skimage/data/astronaut.png): Eileen Collins's
# NASA portrait, 512 x 512, one frontal face. Its face box, found once by eye and by the cascade:
ASTRONAUT_FACE = (177, 66, 95, 95)  # x, y, w, h in pixels of the 512 x 512 image


def test_egemaps_lld_of_tones_give_their_pitch():
  for hz in (150.0, 220.0, 300.0):
    y = synthetic.sine_tone(1.0, audio.SAMPLE_RATE, hz, amplitude=0.5)
    feats = egemaps.frame_features(y)
    assert feats.shape == (96, egemaps.EGEMAPS_DIM) == (96, 25)  # 10 ms frames, 1 s
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    pitch = egemaps.pitch_hz(feats)[10:-10]
    assert (pitch > 0).all()  # every frame voiced
    np.testing.assert_allclose(np.median(pitch), hz, rtol=0.01)
    loudness = feats[10:-10, egemaps.EGEMAPS_COLUMNS.index('Loudness_sma3')]
    assert (loudness > 0.1).all()
  silence = egemaps.frame_features(np.zeros(16_000, np.float32))
  assert (egemaps.pitch_hz(silence) == 0).all()  # unvoiced: F0 0 (the `nz` columns)
  assert (silence[:, egemaps.EGEMAPS_COLUMNS.index('Loudness_sma3')] < 0.01).all()  # a floor


def test_egemaps_of_a_clip_and_short_audio(tmp_path):
  clip = tmp_path / 'tone.mp4'
  synthetic.write_clip(clip, 1.0, tone_hz=220.0, moving=None)
  feats = egemaps.egemaps_features(clip)
  assert feats.shape[1] == 25 and 90 <= len(feats) <= 100
  np.testing.assert_allclose(np.median(egemaps.pitch_hz(feats)[10:-10]), 220.0, rtol=0.01)
  with pytest.raises(Exception, match='no audio stream'):
    egemaps.egemaps_features(_face_clip(tmp_path / 'silent.mp4', faces=1, blanks=0))


def _astronaut(size=256):
  """The photo scaled to size x size (area), uint8 RGB."""
  import cv2

  return cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def _blank(size=256):
  """A frame without a face: a horizontal gradient with a bright square."""
  return synthetic.square_frames(1, size, size, moving=False)[0]


def test_detect_the_astronaut_face_and_nothing_on_a_blank_frame():
  x, y, w, h = face.detect_face(skimage.data.astronaut())
  want = np.array(ASTRONAUT_FACE)
  assert np.abs(np.array([x, y, w, h]) - want).max() <= 8, (x, y, w, h)
  assert face.detect_face(_blank()) is None


def test_face_descriptors_crop_box_presence_and_whole_frame_fallback():
  frames = np.stack([_astronaut(320), _blank(320)])
  result = face.face_descriptors(frames)
  assert result.features.shape == (2, face.FACE_DIM) == (2, 32)
  assert result.fallback_frames == 1
  present, box = result.features[:, 0], result.features[:, 1:5]
  assert present.tolist() == [1.0, 0.0] and (box[1] == 0).all()
  np.testing.assert_allclose(box[0], np.array(ASTRONAUT_FACE) / 512, atol=0.02)
  x, y, w, h = (round(v * 320) for v in box[0])
  crop = face._thumb(frames[0, y : y + h, x : x + w])  # pylint: disable=protected-access
  whole = face._thumb(frames[1])  # pylint: disable=protected-access
  want = vision.frame_descriptors(np.stack([crop, whole]))
  np.testing.assert_allclose(result.features[:, 5:], want, atol=1e-6)
  # The face crop is not the whole frame: its descriptors differ.
  assert (
    np.abs(vision.frame_descriptors(face._thumb(frames[:1][0])[None])[0, :16] - want[0, :16]).max()
    > 0.05
  )


def _face_clip(path, faces: int, blanks: int, fps: int = 5):
  """A clip at `fps` frames per second: `faces` astronaut frames, then `blanks` blank ones."""
  frames = np.stack([_astronaut()] * faces + [_blank()] * blanks)
  synthetic.write_clip(path, len(frames) / fps, tone_hz=None, frames=frames, fps=fps)
  return path


def test_face_features_of_a_clip_count_the_fallback(tmp_path, caplog):
  clip = _face_clip(tmp_path / 'face.mp4', faces=2, blanks=3)
  with caplog.at_level('INFO'):
    feats = face.face_features(clip)
  assert feats.shape == (5, face.FACE_DIM)
  assert feats[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
  assert 'no face in 3 of 5 sampled frames' in caplog.text
  np.testing.assert_allclose(feats[0, 1:5], np.array(ASTRONAUT_FACE) / 512, atol=0.02)
  # Without a face the row is the whole-frame descriptor set (same frames, same sampling).
  frames = face.sample_face_frames(clip)
  whole = vision.frame_descriptors(np.stack([face._thumb(f) for f in frames]))  # pylint: disable=protected-access
  np.testing.assert_allclose(feats[3:, 5:-1], whole[3:, :-1], atol=1e-6)  # motion: crops differ


def test_extract_folder_with_the_field_extractors(tmp_path):
  clip = tmp_path / 'clip.mp4'
  frames = np.stack([_astronaut()] * 3 + [_blank()] * 2)
  synthetic.write_clip(clip, 1.0, tone_hz=220.0, frames=frames, fps=5)
  cache = tmp_path / 'cache'
  chosen = {'audio': 'egemaps', 'vision': 'face'}
  report = extract.extract_folder({'clip': clip}, cache, ('audio', 'vision'), extractors=chosen)
  assert report.extracted == {'audio': 1, 'vision': 1}
  got_audio = extract.load_features(cache, None, 'audio', 'clip', 'egemaps')
  np.testing.assert_array_equal(got_audio, egemaps.egemaps_features(clip))
  np.testing.assert_array_equal(
    np.load(cache / 'vision_face' / 'clip.npy'), face.face_features(clip)
  )
  assert not (cache / 'audio').exists()  # the librosa cache is another folder
  assert (
    extract.feature_dim('audio', 'egemaps') == 25 and extract.feature_dim('vision', 'face') == 32
  )
  again = extract.extract_folder({'clip': clip}, cache, ('audio',))  # default: librosa
  assert again.extracted == {'audio': 1} and (cache / 'audio' / 'clip.npy').is_file()
  with pytest.raises(ValueError, match=r"Unknown audio extractor 'praat'"):
    extract.extract_folder({'clip': clip}, cache, ('audio',), extractors={'audio': 'praat'})


def test_extract_cli_chooses_extractors(tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  _face_clip(folder / 'a.mp4', faces=2, blanks=1)
  cache = tmp_path / 'out'
  cmd = [
    sys.executable,
    '-m',
    'data_prep.features.extract',
    f'--input_dir={folder}',
    f'--cache_dir={cache}',
    '--num_workers=0',
    '--modalities=vision',
    '--vision_extractor=face',
  ]
  subprocess.run(cmd, check=True, cwd=REPO_ROOT, capture_output=True)
  report = json.loads((cache / 'extract_report.json').read_text())
  assert report['extracted'] == {'vision': 1}
  assert np.load(cache / 'vision_face' / 'a.npy')[:, 0].tolist() == [1.0, 1.0, 0.0]
