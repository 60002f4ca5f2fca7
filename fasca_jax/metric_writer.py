"""Metric logging: one JSON line per logged step/epoch in `workdir/metrics.jsonl`.

Only process 0 writes; other processes get a writer that drops everything.
"""

import json
import math
import os
from typing import Any, Mapping

import jax


def _jsonable(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)


class MetricWriter:
  """Appends `{"step": s, "kind": k, ...scalars}` lines to metrics.jsonl."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')

  def write(self, step: int, kind: str, scalars: Mapping[str, Any]):
    if not self.enabled:
      return
    row = {'step': int(step), 'kind': kind, **{k: _jsonable(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')

  def write_hparams(self, config):
    """Writes the full config once, as a `hparams` line at step 0."""
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': 0, 'kind': 'hparams', 'config': config.to_dict()},
                         default=str) + '\n')
