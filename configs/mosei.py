"""FASCA-Net on CMU-MOSEI sentiment regression (MMSA metrics).

  python -m data_prep.build --dataset=cmu_mosei --config=mmsa_unaligned --manual_dir=DIR \
      --data_dir=data/tfds
  python train.py --config=configs/mosei.py:unaligned --workdir=workdirs/mosei

Config arg: aligned | unaligned (MMSA pickles, default aligned), mult_aligned | mult_unaligned
(MulT pickles), csd (CMU-MultimodalSDK files). Not yet run on the real data: no figures yet.
"""

from configs import default
from configs import sentiment_data


def get_config(arg=None):
  return sentiment_data.apply(default.get_config(), 'mosei', 'cmu_mosei', arg, 'aligned')
