"""FASCA-Net on CMU-MOSEI: sentiment regression (MMSA metrics) or the six emotions.

  python -m data_prep.build --dataset=cmu_mosei --config=mmsa_unaligned --manual_dir=DIR \
      --data_dir=data/tfds
  python train.py --config=configs/mosei.py:unaligned --workdir=workdirs/mosei

  python -m data_prep.build --dataset=cmu_mosei --config=csd --manual_dir=DIR --data_dir=data/tfds
  python train.py --config=configs/mosei.py:csd_emotions --workdir=workdirs/mosei_emotions

Config arg: aligned | unaligned (MMSA pickles, default aligned), mult_aligned | mult_unaligned
(MulT pickles), csd (CMU-MultimodalSDK files) for sentiment; csd_emotions: the same CSD build,
task `mosei_emotions` (happy, sad, anger, surprise, disgust, fear present when intensity > 0,
multi-label; per-emotion weighted accuracy, F1 and AUC and their means, `fasca_jax.metrics`).
Not yet run on the real data: no figures yet.
"""

from configs import common
from configs import default
from configs import sentiment_data
from fasca_jax import label_names

EMOTIONS = 'csd_emotions'


def get_config(arg=None):
  arg = common.parse_arg(
    arg, allowed=(*sentiment_data.args('mosei'), EMOTIONS), default='aligned', config_file='mosei'
  )
  source = 'csd' if arg == EMOTIONS else arg
  config = sentiment_data.apply(default.get_config(), 'mosei', 'cmu_mosei', source, 'aligned')
  if arg == EMOTIONS:
    config.task, config.target_key = 'mosei_emotions', 'emotions'
    config.num_classes = len(label_names.MOSEI_EMOTIONS)
  return config
