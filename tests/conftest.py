"""Test-wide setup: two virtual CPU devices so every test exercises real sharding.

The tests compile many tiny programs; XLA:CPU's LLVM optimisation dominates their run time and
buys nothing at these sizes, so the backend optimisation level is lowered for tests only.
"""
import os

os.environ.setdefault(
    'XLA_FLAGS',
    '--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
