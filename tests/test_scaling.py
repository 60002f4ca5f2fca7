"""Scaling out and surviving: device-count invariance, 2 processes over gloo, exact resume after
SIGTERM / SIGKILL, unreadable checkpoints, unusable workdirs, and a lazily read input pipeline.

Runs that are compared with each other are all subprocesses with the same XLA flags (those of
tests/conftest.py, device count aside) and share a JAX compilation cache, so each program is
compiled once per module. Helpers that attach probes to `train.py` are in
tests/scaling_helper.py.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from tensorflow_datasets.core.data_sources import array_record

from configs import synthetic
from fasca_jax import checkpoints
from fasca_jax import distributed
from fasca_jax import input_pipeline
from fasca_jax import train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, 'tests', 'scaling_helper.py')
STEPS_PER_EPOCH, TOTAL_STEPS = 6, 12  # tiny: 96 train examples, batch 16, 2 epochs.


def tiny_config(data_dir):
  config = synthetic.get_config('tiny')
  config.data_dir = str(data_dir)
  return config


def _env(devices, cache_dir, **extra):
  flags = [
    f
    for f in os.environ.get('XLA_FLAGS', '').split()
    if not f.startswith('--xla_force_host_platform_device_count=')
  ]
  return {
    **os.environ,
    'JAX_PLATFORMS': 'cpu',
    'JAX_COMPILATION_CACHE_DIR': str(cache_dir),
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
    'XLA_FLAGS': ' '.join([f'--xla_force_host_platform_device_count={devices}', *flags]),
    **extra,
  }


def _train_flags(workdir, data_dir, placement='auto'):
  """The command line of the run (the same for the first run and every resumption)."""
  return [
    '--config=configs/synthetic.py:tiny',
    f'--workdir={workdir}',
    f'--config.data_dir={data_dir}',
    f'--config.data_placement={placement}',
  ]


def _run(args, env, log_path, timeout=600):
  """Runs `python args...` in the repository; returns (exit code, this run's output)."""
  with open(log_path, 'w') as log:
    proc = subprocess.run(
      [sys.executable, *map(str, args)],
      cwd=REPO,
      env=env,
      stdout=log,
      stderr=subprocess.STDOUT,
      timeout=timeout,
    )
  with open(log_path) as f:
    return proc.returncode, f.read()


def _restore(workdir, config):
  return checkpoints.Checkpoints(str(workdir)).restore_latest(checkpoints.abstract_state(config))


def _saved_steps(workdir):
  return checkpoints.Checkpoints(str(workdir)).all_steps()


def _assert_states_equal(got, want):
  assert int(got.step) == int(want.step)
  for tree in ('params', 'opt_state'):
    jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(getattr(got, tree)),
      jax.device_get(getattr(want, tree)),
    )


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  input_pipeline.ensure_built(tiny_config(path))
  return path


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('jax_cache')


@pytest.fixture(scope='module')
def reference(data_dir, cache_dir, tmp_path_factory):
  """An uninterrupted `train.py` run of the tiny config on 2 devices -> its workdir."""
  root = tmp_path_factory.mktemp('reference')
  workdir = root / 'run'
  code, out = _run(['train.py', *_train_flags(workdir, data_dir)], _env(2, cache_dir), root / 'log')
  assert code == 0, out[-5000:]
  assert _saved_steps(workdir) == [STEPS_PER_EPOCH, TOTAL_STEPS]
  return workdir


# --- exact resume ---------------------------------------------------------------------------------
@pytest.mark.parametrize('placement', ['device', 'host'])
def test_sigterm_then_sigkill_resume_bit_exact(data_dir, cache_dir, reference, tmp_path, placement):
  """SIGTERM after step 3 -> checkpoint + exit 0; the same command resumes; SIGKILL after step 9
  -> the rerun resumes from step 6 (the last save); final state == uninterrupted run (auto:
  'device' here), bit for bit, with the data resident on the devices or gathered on the host."""
  config, workdir, env = tiny_config(data_dir), tmp_path / 'run', _env(2, cache_dir)
  flags = _train_flags(workdir, data_dir, placement)

  code, out = _run(
    [HELPER, 'train', '--sigterm_after_step=3', '--', *flags], env, tmp_path / 'log1'
  )
  assert code == 0, out[-5000:]
  assert 'Stopped at step 3 after SIGTERM' in out
  assert _saved_steps(workdir) == [3]
  assert not (workdir / 'results.json').exists()

  code, out = _run(
    [HELPER, 'train', '--sigkill_after_step=9', '--wait_for_checkpoint=6', '--', *flags],
    env,
    tmp_path / 'log2',
  )
  assert code == -signal.SIGKILL, out[-5000:]
  assert f'Resumed from step 3 of {TOTAL_STEPS}' in out
  assert _saved_steps(workdir) == [3, 6]

  code, out = _run(['train.py', *flags], env, tmp_path / 'log3')
  assert code == 0, out[-5000:]
  assert f'Resumed from step 6 of {TOTAL_STEPS}' in out
  got, _ = _restore(workdir, config)
  want, _ = _restore(reference, config)
  assert int(got.step) == TOTAL_STEPS
  _assert_states_equal(got, want)
  with open(workdir / 'results.json') as f, open(reference / 'results.json') as g:
    assert json.load(f) == json.load(g)


