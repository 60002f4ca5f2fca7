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
  'XLA_FLAGS', '--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0'
)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='fasca_jax_cache_')


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


def save_initial_run(config, workdir, perturb=0.0):
  """A run directory without training: the initial state saved as the only (and so best)
  checkpoint through `fasca_jax.checkpoints`, and config.json. `perturb` > 0 adds Gaussian
  noise of that scale to every parameter, so that the zero-initialised FAR offsets/masks are not
  trivial."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fasca_jax import checkpoints, config_io, steps  # pylint: disable=g-import-not-at-top
  from fasca_jax.models import fasca_net  # pylint: disable=g-import-not-at-top

  import optax  # pylint: disable=g-import-not-at-top

  tx = steps.optimizer(config, optax.constant_schedule(config.optimizer.lr))  # never stepped
  state = steps.init_state(fasca_net.build(config), tx, config, np.int32(config.seed))
  if perturb:
    rng = np.random.default_rng(0)
    state = state.replace(
      params=jax.tree.map(
        lambda p: p + perturb * rng.standard_normal(p.shape).astype(p.dtype), state.params
      )
    )
  ckpt = checkpoints.Checkpoints(workdir)
  ckpt.save(state, {}, valid_loss=0.0)
  ckpt.wait()
  config_io.save(config, workdir)
  return state


def tiny_config(data_dir, **overrides):
  """`configs/synthetic.py:tiny` reading `data_dir`, with dotted-key overrides
  (e.g. `**{'model.d_model': 32}`)."""
  from configs import synthetic  # pylint: disable=g-import-not-at-top

  config = synthetic.get_config('tiny')
  config.data_dir = str(data_dir)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config
