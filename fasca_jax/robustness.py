"""Robustness evaluation: trained runs scored under perturbed inputs, one table and one curve per
perturbation and split (`eval.py --perturb=...`).

`evaluate_workdir(config, workdir, specs)` restores the best checkpoint (on validation loss) of
every run of `workdir` (`runs.find_runs`: a run, a seed sweep or an ablation directory) and
evaluates it on each split at every intensity of each perturbation spec
(`fasca_jax.perturbations`: missing, drop_steps, noise, shift), perturbing the evaluation
batches on the fly (nothing is rebuilt on disk). The identity intensity is the plain evaluation
itself, so its row equals `eval.py` exactly. It writes, per perturbation and split,

  workdir/robustness/<kind>_<modalities>_<split>.json   the report below
  workdir/robustness/<kind>_<modalities>_<split>.md     one row per intensity, every metric
  workdir/robustness/<kind>_<modalities>_<split>.png    the task's key metrics against intensity

Report (JSON; like results.json, a NaN metric or the noise intensity `inf` is written as
NaN / Infinity, which Python's json reads back):

  perturbation   canonical spec, e.g. 'shift:audio=-8,-4,0,4,8'
  kind, modalities, intensities, intensity (the unit), split, seed, layout, key_metrics,
                 workdir (as given to the command)
  runs           name -> {'step': the checkpoint evaluated, 'metrics': [metric -> value, one
                 per intensity], 'unaffected': True when the run reads none of the perturbed
                 modalities (an ablation variant without it: its plain metrics repeated)}
                 (name 'run' for a single run, 'seed_<n>' for a sweep, the variant for an
                 ablation directory)
  summary        seeds only: metric -> {'mean': [...], 'std': [...]} per intensity, over the
                 seeds (population std, ddof=0, as `tables` does)

Curves: a seed sweep is drawn as the mean with a ± std band (and each seed thin); an ablation
directory as one curve per variant on the same axes; a single run as one curve.

Noise needs each feature dimension's scale on the training split (`feature_scales`), measured
once per dataset and cached beside the TFDS data.
"""

import functools
import json
import math
import os
from collections.abc import Sequence

from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from fasca_jax import checkpoints
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import modalities as modalities_lib
from fasca_jax import perturbations as perturbations_lib
from fasca_jax import placement
from fasca_jax import runs
from fasca_jax import steps
from fasca_jax import tasks

ROBUSTNESS_DIR = 'robustness'


# --- the scale noise is measured against -------------------------------------------------------
def feature_scales(dataset: input_pipeline.Dataset, split: str = 'train') -> dict[str, np.ndarray]:
  """modality -> (D_m,) float32 standard deviation of each feature dimension over every stored
  step of every example of `split` (uncropped; population std), for every modality the dataset
  has.

  Read in one pass the first time and cached as `<dataset dir>/feature_scale-<split>.npz`.
  """
  path = os.path.join(dataset.builder.data_dir, f'feature_scale-{split}.npz')
  if os.path.isfile(path):
    with np.load(path) as f:
      return {k[len('std_') :]: f[k] for k in f.files if k.startswith('std_')}
  features = dataset.builder.info.features
  streams = [m for m in modalities_lib.MODALITIES if m in features]
  logging.info(
    'Measuring the feature scales of %s/%s once (cached in %s).', dataset.name, split, path
  )
  sums = {m: np.zeros(features[m].shape[1], np.float64) for m in streams}
  squares = {m: np.zeros(features[m].shape[1], np.float64) for m in streams}
  counts = dict.fromkeys(streams, 0)
  ds = grain.MapDataset.source(dataset.source(split)).map(lambda r: [r[m] for m in streams])
  for record in ds.to_iter_dataset(grain.ReadOptions(num_threads=8, prefetch_buffer_size=64)):
    for m, x in zip(streams, record):
      x = np.asarray(x, np.float64)  # (T_m, D_m)
      sums[m] += x.sum(0)
      squares[m] += (x * x).sum(0)
      counts[m] += len(x)
  scales = {}
  for m in streams:
    n = max(counts[m], 1)
    mean = sums[m] / n
    scales[m] = np.sqrt(np.maximum(squares[m] / n - mean * mean, 0.0)).astype(np.float32)
  tmp = f'{path}.tmp-{os.getpid()}.npz'
  try:
    np.savez(tmp, **{f'std_{m}': v for m, v in scales.items()})
    os.replace(tmp, path)
  except OSError as e:  # e.g. a read-only shared data_dir: measure again next time.
    logging.warning('Could not cache the feature scales in %s: %s', path, e)
  return scales


