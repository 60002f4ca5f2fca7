"""The tables of many runs: the seed summary (mean ± std over seeds) and the ablation table.

Seed summary (`write_seed_summary`: workdir/summary.md and summary.csv). MMSA's `run.py`
multiplies every metric by 100 and reports `np.mean` and `np.std` over seeds (1111-1115 by
default), i.e. the population standard deviation (ddof=0), rounded to 2 decimals. Here every
metric except `loss` (accuracies, F1, MAE, Corr) is x100, and `loss` is kept as is, with 4
decimals.

Ablation table (`write_ablation_table`: workdir/ablation.md and ablation.json): one row per
variant with its parameter count and every test metric (4 decimals).
"""

import csv
import json
import os
from typing import Mapping

import jax
import numpy as np

UNSCALED = ('loss',)  # metrics reported as they are; everything else x100.
SUMMARY_MD, SUMMARY_CSV = 'summary.md', 'summary.csv'
ABLATION_MD, ABLATION_JSON = 'ablation.md', 'ablation.json'


def scale(metric: str) -> int:
  return 1 if metric in UNSCALED else 100


def aggregate(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]]) -> dict:
  """Scaled mean and std over seeds.

  Args:
    per_seed: seed -> split -> metric -> value (each seed's results.json). Every seed must have
      the same splits and metrics.

  Returns:
    split -> metric -> {'mean', 'std' (ddof=0), 'values' (per seed, in `per_seed` order),
    'scale'}; a NaN value (e.g. Corr of a constant prediction) makes mean and std NaN.
  """
  if not per_seed:
    raise ValueError('no seed results to summarize')
  seeds = list(per_seed)
  first = per_seed[seeds[0]]
  for seed in seeds[1:]:
    for split, metrics in first.items():
      if set(per_seed[seed].get(split, {})) != set(metrics):
        raise ValueError(
          f'seed {seed} has split {split!r} metrics {sorted(per_seed[seed].get(split, {}))}, '
          f'seed {seeds[0]} has {sorted(metrics)}; results of different configs?'
        )
  summary = {}
  for split, metrics in first.items():
    summary[split] = {}
    for metric in metrics:
      values = np.array([per_seed[s][split][metric] for s in seeds], np.float64) * scale(metric)
      summary[split][metric] = {
        'mean': float(np.mean(values)),
        'std': float(np.std(values)),
        'values': values.tolist(),
        'scale': scale(metric),
      }
  return summary


def _fmt(metric: str, x: float) -> str:
  return f'{x:.4f}' if metric in UNSCALED else f'{x:.2f}'


def to_markdown(summary: dict, seeds, title: str) -> str:
  """The summary as Markdown: a mean ± std table (metric x split), then one table per split
  with each seed's value."""
  splits = list(summary)
  metrics = list(dict.fromkeys(m for s in splits for m in summary[s]))
  lines = [
    f'# {title}',
    '',
    f'Mean ± std over {len(seeds)} seeds ({", ".join(map(str, seeds))}); std is the '
    "population std (ddof=0, MMSA's `np.std`). Every metric except `loss` is x100. "
    'Each seed is evaluated at its best checkpoint on validation loss.',
    '',
    '| metric | ' + ' | '.join(splits) + ' |',
    '|---|' + '---:|' * len(splits),
  ]
  for m in metrics:
    cells = [
      f'{_fmt(m, summary[s][m]["mean"])} ± {_fmt(m, summary[s][m]["std"])}'
      if m in summary[s]
      else '-'
      for s in splits
    ]
    lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  for s in splits:
    lines += [
      '',
      f'## {s}, per seed',
      '',
      '| metric | ' + ' | '.join(map(str, seeds)) + ' |',
      '|---|' + '---:|' * len(seeds),
    ]
    for m, stat in summary[s].items():
      lines.append(f'| {m} | ' + ' | '.join(_fmt(m, v) for v in stat['values']) + ' |')
  return '\n'.join(lines) + '\n'


def csv_rows(summary: dict, seeds) -> list[list]:
  """Header + one row per (split, metric): scale, n, mean, std and each seed's value, unrounded."""
  rows = [['split', 'metric', 'scale', 'n_seeds', 'mean', 'std'] + [f'seed_{s}' for s in seeds]]
  for split, metrics in summary.items():
    for m, stat in metrics.items():
      rows.append([split, m, stat['scale'], len(seeds), stat['mean'], stat['std'], *stat['values']])
  return rows


def write_seed_summary(
  workdir: str, per_seed: Mapping[int, Mapping[str, Mapping[str, float]]], title: str
) -> dict:
  """Writes workdir/summary.md and workdir/summary.csv (process 0); returns
  `aggregate(per_seed)`."""
  summary = aggregate(per_seed)
  if jax.process_index():
    return summary
  seeds = list(per_seed)
  _write_atomic(os.path.join(workdir, SUMMARY_MD), to_markdown(summary, seeds, title))
  path = os.path.join(workdir, SUMMARY_CSV)
  with open(path + '.tmp', 'w', newline='') as f:
    csv.writer(f).writerows(csv_rows(summary, seeds))  # floats as repr: they read back exactly.
  os.replace(path + '.tmp', path)
  return summary


def ablation_markdown(table: dict, split: str = 'test') -> str:
  """Markdown table: one row per variant; parameters, then every metric of `split` (4 decimals)."""
  metrics = list(dict.fromkeys(k for row in table.values() for k in row.get(split, {})))
  lines = [
    '| variant | params | ' + ' | '.join(f'{split} {m}' for m in metrics) + ' |',
    '|---|---:|' + '---:|' * len(metrics),
  ]
  for v, row in table.items():
    values = [f'{row[split][m]:.4f}' if m in row.get(split, {}) else '-' for m in metrics]
    lines.append(f'| {v} | {row["params"]:,} | ' + ' | '.join(values) + ' |')
  return '\n'.join(lines)


def write_ablation_table(workdir: str, table: dict):
  """Writes workdir/ablation.json (variant -> {'params', 'valid', 'test'}) and the Markdown
  table workdir/ablation.md (process 0)."""
  if jax.process_index():
    return
  _write_atomic(os.path.join(workdir, ABLATION_JSON), json.dumps(table, indent=2))
  _write_atomic(os.path.join(workdir, ABLATION_MD), ablation_markdown(table) + '\n')


def _write_atomic(path: str, text: str):
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)
