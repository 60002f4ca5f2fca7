"""The researcher's workflow end to end on the tiny synthetic config: a 3-seed sweep from the
command line (summary, resume, one compile), TensorBoard events, curves.png and eval.py
--predictions, plus the prediction and curve writers on other tasks."""

import csv
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.proto import plugin_hparams_pb2

from configs import synthetic
from fasca_jax import curves
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import steps
from fasca_jax import tasks
from fasca_jax import train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (1111, 1112, 1113)


def _run(script, *args, env=None, cwd=REPO):
  proc = subprocess.run(
    [sys.executable, os.path.join(REPO, script), *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=900,
    env=env,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  return proc


@pytest.fixture(scope='module')
def sweep_dir(tmp_path_factory):
  """The acceptance command: three tiny seeds into one workdir (compile logging on)."""
  data_dir, workdir = tmp_path_factory.mktemp('tfds'), tmp_path_factory.mktemp('sweep')
  env = dict(os.environ, JAX_LOG_COMPILES='1')
  proc = _run(
    'train.py',
    '--config=configs/synthetic.py:tiny',
    f'--workdir={workdir}',
    f'--config.data_dir={data_dir}',
    '--config.seeds=' + ','.join(map(str, SEEDS)),
    env=env,
  )
  return str(workdir), str(data_dir), proc


def _tiny_config(data_dir, seed=1111):
  config = synthetic.get_config('tiny')
  config.data_dir, config.seed = data_dir, seed
  return config


def test_sweep_writes_summary_of_three_seeds(sweep_dir):
  workdir, _, proc = sweep_dir
  per_seed = {}
  for seed in SEEDS:
    with open(os.path.join(workdir, f'seed_{seed}', 'results.json')) as f:
      per_seed[seed] = json.load(f)
    with open(os.path.join(workdir, f'seed_{seed}', 'metrics.jsonl')) as f:
      assert json.loads(f.readline())['config']['seed'] == seed
  assert per_seed[1111]['test'] != per_seed[1112]['test']  # the seed changes the run.
  with open(os.path.join(workdir, 'summary.csv'), newline='') as f:
    rows = {(r['split'], r['metric']): r for r in csv.DictReader(f)}
  assert {split for split, _ in rows} == {'valid', 'test'}
  assert {('test', 'RMSE'), ('test', 'Has0_AUC'), ('test', 'Non0_AUC')} <= set(rows)
  for (split, metric), row in rows.items():
    values = [per_seed[s][split][metric] * (1 if metric == 'loss' else 100) for s in SEEDS]
    assert row['n_seeds'] == '3'
    assert float(row['mean']) == pytest.approx(np.mean(values), rel=1e-12)
    assert float(row['std']) == pytest.approx(np.std(values), rel=1e-12, abs=1e-12)
  md = open(os.path.join(workdir, 'summary.md')).read()
  assert 'Mean ± std over 3 seeds (1111, 1112, 1113)' in md
  acc = [rows[(split, 'Has0_acc_2')] for split in ('valid', 'test')]
  cells = [f'{float(r["mean"]):.2f} ± {float(r["std"]):.2f}' for r in acc]
  assert f'| Has0_acc_2 | {cells[0]} | {cells[1]} |' in md
  assert md in proc.stdout  # train.py prints the summary.


def test_sweep_compiles_each_step_once(sweep_dir):
  """On the CPU 'auto' trains the three seeds together (fasca_jax/seed_group.py): the programs
  over the seed axis, each compiled once, not the one-seed train program; the one-seed
  evaluation program (each seed's final results, as eval.py computes them) once."""
  stderr = sweep_dir[2].stderr
  assert 'seed_parallel auto: 3 seeds' in stderr and '-> together.' in stderr
  for name in (
    '_init_state',
    '_train_resident_seeds',
    '_evaluate_resident_seeds',
    '_evaluate_resident',
  ):
    assert stderr.count(f'Compiling jit({name})') == 1, name
  assert 'Compiling jit(_train_resident)' not in stderr


def test_rerun_skips_finished_seeds(sweep_dir):
  workdir, data_dir, _ = sweep_dir
  logs = {s: open(os.path.join(workdir, f'seed_{s}', 'metrics.jsonl')).read() for s in SEEDS}
  summary_md = open(os.path.join(workdir, 'summary.md')).read()
  proc = _run(
    'train.py',
    '--config=configs/synthetic.py:tiny',
    f'--workdir={workdir}',
    f'--config.data_dir={data_dir}',
    '--config.seeds=' + ','.join(map(str, SEEDS)),
  )
  assert proc.stderr.count('finished in') == 3
  for seed in SEEDS:  # nothing trained or evaluated again.
    assert open(os.path.join(workdir, f'seed_{seed}', 'metrics.jsonl')).read() == logs[seed]
  assert open(os.path.join(workdir, 'summary.md')).read() == summary_md


def test_rerun_with_another_config_refuses_instead_of_reusing(sweep_dir):
  """The sweep rerun with another learning rate: no seed is reused as finished, nothing trains
  or is rewritten; one error line names the run and the field with both values."""
  workdir, data_dir, _ = sweep_dir
  before = {
    path: open(os.path.join(workdir, path), 'rb').read()
    for path in ('summary.md', 'summary.csv', 'seed_1111/results.json', 'seed_1113/metrics.jsonl')
  }
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, 'train.py'),
      '--config=configs/synthetic.py:tiny',
      f'--workdir={workdir}',
      f'--config.data_dir={data_dir}',
      '--config.seeds=' + ','.join(map(str, SEEDS)),
      '--config.optimizer.lr=0.5',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 1
  assert [line for line in proc.stderr.splitlines() if line.startswith('error: ')] == [
    f"error: workdir '{os.path.join(workdir, 'seed_1111')}' holds a run with optimizer.lr 0.001 "
    'but config.optimizer.lr=0.5: rerun with the values it was trained with, choose another '
    '--workdir, or pass --replace to move the runs that differ aside and train them anew.'
  ]
  assert 'finished in' not in proc.stderr and not proc.stdout
  for path, data in before.items():
    assert open(os.path.join(workdir, path), 'rb').read() == data, path


def test_resuming_with_another_seed_is_a_clear_error(sweep_dir):
  workdir, data_dir, _ = sweep_dir
  with pytest.raises(ValueError, match=r'holds a run with seed 1111 but config.seed=7'):
    train_lib.train_and_evaluate(_tiny_config(data_dir, seed=7), os.path.join(workdir, 'seed_1111'))


def test_shared_steps_must_come_from_the_same_config(sweep_dir, tmp_path):
  _, data_dir, _ = sweep_dir
  jitted = steps.JittedSteps(_tiny_config(data_dir))
  other = _tiny_config(data_dir, seed=1112)
  other.optimizer.lr = 0.5
  with pytest.raises(ValueError, match=r'same config up to config.seed'):
    train_lib.train_and_evaluate(other, str(tmp_path), jitted=jitted)


# --- TensorBoard -------------------------------------------------------------------------------
def _crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), bit by bit: an independent check of the writer's record framing."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
  """TFRecord file of Event protos -> list of events (checking both CRCs of every record)."""
  with open(path, 'rb') as f:
    data = f.read()
  events, pos = [], 0
  while pos < len(data):
    header = data[pos : pos + 8]
    (length,) = struct.unpack('<Q', header)
    (header_crc,) = struct.unpack('<I', data[pos + 8 : pos + 12])
    payload = data[pos + 12 : pos + 12 + length]
    (payload_crc,) = struct.unpack('<I', data[pos + 12 + length : pos + 16 + length])
    assert header_crc == _masked_crc(header) and payload_crc == _masked_crc(payload)
    events.append(event_pb2.Event.FromString(payload))
    pos += 16 + length
  return events


