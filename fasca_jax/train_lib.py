"""`train_and_evaluate(config, workdir)`: the training loop, read top to bottom.

Data (`input_pipeline`, placed by `placement`: on the devices, in host memory or streamed) -> the
programs of `steps.JittedSteps` (data parallel over every device of every process), compiled
before the first step -> the loop (calls of `config.steps_per_call` steps, log, epoch-end
validation and checkpoint) -> the final evaluation of the best checkpoint (`evaluation`).
Checkpoints, resume, SIGTERM / SIGINT and the config guard are `checkpoints`; logs are
`metric_writer` and `curves`.
"""

import concurrent.futures
import os
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from fasca_jax import checkpoints
from fasca_jax import config_io
from fasca_jax import curves
from fasca_jax import distributed
from fasca_jax import evaluation
from fasca_jax import indexing
from fasca_jax import input_pipeline
from fasca_jax import metric_writer
from fasca_jax import placement
from fasca_jax import startup
from fasca_jax import steps

CURVES_FILE = 'curves.png'


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss is NaN/inf and `config.skip_nonfinite` is False."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, jitted: steps.JittedSteps | None = None
) -> dict:
  """Trains with per-epoch validation, keeping the latest and the best (validation loss) steps.

  Resumes automatically from the newest readable checkpoint in `workdir`; writes the config to
  workdir/config.json (`config_io.load` rebuilds it). Returns the final results (best checkpoint
  on validation and test), also written to workdir/results.json, or {} when stopped by SIGTERM
  or SIGINT. A workdir holding a run of another config is refused before anything in it is
  touched (`checkpoints.guard_config`).
  Logs to workdir/metrics.jsonl and TensorBoard event files, and draws workdir/curves.png after
  every epoch (in a thread). `jitted` (the steps of a config that differs only in the seed)
  reuses compiled programs, as a seed sweep does.
  """
  c = config
  checkpoints.guard_config(c, workdir)  # first: a refusal leaves the workdir as it was.
  startup.enable_compilation_cache(c.get('compilation_cache_dir'))
  distributed.check_batch_size(c.batch_size, 'batch_size')
  dataset = input_pipeline.open_dataset(c)
  mode = placement.choose(c, dataset)
  steps_per_epoch = dataset.steps_per_epoch(c.batch_size)
  total_steps = steps_per_epoch * c.num_epochs
  if jitted is None:
    jitted = steps.JittedSteps(c, steps.make_optimizer(c, total_steps, steps_per_epoch))
  elif _without_seed(jitted.config) != _without_seed(c):
    raise ValueError(
      'train_and_evaluate(jitted=...) needs steps built from the same config up to config.seed.'
    )
  abstract = checkpoints.abstract_state(c)
  checkpoints.check_workdir(
    workdir, needed_bytes=(c.keep_checkpoints + 2) * checkpoints.state_bytes(abstract) + 2**20
  )
  config_io.save(c, workdir)  # predict.py / visualize.py rebuild the model from it.
  ckpt = checkpoints.Checkpoints(workdir, keep=c.keep_checkpoints)
  writer = metric_writer.MetricWriter(workdir)

  state, extra = ckpt.restore_latest(abstract, set_aside=True)
  if state is None:
    state = jitted.init(c.seed)
    writer.write_hparams(c, ['valid/loss'] + [f'test/{m}' for m in jitted.task.key_metrics])
    logging.info(
      'Starting from scratch: %d steps (%d epochs x %d steps of %d examples).',
      total_steps,
      c.num_epochs,
      steps_per_epoch,
      c.batch_size,
    )
  elif int(state.seed) != c.seed:
    raise ValueError(
      f'workdir {workdir!r} holds a run with seed {int(state.seed)} but '
      f'config.seed={c.seed}: resume with --config.seed={int(state.seed)} or '
      f'choose another --workdir.'
    )
  else:
    checkpoints.check_data_position(extra, int(state.step))
    logging.info('Resumed from step %d of %d.', int(state.step), total_steps)
  _log_cropped(dataset, 'train')

  step, history = int(state.step), []
  calls = steps.call_lengths(
    step, total_steps, steps_per_call=c.steps_per_call, every=(c.log_every_steps, steps_per_epoch)
  )
  train_data = placement.TrainData(
    mode,
    dataset,
    seed=c.seed,
    global_batch_size=c.batch_size,
    start_step=step,
    calls=calls,
    mesh=jitted.mesh,
  )
  eval_data = {
    s: evaluation.eval_data(
      c, dataset, s, mesh=jitted.mesh, batch_size=c.eval_batch_size, mode=mode
    )
    for s in ('valid', 'test')
  }
  programs = placement.compile_programs(jitted, state, train_data, set(calls), eval_data)
  throughput = metric_writer.Throughput(c.batch_size)
  plots = concurrent.futures.ThreadPoolExecutor(1)
  with checkpoints.Preemption() as preemption, train_data, plots:
    for i, k in enumerate(calls):
      state, step_metrics = programs[k](state, next(train_data))
      history.append(step_metrics)
      step += k
      if i == 0:
        throughput.start(step, after=state)  # the first call warms up: time the ones after.
        logging.info(
          'time to first step: %.1f s (from process start)', startup.seconds_since_start()
        )
      if step % c.log_every_steps == 0 or step == total_steps:
        _check_nonfinite(c, state)
        scalars = {
          k: float(np.mean(np.concatenate([np.ravel(h[k]) for h in jax.device_get(history)])))
          for k in history[0]
        }
        rate = throughput.rate(step)
        logging.info(
          'step %d/%d epoch %.2f loss %.4f lr %.2e | %s',
          step,
          total_steps,
          step / steps_per_epoch,
          scalars['loss'],
          scalars['lr'],
          metric_writer.format_rate(rate, total_steps - step, c.batch_size),
        )
        writer.write(step, 'train', {**scalars, **({'samples_per_s': rate} if rate else {})})
        history = []
        throughput.start(step)
      if step % steps_per_epoch == 0:
        t_epoch = time.time()
        _check_nonfinite(c, state)
        val, _ = evaluation.evaluate(
          jitted,
          state.params,
          dataset,
          'valid',
          batch_size=c.eval_batch_size,
          data=eval_data['valid'],
        )
        writer.write(step, 'valid', val)
        plots.submit(_plot_curves, writer, workdir, jitted.task.key_metrics, steps_per_epoch)
        ckpt.save(state, _position(state), valid_loss=val['loss'])
        logging.info(
          'epoch %d validation (%.1f s): %s',
          step // steps_per_epoch,
          time.time() - t_epoch,
          ' '.join(f'{k}={v:.4f}' for k, v in val.items()),
        )
        throughput.start(step)  # the next window times training, not this validation.
      if preemption.should_stop():
        ckpt.save(state, _position(state))
        ckpt.wait()
        logging.warning(
          'Stopped at step %d after %s; the same command resumes.', step, preemption.reason
        )
        writer.close()
        return {}
  ckpt.save(state, _position(state))
  ckpt.wait()
  if int(state.nonfinite_count):
    logging.warning(
      '%d updates were skipped because the loss was not finite.', int(state.nonfinite_count)
    )
  results = evaluation.evaluate_run(
    c, workdir, ('valid', 'test'), jitted=jitted, dataset=dataset, data=eval_data
  )
  writer.write(total_steps, 'test', results['test'])
  _plot_curves(writer, workdir, jitted.task.key_metrics, steps_per_epoch)
  writer.close()
  return results