# --- evaluation --------------------------------------------------------------------------------
def evaluate_run(
  config: ml_collections.ConfigDict,
  run_dir: str,
  perturbations: Sequence[perturbations_lib.Perturbation],
  splits: Sequence[str] = ('test',),
  *,
  seed: int = 0,
  jitted: steps.JittedSteps | None = None,
  dataset: input_pipeline.Dataset | None = None,
) -> dict:
  """The best checkpoint of `run_dir` evaluated under every perturbation at every intensity.

  Args:
    config: the run's config.
    run_dir: a training run directory.
    perturbations: parsed specs (`perturbations.parse`).
    splits: 'train', 'valid' and/or 'test'.
    seed: non-negative; fixes every random draw of the perturbations.
    jitted: steps of `config` (up to the seed) to reuse; built otherwise.
    dataset: `config`'s dataset, if already open.

  Returns:
    {'step': the checkpoint's step, 'plain': split -> plain metrics, 'perturbed': perturbation
    name -> split -> [metrics per intensity], 'unaffected': names of the perturbations that touch
    no modality of the run}.
  """
  if seed < 0:
    raise ValueError(f'perturbation seed {seed}: expected a non-negative integer.')
  checkpoints.guard_config(
    config, run_dir, remedy=evaluation.EVAL_REMEDY, free=checkpoints.EVAL_FREE_FIELDS
  )
  dataset = dataset or input_pipeline.open_dataset(config)
  jitted = jitted or steps.JittedSteps(config)
  restored = checkpoints.restore_best(config, run_dir)
  state, step = restored.state, restored.step
  needs_scale = any(p.kind == 'noise' for p in perturbations)
  scales = feature_scales(dataset) if needs_scale else None
  plain_mode = placement.choose(config, dataset)  # as eval.py places it: the same plain metrics
  data = {}  # (split, mode) -> EvalData, placed once

  def evaluate(split, perturb=None):
    mode = plain_mode if perturb is None else 'host'  # perturbations apply to host batches.
    if (split, mode) not in data:
      data[split, mode] = evaluation.eval_data(
        config, dataset, split, mesh=jitted.mesh, batch_size=config.eval_batch_size, mode=mode
      )
    return evaluation.evaluate(
      jitted,
      state.params,
      dataset,
      split,
      batch_size=config.eval_batch_size,
      data=data[split, mode],
      perturb=perturb,
    )

  plain = {split: evaluate(split)[0] for split in splits}  # the identity row of every curve.
  out = {'step': step, 'plain': plain, 'perturbed': {}, 'unaffected': []}
  for p in perturbations:
    touched = [m for m in p.modalities if m in config.modalities]
    if not touched:
      out['unaffected'].append(p.name)
    out['perturbed'][p.name] = {}
    for split in splits:
      rows = []
      for v in p.intensities:
        if p.is_identity(v) or not touched:
          rows.append(plain[split])
          continue
        perturb = functools.partial(
          perturbations_lib.apply, perturbation=p, intensity=v, seed=seed, scales=scales
        )
        rows.append(evaluate(split, perturb=perturb)[0])
        logging.info(
          '%s %s=%s on %s: %s',
          run_dir,
          p.name,
          perturbations_lib.format_intensity(p.kind, v),
          split,
          ' '.join(f'{k}={rows[-1][k]:.4f}' for k in jitted.task.key_metrics),
        )
      out['perturbed'][p.name][split] = rows
  return out


