"""The CMU-MOSEI emotion task end to end: a small hand-built CSD set (tests/csd_fixtures.py)
built by cmu_mosei/csd, `configs/mosei.py:csd_emotions` shrunk, trained for a few steps;
results.json (metrics and the dataset's source digests) and the predictions checked."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import mosei
from csd_fixtures import write_sdk_dataset
from data_prep import cmu_mosei
from data_prep import sources
from fasca_jax import evaluation
from fasca_jax import metrics
from fasca_jax import tasks
from fasca_jax import train_lib
from fasca_jax.label_names import MOSEI_EMOTIONS

# 8 train, 2 valid, 2 test videos; each gives its two labelled segments (the third is silence).
VIDEOS = {f'train{i}': 'train' for i in range(8)} | {'valid0': 'valid', 'valid1': 'valid'}
VIDEOS |= {'test0': 'test', 'test1': 'test'}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  files = cmu_mosei.CSD_FILES
  expected, _ = write_sdk_dataset(manual, files, 7, videos=VIDEOS, seed=3)
  data_dir = tmp_path_factory.mktemp('tfds')
  cmu_mosei.CmuMosei(config='csd', data_dir=os.fspath(data_dir)).download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual))
  )
  config = mosei.get_config('csd_emotions')
  config.data_dir = os.fspath(data_dir)
  for m in ('text', 'audio', 'vision'):
    config.max_len[m] = 8
  m = config.model
  m.d_model, m.num_heads, m.d_align, m.bfa_heads, m.num_bfa, m.head_hidden = 16, 2, 8, 2, 1, 16
  config.batch_size, config.eval_batch_size, config.num_epochs = 4, 4, 2
  config.log_every_steps, config.optimizer.lr = 1, 3e-3
  workdir = os.fspath(tmp_path_factory.mktemp('run'))
  results = train_lib.train_and_evaluate(config, workdir)
  return config, workdir, results, manual, expected


def test_builds_the_emotions_the_task_trains_on(run):
  config, _, _, _, expected = run
  assert [len(expected[s]) for s in ('train', 'validation', 'test')] == [16, 4, 4]
  intensities = np.array([e['emotions'] for e in expected['train']])
  assert intensities.shape == (16, 6) and (intensities > 0).any(0).all()
  assert tasks.from_config(config).class_names == MOSEI_EMOTIONS


def test_trains_and_writes_emotion_metrics_and_provenance(run):
  config, workdir, results, manual, _ = run
  names = [f'{e}_{k}' for e in MOSEI_EMOTIONS for k in ('WA', 'F1', 'AUC')]
  assert list(results['test']) == ['loss', *names, 'Mean_WA', 'Mean_F1', 'Mean_AUC']
  assert np.isfinite(results['test']['loss']) and np.isfinite(results['test']['Mean_F1'])
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  train = [r['loss'] for r in rows if r['kind'] == 'train']
  assert len(train) == 8  # 16 examples / batch 4 x 2 epochs, logged every step.
  assert np.mean(train[-2:]) < np.mean(train[:2])  # the sigmoid BCE goes down.
  valid = [r for r in rows if r['kind'] == 'valid']
  assert all(set(tasks.MoseiEmotions.key_metrics) <= set(r) for r in valid)
  dataset = evaluation.read_provenance(workdir)
  files = [*cmu_mosei.CSD_FILES.sequences().values(), 'folds.json']
  assert dataset == {
    'name': 'cmu_mosei/csd',
    'version': '1.1.0',
    'sources': {name: sources.file_digest(manual / name) for name in files},
  }


def test_predictions_recompute_the_results(run, tmp_path):
  config, workdir, results, _, _ = run
  path = tmp_path / 'pred.jsonl'
  evaluation.evaluate_run(config, workdir, ('test',), predictions_path=os.fspath(path))
  rows = evaluation.read_predictions(os.fspath(path))
  assert len(rows) == 4
  assert set(rows[0]) == {'id', 'split', 'prediction', 'label', 'probabilities', 'intensities'}
  probs = np.array([r['probabilities'] for r in rows], np.float32)
  np.testing.assert_array_equal(
    np.array([r['prediction'] for r in rows]), (probs > 0.5).astype(int)
  )
  again = metrics.mosei_emotion_metrics(probs, np.array([r['label'] for r in rows]))
  with_intensities = metrics.mosei_emotion_metrics(probs, [r['intensities'] for r in rows])
  want = {k: v for k, v in results['test'].items() if k != 'loss'}
  assert again == pytest.approx(want, rel=0, abs=0, nan_ok=True)  # exactly.
  assert with_intensities == pytest.approx(want, rel=0, abs=0, nan_ok=True)
