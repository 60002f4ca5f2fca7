r"""Evaluates the best checkpoint of a training run and prints the metric table.

  python eval.py --workdir=workdirs/synthetic --split=test
  python eval.py --workdir=workdirs/synthetic --split=valid --split=test --predictions=pred.jsonl
  python eval.py --config=configs/synthetic.py --workdir=workdirs/synthetic --config.data_dir=DIR

The config is the run's own (--workdir/config.json) unless --config is given; a --config that
differs from it in what evaluation depends on (model, task, data shape, dtype, ...) is refused,
while run-control and training-only fields (data_dir, eval_batch_size, seed, optimizer, ...) may
differ (`fasca_jax.checkpoints.EVAL_FREE_FIELDS`), e.g. a sweep's config on one seed's run.
When the best checkpoint is unreadable, the newest readable step is evaluated instead, with a
warning, and results.json records that step.
"""

from absl import flags
from ml_collections import config_flags

from fasca_jax import cli
from fasca_jax import evaluation
from fasca_jax import metrics

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, "Config file (default: the run's own workdir/config.json).", lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_SPLIT = flags.DEFINE_multi_enum(
  'split', ['test'], ['train', 'valid', 'test'], 'Split(s) to evaluate.'
)
_PREDICTIONS = flags.DEFINE_string(
  'predictions', None, 'Write per-example predictions of the split(s) to this JSONL file.'
)
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  results = evaluation.evaluate_run(
    _CONFIG.value, _WORKDIR.value, tuple(_SPLIT.value), predictions_path=_PREDICTIONS.value
  )
  print(metrics.format_table(results))


if __name__ == '__main__':
  cli.run(main)
