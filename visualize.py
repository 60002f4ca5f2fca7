r"""Draws, for one example, where FGFA's deformable sampling looked and the cross-modal attention.

  python visualize.py --workdir=workdirs/synthetic --id=test_00012 [--split=test]

Restores the best checkpoint of --workdir (config from workdir/config.json unless --config is
given), runs the model on example --id of --split and writes into --workdir/alignment/<id>/:
  <pair>_sampling.png        per FGFA pair (audio->text, vision->text): for every text step, the
                             time positions its deformable taps sampled (learned offsets added to
                             the dilated grid), coloured and sized by the learned mask; below, the
                             effective weight per tap and text step.
  cross_attention_<m>.png    per modality: its cross-modal attention over the other modalities'
                             steps (last fusion layer, mean over heads).
"""

from absl import flags
from ml_collections import config_flags

from fasca_jax import alignment_plots
from fasca_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, "Config file (default: the run's own workdir/config.json).", lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_ID = flags.DEFINE_string('id', None, "Example id (the dataset's `id` field).")
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'valid', 'test'], 'Split holding the id.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Output folder (default WORKDIR/alignment/<id>).')
flags.mark_flags_as_required(['workdir', 'id'])


def main(argv):
  del argv
  try:
    paths = alignment_plots.write_plots(
      _WORKDIR.value, _ID.value, _SPLIT.value, _CONFIG.value, _OUT_DIR.value
    )
  except (KeyError, FileNotFoundError) as e:
    raise SystemExit(f'visualize.py: {e.args[0]}') from e
  print(
    '\n'.join(paths)
    if paths
    else 'Nothing to plot: this run has no FGFA pair and no cross-modal attention.'
  )


if __name__ == '__main__':
  cli.run(main)
