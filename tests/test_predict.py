"""predict.py: Route B features of test clips through a run with MELD-multimodal widths."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import save_initial_run
from configs import meld
from configs import synthetic
from data_prep.features import audio, synthetic as clips_lib, text, vision
from fasca_jax import ablations
from fasca_jax import config_io
from fasca_jax import label_names
from fasca_jax import media_prediction
from fasca_jax import tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAID = 'Oh my God, that is amazing!'


def tiny_meld_config():
  """configs/meld.py:multimodal (widths 384/46/27, 7 emotions) with a tiny model and lengths."""
  config = meld.get_config('multimodal')
  config.max_len.text, config.max_len.audio, config.max_len.vision = 16, 64, 8
  m = config.model
  m.d_model, m.num_heads, m.ffn_mult, m.d_align = 16, 2, 2, 8
  m.bfa_heads, m.num_bfa, m.head_hidden = 2, 1, 16
  return config


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('meld_run'))
  save_initial_run(tiny_meld_config(), workdir)
  return workdir


@pytest.fixture(scope='module')
def clip_dir(tmp_path_factory):
  """A folder: two clips (one with a .txt of what was said), a broken file, a non-media file."""
  root = tmp_path_factory.mktemp('clips')
  clips_lib.write_clip(root / 'a_tone.mp4', 1.0, tone_hz=220.0, moving=True)
  clips_lib.write_clip(root / 'b_still.mp4', 0.6, tone_hz=440.0, moving=False)
  (root / 'b_still.txt').write_text(SAID + '\n')
  (root / 'c_broken.mp4').write_bytes(b'not a media file')
  (root / 'notes.md').write_text('ignored: not a media extension')
  return root


@pytest.fixture(scope='module')
def predictor(run_dir):
  return media_prediction.MediaPredictor(run_dir)


def _check_probabilities(result):
  probs = result['probabilities']
  assert tuple(probs) == label_names.MELD_EMOTIONS
  assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
  assert all(0 < p < 1 for p in probs.values())
  assert result['prediction'] == max(probs, key=probs.get)


def test_predict_one_clip_matches_the_model_on_hand_built_inputs(predictor, clip_dir):
  path = str(clip_dir / 'a_tone.mp4')
  result = predictor.predict(path, SAID)
  _check_probabilities(result)
  assert result['id'] == 'a_tone' and result['text'] == SAID
  # The same features, cropped and padded by hand, through the same restored model.
  feats = {
    'audio': audio.audio_features(path),
    'vision': vision.vision_features(path),
    'text': text.cached_encoder().encode([SAID])[0],
  }
  assert result['steps'] == {m: len(x) for m, x in feats.items()} and result['steps']['vision'] == 5
  config = predictor.config
  batch = {}
  for m in config.modalities:
    keep = min(len(feats[m]), config.max_len[m])  # audio (101 steps) is cropped to 64
    batch[m] = np.zeros((1, config.max_len[m], config.dims[m]), np.float32)
    batch[m][0, :keep] = feats[m][:keep]
    batch[f'{m}_mask'] = np.arange(config.max_len[m])[None] < keep
  logits = np.asarray(predictor.run.apply(batch)[0]['main'][0])
  expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  np.testing.assert_allclose(list(result['probabilities'].values()), expected, atol=1e-5)
  table = media_prediction.format_result(result)
  assert table.splitlines()[0] == f'{path} (text: {SAID!r})'
  assert f'{result["prediction"]}' in table.splitlines()[1] and '<- predicted' in table


def test_unreadable_clip_is_an_error_naming_the_file(predictor, clip_dir):
  broken = str(clip_dir / 'c_broken.mp4')
  with pytest.raises(media_prediction.MediaError, match=f'{broken}: cannot open media'):
    predictor.predict(broken, SAID)


def test_input_dir_writes_jsonl_in_file_order_and_skips_unreadable_clips(
  predictor, clip_dir, tmp_path
):
  output = tmp_path / 'out.jsonl'
  results, failed = media_prediction.predict_folder(predictor, str(clip_dir), str(output))
  rows = [json.loads(line) for line in output.read_text().splitlines()]
  assert rows == results and [r['id'] for r in rows] == ['a_tone', 'b_still']
  assert [r['text'] for r in rows] == ['', SAID]  # b_still.txt holds what was said
  for r in rows:
    _check_probabilities(r)
  assert rows[1]['steps']['vision'] == 3  # 0.6 s at 5 frames per second
  broken = str(clip_dir / 'c_broken.mp4')
  assert list(failed) == [broken] and failed[broken].startswith(f'{broken}: cannot open media')


def test_cli_on_a_folder_and_on_an_unreadable_clip(run_dir, clip_dir, tmp_path):
  """The command line, with the run's no_text ablation (audio + vision: no text encoder to load)."""
  workdir = str(tmp_path / 'av_run')
  save_initial_run(ablations.apply(config_io.load(run_dir), 'no_text'), workdir)
  output = tmp_path / 'av.jsonl'
  result = subprocess.run(
    [
      sys.executable,
      'predict.py',
      f'--workdir={workdir}',
      f'--input_dir={clip_dir}',
      f'--output={output}',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in output.read_text().splitlines()]
  assert [r['id'] for r in rows] == ['a_tone', 'b_still'] and set(rows[0]['steps']) == {
    'audio',
    'vision',
  }
  for r in rows:
    _check_probabilities(r)
  assert result.stdout.splitlines()[:2] == [f'{r["file"]}: {r["prediction"]}' for r in rows]
  assert f'skipped {clip_dir / "c_broken.mp4"}: ' in result.stderr
  assert f'2 clips predicted into {output}; 1 skipped.' in result.stdout
  broken = str(clip_dir / 'c_broken.mp4')
  result = subprocess.run(
    [sys.executable, 'predict.py', f'--workdir={workdir}', f'--video={broken}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(f'predict.py: {broken}: cannot open')


def test_run_on_other_features_says_which_config_to_train(tmp_path):
  config = synthetic.get_config('tiny')  # widths 768/74/35
  config_io.save(config, str(tmp_path))
  with pytest.raises(
    media_prediction.InputError,
    match=r'widths text 768, audio 74, vision 35 \(synthetic_affect/tiny\).*'
    r'widths text 384, audio 46, vision 27.*configs/meld.py:multimodal',
  ):
    media_prediction.MediaPredictor(str(tmp_path))


def test_describe_regression_and_text_only_runs(tmp_path):
  task = tasks.from_config(synthetic.get_config('tiny'))
  assert task.describe(np.float32(-0.25)) == {'score': -0.25, 'sentiment': 'negative'}
  assert task.describe(np.float32(0.0))['sentiment'] == 'positive'
  text_run = tiny_meld_config()
  text_run.modalities = ('text',)
  save_initial_run(text_run, str(tmp_path))
  with pytest.raises(media_prediction.InputError, match='reads only text and no text was given'):
    media_prediction.MediaPredictor(str(tmp_path)).predict('any.mp4', '')


def test_predict_uses_the_extractors_and_text_encoder_the_run_was_trained_with(clip_dir, tmp_path):
  """A run of configs/meld.py:multimodal_egemaps_face that fine-tuned its text encoder (a tiny
  random BERT with MiniLM's tokenizer): predict extracts eGeMAPS audio and face-centred vision
  (its config.dataset.extractors) and feeds the tokenizer's ids, not MiniLM features."""
  import text_encoder_fixtures  # pylint: disable=g-import-not-at-top

  from data_prep.features import egemaps, face  # pylint: disable=g-import-not-at-top

  config = meld.get_config('multimodal_egemaps_face')
  tiny = tiny_meld_config()
  config.max_len, config.model = tiny.max_len, tiny.model
  config.model.text_encoder = text_encoder_fixtures.tiny_bert_dir(tmp_path / 'bert', layers=1)
  assert dict(config.dataset.extractors) == {'audio': 'egemaps', 'vision': 'face'}
  assert (config.dims.audio, config.dims.vision) == (25, 32)
  workdir = str(tmp_path / 'run')
  save_initial_run(config, workdir, perturb=0.02)
  predictor = media_prediction.MediaPredictor(workdir)
  assert predictor.extractors == {'audio': 'egemaps', 'vision': 'face'}
  path = str(clip_dir / 'a_tone.mp4')
  result = predictor.predict(path, SAID)
  _check_probabilities(result)
  ids, segments = text.cached_tokenizer(config.model.text_encoder)([SAID])[0]
  feats = {'audio': egemaps.egemaps_features(path), 'vision': face.face_features(path)}
  assert result['steps'] == {'text': len(ids), 'audio': len(feats['audio']), 'vision': 5}
  batch = {}
  for m in ('audio', 'vision'):
    keep = min(len(feats[m]), config.max_len[m])
    batch[m] = np.zeros((1, config.max_len[m], config.dims[m]), np.float32)
    batch[m][0, :keep] = feats[m][:keep]
    batch[f'{m}_mask'] = np.arange(config.max_len[m])[None] < keep
  length = config.max_len.text
  keep = min(len(ids), length)
  batch['text_ids'] = np.zeros((1, length), np.int32)
  batch['text_ids'][0, :keep] = ids[:keep]
  batch['text_segments'] = np.zeros((1, length), np.int32)
  batch['text_mask'] = np.arange(length)[None] < keep
  logits = np.asarray(predictor.run.apply(batch)[0]['main'][0])
  expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  np.testing.assert_allclose(list(result['probabilities'].values()), expected, atol=1e-5)
  # The default extractors give other features, so other probabilities.
  config.dataset.extractors.audio, config.dataset.extractors.vision = 'librosa', 'frame'
  config.dims.audio, config.dims.vision = 46, 27
  other = str(tmp_path / 'other')
  save_initial_run(config, other, perturb=0.02)
  default_run = media_prediction.MediaPredictor(other)
  assert default_run.extractors == {'audio': 'librosa', 'vision': 'frame'}
  assert default_run.predict(path, SAID)['steps']['audio'] == len(audio.audio_features(path))


def test_run_without_recorded_extractors_uses_the_defaults_and_unknown_is_named(tmp_path):
  config = tiny_meld_config()
  del config.dataset['extractors']  # a config.json written before the field existed
  assert media_prediction.run_extractors(config) == {'audio': 'librosa', 'vision': 'frame'}
  config = tiny_meld_config()
  config.dataset.extractors.audio = 'praat'
  with pytest.raises(media_prediction.InputError, match=r"Unknown audio extractor 'praat'"):
    media_prediction.run_extractors(config)
