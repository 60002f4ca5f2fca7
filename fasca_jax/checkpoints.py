"""A run's checkpoints: one Orbax `CheckpointManager` in `workdir/checkpoints`, keeping the latest
`config.keep_checkpoints` steps and the best step on validation loss; resume, unreadable steps set
aside, SIGTERM, and the checks of a workdir before training.

Each step directory holds `state` (the `TrainState`), `extra` (JSON: the data position) and, for
the steps saved at an epoch end, Orbax's `metrics` (`{'valid_loss', 'step'}`). Orbax's
preservation policies keep a step while it is among the latest N or is the best one, so latest
and best share one manager (and one save per step): `best_step` is the saved step of lowest
validation loss, the earlier one on a tie. Saves are asynchronous; every process takes part.
"""

import os
import shutil
import signal
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax
import orbax.checkpoint as ocp

from fasca_jax import distributed
from fasca_jax import indexing
from fasca_jax import steps
from fasca_jax.models import fasca_net

CHECKPOINT_DIR = 'checkpoints'


def abstract_state(config) -> steps.TrainState:
  """The shapes, dtypes and (replicated) shardings of `config`'s train state, from
  `jax.eval_shape`: nothing is computed. What a restore needs."""
  model = fasca_net.build(config)
  tx = steps.optimizer(config, optax.constant_schedule(config.optimizer.lr))  # shapes only
  shapes = jax.eval_shape(lambda: steps.init_state(model, tx, config, np.int32(0)))
  replicated = NamedSharding(distributed.make_mesh(), P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)


def _ranking(metrics: dict) -> tuple[float, int]:
  """Orbax's sort key (mode 'min'): lower validation loss first, the earlier step on a tie."""
  return metrics['valid_loss'], metrics['step']


class Checkpoints:
  """The checkpoint manager of one run directory."""

  def __init__(self, workdir: str, keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
      [
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(
          get_metric_fn=_ranking, reverse=True, n=1, keep_checkpoints_without_metrics=False
        ),
      ]
    )
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        create=True, preservation_policy=policy, best_fn=_ranking, best_mode='min'
      ),
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The saved step of lowest validation loss; None when no step has one."""
    return self._manager.best_step()

  def save(self, state: steps.TrainState, extra: dict, valid_loss: float | None = None):
    """Saves `state` and the JSON `extra` at the state's step, with its validation loss when
    it has one (epoch ends). A step already saved is kept as it is."""
    step = int(state.step)
    if step in self._manager.all_steps():
      return
    metrics = (
      {'valid_loss': float(valid_loss), 'step': step}
      if valid_loss is not None and np.isfinite(valid_loss)
      else None
    )
    self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
      metrics=metrics,
      force=True,
    )

  def wait(self):
    """Blocks until the asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def restore_latest(self, abstract: steps.TrainState, set_aside: bool = False):
    """The newest step that reads back, skipping (with a warning) broken ones.

    With `set_aside`, an unreadable step directory is renamed to `<step>.unreadable-<time>` so
    that the resumed run can save that step again (Orbax refuses to overwrite a step).

    Returns (state, extra), or (None, None) when no step reads back.
    """
    for step in sorted(self._manager.all_steps(), reverse=True):
      restored = self._restore(step, abstract, set_aside)
      if restored is not None:
        return restored
    return None, None

  def restore_best(self, abstract: steps.TrainState):
    """The best step (`best_step`), else the newest readable one: (state, extra, step), or
    (None, None, None) when nothing reads back."""
    best = self.best_step()
    if best is not None:
      restored = self._restore(best, abstract, set_aside=False)
      if restored is not None:
        return (*restored, best)
    state, extra = self.restore_latest(abstract)
    return state, extra, (None if state is None else int(state.step))

  def _restore(self, step: int, abstract: steps.TrainState, set_aside: bool):
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
        ),
      )
      return restored['state'], restored['extra']
    except Exception as e:  # pylint: disable=broad-except
      path = os.path.join(self.directory, str(step))
      reason = (str(e).splitlines() or [''])[0][:300]
      logging.warning(
        'Skipping unreadable checkpoint %s (%s: %s); trying an older one.',
        path,
        type(e).__name__,
        reason,
      )
      if set_aside:
        self._set_aside(path)
      return None

  def _set_aside(self, path: str):
    """Renames step directory `path` out of the manager's steps (process 0; all in step)."""
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set_aside_read_{path}')
    if jax.process_index() == 0:
      moved = f'{path}.unreadable-{time.strftime("%Y%m%d-%H%M%S")}'
      os.rename(path, moved)
      logging.warning('Moved unreadable checkpoint %s to %s.', path, moved)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set_aside_done_{path}')
    self._manager.reload()


def check_data_position(extra: dict | None, step: int):
  """Warns when a checkpoint's data position is not `indexing`'s order at its step (a run
  written before the order was a function of the step): training goes on from `step` in that
  order, which an uninterrupted run of the older code would not have followed."""
  position = (extra or {}).get('data_state')
  if not (isinstance(position, dict) and position.get('order') == indexing.ORDER):
    logging.warning(
      'The checkpoint at step %d holds no data position in the order %r (an older run): '
      'training continues from that step in this order, not bit-identical to an '
      'uninterrupted run.',
      step,
      indexing.ORDER,
    )
  elif position.get('step') != step:
    raise ValueError(f'checkpoint at step {step} holds data position {position}: not its own.')


def restore_best(config, workdir: str) -> tuple[steps.TrainState, int]:
  """The best checkpoint of the run in `workdir` (the newest readable one when no step has a
  validation loss) -> (state, step), for evaluation and inference.

  Raises:
    FileNotFoundError: no readable checkpoint in `workdir`; names the seed runs of a sweep.
  """
  if os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    state, _, step = Checkpoints(workdir).restore_best(abstract_state(config))
    if state is not None:
      logging.info('Restored step %d of %s.', step, workdir)
      return state, step
  seed_runs = (
    sorted(d for d in os.listdir(workdir) if d.startswith('seed_'))
    if os.path.isdir(workdir)
    else []
  )
  hint = (
    f' It holds the runs of a seed sweep: use one of them, e.g. '
    f'--workdir={os.path.join(workdir, seed_runs[0])}.'
    if seed_runs
    else ''
  )
  raise FileNotFoundError(
    f'no checkpoint in {workdir!r}: train first with '
    f'`python train.py --config=... --workdir={workdir}`.{hint}'
  )


def check_workdir(workdir: str, needed_bytes: int):
  """Clear errors, before any training, for an unwritable or full workdir."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise OSError(f'workdir {workdir!r} is not writable: {e}') from e
  free = shutil.disk_usage(workdir).free
  if free < needed_bytes:
    raise OSError(
      f'workdir {workdir!r} has {free / 2**20:.1f} MiB free; checkpoints need about '
      f'{needed_bytes / 2**20:.1f} MiB. Free some space or choose another --workdir.'
    )


def state_bytes(state: steps.TrainState) -> int:
  """Bytes of one saved train state (abstract or real)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))


class Preemption:
  """Turns SIGTERM into a flag the training loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no signal handling.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping.')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def should_stop(self) -> bool:
    """True on every process as soon as any process was asked to stop."""
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.array([self.requested]))
    return bool(np.any(flags))
