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

--predictions writes one JSON line per example (id, split, prediction, label and, for
classification, class probabilities; `fasca_jax.evaluation`), in dataset order; a relative
path is relative to the current directory. For a seed sweep, evaluate one seed's run:
--workdir=DIR/seed_<n>.

Robustness (`fasca_jax.robustness`): --perturb=KIND:MODALITY[+MODALITY...][=V1,V2,...]
(repeatable) evaluates under perturbed inputs, each intensity in turn, and writes
--workdir/robustness/<kind>_<modalities>_<split>.{json,md,png}. KIND is missing, drop_steps,
noise or shift (`fasca_jax/perturbations.py`); --workdir may also be a seed sweep (mean ± std
over seeds) or an ablation directory (one curve per variant), each run with its own config.json
unless --config is given:

  python eval.py --config=configs/synthetic.py --workdir=workdirs/ablate_synthetic \
      --perturb=shift:audio=-8,-4,-2,0,2,4,8 --perturb=missing:vision=0,0.5,1 \
      --perturb=noise:audio=inf,20,10,0 --perturb=drop_steps:audio
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from fasca_jax import cli
from fasca_jax import evaluation
from fasca_jax import metrics
from fasca_jax import perturbations
from fasca_jax import robustness

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
_PERTURB = flags.DEFINE_multi_string(
  'perturb',
  [],
  'Robustness: KIND:MODALITY[+MODALITY...][=V1,V2,...], KIND in '
  f'{", ".join(perturbations.KINDS)}; {perturbations.EXAMPLE}. Repeatable.',
)
_PERTURB_SEED = flags.DEFINE_integer(
  'perturb_seed', 0, "Seed of the perturbations' random draws (non-negative).", lower_bound=0
)
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  if _PERTURB.value:
    if _PREDICTIONS.value:
      raise app.UsageError('--predictions and --perturb cannot be combined.')
    try:
      perturbations.parse_all(_PERTURB.value)  # every spec checked before anything loads.
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    reports = robustness.evaluate_workdir(
      _CONFIG.value,
      _WORKDIR.value,
      _PERTURB.value,
      tuple(_SPLIT.value),
      seed=_PERTURB_SEED.value,
    )
    for report in reports:
      print(robustness.to_markdown(report))
    return
  results = evaluation.evaluate_run(
    _CONFIG.value, _WORKDIR.value, tuple(_SPLIT.value), predictions_path=_PREDICTIONS.value
  )
  print(metrics.format_table(results))


if __name__ == '__main__':
  cli.run(main)
