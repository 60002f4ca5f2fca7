"""`train_and_evaluate(config, workdir)`: the training loop, read top to bottom.

Data (`input_pipeline`, placed by `placement`: on the devices, in host memory or streamed) -> the
programs of `steps.JittedSteps` (data parallel over every device of every process), compiled
before the first step -> the loop (calls of `config.steps_per_call` steps, log, epoch-end
validation and checkpoint) -> the final evaluation of the best checkpoint (`evaluation`).
Checkpoints, resume, SIGTERM / SIGINT and the config guard are `checkpoints`; logs are
`metric_writer` and `curves`. `train_group` runs the same loop over the seeds of a sweep stacked
on a leading axis (`fasca_jax.seed_group`): one program call steps them all, and each run keeps
its own workdir, checkpoints and logs.
"""

import concurrent.futures
import os
import time
from collections.abc import Sequence

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
  return _train([config], [workdir], jitted=jitted, stacked=False)[0]


def train_group(
  configs: Sequence[ml_collections.ConfigDict],
  workdirs: Sequence[str],
  *,
  jitted: steps.JittedSteps | None = None,
) -> list[dict]:
  """`train_and_evaluate` of runs that differ only in the seed, all at once: their states
  stacked on a leading seed axis, every call of the train program steps them all and one
  evaluation program scores them all at each epoch end (`fasca_jax.seed_group`). Each workdir
  is written exactly as `train_and_evaluate` writes it; the final results of each run's best
  checkpoint come from the one-seed evaluation program, as eval.py computes them. The runs
  resume together from their common step (they must hold the same newest step). Returns each
  run's results, or {} for each when stopped."""
  return _train(list(configs), list(workdirs), jitted=jitted, stacked=True)


