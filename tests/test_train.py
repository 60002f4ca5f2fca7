"""End-to-end training on the tiny synthetic config, resume, and the fail-fast errors."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from fasca_jax import checkpoints
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import steps
from fasca_jax import tasks
from fasca_jax import train_lib
from conftest import tiny_config
import train_hooks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """One full tiny run (2 epochs) shared by the tests that read its outputs."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny_config(data_dir)
  results = train_lib.train_and_evaluate(config, workdir)
  return config, workdir, results


def _latest_of(workdir, config):
  return checkpoints.Checkpoints(workdir).restore_latest(checkpoints.abstract_state(config))


def _jitted(config, total_steps, steps_per_epoch):
  return steps.JittedSteps(config, steps.make_optimizer(config, total_steps, steps_per_epoch))


def _first_batch(config):
  dataset = input_pipeline.open_dataset(config)
  return next(
    iter(
      input_pipeline.make_batches(
        dataset, 'train', train=True, global_batch_size=config.batch_size, seed=0
      )
    )
  )


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_abstract_state_of_the_compiled_init_equals_eval_shape(data_dir, dtype):
  """The loop reads the state's shapes from the compiled init program; restores elsewhere
  (eval.py) trace them with `jax.eval_shape`: both must give the same tree."""
  config = tiny_config(data_dir)
  config.dtype = dtype
  from_program = _jitted(config, 12, 6).abstract_state()
  traced = checkpoints.abstract_state(config)
  assert jax.tree.structure(from_program) == jax.tree.structure(traced)
  for a, b in zip(jax.tree.leaves(from_program), jax.tree.leaves(traced)):
    assert (a.shape, a.dtype, a.sharding) == (b.shape, b.dtype, b.sharding)


def test_train_and_evaluate_writes_results_metrics_and_checkpoints(trained):
  config, workdir, results = trained
  assert set(results) == {'valid', 'test'}
  for split in results.values():
    assert set(split) >= {'loss', 'Has0_acc_2', 'Has0_F1_score', 'MAE', 'Corr', 'Mult_acc_7'}
    assert np.isfinite(split['loss'])
  with open(os.path.join(workdir, 'results.json')) as f:
    written = json.load(f)
  # The splits, plus the dataset's provenance (a generated dataset: no source files).
  assert written == {'dataset': written['dataset'], **results}  # JSON round-trips floats exactly.
  assert evaluation.read_results(workdir) == results
  assert written['dataset'] == evaluation.read_provenance(workdir)
  version = str(input_pipeline.open_dataset(config).builder.version)
  assert written['dataset'] == {'name': 'synthetic_affect/tiny', 'version': version, 'sources': {}}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert rows[0]['kind'] == 'hparams' and rows[0]['config']['dataset']['config'] == 'tiny'
  steps_per_epoch = input_pipeline.open_dataset(config).steps_per_epoch(config.batch_size)
  valid_rows = [r for r in rows if r['kind'] == 'valid']
  assert [r['step'] for r in valid_rows] == [
    steps_per_epoch * (e + 1) for e in range(config.num_epochs)
  ]
  train_rows = [r for r in rows if r['kind'] == 'train']
  assert train_rows and all(r['samples_per_s'] > 0 for r in train_rows)
  state, _ = _latest_of(workdir, config)
  assert int(state.step) == steps_per_epoch * config.num_epochs
  ckpt = checkpoints.Checkpoints(workdir)
  best = min(valid_rows, key=lambda r: r['loss'])
  assert ckpt.best_step() == best['step']
  assert ckpt.all_steps()[-1] == steps_per_epoch * config.num_epochs


def test_host_placement_with_two_steps_per_call_trains_the_same_run(trained, tmp_path):
  """The fixture ran with data_placement auto (device here) and one step per call; the host
  placement with 2 steps per lax.scan trains on the same batches with the same dropout keys."""
  config, workdir, results = trained
  other = tiny_config(config.data_dir, data_placement='host', steps_per_call=2)
  again = train_lib.train_and_evaluate(other, str(tmp_path))
  got, extra = _latest_of(str(tmp_path), other)
  want, _ = _latest_of(workdir, config)
  assert int(got.step) == int(want.step) and extra['data_state']['step'] == int(got.step)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got.params, want.params
  )
  assert again['test'] == pytest.approx(results['test'], rel=1e-5)


