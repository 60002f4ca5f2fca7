"""A run's checkpoints: one Orbax `CheckpointManager` in `workdir/checkpoints`, keeping the latest
`config.keep_checkpoints` steps and the best step on validation loss; resume, the config guard,
unreadable steps set aside, SIGTERM / SIGINT, and the checks of a workdir before training.

Each step directory holds `state` (the `TrainState`), `extra` (JSON: the data position) and, for
the steps saved at an epoch end, Orbax's `metrics` (`{'valid_loss', 'step'}`). Orbax's
preservation policies keep a step while it is among the latest N or is the best one, so latest
and best share one manager (and one save per step): `best_step` is the saved step of lowest
validation loss, the earlier one on a tie. Saves are asynchronous on accelerators (synchronous
on a CPU backend: `Checkpoints`); every process takes part.

A run's saved config (`workdir/config.json`) is the truth about its checkpoints and results.
`guard_config` compares it with the config asked for before anything in the workdir is touched,
and refuses, in one line naming each differing field with both values, any difference outside
`RUN_CONTROL_FIELDS` and `GROWING_FIELDS`:

  may differ (how the run is driven, never what it trains):
    data_dir, num_workers, eval_batch_size, log_every_steps, keep_checkpoints, skip_nonfinite,
    seeds, seed_parallel, model.attention, model.deform_method (the same maths computed
    another way)
  may grow, never shrink:
    num_epochs (a finished or interrupted run continues to the new length; the learning-rate
    schedule of the steps still to come is the new length's, so such a run differs from one
    trained at that length from the start; a shorter run would leave results and checkpoints
    of a longer one under a config.json that does not describe them)
  must be equal (everything else), e.g.:
    dataset.*, modalities, dims.*, max_len.*, task, num_classes, target_key, model.*, dtype,
    aux_loss_weight, optimizer.*, seed, batch_size
  except that evaluation and inference (eval.py, predict.py, visualize.py) also accept other
  values of the fields that shape training only (`TRAINING_ONLY_FIELDS`: seed, batch_size,
  num_epochs, optimizer.*), e.g. a sweep's base config on one seed's run.

With `replace=True` a differing run is moved aside whole (to `<workdir>.replaced-<time>`, never
deleted) and the workdir starts anew.

A checkpoint that does not read back is set aside (`<step>.unreadable-<time>`) only when it is
truly damaged; one whose saved tree differs from the config's (another model, saved before
config.json existed or after it was edited) raises `CheckpointMismatchError` and stays as it is.
"""

import os
import shutil
import signal
import time
from typing import Any, NamedTuple

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from fasca_jax import config_io
from fasca_jax import distributed
from fasca_jax import errors
from fasca_jax import indexing
from fasca_jax import steps
from fasca_jax.models import fasca_net

CHECKPOINT_DIR = 'checkpoints'
# Config fields that may differ between a run's config.json and the config that resumes, reuses
# or evaluates it (module docstring). Dotted paths; every other field must be equal.
RUN_CONTROL_FIELDS = (
  'data_dir',
  'num_workers',
  'eval_batch_size',
  'log_every_steps',
  'keep_checkpoints',
  'skip_nonfinite',
  'seeds',
  'seed_parallel',
  'data_placement',  # every placement trains on the same batches (`fasca_jax.indexing`).
  'steps_per_call',  # the batch and dropout key are functions of the step, not of K.
  'compilation_cache_dir',
  'model.attention',
  'model.deform_method',
)
# Fields that may grow on resume (never shrink): more epochs continue a run.
GROWING_FIELDS = ('num_epochs',)
# Fields that shape training only: evaluation and inference of a finished run may also be asked
# with other values (e.g. the sweep's base config on one seed's run). A name covers its subfields.
TRAINING_ONLY_FIELDS = ('seed', 'batch_size', 'num_epochs', 'optimizer')
EVAL_FREE_FIELDS = RUN_CONTROL_FIELDS + TRAINING_ONLY_FIELDS
MAX_LISTED = 6  # differing fields (or arrays) named in one error line; the rest are counted.
TRAIN_REMEDY = (
  'resume it with the config it was trained with (its config.json), choose another --workdir, '
  'or pass --replace to move it aside and train anew'
)


class ConfigMismatchError(errors.ConfigError):
  """The config asked for differs from the run's saved config.json in a guarded field."""


class CheckpointMismatchError(errors.ConfigError):
  """A checkpoint holds another tree (model, optimizer) than the config builds."""


class _Absent:
  def __repr__(self):
    return '(absent)'


ABSENT = _Absent()  # the value of a field one of two compared configs lacks.


def _flat(config) -> dict[str, Any]:
  """A config (ConfigDict or dict) -> {dotted field path: value}."""
  items = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  flat = {}
  for key, value in items.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update({f'{key}.{k}': v for k, v in _flat(value).items()})
    else:
      flat[key] = value
  return flat


