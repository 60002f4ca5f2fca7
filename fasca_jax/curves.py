"""Training curves: `workdir/curves.png` drawn from `workdir/metrics.jsonl` with matplotlib (Agg).

Left: train loss (mean over each logging window) and validation loss per epoch, with the best
epoch (lowest validation loss, the checkpoint that is evaluated) marked. Right: the task's key
validation metrics per epoch (`Task.key_metrics`), with the test value of the best checkpoint
once training has finished.
"""

import json
import os
from collections.abc import Sequence


def read_metrics(path: str) -> dict[str, list[dict]]:
  """metrics.jsonl -> kind -> rows sorted by step.

  A step logged twice (a resumed run repeats the steps after its last checkpoint) keeps its
  last row.
  """
  by_kind = {}
  with open(path) as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{line_number} is not a JSON line: {e}') from e
      by_kind.setdefault(row['kind'], {})[row['step']] = row
  return {kind: [rows[s] for s in sorted(rows)] for kind, rows in by_kind.items()}


def plot(metrics_path: str, out_path: str, key_metrics: Sequence[str], steps_per_epoch: int):
  """Draws the curves of `metrics_path` into the PNG `out_path` (replaced atomically); the
  right panel shows `key_metrics` (the task's, e.g. Has0_acc_2 and Has0_F1_score)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  rows = read_metrics(metrics_path)  # values: numbers, or 'nan' / 'inf' strings (float() reads).
  train, valid, test = rows.get('train', []), rows.get('valid', []), rows.get('test', [])
  epoch = lambda r: r['step'] / steps_per_epoch

  fig = Figure(figsize=(10, 4), layout='constrained')
  loss_ax, metric_ax = fig.subplots(1, 2)
  loss_ax.plot(
    [epoch(r) for r in train],
    [float(r['loss']) for r in train],
    lw=1,
    label='train (logging-window mean)',
  )
  loss_ax.plot([epoch(r) for r in valid], [float(r['loss']) for r in valid], 'o-', label='valid')
  best = min(valid, key=lambda r: float(r['loss']), default=None)
  for ax in (loss_ax, metric_ax):
    if best is not None:
      ax.axvline(epoch(best), color='gray', ls=':', label=f'best epoch {epoch(best):g}')
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
  loss_ax.set_ylabel('loss')
  for name in key_metrics:
    lines = metric_ax.plot(
      [epoch(r) for r in valid if name in r],
      [float(r[name]) for r in valid if name in r],
      'o-',
      label=f'valid {name}',
    )
    if best is not None and test and name in test[-1]:
      metric_ax.plot(
        [epoch(best)],
        [float(test[-1][name])],
        '*',
        ms=12,
        color=lines[0].get_color(),
        label=f'test {name} (best checkpoint)',
      )
  metric_ax.set_ylabel('metric')
  loss_ax.legend(fontsize=8)
  metric_ax.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(out_path))) or out_path)
  tmp = out_path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, out_path)
