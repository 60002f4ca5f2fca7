"""Training and evaluation: sharded state, jit-compiled steps, Orbax checkpoints with resume.

Data parallel over a one-axis mesh `data` spanning every device of every process: the global
batch is sharded on its first axis, parameters and optimizer state are replicated.
"""

import glob
import json
import logging as logging_std
import os
import shutil
import signal
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fasca_jax import config_io
from fasca_jax import curves
from fasca_jax import input_pipeline
from fasca_jax import metric_writer
from fasca_jax import metrics as metrics_lib
from fasca_jax import predictions
from fasca_jax import steps
from fasca_jax import tasks
from fasca_jax.models import fasca_net
from fasca_jax.steps import TrainState, make_optimizer

HOST_KEYS = ('id',)  # batch fields that stay on the host.
LATEST_DIR, BEST_DIR = 'checkpoints', 'best'
CURVES_FILE, RESULTS_FILE = 'curves.png', 'results.json'
SPLITS = {'train': 'train', 'valid': 'validation', 'test': 'test'}


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss is NaN/inf and `config.skip_nonfinite` is False."""


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, name: str):
  """Fails fast when a global batch cannot be split evenly over devices and processes."""
  n = jax.device_count()
  if batch_size % n:
    raise ValueError(
        f'config.{name}={batch_size} is not divisible by the device count {n} '
        f'({jax.process_count()} process(es) x {jax.local_device_count()} local devices); '
        f'use a multiple of {n}.')


def _device_fields(batch):
  """The fields that go to devices: features, masks, targets, valid (not ids or lengths)."""
  return {k: v for k, v in batch.items() if k not in HOST_KEYS and not k.endswith('_len')}


class Trainer:
  """Holds the model, optimizer, mesh and the jitted steps for one config."""

  def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int):
    self.config = config
    self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
    self.model = fasca_net.build(config)
    self.tx, self.schedule = make_optimizer(config, total_steps, steps_per_epoch)
    self.mesh = make_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharding = NamedSharding(self.mesh, P('data'))
    self.train_step = jax.jit(self._train_step, in_shardings=(self.replicated, self.data_sharding),
                              out_shardings=(self.replicated, self.replicated),
                              donate_argnums=(0,))
    self.eval_step = jax.jit(self._eval_step, in_shardings=(self.replicated, self.data_sharding),
                             out_shardings=self.replicated)
    self._jit_init = jax.jit(self._init, out_shardings=self.replicated)

  # --- state -------------------------------------------------------------------------------
  def _init(self, seed):
    return steps.init_state(self.model, self.tx, self.config, seed)

  def init_state(self, seed: int | None = None) -> TrainState:
    """Fresh state for `seed` (default config.seed); compiled once for all seeds."""
    return self._jit_init(np.int32(self.config.seed if seed is None else seed))

  def abstract_state(self) -> TrainState:
    shapes = jax.eval_shape(self._init, np.int32(0))
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated), shapes)

  # --- steps -------------------------------------------------------------------------------
  def _loss(self, params, batch, rng, train: bool):
    return steps.loss_fn(self.model, self.config, params, batch, rng, train)

  def _train_step(self, state: TrainState, batch):
    return steps.train_step(self.model, self.tx, self.schedule, self.config, state, batch)

  def _eval_step(self, params, batch):
    _, (y, per_example) = self._loss(params, batch, None, False)
    return {'output': tasks.host_output(self.config.task, y), 'loss': per_example,
            'target': batch[self.config.target_key], 'valid': batch['valid']}

  def to_device(self, batch):
    """Per-process NumPy batch -> global arrays sharded over `data`."""
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(self.data_sharding, a),
                        _device_fields(batch))

  # --- evaluation ----------------------------------------------------------------------------
  def _id_codes(self, ids) -> jax.Array:
    """(B,) str ids of this process's batch -> (G, W) uint8 UTF-8 codes, zero-padded.

    Sharded like the batch, so gathering it lines the ids up with the gathered outputs; W is
    the longest id on any process.
    """
    encoded = [i.encode() for i in ids]
    longest = np.int32(max(map(len, encoded), default=0))
    width = max(int(np.max(multihost_utils.process_allgather(longest))), 1)
    codes = np.zeros((len(encoded), width), np.uint8)
    for row, e in zip(codes, encoded):
      row[:len(e)] = np.frombuffer(e, np.uint8)
    return jax.make_array_from_process_local_data(self.data_sharding, codes)

  def evaluate(self, params, split: str, with_ids: bool = False) -> tuple[dict, dict]:
    """Runs one pass over `split`; returns (metrics, host arrays).

    The host arrays `output`, `target`, `loss` (and `id` (N,) str with `with_ids`) hold the N
    real examples (padding rows dropped) in evaluation order: the stored order of the split
    with one process; with several, batch by batch and process by process.
    """
    c = self.config
    check_batch_size(c.eval_batch_size, 'eval_batch_size')
    batches = input_pipeline.make_batches(
        c, split, train=False, global_batch_size=c.eval_batch_size, seed=c.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    parts = []
    for batch in batches:
      out = self.eval_step(params, self.to_device(batch))
      if with_ids:
        out['id'] = self._id_codes(batch['id'])
      part = multihost_utils.process_allgather(out, tiled=True)
      if with_ids:
        part['id'] = np.array([bytes(row).rstrip(b'\0').decode() for row in part['id']])
      parts.append(part)
    host = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    valid = host.pop('valid').astype(bool)
    host = {k: v[valid] for k, v in host.items()}
    results = {'loss': float(host['loss'].mean())}
    results.update(metrics_lib.compute(c.task, host['output'], host['target']))
    return results, host


# --- checkpoints -------------------------------------------------------------------------------
def _manager(workdir: str, name: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), name),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True,
          # Distinct barrier names per manager: `latest` and `best` both save at epoch ends, and
          # with several processes two async saves of one step would otherwise share barrier
          # `async_write_complete.<step>` and time out.
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=name)))


def _save(manager, state, extra: dict):
  """Saves state + JSON extras at the state's step (once: a step already saved is kept)."""
  if int(state.step) in manager.all_steps():
    return
  manager.save(int(state.step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)), force=True)