def test_evaluate_restores_best_and_reproduces_results(trained):
  config, workdir, results = trained
  again = evaluation.evaluate_run(config, workdir, ('test',))
  assert again['test'] == pytest.approx(results['test'], abs=1e-6)


def test_rerun_of_finished_run_resumes_without_training(trained):
  config, workdir, results = trained
  before, _ = _latest_of(workdir, config)
  again = train_lib.train_and_evaluate(config, workdir)
  after, _ = _latest_of(workdir, config)
  assert int(after.step) == int(before.step)
  jax.tree.map(np.testing.assert_array_equal, before.params, after.params)
  assert again['test'] == pytest.approx(results['test'], abs=1e-6)


def test_one_train_step_lowers_the_loss_on_its_batch(data_dir):
  config = tiny_config(data_dir, **{'optimizer.warmup_epochs': 0.0, 'model.dropout': 0.0})
  jitted = _jitted(config, total_steps=10, steps_per_epoch=5)
  state = jitted.init(config.seed)
  device_batch = input_pipeline.to_global(_first_batch(config), jitted.data_sharding)
  loss0 = jitted.loss(state.params, device_batch)
  for _ in range(3):
    state, step_metrics = jitted.train(state, device_batch)
  assert int(state.step) == 3 and np.isfinite(step_metrics['loss'])
  assert jitted.loss(state.params, device_batch) < loss0


def test_batch_not_divisible_by_devices_is_a_clear_error(data_dir, tmp_path):
  assert jax.device_count() == 2  # tests/conftest.py
  with pytest.raises(ValueError, match=r'batch_size=7 is not divisible by the device count 2'):
    train_lib.train_and_evaluate(tiny_config(data_dir, batch_size=7), str(tmp_path))


def test_missing_dataset_error_says_how_to_build_it(tmp_path):
  config = tiny_config(tmp_path / 'empty')
  config.dataset.name, config.dataset.config = 'cmu_mosi', 'mmsa_aligned'
  with pytest.raises(FileNotFoundError, match=r'python -m data_prep.build --dataset=cmu_mosi'):
    train_lib.train_and_evaluate(config, str(tmp_path / 'run'))


def test_nonfinite_loss_stops_with_step_and_keeps_last_checkpoint(data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path)
  config = tiny_config(data_dir, num_epochs=1)
  train_lib.train_and_evaluate(config, workdir)
  good, _ = _latest_of(workdir, config)
  good_step = int(good.step)

  original = tasks.Regression.per_example_loss
  monkeypatch.setattr(
    tasks.Regression, 'per_example_loss', lambda task, y, target: original(task, y, target) * np.nan
  )
  with pytest.raises(train_lib.NonFiniteLossError, match=f'non-finite loss at step {good_step}'):
    train_lib.train_and_evaluate(tiny_config(data_dir, num_epochs=2), workdir)
  after, _ = _latest_of(workdir, config)
  assert int(after.step) == good_step
  jax.tree.map(np.testing.assert_array_equal, good.params, after.params)


def test_skip_nonfinite_counts_and_skips_updates(data_dir):
  config = tiny_config(data_dir, skip_nonfinite=True)
  jitted = _jitted(config, total_steps=4, steps_per_epoch=2)
  state = jitted.init(config.seed)
  batch = _first_batch(config)
  batch[config.target_key] = np.full_like(batch[config.target_key], np.nan)
  before = jax.device_get(state.params)
  state, _ = jitted.train(state, input_pipeline.to_global(batch, jitted.data_sharding))
  assert int(state.nonfinite_count) == 1 and int(state.first_nonfinite_step) == 0
  assert int(state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))


