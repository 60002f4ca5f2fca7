"""Multi-process start-up: `jax.distributed.initialize` from flags or environment variables."""

import os

from absl import logging
import jax

ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS', 'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None):
  """Joins a multi-process run when a coordinator is given (flag or $JAX_COORDINATOR_ADDRESS).

  Without one this is a single-process run and nothing happens. On CPU, collectives across
  processes use gloo.
  """
  coordinator_address = coordinator_address or os.environ.get(ENV['coordinator_address'])
  if not coordinator_address:
    return
  if num_processes is None:
    num_processes = int(os.environ[ENV['num_processes']])
  if process_id is None:
    process_id = int(os.environ[ENV['process_id']])
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # affects CPU devices only.
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info('Process %d of %d joined %s: %d global devices.', jax.process_index(),
               jax.process_count(), coordinator_address, jax.device_count())
