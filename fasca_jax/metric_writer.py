"""Metric logging: `workdir/metrics.jsonl` and TensorBoard event files in `workdir`.

Every `write` appends one JSON line `{"step": s, "kind": k, ...scalars}` and one TensorBoard
event holding the scalars `k/<name>` at step s (tensorboardX's event writer: no TensorFlow
needed to write, `tensorboard --logdir` reads them). Both are flushed at once, so a crashed run
keeps everything logged so far; a resumed run adds a new event file beside the old ones.
Only process 0 writes; other processes get a writer that drops everything.
"""

import json
import math
import os
import time
import types
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


def _tensorboardx() -> types.SimpleNamespace:
  """The tensorboardX modules the writer uses, imported on first use: tensorboardX imports torch
  when it is installed, seconds that processes which write nothing (eval.py, process > 0) skip.
  """
  from tensorboardX import event_file_writer, summary  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(event_file_writer=event_file_writer, summary=summary,
                               event_pb2=event_pb2, summary_pb2=summary_pb2)


class MetricWriter:
  """Writes scalars to metrics.jsonl and to TensorBoard event files in `workdir`."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._events = self._tb = None
    if self.enabled:
      self._tb = _tensorboardx()
      # The suffix keeps two writers started within one second from sharing (truncating) a file.
      self._events = self._tb.event_file_writer.EventsWriter(
          os.path.join(workdir, 'events'), filename_suffix=f'.{os.getpid()}.{time.time_ns()}')

  def _add_event(self, step: int, summary):
    self._events.write_event(self._tb.event_pb2.Event(wall_time=time.time(), step=int(step),
                                                      summary=summary))
    self._events.flush()

  def write(self, step: int, kind: str, scalars: Mapping[str, Any]):
    """Logs `scalars` (name -> number) of `kind` ('train', 'valid', 'test') at `step`."""
    if not self.enabled:
      return
    row = {'step': int(step), 'kind': kind, **{k: _jsonable(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    summary = self._tb.summary_pb2.Summary
    self._add_event(step, summary(value=[summary.Value(tag=f'{kind}/{k}', simple_value=float(v))
                                         for k, v in scalars.items()]))

  def write_hparams(self, config, metric_tags: Sequence[str] = ()):
    """Writes the config once, at step 0: a `hparams` line in metrics.jsonl, and in TensorBoard
    the HParams dashboard entry (flattened config vs `metric_tags`) plus the config as JSON text.
    """
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': 0, 'kind': 'hparams', 'config': config.to_dict()},
                         default=str) + '\n')
    experiment, session_start, _ = self._tb.summary.hparams(flat_hparams(config),
                                                            dict.fromkeys(metric_tags, 0.0))
    self._add_event(0, experiment)
    self._add_event(0, session_start)
    self._add_event(0, self._tb.summary.text(
        'config', '```\n' + json.dumps(config.to_dict(), indent=2, default=str) + '\n```'))

  def close(self):
    if self._events is not None:
      self._events.close()
      self._events = None
