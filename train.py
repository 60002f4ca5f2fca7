r"""Trains FASCA-Net.

  python train.py --config=configs/synthetic.py --workdir=workdirs/synthetic
  python train.py --config=configs/synthetic.py:tiny --workdir=/tmp/tiny --config.optimizer.lr=3e-4
  python train.py --config=configs/mosei.py --config.seeds=1111,1112,1113,1114,1115 --workdir=DIR

Re-running the same command resumes from the newest checkpoint in --workdir. With
--config.seeds, each seed trains in DIR/seed_<n>/ and DIR/summary.md / summary.csv hold the mean
± std over seeds (`fasca_jax.sweep`); re-running skips finished seeds.
"""

import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from fasca_jax import cli
from fasca_jax import distributed
from fasca_jax import metrics
from fasca_jax import sweep
from fasca_jax import train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 for multi-process runs '
                                   '(or $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Process count (or $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (or $JAX_PROCESS_ID).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  train_lib.setup_logging()
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if _CONFIG.value.seeds:
    if sweep.run(_CONFIG.value, _WORKDIR.value) and jax.process_index() == 0:
      with open(os.path.join(_WORKDIR.value, 'summary.md')) as f:
        print(f.read())
    return
  results = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if results:
    print(metrics.format_table(results))


if __name__ == '__main__':
  cli.run(main)