def restore_latest_good(manager, abstract_state, set_aside: bool = False):
  """Restores the newest checkpoint that reads back, skipping (with a warning) broken ones.

  With `set_aside`, an unreadable step directory is renamed to `<step>.unreadable-<time>` so
  that the resumed run can save that step again (Orbax refuses to overwrite a step).

  Returns (state, extra) or (None, None) when there is no readable checkpoint.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()))
      return restored['state'], restored['extra']
    except Exception as e:  # pylint: disable=broad-except
      path = os.path.join(str(manager.directory), str(step))
      reason = (str(e).splitlines() or [''])[0][:300]
      logging.warning('Skipping unreadable checkpoint %s (%s: %s); trying an older one.',
                      path, type(e).__name__, reason)
      if set_aside:
        _set_aside(manager, path)
  return None, None


def _set_aside(manager, path: str):
  """Renames checkpoint directory `path` out of `manager`'s steps (process 0, all in step)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'set_aside_read_{path}')
  if jax.process_index() == 0:
    moved = f'{path}.unreadable-{time.strftime("%Y%m%d-%H%M%S")}'
    os.rename(path, moved)
    logging.warning('Moved unreadable checkpoint %s to %s.', path, moved)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'set_aside_done_{path}')
  manager.reload()


def _check_workdir(workdir: str, needed_bytes: int):
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
    raise OSError(f'workdir {workdir!r} has {free / 2**20:.1f} MiB free; checkpoints need about '
                  f'{needed_bytes / 2**20:.1f} MiB. Free some space or choose another --workdir.')


def read_results(workdir: str) -> dict:
  """workdir/results.json (split -> metric -> value), or {} when the run has none yet."""
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_results(workdir: str, results: dict):
  """Merges split -> metric -> value into workdir/results.json (process 0 only)."""
  if jax.process_index():
    return
  merged = {**read_results(workdir), **results}
  with open(os.path.join(workdir, RESULTS_FILE), 'w') as f:
    json.dump(merged, f, indent=2)  # metrics in the order the task computes them.


class _Preemption:
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


class _LibraryInfoFilter(logging_std.Filter):
  """Drops INFO chatter from library internals (Orbax, TFDS); warnings still pass."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or not any(
        part in record.pathname for part in ('/orbax/', '/tensorflow_datasets/', '/grain/'))


def setup_logging():
  """INFO for this project's progress lines, without the libraries' per-call INFO logs."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'


# --- entry points --------------------------------------------------------------------------------
def make_trainer(config: ml_collections.ConfigDict) -> Trainer:
  """The Trainer for `config`'s data and schedule (builds a synthetic dataset on first use)."""
  check_batch_size(config.batch_size, 'batch_size')
  input_pipeline.ensure_built(config)
  steps_per_epoch = input_pipeline.steps_per_epoch(config)
  return Trainer(config, steps_per_epoch * config.num_epochs, steps_per_epoch)


