r"""Trains FASCA-Net.

  python train.py --config=configs/synthetic.py --workdir=workdirs/synthetic
  python train.py --config=configs/synthetic.py:tiny --workdir=/tmp/tiny --config.optimizer.lr=3e-4
  python train.py --config=configs/mosei.py --config.seeds=1111,1112,1113,1114,1115 --workdir=DIR

Re-running the same command resumes from the newest checkpoint in --workdir. With
--config.seeds, each seed trains in DIR/seed_<n>/ and DIR/summary.md / summary.csv hold the mean
± std over seeds (`fasca_jax.runs`); re-running skips finished seeds.

A --workdir holding a run trained with another config (model, task, data shape, optimizer, seed,
batch size, fewer epochs; `fasca_jax.checkpoints.RUN_CONTROL_FIELDS` may differ, num_epochs may
grow) is refused before anything in it is touched; --replace moves that run aside to
<workdir>.replaced-<time> and trains anew. Ctrl-C (SIGINT), like SIGTERM, saves the step and
stops; the same command resumes.
"""

import os

from absl import flags
import jax
from ml_collections import config_flags

from fasca_jax import checkpoints
from fasca_jax import cli
from fasca_jax import metrics
from fasca_jax import runs
from fasca_jax import tables
from fasca_jax import train_lib

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file (configs/*.py[:arg]).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
_REPLACE = flags.DEFINE_bool(
  'replace',
  False,
  'When --workdir (or a seed run in it) holds a run trained with another config, move it aside '
  'to <dir>.replaced-<time> (kept, never deleted) and train anew instead of refusing.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if _CONFIG.value.seeds:
    summary = runs.run_seeds(_CONFIG.value, _WORKDIR.value, replace=_REPLACE.value)
    if summary and jax.process_index() == 0:
      with open(os.path.join(_WORKDIR.value, tables.SUMMARY_MD)) as f:
        print(f.read())
    return
  checkpoints.guard_config(_CONFIG.value, _WORKDIR.value, replace=_REPLACE.value)
  results = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if results:
    print(metrics.format_table(results))


if __name__ == '__main__':
  cli.run(main)