def config_differences(
  saved, requested, free: tuple[str, ...] = RUN_CONTROL_FIELDS
) -> list[tuple[str, Any, Any]]:
  """[(field, saved value, requested value)] for the guarded fields (all but those in or under
  `free`, and `GROWING_FIELDS` that grow) that differ, in the requested config's order; a field
  only one config has gets `ABSENT` for the other."""
  a, b = _flat(saved), _flat(requested)
  fields = list(b) + [k for k in a if k not in b]
  return [
    (k, a.get(k, ABSENT), b.get(k, ABSENT))
    for k in fields
    if not any(k == f or k.startswith(f + '.') for f in free)
    and a.get(k, ABSENT) != b.get(k, ABSENT)
    and not (k in GROWING_FIELDS and k in a and k in b and b[k] > a[k])
  ]


def _listed(items: list[str]) -> str:
  more = len(items) - MAX_LISTED
  return ', '.join(items[:MAX_LISTED]) + (f' (and {more} more)' if more > 0 else '')


def guard_config(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  replace: bool = False,
  remedy: str = TRAIN_REMEDY,
  free: tuple[str, ...] = RUN_CONTROL_FIELDS,
) -> None:
  """Refuses `config` for the run in `workdir` when it differs from the run's config.json in a
  guarded field (module docstring); reads only, so a refusal leaves the workdir as it was. A run
  without config.json (made before it existed) is checked by the shapes of its newest
  checkpoint instead.

  Args:
    config: the config asked for.
    workdir: the run directory (nothing to guard when it holds no run).
    replace: move a differing run aside to `<workdir>.replaced-<time>` instead of refusing.
    remedy: what the user can do, ending the error message.
    free: the fields that may differ: RUN_CONTROL_FIELDS to train, EVAL_FREE_FIELDS to
      evaluate or predict.

  Raises:
    ConfigMismatchError: one line naming each differing field, the run's value and the asked
      value, then `remedy`.
    CheckpointMismatchError: (no config.json) the newest checkpoint holds another model.
  """
  try:
    if os.path.isfile(os.path.join(workdir, config_io.CONFIG_FILE)):
      differences = config_differences(config_io.load(workdir), config, free)
      if differences:
        listed = _listed([f'{k} {a!r} but config.{k}={b!r}' for k, a, b in differences])
        raise ConfigMismatchError(f'workdir {workdir!r} holds a run with {listed}: {remedy}.')
    else:
      saved = _step_dirs(workdir)
      if saved:
        check_tree(saved[-1], abstract_state(config))
  except (ConfigMismatchError, CheckpointMismatchError) as e:
    if not replace:
      raise
    run = os.path.normpath(os.path.abspath(workdir))
    moved = f'{run}.replaced-{time.strftime("%Y%m%d-%H%M%S")}'
    _synced_rename(run, moved)
    logging.warning('--replace: moved %s to %s (%s)', run, moved, e)


