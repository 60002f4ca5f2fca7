"""Test-wide setup: two virtual CPU devices so every test exercises real sharding."""
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
