"""Any dataset config with one ablation switch applied (variants: fasca_jax/ablations.py).

  python train.py --config=configs/ablations.py:synthetic,no_fusion --workdir=workdirs/abl/no_fusion
  python train.py --config=configs/ablations.py:mosei:unaligned,no_fgfa_audio --workdir=DIR

Config arg: `<dataset>[:<dataset arg>],<variant>`, where <dataset> names configs/<dataset>.py and
<dataset arg> is its own config arg (e.g. synthetic:tiny, meld:multimodal, mosi:unaligned).
The whole table in one command: `python ablate.py --config=configs/<dataset>.py[:arg]
--workdir=DIR` (see ablate.py).
"""

import importlib

from fasca_jax import ablations


def get_config(arg=None):
  if not arg or ',' not in arg:
    raise ValueError(
      f'configs/ablations.py needs the arg <dataset>[:<dataset arg>],<variant> '
      f'(e.g. synthetic:tiny,no_fusion), got {arg!r}; variants: '
      f'{ablations.VARIANTS}'
    )
  base, variant = arg.rsplit(',', 1)
  dataset, _, dataset_arg = base.partition(':')
  try:
    module = importlib.import_module(f'configs.{dataset}')
  except ModuleNotFoundError as e:
    raise ValueError(f'configs/ablations.py: no dataset config configs/{dataset}.py') from e
  return ablations.apply(module.get_config(dataset_arg or None), variant)