def test_tensorboard_events_hold_the_logged_scalars_and_hparams(sweep_dir):
  run_dir = os.path.join(sweep_dir[0], 'seed_1112')
  files = [f for f in os.listdir(run_dir) if f.startswith('events.out.tfevents.')]
  assert len(files) == 1
  events = read_events(os.path.join(run_dir, files[0]))
  assert events[0].file_version == 'brain.Event:2'
  scalars = {
    (e.step, v.tag): v.simple_value
    for e in events
    for v in e.summary.value
    if v.HasField('simple_value')
  }
  rows = curves.read_metrics(os.path.join(run_dir, 'metrics.jsonl'))
  for kind in ('train', 'valid', 'test'):
    assert rows[kind]
    for row in rows[kind]:
      for key, value in row.items():
        if key not in ('step', 'kind'):
          assert scalars[(row['step'], f'{kind}/{key}')] == np.float32(value), (kind, key)
  step0 = {v.tag: v for e in events if e.step == 0 for v in e.summary.value}
  start = plugin_hparams_pb2.HParamsPluginData.FromString(
    step0['_hparams_/session_start_info'].metadata.plugin_data.content
  ).session_start_info
  assert start.hparams['seed'].number_value == 1112
  assert start.hparams['dataset.config'].string_value == 'tiny'
  experiment = plugin_hparams_pb2.HParamsPluginData.FromString(
    step0['_hparams_/experiment'].metadata.plugin_data.content
  ).experiment
  assert [m.name.tag for m in experiment.metric_infos] == [
    'valid/loss',
    'test/Has0_acc_2',
    'test/Has0_F1_score',
  ]
  config_text = step0['config/text_summary'].tensor.string_val[0].decode()
  assert json.loads(config_text.strip('`\n'))['seed'] == 1112


# --- curves --------------------------------------------------------------------------------------
def _png_size(path):
  with open(path, 'rb') as f:
    head = f.read(24)
  assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR'
  return struct.unpack('>II', head[16:24])


