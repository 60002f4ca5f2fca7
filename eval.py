r"""Evaluates the best checkpoint of a training run and prints the metric table.

  python eval.py --config=configs/synthetic.py --workdir=workdirs/synthetic --split=test
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from fasca_jax import cli
from fasca_jax import distributed
from fasca_jax import metrics
from fasca_jax import train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_SPLIT = flags.DEFINE_multi_enum('split', ['test'], ['train', 'valid', 'test'], 'Split(s) to evaluate.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  train_lib.setup_logging()
  distributed.initialize()
  results = train_lib.evaluate(_CONFIG.value, _WORKDIR.value, tuple(_SPLIT.value))
  print(metrics.format_table(results))


if __name__ == '__main__':
  cli.run(main)
