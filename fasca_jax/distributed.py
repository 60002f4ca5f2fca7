"""Processes and devices: `jax.distributed.initialize` from flags or environment variables, the
one-axis `data` mesh over every device of every process, and the batch-size check for it."""

import os

from absl import logging
import jax

from fasca_jax import errors

ENV = {
  'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
  'num_processes': 'JAX_NUM_PROCESSES',
  'process_id': 'JAX_PROCESS_ID',
}


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
):
  """Joins a multi-process run when a coordinator is given (flag or $JAX_COORDINATOR_ADDRESS).

  Without one this is a single-process run and nothing happens. On CPU, collectives across
  processes use gloo.
  """
  coordinator_address = coordinator_address or os.environ.get(ENV['coordinator_address'])
  if not coordinator_address:
    return
  num_processes = _setting('num_processes', num_processes)
  process_id = _setting('process_id', process_id)
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # affects CPU devices only.
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info(
    'Process %d of %d joined %s: %d global devices.',
    jax.process_index(),
    jax.process_count(),
    coordinator_address,
    jax.device_count(),
  )


def _setting(name: str, value: int | None) -> int:
  """`value`, else the integer in its environment variable; a clear error when neither is set."""
  if value is not None:
    return value
  text = os.environ.get(ENV[name])
  if text is None or not text.strip().isdigit():
    raise ValueError(
      f'A multi-process run needs --{name} or ${ENV[name]} (a non-negative '
      f'integer), found {text!r}.'
    )
  return int(text)


def make_mesh() -> jax.sharding.Mesh:
  """The one-axis mesh `data` over every device of every process."""
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, name: str):
  """Fails fast when a global batch cannot be split evenly over devices and processes."""
  n = jax.device_count()
  if batch_size < 1:
    raise errors.ConfigError(
      f'config.{name}={batch_size}: a batch needs at least one example; use a positive '
      f'multiple of the device count {n}.'
    )
  if batch_size % n:
    raise errors.ConfigError(
      f'config.{name}={batch_size} is not divisible by the device count {n} '
      f'({jax.process_count()} process(es) x {jax.local_device_count()} local devices); '
      f'use a multiple of {n}.'
    )


_BARRIERS = [0]


def barrier(name: str, timeout_s: int = 3600):
  """Every process waits here for the others, through the distributed runtime's key-value
  service rather than a device collective (whose first use gives up after 30 s: gloo on CPU).
  For after long per-process work such as compiling. A no-op in a single-process run."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top

  _BARRIERS[0] += 1
  jax_distributed.global_state.client.wait_at_barrier(
    f'fasca_jax_{name}_{_BARRIERS[0]}', timeout_in_ms=timeout_s * 1000
  )
