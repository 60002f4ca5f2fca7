r"""Runs the ablation table: trains and evaluates every variant of a config, then tabulates.

  python ablate.py --config=configs/synthetic.py --workdir=workdirs/ablate_synthetic
  python ablate.py --config=configs/synthetic.py:tiny --workdir=/tmp/abl --variants=full,no_fusion

Each variant (fasca_jax/ablations.py: full, no_fusion, no_fgfa, no_fgfa_audio, no_fgfa_vision,
no_text, no_audio, no_vision; by default all that apply) trains into --workdir/<variant>/ with
the usual checkpoints and results.json; the table (parameter count and every test metric) is
printed and written to --workdir/ablation.md, the numbers to --workdir/ablation.json. Re-running
the command reuses finished variants and resumes an interrupted one. `--config.x=...` overrides
apply to every variant. A variant directory holding a run of another config (e.g. another
d_model) is refused before anything trains; --replace moves such runs aside and retrains them.
"""

from absl import flags
from ml_collections import config_flags

from fasca_jax import ablations
from fasca_jax import cli
from fasca_jax import runs
from fasca_jax import tables

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Base config (configs/*.py[:arg]).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one run per variant.')
_VARIANTS = flags.DEFINE_list(
  'variants', None, f'Variants to run (default: all that apply), from {ablations.VARIANTS}.'
)
_REPLACE = flags.DEFINE_bool(
  'replace',
  False,
  'Move variant runs trained with another config aside (to <dir>.replaced-<time>, kept) and '
  'retrain them, instead of refusing.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  table = runs.run_ablations(_CONFIG.value, _WORKDIR.value, _VARIANTS.value, replace=_REPLACE.value)
  if table:
    print(tables.ablation_markdown(table))


if __name__ == '__main__':
  cli.run(main)