def _step_dirs(workdir: str) -> list[str]:
  """The step directories of workdir/checkpoints, oldest first."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return [os.path.join(directory, n) for n in sorted((n for n in names if n.isdigit()), key=int)]


def check_tree(step_dir: str, abstract: steps.TrainState):
  """Raises CheckpointMismatchError when the state saved in `step_dir` has other arrays (paths,
  shapes or dtypes) than `abstract`; returns when they agree or when the saved tree's metadata
  does not read (the step is damaged, not another model's)."""
  handler = ocp.StandardCheckpointHandler()
  try:
    saved = _leaves(handler.metadata(epath.Path(step_dir) / 'state'))
  except Exception:  # pylint: disable=broad-except
    return
  finally:
    handler.close()
  wanted = _leaves(abstract)
  if not saved:
    return
  names = sorted(saved.keys() | wanted.keys(), key=lambda k: (not k.startswith('params/'), k))
  differences = [
    f'{k} {_describe(saved.get(k))} there, {_describe(wanted.get(k))} under this config'
    for k in names
    if saved.get(k) != wanted.get(k)
  ]
  if differences:
    raise CheckpointMismatchError(
      f'checkpoint {step_dir} holds another model or optimizer than this config builds: '
      f'{_listed(differences)}. It was left as it is: use the config the run was trained with '
      f'or another --workdir.'
    )


def _leaves(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """'a/b/0/c' path of each array leaf -> (shape, dtype name)."""

  def name(path):
    return '/'.join(
      str(next(getattr(k, a) for a in ('key', 'name', 'idx') if hasattr(k, a))) for k in path
    )

  return {
    name(p): (tuple(x.shape), np.dtype(x.dtype).name)
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def _describe(leaf) -> str:
  return 'absent' if leaf is None else f'has shape {leaf[0]} {leaf[1]}'


def _synced_rename(path: str, moved: str):
  """Renames `path` to `moved` on process 0, every process waiting for it."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'rename_{path}')
  if jax.process_index() == 0:
    os.rename(path, moved)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'renamed_{path}')


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
  """The checkpoint manager of one run directory.

  Saves are asynchronous on an accelerator (the host writes while the devices step). On a CPU
  backend they finish before `save` returns: the save and the train step would share the same
  cores, so a background save does not hide its cost, it slows the steps that follow it
  (`benchmarks/end_to_end.py --quick`, tiny, 2 cores: 0.60x the pure step rate with background
  saves, 0.98x without; the epoch time is the same).
  """

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
        create=True,
        preservation_policy=policy,
        best_fn=_ranking,
        best_mode='min',
        enable_async_checkpointing=jax.default_backend() != 'cpu',
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

  def restore_latest(self, abstract: steps.TrainState, set_aside: bool = False, skip=()):
    """The newest step that reads back, skipping (with a warning) broken ones and `skip`.

    With `set_aside`, an unreadable step directory is renamed to `<step>.unreadable-<time>` so
    that the resumed run can save that step again (Orbax refuses to overwrite a step).

    Returns (state, extra), or (None, None) when no step reads back.

    Raises:
      CheckpointMismatchError: a step holds another tree than `abstract` (it is left as it is).
    """
    for step in sorted(set(self._manager.all_steps()) - set(skip), reverse=True):
      restored = self._restore(step, abstract, set_aside)
      if restored is not None:
        return restored
    return None, None

  def restore_best(self, abstract: steps.TrainState) -> 'Restored':
    """The best step (`best_step`), else the newest readable one (`Restored.fallback` says why);
    all fields None when nothing reads back."""
    best = self.best_step()
    if best is not None:
      restored = self._restore(best, abstract, set_aside=False)
      if restored is not None:
        return Restored(*restored, best, None)
    state, extra = self.restore_latest(abstract, skip=() if best is None else (best,))
    if state is None:
      return Restored(None, None, None, None)
    fallback = None if best is None else f'best step {best} is unreadable'
    return Restored(state, extra, int(state.step), fallback)

  def _restore(self, step: int, abstract: steps.TrainState, set_aside: bool):
    path = os.path.join(self.directory, str(step))
    check_tree(path, abstract)  # first: another model is not damage, never set it aside.
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
        ),
      )
      return restored['state'], restored['extra']
    except Exception as e:  # pylint: disable=broad-except
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
    moved = f'{path}.unreadable-{time.strftime("%Y%m%d-%H%M%S")}'
    _synced_rename(path, moved)
    logging.warning('Moved unreadable checkpoint %s to %s.', path, moved)
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


class Restored(NamedTuple):
  """A restored checkpoint: the state, its JSON extra, its step and, when it is not the best
  step although the run has one, why (`fallback`, e.g. 'best step 6 is unreadable')."""

  state: steps.TrainState | None
  extra: dict | None
  step: int | None
  fallback: str | None


def restore_best(config, workdir: str) -> Restored:
  """The best checkpoint of the run in `workdir` for evaluation and inference: the newest
  readable step when no step has a validation loss, and when the best one is unreadable (then
  `fallback` says so and a warning names both steps).

  Raises:
    MissingError: no readable checkpoint in `workdir`; names the seed runs of a sweep.
    CheckpointMismatchError: the checkpoints hold another model than `config` builds.
  """
  if os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    restored = Checkpoints(workdir).restore_best(abstract_state(config))
    if restored.fallback:
      logging.warning(
        'Using step %d of %s, the newest readable step: the %s.',
        restored.step,
        workdir,
        restored.fallback,
      )
    if restored.state is not None:
      logging.info('Restored step %d of %s.', restored.step, workdir)
      return restored
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
  raise errors.MissingError(
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
  """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the training loop checks between steps.

  `signal_name` is the first signal received ('SIGTERM' or 'SIGINT'). A second Ctrl-C while the
  step is being saved interrupts at once (KeyboardInterrupt), as Ctrl-C does elsewhere.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.signal_name = None
    self._previous = {}

  def __enter__(self):
    for signum in self.SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: no signal handling.
        pass
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.requested and signum == signal.SIGINT:
      signal.default_int_handler(signum, frame)  # a second Ctrl-C: stop now.
    if not self.requested:
      self.signal_name = name
      logging.warning('%s received: saving a checkpoint and stopping.', name)
    self.requested = True

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  @property
  def reason(self) -> str:
    """What stopped the run, for the log: the signal, or another process's request."""
    return self.signal_name or 'a stop signal to another process'

  def should_stop(self, *, agree: bool = True) -> bool:
    """Whether to stop now: in a single process, as soon as it was asked. In a multi-process
    run all processes stop at the same step: they agree (one all-gather, which waits for every
    process) only where `agree` is True, and never stop elsewhere; the loop agrees at its log
    windows and epoch ends, so that the calls in between run without waiting for each other."""
    if jax.process_count() == 1:
      return self.requested
    if not agree:
      return False
    flags = multihost_utils.process_allgather(np.array([self.requested]))
    return bool(np.any(flags))