def evaluate_workdir(
  config: ml_collections.ConfigDict | None,
  workdir: str,
  specs: Sequence[str],
  splits: Sequence[str] = ('test',),
  *,
  seed: int = 0,
) -> list[dict]:
  """Every run of `workdir` (a run, a seed sweep or an ablation directory; `runs.find_runs`)
  under every spec; writes workdir/robustness/* (module docstring) and returns the reports, one
  per (spec, split) in that order.

  Args:
    config: the config the run(s) were trained with (as given to train.py / ablate.py); None
      takes each run's own config.json. A config is checked against each run's
      (`checkpoints.guard_config`, the fields evaluation may ignore aside).
    workdir: the directory.
    specs: perturbation specs (`perturbations.parse`), e.g. ['shift:audio=-4,0,4'].
    splits: 'train', 'valid' and/or 'test'.
    seed: non-negative; fixes every random draw of the perturbations.

  Raises:
    ValueError: a bad spec (before anything is evaluated); FileNotFoundError: no run found.
  """
  perturbations = perturbations_lib.parse_all(specs)
  if not perturbations:
    raise ValueError(f'no perturbation given; {perturbations_lib.EXAMPLE}.')
  layout, named = runs.find_runs(config, workdir)
  config = config if config is not None else next(iter(named.values()))
  perturbations_lib.check_modalities(
    perturbations, {m for c in named.values() for m in c.modalities}
  )
  results, jitted, task = {}, None, tasks.from_config(config)
  for name, run_config in named.items():
    if jitted is None or layout != 'seeds':  # the seeds of a sweep share one compiled step.
      jitted = steps.JittedSteps(run_config)
    run_dir = workdir if layout == 'run' else os.path.join(workdir, name)
    results[name] = evaluate_run(
      run_config, run_dir, perturbations, splits, seed=seed, jitted=jitted
    )
  reports = [
    make_report(p, split, results, layout=layout, workdir=workdir, seed=seed, task=task)
    for p in perturbations
    for split in splits
  ]
  if jax.process_index() == 0:
    for report in reports:
      paths = write_report(workdir, report)
      logging.info('Wrote %s.', ', '.join(paths))
  return reports


# --- reports -----------------------------------------------------------------------------------
def report_name(report: dict) -> str:
  """File stem of a report: '<kind>_<modalities>_<split>'."""
  return f'{report["kind"]}_{"+".join(report["modalities"])}_{report["split"]}'


def make_report(
  perturbation: perturbations_lib.Perturbation,
  split: str,
  results: dict,
  *,
  layout: str,
  workdir: str,
  seed: int,
  task: tasks.Task,
) -> dict:
  """The report (module docstring) of one perturbation and split from `evaluate_run`'s results
  of each run (name -> results)."""
  report = {
    'perturbation': perturbation.spec,
    'kind': perturbation.kind,
    'modalities': list(perturbation.modalities),
    'intensities': list(perturbation.intensities),
    'intensity': perturbations_lib.UNITS[perturbation.kind],
    'split': split,
    'seed': seed,
    'layout': layout,
    'workdir': os.path.normpath(workdir),
    'key_metrics': list(task.key_metrics),
    'runs': {
      name: {
        'step': r['step'],
        'metrics': r['perturbed'][perturbation.name][split],
        'unaffected': perturbation.name in r['unaffected'],
      }
      for name, r in results.items()
    },
  }
  if layout == 'seeds':
    report['summary'] = summarize([r['metrics'] for r in report['runs'].values()])
  return report


def summarize(per_run: Sequence[Sequence[dict]]) -> dict:
  """[run][intensity] metric dicts -> metric -> {'mean', 'std'}: lists over intensities of the
  mean and population std (ddof=0) over runs."""
  metrics = list(per_run[0][0])
  values = {m: np.array([[row[m] for row in run] for run in per_run], np.float64) for m in metrics}
  return {
    m: {'mean': v.mean(0).tolist(), 'std': v.std(0).tolist()} for m, v in values.items()
  }  # v: (runs, intensities)


def write_report(workdir: str, report: dict) -> list[str]:
  """Writes the report's .json, .md and .png into workdir/robustness/; returns their paths."""
  directory = os.path.join(workdir, ROBUSTNESS_DIR)
  os.makedirs(directory, exist_ok=True)
  stem = os.path.join(directory, report_name(report))
  _write_atomic(stem + '.json', json.dumps(report, indent=2) + '\n')
  _write_atomic(stem + '.md', to_markdown(report))
  plot(report, stem + '.png')
  return [stem + '.json', stem + '.md', stem + '.png']


def _write_atomic(path: str, text: str):
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def _labels(report: dict) -> list[str]:
  return [perturbations_lib.format_intensity(report['kind'], v) for v in report['intensities']]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  return [
    '| ' + ' | '.join(header) + ' |',
    '|---|' + '---:|' * (len(header) - 1),
    *('| ' + ' | '.join(row) + ' |' for row in rows),
  ]


