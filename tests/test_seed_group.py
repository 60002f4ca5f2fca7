"""Every seed at once (`config.seed_parallel`, fasca_jax/seed_group.py) on the tiny config: each
seed's run from the stacked group equals its sequential run, file by file; the 5-seed summary
equals the sequential one; what 'auto' decides; SIGTERM and resume of the group; finished seeds
are reused."""

import csv
import glob
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from configs import synthetic
from fasca_jax import checkpoints
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import placement
from fasca_jax import runs
from fasca_jax import seed_group
from fasca_jax import steps
from fasca_jax import tables

SEEDS = (1111, 1112, 1113, 1114, 1115)
# Each seed's metrics from the vmapped group against its sequential run: |a - b| <= max(RTOL |a|,
# ATOL). Not bit-exact on CPU: under vmap XLA computes the seeds' matmuls and convolutions as
# batched ones, whose float32 sums run in another order. Measured on the tiny config (12 steps,
# 2 CPU devices, 5 seeds, every metric of every results.json and metrics.jsonl row): at most
# 1.5e-5 relative (Corr = -0.0091, a value near 0) and 3.6e-7 absolute.
RTOL, ATOL = 1e-4, 1e-6


def tiny(data_dir, **fields):
  config = synthetic.get_config('tiny')
  config.data_dir = data_dir
  for k, v in fields.items():
    setattr(config, k, v)
  return config


