r"""Runs the ablation table: trains and evaluates every variant of a config, then tabulates.

  python ablate.py --config=configs/synthetic.py --workdir=workdirs/ablate_synthetic
  python ablate.py --config=configs/synthetic.py:tiny --workdir=/tmp/abl --variants=full,no_fusion

Each variant (fasca_jax/ablation.py: full, no_fusion, no_fgfa, no_fgfa_audio, no_fgfa_vision,
no_text, no_audio, no_vision; by default all that apply) trains into --workdir/<variant>/ with
the usual checkpoints and results.json; the table (parameter count and every test metric) is
printed and written to --workdir/ablation.md, the numbers to --workdir/ablation.json. Re-running
the command reuses finished variants and resumes an interrupted one. `--config.x=...` overrides
apply to every variant.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from fasca_jax import ablation
from fasca_jax import cli
from fasca_jax import distributed
from fasca_jax import train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base config (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one run per variant.')
_VARIANTS = flags.DEFINE_list(
    'variants', None, f'Variants to run (default: all that apply), from {ablation.VARIANTS}.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  train_lib.setup_logging()
  distributed.initialize()
  table = ablation.run(_CONFIG.value, _WORKDIR.value, _VARIANTS.value)
  if table:
    print(ablation.format_table(table))


if __name__ == '__main__':
  cli.run(main)
