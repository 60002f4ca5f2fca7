"""Subprocess side of tests/test_scaling.py: real `train.py` runs with a few probes attached.

  python tests/scaling_helper.py train [--sigterm_after_step=K] [--sigint_after_step=K]
      [--sigkill_after_step=J --wait_for_checkpoint=S] -- TRAIN_FLAGS...
      train.py's main; after step K the process sends itself SIGTERM or SIGINT (Ctrl-C; handled
      by the trainer like any such signal); after step J, once checkpoint step S is on disk, it
      sends itself SIGKILL.
  python tests/scaling_helper.py record --report=PATH -- TRAIN_FLAGS...
      train.py's main ('host' or 'stream' placement), recording the example ids this process
      read (per split), the files it
      opened for writing (seen by a `sys.addaudithook` hook on the `open` event) and a checksum
      of the parameters at every checkpointed step; writes them as JSON to PATH.
  python tests/scaling_helper.py curve --data_dir=DIR --steps=N --out=PATH
      N train steps of the tiny synthetic config on every device of this process; writes the
      losses and gradient norms per step, trace/compile counts, shardings and final parameters
      to PATH (.npz).

Signals are sent from inside the step so that the step they follow is exact whatever the load
of the machine; the trainer's handling of them is the production code path.
"""

import hashlib
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import chex  # pylint: disable=g-import-not-at-top
import jax
import numpy as np

from fasca_jax import checkpoints
from fasca_jax import cli
from fasca_jax import input_pipeline
from fasca_jax import placement
from fasca_jax import steps
import train_hooks  # tests/, this script's directory


def _options(argv):
  """'--k=v' options before '--' -> (dict, the arguments after '--')."""
  split = argv.index('--') if '--' in argv else len(argv)
  options = dict(a[2:].split('=', 1) for a in argv[:split])
  return options, argv[split + 1 :]


def _wrap_train_step(after_step):
  """Calls `after_step(step)` after every call of the train programs the loop runs (one step
  per call unless --config.steps_per_call says otherwise), in every `JittedSteps` built."""
  init = steps.JittedSteps.__init__

  def after(state):
    after_step(int(state.step))
    return state

  def hooked_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    train_hooks.after_train_calls(self, after)

  steps.JittedSteps.__init__ = hooked_init


def _run_train(argv):
  import train  # pylint: disable=g-import-not-at-top

  cli.run(train.main, argv=['train.py', *argv])


def train_cmd(options, argv):
  stops = {
    int(options[f'{name}_after_step']): signum
    for name, signum in (('sigterm', signal.SIGTERM), ('sigint', signal.SIGINT))
    if f'{name}_after_step' in options
  }
  sigkill = int(options.get('sigkill_after_step', -1))
  wait_for = options.get('wait_for_checkpoint')
  workdir = next(a.split('=', 1)[1] for a in argv if a.startswith('--workdir='))

  def after_step(step):
    if step in stops:
      os.kill(os.getpid(), stops[step])
    if step == sigkill:
      if wait_for is not None:  # The async save of that step must be on disk first.
        path = os.path.join(workdir, checkpoints.CHECKPOINT_DIR, wait_for)
        deadline = time.time() + 120
        while not os.path.isdir(path) and time.time() < deadline:
          time.sleep(0.02)
      os.kill(os.getpid(), signal.SIGKILL)

  _wrap_train_step(after_step)
  _run_train(argv)