def test_sigint_saves_and_the_same_command_resumes_bit_exact(
  data_dir, cache_dir, reference, tmp_path
):
  """Ctrl-C (SIGINT) after step 4 is handled like SIGTERM: the step is saved, one line says the
  same command resumes, exit 0 without a traceback; the rerun equals the uninterrupted run."""
  config, workdir, env = tiny_config(data_dir), tmp_path / 'run', _env(2, cache_dir)
  flags = _train_flags(workdir, data_dir)
  code, out = _run([HELPER, 'train', '--sigint_after_step=4', '--', *flags], env, tmp_path / 'l1')
  assert code == 0, out[-5000:]
  assert 'Stopped at step 4 after SIGINT; the same command resumes.' in out
  assert 'Traceback' not in out and 'KeyboardInterrupt' not in out
  assert _saved_steps(workdir) == [4]

  code, out = _run(['train.py', *flags], env, tmp_path / 'l2')
  assert code == 0, out[-5000:]
  assert f'Resumed from step 4 of {TOTAL_STEPS}' in out
  got, _ = _restore(workdir, config)
  want, _ = _restore(reference, config)
  _assert_states_equal(got, want)
  with open(workdir / 'results.json') as f, open(reference / 'results.json') as g:
    assert json.load(f) == json.load(g)