def _position(state: steps.TrainState) -> dict:
  """The data position saved with a checkpoint: the step (`indexing`'s order)."""
  return {'data_state': {'order': indexing.ORDER, 'step': int(state.step)}}


def _without_seed(config: ml_collections.ConfigDict) -> dict:
  return {**config.to_dict(), 'seed': None, 'seeds': None}


def _log_cropped(dataset: input_pipeline.Dataset, split: str):
  """Warns once per run how many examples of `split` are longer than max_len (cropped)."""
  summary = input_pipeline.split_summary(dataset, split)
  for m, n in summary.cropped(dataset.max_len).items():
    if n:
      logging.warning(
        '%d of %d %s examples have %s longer than max_len.%s=%d and are cropped.',
        n,
        len(summary.ids),
        split,
        m,
        m,
        dataset.max_len[m],
      )


def _check_nonfinite(config, state: steps.TrainState):
  if int(state.nonfinite_count) and not config.skip_nonfinite:
    raise NonFiniteLossError(
      f'non-finite loss at step {int(state.first_nonfinite_step)}; training stopped and the last '
      f'saved checkpoint was kept. Lower the learning rate, check the data, or set '
      f'--config.skip_nonfinite=True to skip such updates.'
    )


def _plot_curves(
  writer: metric_writer.MetricWriter, workdir: str, key_metrics, steps_per_epoch: int
):
  if writer.enabled:
    try:
      curves.plot(writer.path, os.path.join(workdir, CURVES_FILE), key_metrics, steps_per_epoch)
    except ValueError as e:  # a line being appended while read: the next epoch redraws.
      logging.warning('curves.png not redrawn: %s', e)
