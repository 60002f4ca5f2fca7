r"""Trains FASCA-Net.

  python train.py --config=configs/synthetic.py --workdir=workdirs/synthetic
  python train.py --config=configs/synthetic.py:tiny --workdir=/tmp/tiny --config.optimizer.lr=3e-4
  python train.py --config=configs/mosei.py --config.seeds=1111,1112,1113,1114,1115 --workdir=DIR

Re-running the same command resumes from the newest checkpoint in --workdir. With
--config.seeds, each seed trains in DIR/seed_<n>/ and DIR/summary.md / summary.csv hold the mean
± std over seeds (`fasca_jax.runs`); re-running skips finished seeds.
"""

import os

from absl import flags
import jax
from ml_collections import config_flags

from fasca_jax import cli
from fasca_jax import metrics
from fasca_jax import runs
from fasca_jax import tables
from fasca_jax import train_lib

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file (configs/*.py[:arg]).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if _CONFIG.value.seeds:
    if runs.run_seeds(_CONFIG.value, _WORKDIR.value) and jax.process_index() == 0:
      with open(os.path.join(_WORKDIR.value, tables.SUMMARY_MD)) as f:
        print(f.read())
    return
  results = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if results:
    print(metrics.format_table(results))


if __name__ == '__main__':
  cli.run(main)