def _checksum(tree) -> str:
  """sha256 over this process's copies of every leaf."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      h.update(np.asarray(shard.data).tobytes())
  return h.hexdigest()


def record_cmd(options, argv):
  """Records the ids this process read: train batches of the 'host' placement (its rows of
  each global batch), evaluation batches of 'host' and 'stream', train batches of 'stream'."""
  report = {'ids': {}, 'writes': [], 'checksums': {}}
  make_batches, save = input_pipeline.make_batches, checkpoints.Checkpoints.save
  host_batches, eval_batches = placement.host_batches, placement.EvalData.batches
  ids_of = {}  # split -> the split's ids, by index.

  def recorded(batches, split, dataset=None):
    ids = report['ids'].setdefault(split, [])
    for batch in batches:
      if 'id' in batch:
        ids.extend(i for i, v in zip(batch['id'].tolist(), batch['valid']) if v)
      else:
        names = ids_of.setdefault(split, input_pipeline.split_summary(dataset, split).ids)
        ids.extend(names[batch['index'][batch['valid']]].tolist())
      yield batch

  def recording_make_batches(dataset, split, **kwargs):
    batches = make_batches(dataset, split, **kwargs)
    if kwargs.get('process_count') == 1:  # the padded cache being built: not training data.
      return batches
    return recorded(batches, split)

  def recording_host_batches(arrays, seed, global_batch_size, **kwargs):
    return recorded(host_batches(arrays, seed, global_batch_size, **kwargs), 'train', DATASET[0])

  def recording_eval_batches(self):
    if self.mode == 'stream':  # recorded by make_batches.
      return eval_batches(self)
    return recorded(eval_batches(self), self.split, self.dataset)

  DATASET = []
  open_dataset = input_pipeline.open_dataset

  def recording_open_dataset(config):
    DATASET[:] = [open_dataset(config)]
    return DATASET[0]

  def recording_save(self, state, extra, valid_loss=None):
    report['checksums'][str(int(state.step))] = _checksum(state.params)
    return save(self, state, extra, valid_loss)

  written = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

  def record_writes(event, args):
    """Audit hook: the `open` event carries (path, mode, flags) for open() and os.open()."""
    if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)):
      path, mode, flags = args
      if (mode and any(c in mode for c in 'wax+')) or (mode is None and flags & written):
        report['writes'].append(os.path.abspath(os.fsdecode(path)))

  input_pipeline.make_batches = recording_make_batches
  input_pipeline.open_dataset = recording_open_dataset
  placement.host_batches = recording_host_batches
  placement.EvalData.batches = recording_eval_batches
  checkpoints.Checkpoints.save = recording_save
  sys.addaudithook(record_writes)
  try:
    _run_train(argv)
  finally:
    report['process_index'] = jax.process_index()
    report['process_count'] = jax.process_count()
    report['device_count'] = jax.device_count()
    with open(options['report'], 'w') as f:
      json.dump(report, f)


def curve_cmd(options, argv):
  del argv
  from configs import synthetic  # pylint: disable=g-import-not-at-top

  config = synthetic.get_config('tiny')
  config.data_dir = options['data_dir']
  # The step function may be traced once only; a second trace raises inside jit.
  steps.train_step = chex.assert_max_traces(steps.train_step, n=1)
  jitted = steps.JittedSteps(
    config, steps.make_optimizer(config, total_steps=12, steps_per_epoch=6)
  )
  batches = input_pipeline.make_batches(
    input_pipeline.open_dataset(config),
    'train',
    train=True,
    global_batch_size=config.batch_size,
    seed=config.seed,
  )
  state, losses, grad_norms = jitted.init(config.seed), [], []
  for _ in range(int(options['steps'])):
    batch = input_pipeline.to_global(next(batches), jitted.data_sharding)
    state, metrics = jitted.train(state, batch)
    losses.append(float(metrics['loss']))
    grad_norms.append(float(metrics['grad_norm']))
  text = batch['text']
  np.savez(
    options['out'],
    losses=np.array(losses),
    grad_norms=np.array(grad_norms),
    device_count=jax.device_count(),
    cache_size=jitted.train._cache_size(),
    batch_devices=len(text.sharding.device_set),
    batch_shard_rows=[s.data.shape[0] for s in text.addressable_shards],
    params_replicated=all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params)),
    **{
      'param.' + '.'.join(k.key for k in path): np.asarray(x)
      for path, x in jax.tree_util.tree_flatten_with_path(state.params)[0]
    },
  )


if __name__ == '__main__':
  _opts, _rest = _options(sys.argv[2:])
  {'train': train_cmd, 'record': record_cmd, 'curve': curve_cmd}[sys.argv[1]](_opts, _rest)