# --- faults ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('damaged', ['state/manifest.ocdbt', 'state/_METADATA', 'extra/metadata'])
def test_truncated_file_makes_a_checkpoint_unreadable(data_dir, reference, tmp_path, damaged):
  """Each of these files is read on restore: cut in half, its step is skipped for the one
  before."""
  config, workdir = tiny_config(data_dir), tmp_path / 'run'
  shutil.copytree(reference, workdir)
  path = workdir / checkpoints.CHECKPOINT_DIR / str(TOTAL_STEPS) / damaged
  os.truncate(path, path.stat().st_size // 2)
  state, extra = _restore(workdir, config)
  assert int(state.step) == STEPS_PER_EPOCH and 'data_state' in extra


def test_corrupt_latest_checkpoint_is_skipped_and_training_resumes_from_previous(
  data_dir, cache_dir, reference, tmp_path
):
  config, workdir = tiny_config(data_dir), tmp_path / 'run'
  shutil.copytree(reference, workdir)
  newest = workdir / checkpoints.CHECKPOINT_DIR / str(TOTAL_STEPS)
  manifest = newest / 'state' / 'manifest.ocdbt'
  os.truncate(manifest, manifest.stat().st_size // 2)
  code, out = _run(
    ['train.py', *_train_flags(workdir, data_dir)], _env(2, cache_dir), tmp_path / 'log'
  )
  assert code == 0, out[-5000:]
  assert f'Skipping unreadable checkpoint {newest} ' in out
  assert f'Resumed from step {STEPS_PER_EPOCH} of {TOTAL_STEPS}' in out
  # The broken step was moved aside, so the retrained step 12 could be saved again.
  aside = [p for p in os.listdir(newest.parent) if p.startswith(f'{TOTAL_STEPS}.unreadable-')]
  assert len(aside) == 1
  got, _ = _restore(workdir, config)
  want, _ = _restore(reference, config)
  _assert_states_equal(got, want)


def test_unwritable_workdir_is_a_clear_error_before_training(data_dir, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  for workdir in (blocker, blocker / 'sub'):
    with pytest.raises(OSError, match=f'workdir {str(workdir)!r} is not writable'):
      train_lib.train_and_evaluate(tiny_config(data_dir), str(workdir))
  assert blocker.read_text() == 'x'


def test_full_disk_is_a_clear_error_before_training(data_dir, tmp_path, monkeypatch):
  real = shutil.disk_usage
  monkeypatch.setattr(shutil, 'disk_usage', lambda p: real(p)._replace(free=2**19))
  workdir = tmp_path / 'run'
  with pytest.raises(OSError, match=r'has 0\.5 MiB free; checkpoints need about'):
    train_lib.train_and_evaluate(tiny_config(data_dir), str(workdir))
  assert not (workdir / checkpoints.CHECKPOINT_DIR).exists()
  assert not (workdir / 'metrics.jsonl').exists()


# --- data parallel --------------------------------------------------------------------------------
def _curves(device_counts, data_dir, cache_dir, tmp_path):
  """6 train steps of the tiny config on each device count (subprocesses in parallel)."""
  procs = {}
  for n in device_counts:
    procs[n] = subprocess.Popen(
      [
        sys.executable,
        HELPER,
        'curve',
        f'--data_dir={data_dir}',
        '--steps=6',
        f'--out={tmp_path / f"{n}.npz"}',
      ],
      cwd=REPO,
      env=_env(n, cache_dir),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
  res = {}
  for n, proc in procs.items():
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-5000:]
    res[n] = np.load(tmp_path / f'{n}.npz')
  for n, r in res.items():
    assert int(r['device_count']) == n and int(r['cache_size']) == 1
    assert int(r['batch_devices']) == n and list(r['batch_shard_rows']) == [16 // n] * n
    assert bool(r['params_replicated'])
  return res


def _assert_same_training(got, want):
  """Same global batch on two device counts: per step the same loss and gradient norm, and the
  same parameters after 6 steps, up to float32 reduction order.

  Spread measured between 1 device and 2, 4 and 8 devices over these 6 steps (2-core machine,
  load average 10): losses <= 1.6e-7 relative, gradient norms <= 4.5e-7 relative, hence rtol
  1e-5 (a factor 20). The gradient norm is 5-10 here: a gradient scaled by the device count
  (which AdamW and clipping hide from the losses) is far outside it.
  """
  np.testing.assert_allclose(got['losses'], want['losses'], rtol=1e-5)
  np.testing.assert_allclose(got['grad_norms'], want['grad_norms'], rtol=1e-5)
  assert not np.array_equal(want['losses'][0], want['losses'][-1])
  assert np.all(want['grad_norms'] > 0)
  # Parameters: <= 1.2e-7 apart on 2, 4 and 8 devices, except the attention key biases. Their
  # gradient is rounding noise around 0 (softmax ignores a shift shared by all keys), so Adam
  # moves them (from 0) in directions set by that noise: up to 1.5e-4 apart (2, 4, 8 devices)
  # after steps of learning rate 0, 1/6, ..., 5/6 x 1e-3 (2.5e-3 in all); atol 1e-3 for them.
  params = [k for k in want.files if k.startswith('param.')]
  assert len(params) > 100
  for k in params:
    atol = 1e-3 if k.endswith('.attn.key.bias') else 1e-6
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=atol, err_msg=k)


def test_8_devices_match_1_device_and_compile_once(data_dir, cache_dir, tmp_path):
  """Global batch 16 on 1 and 8 devices (`_assert_same_training`); the batch is split 2 rows
  per device, parameters are replicated, the train step is traced and compiled once."""
  res = _curves((1, 8), data_dir, cache_dir, tmp_path)
  _assert_same_training(res[8], res[1])


@pytest.mark.slow
def test_2_and_4_devices_match_1_device(data_dir, cache_dir, tmp_path):
  """The other device counts of the measured spread (`make test-all`)."""
  res = _curves((1, 2, 4), data_dir, cache_dir, tmp_path)
  for n in (2, 4):
    _assert_same_training(res[n], res[1])


# --- multi-host -----------------------------------------------------------------------------------
def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_processes_agree_to_stop_only_where_the_loop_asks_them(monkeypatch):
  """With several processes a stop request waits for the next agreement point (one
  all-gather there, none in between); a single process stops at once."""
  gathered = []
  preemption = checkpoints.Preemption()
  preemption.requested = True
  assert preemption.should_stop(agree=False)  # one process: at once.
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(
    checkpoints.multihost_utils,
    'process_allgather',
    lambda x: gathered.append(x) or np.stack([x, np.zeros_like(x)]),
  )
  assert not preemption.should_stop(agree=False) and not gathered
  assert preemption.should_stop(agree=True) and len(gathered) == 1
  preemption.requested = False  # another process's request reaches this one.
  monkeypatch.setattr(
    checkpoints.multihost_utils, 'process_allgather', lambda x: np.stack([x, np.ones_like(x)])
  )
  assert (
    preemption.should_stop(agree=True) and preemption.reason == 'a stop signal to another process'
  )


def test_distributed_settings_from_flags_or_environment(monkeypatch):
  for name in distributed.ENV.values():
    monkeypatch.delenv(name, raising=False)
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *args: calls.append(args))
  monkeypatch.setattr(jax.config, 'update', lambda *args: calls.append(args))
  distributed.initialize()  # No coordinator: a single-process run.
  assert not calls
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234')
  with pytest.raises(ValueError, match=r'needs --num_processes or \$JAX_NUM_PROCESSES'):
    distributed.initialize()
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', '1')
  distributed.initialize()
  distributed.initialize('10.0.0.2:99', process_id=0)  # Flags win over the environment.
  assert calls == [
    ('jax_cpu_collectives_implementation', 'gloo'),
    ('10.0.0.1:1234', 2, 1),
    ('jax_cpu_collectives_implementation', 'gloo'),
    ('10.0.0.2:99', 2, 0),
  ]


def test_two_processes_over_gloo(data_dir, cache_dir, tmp_path):
  """2 processes x 2 CPU devices on 127.0.0.1: process 0 joins by flags, process 1 by
  environment variables; identical parameters, disjoint data, only process 0 writes logs. The
  'host' placement, where each process gathers its own rows of every batch (recorded)."""
  address, workdir = f'127.0.0.1:{_free_port()}', tmp_path / 'run'
  flags = [*_train_flags(workdir, data_dir, 'host'), '--config.num_epochs=1']
  joins = [
    (['--coordinator_address=' + address, '--num_processes=2', '--process_id=0'], {}),
    ([], {'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1'}),
  ]
  procs = []
  for i, (join_flags, join_env) in enumerate(joins):
    procs.append(
      subprocess.Popen(
        [
          sys.executable,
          HELPER,
          'record',
          f'--report={tmp_path / f"{i}.json"}',
          '--',
          *flags,
          *join_flags,
        ],
        cwd=REPO,
        env=_env(2, cache_dir, **join_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
    )
  for proc in procs:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-5000:]
  reports = []
  for i in range(2):
    with open(tmp_path / f'{i}.json') as f:
      reports.append(json.load(f))
  assert [(r['process_index'], r['process_count'], r['device_count']) for r in reports] == [
    (0, 2, 4),
    (1, 2, 4),
  ]
  # Identical parameters on both processes at the checkpointed step.
  assert reports[0]['checksums'] == reports[1]['checksums']
  assert list(reports[0]['checksums']) == [str(STEPS_PER_EPOCH)]
  # Each process read its own half of every split; evaluation covers every example once per
  # pass (validation: after the epoch and for the final results; test: once).
  config = tiny_config(data_dir)
  for split, passes in (('train', None), ('validation', 2), ('test', 1)):
    a, b = (set(r['ids'][split]) for r in reports)
    assert a and b and not a & b, split
    if passes:
      n = input_pipeline.open_dataset(config).num_examples(split)
      assert len(a | b) == n
      assert sum(len(r['ids'][split]) for r in reports) == passes * n, split
  train_ids = [r['ids']['train'] for r in reports]
  assert len(train_ids[0]) == len(train_ids[1]) == STEPS_PER_EPOCH * 8  # 8 rows per process.
  # Only process 0 writes metrics and results. Process 1 writes in the workdir only its
  # writability probe and (collectively with process 0) checkpoints.
  logs = {str(workdir / 'metrics.jsonl'), str(workdir / 'results.json')}
  assert logs <= set(reports[0]['writes'])
  allowed = (str(workdir / '.write_probe_1'), str(workdir / checkpoints.CHECKPOINT_DIR) + os.sep)
  others = [
    p for p in reports[1]['writes'] if p.startswith(str(workdir)) and not p.startswith(allowed)
  ]
  assert not others, others
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  keys = [(r['step'], r['kind']) for r in rows]
  assert len(keys) == len(set(keys)) and (STEPS_PER_EPOCH, 'valid') in keys


# --- input pipeline memory ------------------------------------------------------------------------
def test_pipeline_reads_array_record_lazily(data_dir, monkeypatch):
  """Records are read on demand from the array_record files, at most READ_AHEAD_BATCHES batches
  ahead of the consumer (train and eval), so host memory does not grow with the split."""
  config = tiny_config(data_dir)
  dataset = input_pipeline.open_dataset(config)
  source_cls = type(dataset.source('train'))
  assert source_cls is array_record.ArrayRecordDataSource
  reads = {}  # split -> record indices read, in order.
  getitem, getitems = source_cls.__getitem__, source_cls.__getitems__
  monkeypatch.setattr(
    source_cls,
    '__getitem__',
    lambda self, key: reads.setdefault(str(self.split), []).append(key) or getitem(self, key),
  )
  monkeypatch.setattr(
    source_cls,
    '__getitems__',
    lambda self, keys: reads.setdefault(str(self.split), []).extend(keys) or getitems(self, keys),
  )
  bound = (1 + input_pipeline.READ_AHEAD_BATCHES) * 4
  for split, train in (('train', True), ('validation', False)):
    n = dataset.num_examples(split)
    batches = input_pipeline.make_batches(dataset, split, train=train, global_batch_size=4, seed=0)
    next(batches)
    assert 4 <= len(reads[split]) <= bound < n, (split, len(reads[split]))
    for _ in range(n // 4 - 1):
      next(batches)
    assert set(reads[split]) == set(range(n)) and len(reads[split]) <= n + bound - 4, split