def to_markdown(report: dict) -> str:
  """The report as Markdown: per run (or the mean ± std of a sweep) a table with one row per
  intensity and a column per metric (4 decimals, unscaled); for an ablation directory first the
  key metrics of every variant side by side."""
  symbol = perturbations_lib.SYMBOLS[report['kind']]
  labels = _labels(report)
  identity = perturbations_lib.format_intensity(
    report['kind'], perturbations_lib.IDENTITY[report['kind']]
  )
  runs_ = report['runs']
  lines = [
    f'# {report["perturbation"]} on {report["split"]}',
    '',
    f'`{report["workdir"]}` ({report["layout"]}: {", ".join(runs_)}), each run at its best '
    f'checkpoint on validation loss; perturbation seed {report["seed"]}. Intensity: '
    f'{report["intensity"]}. The row {symbol} = {identity} is the plain evaluation. Metrics '
    f'unscaled (4 decimals).',
  ]
  unaffected = [name for name, r in runs_.items() if r['unaffected']]
  if unaffected:
    lines += [
      '',
      f'Unaffected (no {"/".join(report["modalities"])} stream): {", ".join(unaffected)}.',
    ]
  first = next(iter(runs_.values()))['metrics'][0]
  metrics = list(first)
  if report['layout'] == 'seeds':
    summary = report['summary']
    lines += ['', f'## mean ± std over {len(runs_)} seeds (ddof=0)', '']
    lines += _table(
      [symbol, *metrics],
      [
        [label] + [f'{summary[m]["mean"][i]:.4f} ± {summary[m]["std"][i]:.4f}' for m in metrics]
        for i, label in enumerate(labels)
      ],
    )
  if report['layout'] == 'ablation':
    keys = [m for m in report['key_metrics'] if m in first]
    lines += ['', '## key metrics side by side', '']
    lines += _table(
      [symbol, *(f'{name} {m}' for m in keys for name in runs_)],
      [
        [label] + [f'{runs_[name]["metrics"][i][m]:.4f}' for m in keys for name in runs_]
        for i, label in enumerate(labels)
      ],
    )
  for name, run in runs_.items():
    title = name if report['layout'] != 'run' else os.path.basename(report['workdir'])
    lines += ['', f'## {title} (step {run["step"]})', '']
    lines += _table(
      [symbol, *metrics],
      [
        [label] + [f'{run["metrics"][i][m]:.4f}' for m in metrics] for i, label in enumerate(labels)
      ],
    )
  return '\n'.join(lines) + '\n'


def _positions(report: dict) -> tuple[list[float], list[str] | None]:
  """x positions of the intensities and tick labels: the values themselves, except for noise,
  whose intensities (clean = inf, then falling SNR) are placed evenly left to right."""
  if report['kind'] == 'noise':
    labels = ['clean' if math.isinf(v) else f'{v:g}' for v in report['intensities']]
    return list(range(len(labels))), labels
  return [float(v) for v in report['intensities']], None


def plot(report: dict, path: str):
  """Draws the report's key metrics against intensity into the PNG `path` (replaced
  atomically): one panel per key metric; a curve per run (ablation: per variant), or a sweep's
  mean with a ± std band over the seeds and each seed thin."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  xs, ticks = _positions(report)
  runs_ = report['runs']
  keys = [m for m in report['key_metrics'] if m in next(iter(runs_.values()))['metrics'][0]]
  fig = Figure(figsize=(5 * max(len(keys), 1), 4), layout='constrained')
  axes = fig.subplots(1, max(len(keys), 1), squeeze=False)[0]
  identity = perturbations_lib.IDENTITY[report['kind']]
  x_identity = (
    xs[report['intensities'].index(identity)] if identity in report['intensities'] else None
  )
  for ax, metric in zip(axes, keys):
    if report['layout'] == 'seeds':
      for run in runs_.values():
        ax.plot(xs, [row[metric] for row in run['metrics']], '-', lw=0.8, color='gray', alpha=0.5)
      mean = np.array(report['summary'][metric]['mean'])
      std = np.array(report['summary'][metric]['std'])
      ax.plot(xs, mean, 'o-', label=f'mean ± std, {len(runs_)} seeds')
      ax.fill_between(xs, mean - std, mean + std, alpha=0.25)
    else:
      for name, run in runs_.items():
        label = name if report['layout'] == 'ablation' else os.path.basename(report['workdir'])
        ax.plot(xs, [row[metric] for row in run['metrics']], 'o-', label=label)
    if x_identity is not None:
      ax.axvline(x_identity, color='gray', ls=':', label='no perturbation')
    if ticks is not None:
      ax.set_xticks(xs, ticks)
    ax.set_xlabel(report['intensity'])
    ax.set_ylabel(f'{report["split"]} {metric}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f'{report["perturbation"]} on {report["split"]}: {report["workdir"]}', fontsize=9)
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)
