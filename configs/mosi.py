"""FASCA-Net on CMU-MOSI sentiment regression (MMSA metrics).

  python -m data_prep.build --dataset=cmu_mosi --config=mmsa_unaligned --manual_dir=DIR \
      --data_dir=data/tfds
  python train.py --config=configs/mosi.py:unaligned --workdir=workdirs/mosi

Config arg: aligned | unaligned (MMSA pickles, default aligned), mult_aligned | mult_unaligned
(MulT pickles), csd (CMU-MultimodalSDK files). Not yet run on the real data: no figures yet.
"""

from configs import default
from configs import sentiment_data


def get_config(arg=None):
  return sentiment_data.apply(default.get_config(), 'mosi', 'cmu_mosi', arg, 'aligned')
