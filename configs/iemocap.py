"""FASCA-Net on IEMOCAP: 4 binary emotions (Neutral, Happy, Sad, Angry), MulT metrics.

  python -m data_prep.build --dataset=iemocap --config=mult_aligned --manual_dir=DIR \
      --data_dir=data/tfds
  python train.py --config=configs/iemocap.py --workdir=workdirs/iemocap

Config arg: mult_aligned (default) | mult_unaligned. Not yet run on the real data: no figures yet.
"""

from configs import default
from configs import sentiment_data


def get_config(arg=None):
  config = sentiment_data.apply(default.get_config(), 'iemocap', 'iemocap', arg, 'mult_aligned')
  config.task, config.num_classes, config.target_key = 'iemocap', 2, 'label'
  config.batch_size = 16
  config.optimizer.lr = 3e-4
  return config
