"""The run's config saved in its workdir (`workdir/config.json`) and rebuilt from it.

Configs hold only JSON-representable values whose sequences are tuples (e.g. `modalities`,
`model.far_kernel`, `model.align_pairs`), so reading every JSON array back as a tuple rebuilds
the config exactly. `predict.py` and `visualize.py` use it so that `--workdir` alone suffices.
"""

import json
import os

import jax
import ml_collections

from fasca_jax import errors

CONFIG_FILE = 'config.json'


def save(config: ml_collections.ConfigDict, workdir: str):
  """Writes `config` to workdir/config.json (process 0 only; atomic replace)."""
  if jax.process_index():
    return
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json(indent=2, sort_keys=True) + '\n')
  os.replace(tmp, path)


def _tuples(value):
  """JSON value -> the same value with every list turned into a tuple (recursively)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def load(workdir: str) -> ml_collections.ConfigDict:
  """The locked config of the run in `workdir`, as train.py saved it.

  Raises:
    MissingError (a FileNotFoundError): naming the file and saying how to proceed.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise errors.MissingError(
      f'{path} not found: {workdir!r} is not a training run directory (train.py writes '
      f'{CONFIG_FILE} there when it starts), or it predates {CONFIG_FILE}; pass the config it '
      f'was trained with, e.g. --config=configs/meld.py:multimodal.'
    )
  with open(path) as f:
    config = ml_collections.ConfigDict(_tuples(json.load(f)))
  config.lock()
  return config