def test_curves_png_written_for_every_seed(sweep_dir):
  for seed in SEEDS:
    path = os.path.join(sweep_dir[0], f'seed_{seed}', train_lib.CURVES_FILE)
    assert _png_size(path) == (1000, 400) and os.path.getsize(path) > 10_000


def test_curves_of_a_resumed_classification_run(tmp_path):
  rows = [
    {'step': 0, 'kind': 'hparams', 'config': {}},
    {'step': 5, 'kind': 'train', 'loss': 2.0},
    {'step': 10, 'kind': 'valid', 'loss': 1.5, 'Acc': 0.3, 'F1_weighted': 0.2},
    {'step': 12, 'kind': 'train', 'loss': 'nan'},  # lost to preemption, repeated below.
    {'step': 12, 'kind': 'train', 'loss': 1.0},
    {'step': 20, 'kind': 'valid', 'loss': 1.2, 'Acc': 0.4, 'F1_weighted': 0.35},
    {'step': 20, 'kind': 'test', 'loss': 1.3, 'Acc': 0.38, 'F1_weighted': 0.33},
  ]
  path = tmp_path / 'metrics.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  read = curves.read_metrics(str(path))
  assert [(r['step'], r['loss']) for r in read['train']] == [(5, 2.0), (12, 1.0)]
  curves.plot(
    str(path), str(tmp_path / 'curves.png'), tasks.Classification.key_metrics, steps_per_epoch=10
  )
  assert _png_size(tmp_path / 'curves.png') == (1000, 400)
  with pytest.raises(ValueError, match=r"unknown task 'ranking'"):
    tasks.get_task('ranking')


# --- predictions ---------------------------------------------------------------------------------
def test_eval_predictions_round_trip(sweep_dir, tmp_path):
  workdir, data_dir, _ = sweep_dir
  run_dir = os.path.join(workdir, 'seed_1113')
  with open(os.path.join(run_dir, 'results.json')) as f:
    trained = json.load(f)
  _run(
    'eval.py',
    f'--config={REPO}/configs/synthetic.py:tiny',
    f'--workdir={run_dir}',
    f'--config.data_dir={data_dir}',
    '--split=valid',
    '--split=test',
    '--predictions=preds/pred.jsonl',
    cwd=tmp_path,
  )
  rows = evaluation.read_predictions(str(tmp_path / 'preds' / 'pred.jsonl'))  # cwd-relative
  config = _tiny_config(data_dir)
  for split, tfds_split in (('valid', 'validation'), ('test', 'test')):
    split_rows = [r for r in rows if r['split'] == split]
    ids = [r['id'] for r in split_rows]
    stored = []
    for batch in input_pipeline.make_batches(
      input_pipeline.open_dataset(config),
      tfds_split,
      train=False,
      global_batch_size=16,
      seed=0,
      process_index=0,
      process_count=1,
    ):
      stored += [i for i, v in zip(batch['id'], batch['valid']) if v]
    assert ids == stored  # every example once, in dataset order.
    assert set(split_rows[0]) == {'id', 'split', 'prediction', 'label'}
    preds, labels = [r['prediction'] for r in split_rows], [r['label'] for r in split_rows]
    recomputed = tasks.from_config(config).metrics(preds, labels)  # MMSA's, RMSE, AUC.
    expected = {k: v for k, v in trained[split].items() if k != 'loss'}
    assert list(expected)[-3:] == ['RMSE', 'Has0_AUC', 'Non0_AUC']
    assert recomputed == pytest.approx(expected, rel=0, abs=0, nan_ok=True)  # exactly.


def test_prediction_rows_for_classification_and_iemocap():
  probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
  classification = tasks.get_task('classification', 3)
  rows = list(
    evaluation.prediction_rows(
      classification,
      'test',
      {'id': np.array(['a', 'b']), 'output': probs, 'target': np.array([1, 2], np.int32)},
    )
  )
  assert rows[0] == {
    'id': 'a',
    'split': 'test',
    'prediction': 1,
    'label': 1,
    'probabilities': [float(p) for p in probs[0]],
  }
  assert [r['prediction'] for r in rows] == [1, 0]
  back = [json.loads(json.dumps(r)) for r in rows]
  np.testing.assert_array_equal(np.array([r['probabilities'] for r in back], np.float32), probs)

  iemocap = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]], np.float32)
  (row,) = evaluation.prediction_rows(
    tasks.get_task('iemocap', 2),
    'valid',
    {'id': np.array(['x']), 'output': iemocap, 'target': np.array([[0, 1, 1, 1]])},
  )
  assert row['prediction'] == [0, 1, 0, 1] and row['label'] == [0, 1, 1, 1]
  assert np.array(row['probabilities']).shape == (4, 2)
  with pytest.raises(ValueError, match=r"split 'test': 2 ids, 1 outputs"):
    list(
      evaluation.prediction_rows(
        classification,
        'test',
        {'id': np.array(['a', 'b']), 'output': probs[:1], 'target': np.array([1])},
      )
    )