def test_unknown_config_key_fails_loudly(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      'train.py',
      '--config=configs/synthetic.py:tiny',
      f'--workdir={tmp_path}',
      '--config.optimizer.learning_rate=1e-3',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert (
    "error: --config.optimizer.learning_rate: the config has no field 'learning_rate'"
    in proc.stderr
  )
  assert 'Traceback' not in proc.stderr


def test_second_run_loads_every_program_from_the_compilation_cache(data_dir, tmp_path):
  """config.compilation_cache_dir: the first run fills it; a second run of the same config (in
  another workdir) finds every program there and adds nothing. Both log the time to first step
  (not asserted: timings belong in benchmarks/)."""
  cache = tmp_path / 'xla'
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  listings = []
  for run in ('first', 'second'):
    proc = subprocess.run(
      [
        sys.executable,
        'train.py',
        '--config=configs/synthetic.py:tiny',
        f'--workdir={tmp_path / run}',
        f'--config.data_dir={data_dir}',
        f'--config.compilation_cache_dir={cache}',
        '--config.num_epochs=1',
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    (line,) = [x for x in proc.stderr.splitlines() if 'time to first step: ' in x]
    times = re.search(r'time to first step: ([0-9.]+) s \(from process start; ([0-9.]+) s of', line)
    assert float(times[2]) <= float(times[1]), line  # this run started after the process.
    print(run, line.split('] ')[-1])
    listings.append(sorted(p.name for p in cache.iterdir()))
  assert listings[0] and listings[1] == listings[0]


def test_best_checkpoint_is_an_earlier_epoch_when_a_later_one_is_worse(data_dir, tmp_path):
  """A hook on the train step shifts the regression head's output by +5 at the first step of
  epoch 2, so epoch 2 ends with a much higher validation loss than epoch 1 (6 more steps at
  lr 1e-3 cannot undo it). The best checkpoint must then be epoch 1's step: `best_step`,
  `restore_best` and results.json (valid and test) all come from it, not from the latest step,
  whose parameters differ."""
  workdir = str(tmp_path)
  config = tiny_config(data_dir)
  steps_per_epoch = input_pipeline.open_dataset(config).steps_per_epoch(config.batch_size)
  total_steps = steps_per_epoch * config.num_epochs
  assert config.steps_per_call == 1
  jitted = _jitted(config, total_steps, steps_per_epoch)

  def worse_from_epoch_2(state):
    if int(state.step) == steps_per_epoch + 1:
      head = state.params['head']
      shifted = {**head, 'out': {**head['out'], 'bias': head['out']['bias'] + 5.0}}
      state = state.replace(params={**state.params, 'head': shifted})
    return state

  train_hooks.after_train_calls(jitted, worse_from_epoch_2)
  results = train_lib.train_and_evaluate(config, workdir, jitted=jitted)

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    valid = {r['step']: r for r in map(json.loads, f) if r['kind'] == 'valid'}
  assert sorted(valid) == [steps_per_epoch, total_steps]
  assert valid[total_steps]['loss'] > valid[steps_per_epoch]['loss'] + 1.0
  ckpt = checkpoints.Checkpoints(workdir)
  assert ckpt.all_steps()[-1] == total_steps
  assert ckpt.best_step() == steps_per_epoch
  restored = checkpoints.restore_best(config, workdir)
  best = restored.state
  latest, _ = _latest_of(workdir, config)
  assert restored.step == steps_per_epoch == int(best.step) and restored.fallback is None
  assert int(latest.step) == total_steps
  assert not np.allclose(best.params['head']['out']['bias'], latest.params['head']['out']['bias'])
  # The final results are those of the best step: its validation metrics as logged at the end
  # of epoch 1, and a test evaluation of its parameters.
  for metric in ('loss', 'Has0_acc_2', 'MAE', 'Corr'):
    assert results['valid'][metric] == pytest.approx(valid[steps_per_epoch][metric], abs=1e-6)
  assert evaluation.read_results(workdir) == results
  dataset = input_pipeline.open_dataset(config)
  best_test, _ = evaluation.evaluate(
    jitted, best.params, dataset, 'test', batch_size=config.eval_batch_size
  )
  assert results['test'] == pytest.approx(best_test, abs=1e-6)
