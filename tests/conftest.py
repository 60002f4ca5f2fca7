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