def _check_shared_trainer(trainer: Trainer, config: ml_collections.ConfigDict):
  """A Trainer serves every config that differs from its own in the seed only."""
  ignored = {'seed': None, 'seeds': None}
  if {**trainer.config.to_dict(), **ignored} != {**config.to_dict(), **ignored}:
    raise ValueError('train_and_evaluate(trainer=...) needs a Trainer built from the same config '
                     'up to config.seed.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       trainer: Trainer | None = None) -> dict:
  """Trains with per-epoch validation, keeps latest + best (validation loss) checkpoints.

  Resumes automatically from the newest readable checkpoint in `workdir`; writes the config to
  workdir/config.json (`config_io.load` rebuilds it). Returns the final results (best checkpoint
  on validation and test), also written to workdir/results.json, or {} when stopped by SIGTERM.
  Logs to workdir/metrics.jsonl and TensorBoard event files, and draws workdir/curves.png after
  every epoch. `trainer` (from `make_trainer` of a config that differs only in the seed) reuses
  its compiled steps, as a seed sweep does.
  """
  c = config
  if trainer is None:
    trainer = make_trainer(c)
  else:
    _check_shared_trainer(trainer, c)
  steps_per_epoch, total_steps = trainer.steps_per_epoch, trainer.total_steps
  abstract = trainer.abstract_state()
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
  _check_workdir(workdir, needed_bytes=(c.keep_checkpoints + 1) * state_bytes + 2**20)
  config_io.save(c, workdir)  # predict.py / visualize.py rebuild the model from it.
  latest = _manager(workdir, LATEST_DIR, c.keep_checkpoints)
  best = _manager(workdir, BEST_DIR, 1)

  train_iter = input_pipeline.make_batches(
      c, 'train', train=True, global_batch_size=c.batch_size, seed=c.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  state, extra = restore_latest_good(latest, abstract, set_aside=True)
  if state is not None and int(state.seed) != c.seed:
    raise ValueError(f'workdir {workdir!r} holds a run with seed {int(state.seed)} but '
                     f'config.seed={c.seed}: resume with --config.seed={int(state.seed)} or '
                     f'choose another --workdir.')
  writer = metric_writer.MetricWriter(workdir)
  if state is None:
    state, extra = trainer.init_state(c.seed), {'best_val_loss': float('inf'), 'truncated': {}}
    writer.write_hparams(c, ['valid/loss'] + [f'test/{m}' for m in curves.KEY_METRICS[c.task]])
    logging.info('Starting from scratch: %d steps (%d epochs x %d steps of %d examples).',
                 total_steps, c.num_epochs, steps_per_epoch, c.batch_size)
  else:
    train_iter.set_state(extra['data_state'].encode())
    logging.info('Resumed from step %d of %d.', int(state.step), total_steps)
  truncated = dict(extra.get('truncated', {}))
  best_val_loss = extra['best_val_loss']

  def snapshot():
    return {'data_state': train_iter.get_state().decode(), 'best_val_loss': best_val_loss,
            'truncated': truncated}

  step = int(state.step)
  history, t_window, step_window = [], time.time(), step
  with _Preemption() as preemption:
    while step < total_steps:
      batch = next(train_iter)
      for m in c.modalities:
        n = int((batch[f'{m}_len'] > c.max_len[m]).sum())
        truncated[m] = truncated.get(m, 0) + n
      state, step_metrics = trainer.train_step(state, trainer.to_device(batch))
      history.append(step_metrics)
      step += 1
      if step % c.log_every_steps == 0 or step == total_steps:
        _check_nonfinite(c, state)
        scalars = {k: float(np.mean([jax.device_get(h[k]) for h in history])) for k in history[0]}
        history = []
        # Rate over the steps since the last log line (the first window includes compilation).
        now = time.time()
        rate = (step - step_window) * c.batch_size / max(now - t_window, 1e-9)
        t_window, step_window = now, step
        eta = (total_steps - step) * c.batch_size / rate
        logging.info('step %d/%d epoch %.2f loss %.4f lr %.2e | %.1f samples/s | ETA %s',
                     step, total_steps, step / steps_per_epoch, scalars['loss'], scalars['lr'],
                     rate, _format_eta(eta))
        writer.write(step, 'train', {**scalars, 'samples_per_s': rate})
      if step % steps_per_epoch == 0:
        _check_nonfinite(c, state)
        val, _ = trainer.evaluate(state.params, SPLITS['valid'])
        writer.write(step, 'valid', val)
        _plot_curves(writer, workdir, c.task, steps_per_epoch)
        logging.info('epoch %d validation: %s', step // steps_per_epoch,
                     ' '.join(f'{k}={v:.4f}' for k, v in val.items()))
        if val['loss'] < best_val_loss:
          best_val_loss = val['loss']
          _save(best, state, {'best_val_loss': best_val_loss, 'epoch': step // steps_per_epoch})
        _save(latest, state, snapshot())
      if preemption.should_stop():
        _save(latest, state, snapshot())
        latest.wait_until_finished()
        logging.warning('Stopped at step %d after SIGTERM; the same command resumes.', step)
        writer.close()
        return {}
  _save(latest, state, snapshot())
  latest.wait_until_finished()
  best.wait_until_finished()
  for m, n in truncated.items():
    if n:
      logging.warning('%d training examples had %s longer than max_len=%d and were cropped.',
                      n, m, c.max_len[m])
  if int(state.nonfinite_count):
    logging.warning('%d updates were skipped because the loss was not finite.',
                    int(state.nonfinite_count))
  results = evaluate(c, workdir, ('valid', 'test'), trainer=trainer)
  writer.write(total_steps, 'test', results['test'])
  _plot_curves(writer, workdir, c.task, steps_per_epoch)
  writer.close()
  return results


def _plot_curves(writer: metric_writer.MetricWriter, workdir: str, task: str,
                 steps_per_epoch: int):
  if writer.enabled:
    curves.plot(writer.path, os.path.join(workdir, CURVES_FILE), task, steps_per_epoch)


def _check_nonfinite(config, state):
  if int(state.nonfinite_count) and not config.skip_nonfinite:
    raise NonFiniteLossError(
        f'non-finite loss at step {int(state.first_nonfinite_step)}; training stopped and the last '
        f'saved checkpoint was kept. Lower the learning rate, check the data, or set '
        f'--config.skip_nonfinite=True to skip such updates.')


def restore_best(abstract_state: TrainState, workdir: str) -> TrainState:
  """The best checkpoint of `workdir` (the latest one when there is no best).

  Raises:
    FileNotFoundError: no readable checkpoint in `workdir`; names the seed runs of a sweep.
  """
  for name in (BEST_DIR, LATEST_DIR):
    if os.path.isdir(os.path.join(workdir, name)):
      state, _ = restore_latest_good(_manager(workdir, name, 1), abstract_state)
      if state is not None:
        logging.info('Restored the %s checkpoint of %s (step %d).', name, workdir,
                     int(state.step))
        return state
  seed_runs = sorted(glob.glob(os.path.join(workdir, 'seed_*')))
  hint = (f' It holds the runs of a seed sweep: use one of them, e.g. '
          f'--workdir={seed_runs[0]}.' if seed_runs else '')
  raise FileNotFoundError(f'no checkpoint in {workdir!r}: train first with '
                          f'`python train.py --config=... --workdir={workdir}`.{hint}')


def evaluate(config, workdir: str, splits=('test',), trainer: Trainer | None = None,
             predictions_path: str | None = None) -> dict:
  """Restores the best checkpoint (latest if none) and evaluates it on `splits`.

  Splits are 'train', 'valid' or 'test'. Results are merged into workdir/results.json. With
  `predictions_path` (relative: to the current directory), every example's prediction goes
  there as JSON lines (`fasca_jax.predictions`), the splits in the order given.
  """
  input_pipeline.ensure_built(config)
  trainer = trainer or Trainer(config, total_steps=1, steps_per_epoch=1)
  state = restore_best(trainer.abstract_state(), workdir)
  results, rows = {}, []
  for split in splits:
    if split not in SPLITS:
      raise ValueError(f'unknown split {split!r}: expected one of {sorted(SPLITS)}')
    results[split], host = trainer.evaluate(state.params, SPLITS[split],
                                            with_ids=predictions_path is not None)
    if predictions_path is not None:
      rows.extend(predictions.rows(config.task, split, host))
  _write_results(workdir, results)
  if predictions_path is not None and jax.process_index() == 0:
    count = predictions.write(predictions_path, rows)
    logging.info('Wrote %d predictions to %s.', count, os.path.abspath(predictions_path))
  return results