class _Run:
  """One run of the loop: its config, workdir, checkpoints and log writer."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, label: str):
    self.config, self.workdir, self.label = config, workdir, label
    self.ckpt = checkpoints.Checkpoints(workdir, keep=config.keep_checkpoints)
    self.writer = metric_writer.MetricWriter(workdir)


def _train(configs, workdirs, *, jitted, stacked: bool) -> list[dict]:
  """The loop, over one run or (`stacked`) a group of runs differing only in the seed."""
  t_start, c = time.perf_counter(), configs[0]
  for config, workdir in zip(configs, workdirs):  # first: a refusal leaves every workdir as it was.
    checkpoints.guard_config(config, workdir)
  startup.enable_compilation_cache(c.get('compilation_cache_dir'))
  distributed.check_batch_size(c.batch_size, 'batch_size')
  dataset = input_pipeline.open_dataset(c)
  mode = placement.choose(c, dataset)
  steps_per_epoch = dataset.steps_per_epoch(c.batch_size)
  total_steps = steps_per_epoch * c.num_epochs
  if jitted is None:
    jitted = steps.JittedSteps(c, steps.make_optimizer(c, total_steps, steps_per_epoch))
  elif any(_without_seed(jitted.config) != _without_seed(config) for config in configs):
    raise ValueError(
      'train_and_evaluate(jitted=...) needs steps built from the same config up to config.seed.'
    )
  abstract = jitted.abstract_state()
  runs = []
  for config, workdir in zip(configs, workdirs):
    checkpoints.check_workdir(
      workdir, needed_bytes=(c.keep_checkpoints + 2) * checkpoints.state_bytes(abstract) + 2**20
    )
    config_io.save(config, workdir)  # predict.py / visualize.py rebuild the model from it.
    runs.append(_Run(config, workdir, f'seed {config.seed}: ' if stacked else ''))
  states = [_start(run, jitted, abstract, total_steps, steps_per_epoch) for run in runs]
  step = _common_step(runs, states)
  state = jitted.stack(states) if stacked else states[0]
  del states
  _log_cropped(dataset, 'train')

  history = []
  calls = steps.call_lengths(
    step, total_steps, steps_per_call=c.steps_per_call, every=(c.log_every_steps, steps_per_epoch)
  )
  train_data = placement.TrainData(
    mode,
    dataset,
    seed=[config.seed for config in configs] if stacked else c.seed,
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
  programs = placement.compile_programs(
    jitted, state, train_data, set(calls), eval_data, seeds=stacked
  )
  members = (lambda state: jitted.unstack(state)) if stacked else (lambda state: [state])
  throughput = metric_writer.Throughput(c.batch_size)  # samples/s of each run.
  plots = concurrent.futures.ThreadPoolExecutor(1)
  with checkpoints.Preemption() as preemption, train_data, plots:
    for i, k in enumerate(calls):
      state, step_metrics = programs[k](state, next(train_data))
      history.append(step_metrics)
      step += k
      if i == 0:
        throughput.start(step, after=state)  # the first call warms up: time the ones after.
        logging.info(
          'time to first step: %.1f s (from process start; %.1f s of this run)',
          startup.seconds_since_start(),
          time.perf_counter() - t_start,
        )
      window_end = step % c.log_every_steps == 0 or step == total_steps
      epoch_end = step % steps_per_epoch == 0
      if window_end:
        _check_nonfinite(runs, state)
        rate = throughput.rate(step)
        history = jax.device_get(history)
        for r, run in enumerate(runs):
          own = [h if not stacked else {k: v[r] for k, v in h.items()} for h in history]
          scalars = {
            k: float(np.mean(np.concatenate([np.ravel(h[k]) for h in own]))) for k in own[0]
          }
          logging.info(
            '%sstep %d/%d epoch %.2f loss %.4f lr %.2e | %s',
            run.label,
            step,
            total_steps,
            step / steps_per_epoch,
            scalars['loss'],
            scalars['lr'],
            metric_writer.format_rate(rate, total_steps - step, c.batch_size),
          )
          run.writer.write(step, 'train', {**scalars, **({'samples_per_s': rate} if rate else {})})
        history = []
        throughput.start(step)
      if epoch_end:
        t_epoch = time.time()
        _check_nonfinite(runs, state)
        if stacked:
          vals = evaluation.evaluate_seeds(
            jitted, state.params, dataset, 'valid', data=eval_data['valid']
          )
        else:
          vals = [
            evaluation.evaluate(
              jitted,
              state.params,
              dataset,
              'valid',
              batch_size=c.eval_batch_size,
              data=eval_data['valid'],
            )
          ]
        for run, (val, _), run_state in zip(runs, vals, members(state)):
          run.writer.write(step, 'valid', val)
          plots.submit(
            _plot_curves, run.writer, run.workdir, jitted.task.key_metrics, steps_per_epoch
          )
          run.ckpt.save(run_state, _position(step), valid_loss=val['loss'])
          logging.info(
            '%sepoch %d validation (%.1f s): %s',
            run.label,
            step // steps_per_epoch,
            time.time() - t_epoch,
            ' '.join(f'{k}={v:.4f}' for k, v in val.items()),
          )
        throughput.start(step)  # the next window times training, not this validation.
      if preemption.should_stop(agree=window_end or epoch_end):
        for run, run_state in zip(runs, members(state)):
          run.ckpt.save(run_state, _position(step))
        for run in runs:
          run.ckpt.wait()
          run.writer.close()
        logging.warning(
          'Stopped at step %d after %s; the same command resumes.', step, preemption.reason
        )
        return [{} for _ in runs]
  for run, run_state in zip(runs, members(state)):
    run.ckpt.save(run_state, _position(step))
  for run, skipped in zip(runs, np.atleast_1d(jax.device_get(state.nonfinite_count))):
    run.ckpt.wait()
    if skipped:
      logging.warning(
        '%s%d updates were skipped because the loss was not finite.', run.label, int(skipped)
      )
  # Each run's best checkpoint by the one-seed program, as eval.py scores it: its results.json
  # is what `eval.py --workdir=<run>` recomputes, to the bit.
  results = [
    evaluation.evaluate_run(
      run.config, run.workdir, ('valid', 'test'), jitted=jitted, dataset=dataset, data=eval_data
    )
    for run in runs
  ]
  for run, result in zip(runs, results):
    run.writer.write(total_steps, 'test', result['test'])
    _plot_curves(run.writer, run.workdir, jitted.task.key_metrics, steps_per_epoch)
    run.writer.close()
  return results


def _start(
  run: _Run, jitted: steps.JittedSteps, abstract, total_steps: int, steps_per_epoch: int
) -> steps.TrainState:
  """The run's newest readable checkpoint, or its fresh state (hparams logged)."""
  c, workdir = run.config, run.workdir
  state, extra = run.ckpt.restore_latest(abstract, set_aside=True)
  if state is None:
    state = jitted.init(c.seed)
    run.writer.write_hparams(c, ['valid/loss'] + [f'test/{m}' for m in jitted.task.key_metrics])
    logging.info(
      '%sStarting from scratch: %d steps (%d epochs x %d steps of %d examples).',
      run.label,
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
    logging.info('%sResumed from step %d of %d.', run.label, int(state.step), total_steps)
  return state


def _common_step(runs: list[_Run], states: list[steps.TrainState]) -> int:
  """The step every run resumes from; a group whose runs hold different steps is refused."""
  at = {run.workdir: int(state.step) for run, state in zip(runs, states)}
  if len(set(at.values())) > 1:
    raise ValueError(
      'the runs of a seed group resume from different steps ('
      + ', '.join(f'{w}: {s}' for w, s in at.items())
      + '): train them one after another with --config.seed_parallel=False, or move the runs '
      'that are ahead aside.'
    )
  return next(iter(at.values()))


def _position(step: int) -> dict:
  """The data position saved with a checkpoint: the step (`indexing`'s order)."""
  return {'data_state': {'order': indexing.ORDER, 'step': int(step)}}


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


def _check_nonfinite(runs: list[_Run], state: steps.TrainState):
  """Raises for the first run (of one, or of a stacked group) with a non-finite loss."""
  counts, first = jax.device_get((state.nonfinite_count, state.first_nonfinite_step))
  for run, count, step in zip(runs, np.atleast_1d(counts), np.atleast_1d(first)):
    if count and not run.config.skip_nonfinite:
      raise NonFiniteLossError(
        f'{run.label}non-finite loss at step {int(step)}; training stopped and the last '
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
