"""Metric logging: `workdir/metrics.jsonl` and TensorBoard event files in `workdir`.

Every `write` appends one JSON line `{"step": s, "kind": k, ...scalars}` and the TensorBoard
scalars `k/<name>` at step s (tensorboardX's `SummaryWriter`: no TensorFlow needed to write,
`tensorboard --logdir` reads them). Both are flushed at once, so a crashed run
keeps everything logged so far; a resumed run adds a new event file beside the old ones.
Only process 0 writes; other processes get a writer that drops everything.

`Throughput` measures the samples/s of the progress line over train steps only: the first step
of a process (compilation) and validation passes are left out of every window.
"""

import json
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax


def _jsonable(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)


def flat_hparams(config) -> dict[str, bool | int | float | str]:
  """Config -> {'optimizer.lr': 1e-3, ...}: scalars kept, anything else as its JSON text."""
  flat = {}

  def visit(prefix, node):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if isinstance(value, Mapping):
        visit(name + '.', value)
      elif isinstance(value, (bool, int, float, str)):
        flat[name] = value
      else:
        flat[name] = json.dumps(value, default=str)

  visit('', config.to_dict())
  return flat


class MetricWriter:
  """Writes scalars to metrics.jsonl and to TensorBoard event files in `workdir`."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      # Imported here: tensorboardX imports torch when it is installed, seconds that processes
      # which write nothing (eval.py, process > 0) skip.
      import tensorboardX  # pylint: disable=g-import-not-at-top

      # The suffix keeps two writers started within one second from sharing (truncating) a file.
      self._tb = tensorboardX.SummaryWriter(
        logdir=workdir, filename_suffix=f'.{os.getpid()}.{time.time_ns()}'
      )

  def write(self, step: int, kind: str, scalars: Mapping[str, Any]):
    """Logs `scalars` (name -> number) of `kind` ('train', 'valid', 'test') at `step`."""
    if not self.enabled:
      return
    row = {'step': int(step), 'kind': kind, **{k: _jsonable(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    for k, v in scalars.items():
      self._tb.add_scalar(f'{kind}/{k}', float(v), global_step=int(step))
    self._tb.flush()

  def write_hparams(self, config, metric_tags: Sequence[str] = ()):
    """Writes the config once, at step 0: a `hparams` line in metrics.jsonl, and in TensorBoard
    the HParams dashboard entry (flattened config vs `metric_tags`) plus the config as JSON text.

    The HParams entry goes into this run's own event file (`SummaryWriter.add_hparams` would
    start a separate run in a subdirectory), through the writer's public `file_writer`.
    """
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(
        json.dumps({'step': 0, 'kind': 'hparams', 'config': config.to_dict()}, default=str) + '\n'
      )
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top

    experiment, session_start, _ = summary.hparams(
      flat_hparams(config), dict.fromkeys(metric_tags, 0.0)
    )
    self._tb.file_writer.add_summary(experiment, global_step=0)
    self._tb.file_writer.add_summary(session_start, global_step=0)
    self._tb.add_text(
      'config',
      '```\n' + json.dumps(config.to_dict(), indent=2, default=str) + '\n```',
      global_step=0,
    )
    self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._tb = None


class Throughput:
  """Samples per second over the train steps since the clock last started.

  The loop calls `start(step)` after the first step of the process (its time is compilation),
  after each logging window and after each validation pass, so none of those count as training.
  """

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self._time, self._step = None, None

  def start(self, step: int, *, after=None):
    """Starts the clock at `step`, once the arrays `after` (e.g. the state of the compiling
    first step, which runs asynchronously) are computed."""
    if after is not None:
      jax.block_until_ready(after)
    self._time, self._step = time.time(), step

  def rate(self, step: int) -> float | None:
    """Samples/s since `start`, or None when no timed step has finished since (then the window
    held only the compiling first step)."""
    if self._time is None or step <= self._step:
      return None
    return (step - self._step) * self.batch_size / max(time.time() - self._time, 1e-9)


def format_rate(rate: float | None, steps_left: int, batch_size: int) -> str:
  """'123.4 samples/s | ETA 0h01m05s', or 'compiling | ETA ?' when nothing was timed yet."""
  if rate is None:
    return 'compiling | ETA ?'
  seconds = int(max(steps_left * batch_size / rate, 0))
  eta = f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'
  return f'{rate:.1f} samples/s | ETA {eta}'
