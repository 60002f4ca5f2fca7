"""Guarding the user's work: a changed config is refused before anything in the workdir is
touched (only truly damaged checkpoints are set aside), eval.py takes the run's own config, a
damaged best checkpoint is reported, nonsense inputs fail in one line, and the log of a tiny run
holds progress and metrics without library noise.

The entry points run as subprocesses where the message and the exit status are the point.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import synthetic
from conftest import tiny_config
from fasca_jax import checkpoints
from fasca_jax import config_io
from fasca_jax import evaluation
from fasca_jax import metric_writer
from fasca_jax import train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = re.compile(r'tpu|transition_steps|pybind11|Unknown size', re.IGNORECASE)
# TFDS's bars and prints, Orbax's old restore line, TFDS's first-build warning.
OTHER_NOISE = (
  'Shuffling',
  'incomplete.',
  'Downloading and preparing',
  'Restored the checkpoints checkpoint',
  'dataset_info.json',
)


def _run(script, *args, env=None):
  """`python script args...` in the repository -> CompletedProcess (text, both streams)."""
  return subprocess.run(
    [sys.executable, os.path.join(REPO, script), *map(str, args)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
    env=env,
  )


def _digests(root) -> dict[str, str]:
  """Relative path -> sha256 of every file under `root`."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith('error: ')]


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  """`python train.py --config=configs/synthetic.py:tiny` into a fresh data_dir (so the dataset
  is built) with the platform left to JAX (so it probes for a TPU, as on a user's machine)."""
  root = tmp_path_factory.mktemp('reliability')
  workdir, data_dir = root / 'run', root / 'tfds'
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  proc = _run(
    'train.py',
    '--config=configs/synthetic.py:tiny',
    f'--workdir={workdir}',
    f'--config.data_dir={data_dir}',
    env=env,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  return workdir, data_dir, proc


@pytest.fixture
def run_copy(trained_run, tmp_path):
  """A copy of the trained run that a test may damage."""
  workdir, data_dir, _ = trained_run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  return copy, data_dir


# --- log noise ----------------------------------------------------------------------------------
def test_tiny_run_logs_progress_and_metrics_without_library_noise(trained_run):
  _, _, proc = trained_run
  lines = (proc.stdout + proc.stderr).splitlines()
  assert [line for line in lines if NOISE.search(line)] == []
  assert [line for line in lines if any(n in line for n in OTHER_NOISE)] == []
  text = '\n'.join(lines)
  assert 'Built synthetic_affect/tiny: 96 train, 32 validation, 32 test examples.' in text
  progress = [line for line in lines if re.search(r'step \d+/12 epoch', line)]
  assert len(progress) == 6 and 'step 12/12' in progress[-1]
  assert all(
    re.search(r'\| (\d+\.\d samples/s \| ETA \dh\d\dm\d\ds|compiling)', p) for p in progress
  )
  for epoch in (1, 2):  # the line gives the validation pass's seconds.
    assert re.search(rf'epoch {epoch} validation \(\d+\.\d s\): loss=', text)
  assert re.search(r'^Has0_acc_2 +\d\.\d{4} +\d\.\d{4}$', proc.stdout, re.MULTILINE)


def test_throughput_leaves_out_the_compiling_step_and_validation(monkeypatch):
  """Windows count only the steps timed since `start`: the first step (compilation) and a
  validation pass never enter a rate."""
  clock = iter([100.0, 104.0, 160.0, 162.0])
  monkeypatch.setattr(metric_writer.time, 'time', lambda: next(clock))
  meter = metric_writer.Throughput(batch_size=16)
  meter.start(1)  # t=100, after the compiling step 1.
  assert meter.rate(1) is None  # a window holding step 1 only: nothing timed.
  assert metric_writer.format_rate(None, 10, 16) == 'compiling | ETA ?'
  assert meter.rate(3) == pytest.approx(2 * 16 / 4.0)  # t=104: steps 2-3 in 4 s.
  meter.start(6)  # t=160, after a validation pass.
  assert meter.rate(8) == pytest.approx(2 * 16 / 2.0)  # t=162.
  assert metric_writer.format_rate(8.0, 3, 16) == '8.0 samples/s | ETA 0h00m06s'


# --- the config guard ---------------------------------------------------------------------------
def test_changed_model_is_refused_and_nothing_is_touched(run_copy):
  """--config.model.d_model=32 on a d_model-16 run: one error line naming the field and both
  values, exit 1, every file (checkpoints, config.json, logs) byte-identical, nothing set aside.
  With --replace the run is moved aside whole and a new one trains."""
  workdir, data_dir = run_copy
  before = _digests(workdir)
  assert 'config.json' in before and any(p.startswith('checkpoints/') for p in before)
  flags = ['--config=configs/synthetic.py:tiny', f'--workdir={workdir}']
  flags += [f'--config.data_dir={data_dir}', '--config.model.d_model=32']
  proc = _run('train.py', *flags)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert _error_lines(proc.stderr) == [
    f"error: workdir '{workdir}' holds a run with model.d_model 16 but "
    'config.model.d_model=32: resume it with the config it was trained with (its config.json), '
    'choose another --workdir, or pass --replace to move it aside and train anew.'
  ]
  assert 'Traceback' not in proc.stderr and 'unreadable' not in proc.stderr
  assert _digests(workdir) == before

  proc = _run('train.py', *flags, '--config.num_epochs=1', '--replace')
  assert proc.returncode == 0, proc.stderr[-3000:]
  (moved,) = [p for p in os.listdir(workdir.parent) if p.startswith('run.replaced-')]
  assert _digests(workdir.parent / moved) == before
  assert config_io.load(str(workdir)).model.d_model == 32
  assert 'Starting from scratch: 6 steps' in proc.stderr


def test_guarded_and_run_control_fields():
  saved = synthetic.get_config('tiny')
  asked = synthetic.get_config('tiny')
  for field, value in (
    ('data_dir', '/elsewhere'),
    ('num_workers', 4),
    ('eval_batch_size', 8),
    ('log_every_steps', 5),
    ('keep_checkpoints', 5),
    ('skip_nonfinite', True),
    ('seeds', '1,2'),
    ('data_placement', 'stream'),
    ('steps_per_call', 4),
    ('compilation_cache_dir', ''),
    ('model.attention', 'dense'),
    ('model.deform_method', 'gather'),
  ):
    assert field in checkpoints.RUN_CONTROL_FIELDS
    node, leaf = (asked.model, field[6:]) if field.startswith('model.') else (asked, field)
    node[leaf] = value
  assert checkpoints.config_differences(saved, asked) == []
  asked.num_epochs = 5  # more epochs: the run continues.
  assert checkpoints.config_differences(saved, asked) == []
  asked.optimizer.lr, asked.num_epochs, asked.seed = 0.5, 1, 7  # fewer epochs: refused.
  asked.batch_size, asked.dtype, asked.max_len.text = 8, 'bfloat16', 20
  asked.dataset.config, asked.model.dropout = 'short', 0.3
  assert checkpoints.config_differences(saved, asked) == [  # fields in ConfigDict (sorted) order.
    ('batch_size', 16, 8),
    ('dataset.config', 'tiny', 'short'),
    ('dtype', 'float32', 'bfloat16'),
    ('max_len.text', 12, 20),
    ('model.dropout', 0.2, 0.3),
    ('num_epochs', 2, 1),
    ('optimizer.lr', 1e-3, 0.5),
    ('seed', 1111, 7),
  ]
  assert checkpoints.config_differences(saved, asked, checkpoints.EVAL_FREE_FIELDS) == [
    ('dataset.config', 'tiny', 'short'),  # evaluation: the fields that shape training only
    ('dtype', 'float32', 'bfloat16'),  # (seed, batch_size, num_epochs, optimizer.*) may differ.
    ('max_len.text', 12, 20),
    ('model.dropout', 0.2, 0.3),
  ]
  saved_dict = saved.to_dict()
  del saved_dict['model']['aux_heads']  # e.g. a config.json written before that field existed.
  (only,) = checkpoints.config_differences(saved_dict, saved)
  assert only == ('model.aux_heads', checkpoints.ABSENT, False)
  assert repr(checkpoints.ABSENT) == '(absent)'


def test_run_control_fields_may_differ_on_resume(run_copy):
  """A finished run resumed with other run-control values: nothing trains again, the results
  are the same and config.json records the new values."""
  workdir, data_dir = run_copy
  results = evaluation.read_results(str(workdir))
  config = tiny_config(data_dir, eval_batch_size=8, log_every_steps=3, keep_checkpoints=3)
  again = train_lib.train_and_evaluate(config, str(workdir))
  assert again['test'] == pytest.approx(results['test'], abs=1e-6)
  assert checkpoints.Checkpoints(str(workdir)).all_steps() == [6, 12]
  saved = config_io.load(str(workdir))
  assert (saved.eval_batch_size, saved.log_every_steps, saved.keep_checkpoints) == (8, 3, 3)


def test_another_model_without_config_json_is_refused_never_set_aside(run_copy):
  """A run made before config.json existed: its checkpoints' shapes are the guard. The mismatch
  names an array and both shapes; no checkpoint is moved aside, nothing is written."""
  workdir, data_dir = run_copy
  os.remove(workdir / 'config.json')
  before = _digests(workdir)
  changed = tiny_config(data_dir, **{'model.d_model': 32})
  message = (
    r'checkpoint .*/checkpoints/12 holds another model or optimizer than this config builds: '
    r'params/\S+ has shape \(\d+,( \d+,?)*\) float32 there, has shape .* under this config'
  )
  with pytest.raises(checkpoints.CheckpointMismatchError, match=message):
    train_lib.train_and_evaluate(changed, str(workdir))
  with pytest.raises(checkpoints.CheckpointMismatchError, match=message):
    evaluation.evaluate_run(changed, str(workdir))  # the restore path, best step first.
  assert _digests(workdir) == before


def test_eval_takes_the_runs_config_and_refuses_another(trained_run):
  workdir, _, _ = trained_run
  proc = _run('eval.py', f'--workdir={workdir}', '--split=test')
  assert proc.returncode == 0, proc.stderr[-3000:]
  loss = evaluation.read_results(str(workdir))['test']['loss']
  assert re.search(rf'^loss +{loss:.4f}$', proc.stdout, re.MULTILINE), proc.stdout
  before = _digests(workdir)
  proc = _run('eval.py', '--config=configs/synthetic.py', f'--workdir={workdir}')
  assert proc.returncode == 1
  (line,) = _error_lines(proc.stderr)
  assert line.startswith(
    f"error: workdir '{workdir}' holds a run with dataset.config 'tiny' but "
    "config.dataset.config='short', max_len.audio 30 but config.max_len.audio=60, "
  )
  assert 'batch_size' not in line  # training-only fields may differ in evaluation.
  assert line.endswith(
    "omit --config to evaluate with the run's own config (its config.json), "
    'or pass the config it was trained with.'
  )
  assert 'Skipping unreadable' not in proc.stderr and 'Traceback' not in proc.stderr
  assert _digests(workdir) == before


def test_damaged_best_checkpoint_is_named_and_the_step_used_recorded(run_copy, caplog):
  workdir, _ = run_copy
  ckpt = checkpoints.Checkpoints(str(workdir))
  best = ckpt.best_step()
  (other,) = [s for s in ckpt.all_steps() if s != best]
  manifest = workdir / checkpoints.CHECKPOINT_DIR / str(best) / 'state' / 'manifest.ocdbt'
  os.truncate(manifest, manifest.stat().st_size // 2)
  results = evaluation.evaluate_run(None, str(workdir), ('test',))
  assert np.isfinite(results['test']['loss'])
  saved = evaluation.read_results(str(workdir))
  assert saved['test'] == results['test']
  assert evaluation.read_fallbacks(str(workdir)) == {
    'test': {'step': other, 'reason': f'best step {best} is unreadable'}
  }
  assert (
    f'Using step {other} of {workdir}, the newest readable step: the best step {best} is '
    'unreadable.' in caplog.text
  )
  # The damaged step is skipped, not moved: evaluation never renames checkpoints.
  assert os.path.isdir(workdir / checkpoints.CHECKPOINT_DIR / str(best))
  # A later evaluation at the best step clears the mark of the splits it evaluates.
  evaluation.write_results(str(workdir), {'test': results['test']})
  assert evaluation.read_fallbacks(str(workdir)) == {}


# --- nonsense inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize(
  'override, message',
  [
    (
      '--config.batch_size=0',
      'error: config.batch_size=0: a batch needs at least one example; use a positive multiple '
      'of the device count 2.',
    ),
    (
      '--config.batch_size=128',
      'error: config.batch_size=128 is larger than the 96 training examples of '
      'synthetic_affect/tiny: an epoch would have no step. Use at most --config.batch_size=96.',
    ),
    (
      '--config.dataset.name=cmu_mosi_typo',
      "error: config.dataset.name='cmu_mosi_typo' is not a dataset of this project; the "
      'datasets are cmu_mosi, cmu_mosei, iemocap, meld, synthetic_affect.',
    ),
    (
      '--config.dataset.config=huge',
      "error: config.dataset.config='huge' is not a builder config of synthetic_affect; its "
      'configs are default, short, tiny.',
    ),
  ],
)
def test_nonsense_config_fails_in_one_line(trained_run, tmp_path, override, message):
  _, data_dir, _ = trained_run
  workdir = tmp_path / 'run'
  proc = _run(
    'train.py',
    '--config=configs/synthetic.py:tiny',
    f'--workdir={workdir}',
    f'--config.data_dir={data_dir}',
    override,
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert _error_lines(proc.stderr) == [message]
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists() or not os.listdir(workdir)
