"""Test-wide setup: two virtual CPU devices so every test exercises real sharding.

The tests compile many tiny programs; XLA:CPU's LLVM optimisation dominates their run time and
buys nothing at these sizes, so the backend optimisation level is lowered for tests only. One
persistent compilation cache per session, inherited by the train.py / eval.py subprocesses some
tests start, lets a program that another test already compiled (the tiny config's steps) load
instead of compiling again.
"""
import os
import shutil
import tempfile

os.environ.setdefault(
    'XLA_FLAGS',
    '--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='fasca_jax_cache_')


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


def save_initial_run(config, workdir, perturb=0.0):
  """A run directory without training: the initial state saved as the best checkpoint, through
  train_lib's own Orbax managers, and config.json. `perturb` > 0 adds Gaussian noise of that
  scale to every parameter, so that the zero-initialised FAR offsets/masks are not trivial."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fasca_jax import config_io, train_lib  # pylint: disable=g-import-not-at-top
  state = train_lib.Trainer(config, total_steps=1, steps_per_epoch=1).init_state()
  if perturb:
    rng = np.random.default_rng(0)
    state = state.replace(params=jax.tree.map(
        lambda p: p + perturb * rng.standard_normal(p.shape).astype(p.dtype), state.params))
  manager = train_lib._manager(workdir, train_lib.BEST_DIR, 1)
  train_lib._save(manager, state, {'best_val_loss': 0.0})
  manager.wait_until_finished()
  config_io.save(config, workdir)
  return state