@pytest.fixture(scope='module')
def sweeps(tmp_path_factory):
  """The 5-seed sweep of the tiny config, one seed after another (data_placement 'auto':
  'device' here) and all at once from host memory ('host': every placement trains on the same
  batches; the group's 'device' path is test_group_resumes_after_sigterm... and test_workflow's
  train.py sweep)."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  root = tmp_path_factory.mktemp('sweeps')
  out = {}
  for parallel in (False, True):
    workdir = str(root / f'parallel_{parallel}')
    config = tiny(data_dir, seeds=','.join(map(str, SEEDS)), seed_parallel=parallel)
    if parallel:
      config.data_placement = 'host'
    summary = runs.run_seeds(config, workdir)
    out[parallel] = workdir, summary
  return data_dir, out


def _metrics_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _assert_close(a: dict, b: dict):
  assert list(a) == list(b)
  for k in a:
    if np.isnan(a[k]):
      assert np.isnan(b[k]), k
    else:
      assert b[k] == pytest.approx(a[k], rel=RTOL, abs=ATOL), k


def test_each_seed_equals_its_sequential_run(sweeps):
  """results.json, metrics.jsonl, config.json, checkpoints (steps, best step), curves.png and
  TensorBoard events of every seed, from the group against its sequential run."""
  _, out = sweeps
  (seq, _), (par, _) = out[False], out[True]
  for seed in SEEDS:
    a, b = os.path.join(seq, f'seed_{seed}'), os.path.join(par, f'seed_{seed}')
    with open(os.path.join(a, 'config.json')) as fa, open(os.path.join(b, 'config.json')) as fb:
      config_a, config_b = json.load(fa), json.load(fb)
    assert config_b['seed'] == seed and config_b['seed_parallel'] is True
    assert {**config_a, 'seed_parallel': True, 'data_placement': 'host'} == config_b
    results_a, results_b = evaluation.read_results(a), evaluation.read_results(b)
    assert set(results_b) == {'valid', 'test'}
    for split in ('valid', 'test'):
      _assert_close(results_a[split], results_b[split])
    assert evaluation.read_provenance(a) == evaluation.read_provenance(b)
    rows_a, rows_b = _metrics_rows(a), _metrics_rows(b)
    assert [(r['step'], r['kind']) for r in rows_a] == [(r['step'], r['kind']) for r in rows_b]
    assert rows_b[0]['config']['seed'] == seed
    for ra, rb in zip(rows_a[1:], rows_b[1:]):
      assert set(ra) == set(rb)
      keys = [k for k in ra if k not in ('step', 'kind', 'samples_per_s')]
      _assert_close({k: ra[k] for k in keys}, {k: rb[k] for k in keys})
    ckpt_a, ckpt_b = checkpoints.Checkpoints(a), checkpoints.Checkpoints(b)
    assert ckpt_a.all_steps() == ckpt_b.all_steps() == [6, 12]
    assert ckpt_a.best_step() == ckpt_b.best_step()
    assert runs.is_finished(b, 12)
    assert os.path.getsize(os.path.join(b, 'curves.png')) > 0
    assert glob.glob(os.path.join(b, 'events.out.tfevents.*'))


def test_the_parallel_runs_differ_by_seed(sweeps):
  _, out = sweeps
  par, _ = out[True]
  tests = [evaluation.read_results(os.path.join(par, f'seed_{s}'))['test']['loss'] for s in SEEDS]
  assert len(set(tests)) == len(SEEDS)  # each seed its own init, dropout and data order.


def test_five_seed_summary_equals_the_sequential_one(sweeps):
  _, out = sweeps
  (seq, summary_seq), (par, summary_par) = out[False], out[True]
  assert summary_seq.keys() == summary_par.keys() == {'valid', 'test'}
  for split, metrics in summary_seq.items():
    assert metrics.keys() == summary_par[split].keys()
    for metric, a in metrics.items():
      b = summary_par[split][metric]
      atol = ATOL * a['scale']  # the table's metrics are x100 (loss x1).
      bound = max(max(RTOL * abs(v), atol) for v in a['values'])
      np.testing.assert_allclose(b['values'], a['values'], rtol=RTOL, atol=atol)
      assert b['mean'] == pytest.approx(a['mean'], abs=bound)
      assert b['std'] == pytest.approx(a['std'], abs=2 * bound)
  files = {}
  for workdir in (seq, par):
    with open(os.path.join(workdir, tables.SUMMARY_CSV), newline='') as f:
      files[workdir] = list(csv.DictReader(f))
  assert [(r['split'], r['metric'], r['n_seeds']) for r in files[seq]] == [
    (r['split'], r['metric'], r['n_seeds']) for r in files[par]
  ]
  with open(os.path.join(par, tables.SUMMARY_MD)) as f:
    assert 'Mean ± std over 5 seeds (1111, 1112, 1113, 1114, 1115)' in f.read()


def _jitted(config):
  return steps.JittedSteps(config, steps.make_optimizer(config, 12, 6))


def test_auto_decides_from_the_estimate_and_the_free_memory(sweeps, tmp_path, monkeypatch):
  data_dir, _ = sweeps
  config = tiny(data_dir, seeds='1111,1112', data_placement='device')
  dataset = input_pipeline.open_dataset(config)
  jitted = _jitted(config)
  dirs = [str(tmp_path / 'a'), str(tmp_path / 'b')]
  state = checkpoints.state_bytes(checkpoints.abstract_state(config))
  activations = seed_group.activation_bytes(jitted, dataset)
  # The activations of a step hold at least the batch's inputs and one (B, T, d_model) value.
  batch = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(_batch_shapes(config, dataset)))
  assert activations > batch + config.batch_size * 30 * config.model.d_model * 4
  need = 2 * (state + activations)
  splits = sum(placement.padded_bytes(dataset, s) for s in placement.SPLITS)
  copies = jax.local_device_count()
  fits = int((need / placement.DEVICE_FRACTION) + splits * copies) + 1024
  monkeypatch.setattr(placement, 'device_memory', lambda: (fits, True))
  assert seed_group.choose(config, dataset, jitted, dirs)
  monkeypatch.setattr(placement, 'device_memory', lambda: (fits - 2048, True))
  assert not seed_group.choose(config, dataset, jitted, dirs)
  config.seed_parallel = True  # True does not ask.
  assert seed_group.choose(config, dataset, jitted, dirs)
  config.seed_parallel = False
  assert not seed_group.choose(config, dataset, jitted, dirs)


def _batch_shapes(config, dataset):
  return placement.batch_spec(dataset, config.batch_size, None)


def test_stream_different_steps_and_one_seed_train_one_after_another(sweeps, tmp_path):
  data_dir, _ = sweeps
  config = tiny(data_dir, seeds='1111,1112', seed_parallel=True)
  dataset = input_pipeline.open_dataset(config)
  jitted = _jitted(config)
  dirs = [str(tmp_path / 'a'), str(tmp_path / 'b')]
  assert seed_group.choose(config, dataset, jitted, dirs)
  assert not seed_group.choose(config, dataset, jitted, dirs[:1])
  config.data_placement = 'stream'
  assert not seed_group.choose(config, dataset, jitted, dirs)
  config.data_placement = 'device'
  os.makedirs(os.path.join(dirs[0], checkpoints.CHECKPOINT_DIR, '6'))
  assert seed_group.newest_step(dirs[0]) == 6 and seed_group.newest_step(dirs[1]) == 0
  assert not seed_group.choose(config, dataset, jitted, dirs)


@pytest.mark.parametrize('value,want', [('auto', 'auto'), ('True', True), ('false', False)])
def test_seed_parallel_setting(value, want):
  config = synthetic.get_config('tiny')
  config.seed_parallel = value
  assert seed_group.setting(config) == want


@pytest.mark.parametrize('value', ['yes', 2])
def test_a_bad_seed_parallel_is_a_clear_error(value):
  config = synthetic.get_config('tiny')
  config.seed_parallel = value
  with pytest.raises(ValueError, match=r'config.seed_parallel='):
    seed_group.setting(config)


def test_group_resumes_after_sigterm_and_reuses_finished_seeds(sweeps, tmp_path, monkeypatch):
  """seed_1111 finished (copied from the sequential sweep), 1112 and 1113 to train (the
  'device' placement: each seed gathers its own batches in the program): the group is
  (1112, 1113); SIGTERM after step 3 saves both at step 3 and stops; the same call resumes the
  group to the end. seed_1111 is left untouched; the others equal their sequential runs."""
  data_dir, out = sweeps
  seq, _ = out[False]
  workdir = tmp_path / 'sweep'
  shutil.copytree(os.path.join(seq, 'seed_1111'), workdir / 'seed_1111')
  finished_mtime = os.path.getmtime(workdir / 'seed_1111' / 'results.json')
  config = tiny(data_dir, seeds='1111,1112,1113', seed_parallel=True)

  program = steps.JittedSteps.program
  stepped = []

  def sigterm_after_step_3(self, name, *args, **static):
    compiled = program(self, name, *args, **static)
    if not name.startswith('train'):
      return compiled

    def train(state, data):
      state, metrics = compiled(state, data)
      at = np.atleast_1d(jax.device_get(state.step))
      stepped.append((name, at.tolist()))
      if at[0] == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return state, metrics

    return train

  monkeypatch.setattr(steps.JittedSteps, 'program', sigterm_after_step_3)
  assert runs.run_seeds(config, str(workdir)) == {}
  assert stepped[-1] == ('train_resident_seeds', [3, 3])  # one program steps both seeds.
  for seed in (1112, 1113):
    run_dir = str(workdir / f'seed_{seed}')
    assert checkpoints.Checkpoints(run_dir).all_steps() == [3]
    assert evaluation.read_results(run_dir) == {}
  monkeypatch.setattr(steps.JittedSteps, 'program', program)
  summary = runs.run_seeds(config, str(workdir))
  assert summary['test']['loss']['values']
  assert os.path.getmtime(workdir / 'seed_1111' / 'results.json') == finished_mtime
  for seed in (1112, 1113):
    run_dir = str(workdir / f'seed_{seed}')
    assert checkpoints.Checkpoints(run_dir).all_steps() == [6, 12]
    a = evaluation.read_results(os.path.join(seq, f'seed_{seed}'))
    b = evaluation.read_results(run_dir)
    for split in ('valid', 'test'):
      _assert_close(a[split], b[split])
    rows = _metrics_rows(run_dir)
    assert [r['kind'] for r in rows].count('hparams') == 1  # resumed, not restarted.
    assert [r['step'] for r in rows if r['kind'] == 'valid'] == [6, 12]
