"""Every seed of a sweep at once: `config.seed_parallel` for `--config.seeds=1111,...`.

The seeds of a sweep differ only in `config.seed`, so their train states stack on a leading seed
axis and one program (`jax.vmap`, `steps.JittedSteps` programs `*_seeds`) steps them all: each
seed keeps its own initialisation, dropout keys fold_in(seed, step), data order (`indexing`,
from the state's seed) and optimizer state; one evaluation program scores them all. On the
`data` mesh the seed axis is replicated and the batch axis sharded, as for one seed. Each seed
still writes its own `seed_<n>/` run exactly as a sequential run writes it
(`train_lib.train_group`).

  False   one seed after another (`train_lib.train_and_evaluate`), sharing the compiled steps.
  True    the unfinished seeds in one group.
  'auto'  the group when S x (train state + activations of one train step) fit
          `placement.DEVICE_FRACTION` of a device's free memory (`placement.device_memory`; with
          the 'device' placement, less the padded splits resident there), else one after another;
          the estimate and the choice are logged. The activations are estimated from the train
          step's jaxpr: the bytes of every value it computes (`activation_bytes`), an upper bound
          on what the step holds at once.

Either way, one after another when (logged):
  - the data placement is 'stream' (grain streams one seed's order; use 'device' or 'host'),
  - fewer than two seeds are left to train (finished seeds are reused, `runs.is_finished`),
  - the seeds' newest checkpoints are at different steps (a group resumes from one common step;
    a group stopped by SIGTERM saved every seed at the same step, so this only happens when
    seeds were trained apart, e.g. some of them before with --config.seed_parallel=False).
"""

import math
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from fasca_jax import checkpoints
from fasca_jax import input_pipeline
from fasca_jax import placement
from fasca_jax import steps

VALUES = ('auto', True, False)


def setting(config) -> str | bool:
  """config.seed_parallel ('auto', True or False; absent in older configs: 'auto')."""
  value = config.get('seed_parallel', 'auto')
  if isinstance(value, str) and value.lower() in ('true', 'false', 'auto'):
    value = {'true': True, 'false': False, 'auto': 'auto'}[value.lower()]
  if value not in VALUES or isinstance(value, (int, float)) and not isinstance(value, bool):
    raise ValueError(f"config.seed_parallel={value!r}: expected 'auto', True or False.")
  return value


def newest_step(workdir: str) -> int:
  """The newest saved step of the run in `workdir` (0 when it has none)."""
  directory = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return max((int(n) for n in names if n.isdigit()), default=0)


def choose(
  config, dataset: input_pipeline.Dataset, jitted: steps.JittedSteps, workdirs: list[str]
) -> bool:
  """Whether the runs in `workdirs` (seeds of `config`) train as one group (module docstring);
  the reason is logged."""
  value = setting(config)
  s = len(workdirs)
  if value is False or s < 2:
    if s >= 2:
      logging.info('seed_parallel=False: %d seeds train one after another.', s)
    return False
  mode = placement.choose(config, dataset)
  if mode == 'stream':
    logging.warning(
      "seed_parallel=%r: the 'stream' placement reads one seed's order; %d seeds train one "
      "after another (data_placement 'device' or 'host' trains them together).",
      value,
      s,
    )
    return False
  at = {os.path.basename(w): newest_step(w) for w in workdirs}
  if len(set(at.values())) > 1:
    logging.warning(
      'seed_parallel=%r: the seeds resume from different steps (%s); they train one after another.',
      value,
      ', '.join(f'{w} at {n}' for w, n in at.items()),
    )
    return False
  if value is True:
    logging.info('seed_parallel=True: %d seeds train together.', s)
    return True
  state = checkpoints.state_bytes(checkpoints.abstract_state(config))
  activations = activation_bytes(jitted, dataset)
  need = s * (state + activations)
  free, shared = placement.device_memory()
  if mode == 'device':
    free -= sum(placement.padded_bytes(dataset, split) for split in placement.SPLITS) * (
      jax.local_device_count() if shared else 1
    )
  fits = need <= placement.DEVICE_FRACTION * free
  if jax.process_count() > 1:  # every process takes the most conservative choice.
    fits = bool(np.all(multihost_utils.process_allgather(np.array([fits]))))
  logging.info(
    'seed_parallel auto: %d seeds x (state %.1f MiB + activations <= %.1f MiB) = %.1f MiB vs '
    '%.0f%% of %.1f MiB free on a device -> %s.',
    s,
    state / 2**20,
    activations / 2**20,
    need / 2**20,
    100 * placement.DEVICE_FRACTION,
    free / 2**20,
    'together' if fits else 'one after another',
  )
  return fits


def activation_bytes(jitted: steps.JittedSteps, dataset: input_pipeline.Dataset) -> int:
  """Bytes of every value one train step (`steps.train_step`, forward and backward, on a global
  batch of `config.batch_size`) computes, from its jaxpr (nothing is compiled or run): an upper
  bound on the activations it holds at once."""
  c = jitted.config
  batch = placement.batch_spec(dataset, c.batch_size, None)
  state = checkpoints.abstract_state(c)
  tx, schedule = jitted.tx, jitted.schedule
  jaxpr = jax.make_jaxpr(
    lambda s, b: steps.train_step(jitted.model, jitted.task, tx, schedule, c, s, b)
  )(state, batch)
  return _values_bytes(jaxpr.jaxpr)


def _values_bytes(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += sum(_bytes(v.aval) for v in eqn.outvars)
    times = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          total += times * _values_bytes(inner)
  return total


def _bytes(aval) -> int:
  shape, dtype = getattr(aval, 'shape', None), getattr(aval, 'dtype', None)
  if shape is None or dtype is None:
    return 0
  try:
    return math.prod(shape) * np.dtype(dtype).itemsize
  except TypeError:  # key types and the like
    return 0
