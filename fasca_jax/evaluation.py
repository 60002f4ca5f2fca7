"""Evaluation: a train state scored on a split (every process its slice, outputs gathered), the
run's `results.json`, and per-example predictions as JSON lines.

`results.json`: split ('valid', 'test', 'train') -> metric -> value, merged across calls, the
metrics in the order the task computes them, plus one entry 'dataset' (`provenance.PROVENANCE_KEY`)
naming the dataset, its version and its source files' SHA-256 (`fasca_jax.provenance`);
process 0 writes it. `read_results` returns the splits only, `read_provenance` that entry.
Splits evaluated at another step than the best one (the best step was unreadable) are also listed
under `not_best_step`: split -> {"step": the step evaluated, "reason": e.g. "best step 6 is
unreadable"}.

Predictions (`eval.py --predictions=FILE`): one object per real example, in evaluation order
(`evaluate`), splits one after the other:

  regression      {"id", "split", "prediction": float, "label": float}
  classification  {"id", "split", "prediction": int (argmax), "label": int,
                   "probabilities": [C floats]}
  iemocap         {"id", "split", "prediction": [4 ints], "label": [4 ints],
                   "probabilities": [4 x [P(absent), P(present)]]}, emotions in the order
                   Neutral, Happy, Sad, Angry (`label_names.IEMOCAP_EMOTIONS`)
  mosei_emotions  {"id", "split", "prediction": [6 ints], "label": [6 ints],
                   "probabilities": [6 P(present)], "intensities": [6 floats]}, emotions in the
                   order of `label_names.MOSEI_EMOTIONS`

Floats are the model's float32 values written exactly (json's shortest repr of the float64 that
holds them). `pandas.read_json(FILE, lines=True)` or `[json.loads(l) for l in open(FILE)]`
reads them.
"""

import json
import os
from collections.abc import Callable, Iterable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from fasca_jax import checkpoints
from fasca_jax import config_io
from fasca_jax import distributed
from fasca_jax import input_pipeline
from fasca_jax import placement
from fasca_jax import provenance
from fasca_jax import startup
from fasca_jax import steps
from fasca_jax import tasks

RESULTS_FILE = 'results.json'
# results.json key: split -> {'step', 'reason'} for splits not evaluated at the best step.
FALLBACK_KEY = 'not_best_step'
NOT_SPLITS = (provenance.PROVENANCE_KEY, FALLBACK_KEY)  # the entries of results.json not splits
SPLITS = {'train': 'train', 'valid': 'validation', 'test': 'test'}  # name -> dataset split


def evaluate(
  jitted: steps.JittedSteps,
  params,
  dataset: input_pipeline.Dataset,
  split: str,
  *,
  batch_size: int,
  with_ids: bool = False,
  data: placement.EvalData | None = None,
  perturb: Callable[[dict], dict] | None = None,
) -> tuple[dict, dict]:
  """One pass of `params` over `split` ('train', 'valid' or 'test') -> (metrics, host arrays).

  `perturb` (robustness evaluation, `fasca_jax.robustness`) maps each host batch to the batch
  evaluated instead (same layout and shapes), before it goes to the devices: it needs `data`
  placed on the host.

  The host arrays `output`, `target`, `loss`, `index` (and `id` (N,) str with `with_ids`) hold
  the N real examples (padding rows dropped) in evaluation order: the stored order of the split,
  except in the 'stream' placement with several processes (batch by batch, process by process).
  `data` (from `eval_data`; default: the config's placement) says where the split is: resident
  on the devices, one call evaluates it; otherwise batch by batch, the outputs left on the
  devices until the pass ends. Either way one transfer brings them to the host at the end.
  """
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}: expected one of {sorted(SPLITS)}')
  distributed.check_batch_size(batch_size, 'eval_batch_size')
  if data is None:
    data = eval_data(jitted.config, dataset, split, mesh=jitted.mesh, batch_size=batch_size)
  host = _outputs(jitted, params, data, perturb=perturb)
  return _scores(jitted, dataset, split, host, with_ids)


def evaluate_seeds(
  jitted: steps.JittedSteps,
  params,
  dataset: input_pipeline.Dataset,
  split: str,
  *,
  data: placement.EvalData,
) -> list[tuple[dict, dict]]:
  """`evaluate` of each seed of `params` stacked over S seeds (`JittedSteps.stack`), in one
  program per call (`evaluate_seeds` / `evaluate_resident_seeds`): S (metrics, host arrays)."""
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}: expected one of {sorted(SPLITS)}')
  host = _outputs(jitted, params, data, suffix='_seeds')  # (rows, S, ...)
  num_seeds = host['valid'].shape[1]
  return [
    _scores(jitted, dataset, split, {k: v[:, i] for k, v in host.items()}, False)
    for i in range(num_seeds)
  ]


def _outputs(jitted, params, data: placement.EvalData, *, perturb=None, suffix='') -> dict:
  """The evaluation program's per-example outputs over the whole split, on the host (every
  process's rows, padding rows included)."""
  if data.resident:
    if perturb is not None:
      raise ValueError('perturb applies to host batches: evaluate data placed on the host.')
    program = jitted.program(
      'evaluate_resident' + suffix, params, data.arrays, batch_size=data.global_batch_size
    )
    parts = [program(params, data.arrays)]
  else:
    parts = []
    for batch in map(perturb or (lambda b: b), data.batches()):
      batch = input_pipeline.to_global(batch, jitted.data_sharding)
      parts.append(jitted.program('evaluate' + suffix, params, batch)(params, batch))
  parts = multihost_utils.process_allgather(parts, tiled=True)  # one transfer, at the end.
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _scores(jitted, dataset, split: str, host: dict, with_ids: bool) -> tuple[dict, dict]:
  """(metrics, the real examples' host arrays) from `_outputs` of one set of parameters."""
  valid = host.pop('valid').astype(bool)
  host = {k: v[valid] for k, v in host.items()}
  if with_ids:
    host['id'] = input_pipeline.split_summary(dataset, SPLITS[split]).ids[host['index']]
  results = {'loss': float(host['loss'].mean())}
  results.update(jitted.task.metrics(host['output'], host['target']))
  return results, host


def eval_data(
  config, dataset: input_pipeline.Dataset, split: str, *, mesh, batch_size: int, mode=None
) -> placement.EvalData:
  """`split` ('train', 'valid' or 'test') prepared for `evaluate` in placement `mode` (default:
  `placement.choose(config, dataset)`)."""
  return placement.EvalData(
    mode or placement.choose(config, dataset),
    dataset,
    SPLITS[split],
    global_batch_size=batch_size,
    mesh=mesh,
  )


EVAL_REMEDY = (
  "omit --config to evaluate with the run's own config (its config.json), or pass the config "
  'it was trained with'
)


def evaluate_run(
  config,
  workdir: str,
  splits: Iterable[str] = ('test',),
  *,
  predictions_path: str | None = None,
  jitted: steps.JittedSteps | None = None,
  dataset: input_pipeline.Dataset | None = None,
  data: dict[str, placement.EvalData] | None = None,
) -> dict:
  """Restores the best checkpoint of `workdir` (latest if none) and evaluates it on `splits`.

  `config` None takes the run's own config (workdir/config.json); a config that differs from it
  in a field that matters to evaluation is refused (`checkpoints.guard_config` with
  `EVAL_FREE_FIELDS`). Splits are 'train', 'valid' or 'test'. Results are merged into
  workdir/results.json; when the best step is unreadable, the newest readable step is evaluated
  instead and `results.json[FALLBACK_KEY]` records it per split. With `predictions_path`
  (relative: to the current directory), every example's prediction goes there as JSON lines, the
  splits in the order given. `jitted`, `dataset` and `data` (split -> `eval_data`: the training
  loop's) save compiling, opening and placing them again.
  """
  if config is None:
    config = config_io.load(workdir)
  else:
    checkpoints.guard_config(config, workdir, remedy=EVAL_REMEDY, free=checkpoints.EVAL_FREE_FIELDS)
  if jitted is None:  # eval.py: its programs come from the persistent cache when there.
    startup.enable_compilation_cache(config.get('compilation_cache_dir'))
    jitted = steps.JittedSteps(config)
  dataset = dataset or input_pipeline.open_dataset(config)
  data = dict(data or {})
  restored = checkpoints.restore_best(config, workdir)
  results, rows = {}, []
  for split in splits:
    if split not in data:
      mode = next(iter(data.values())).mode if data else None
      data[split] = eval_data(
        config, dataset, split, mesh=jitted.mesh, batch_size=config.eval_batch_size, mode=mode
      )
    results[split], host = evaluate(
      jitted,
      restored.state.params,
      dataset,
      split,
      batch_size=config.eval_batch_size,
      with_ids=predictions_path is not None,
      data=data[split],
    )
    if predictions_path is not None:
      rows.extend(prediction_rows(jitted.task, split, host))
  fallback = restored.fallback and {'step': restored.step, 'reason': restored.fallback}
  write_results(workdir, results, dataset=provenance.of_builder(dataset.builder), fallback=fallback)
  if predictions_path is not None and jax.process_index() == 0:
    count = write_predictions(predictions_path, rows)
    logging.info('Wrote %d predictions to %s.', count, os.path.abspath(predictions_path))
  return results


# --- results.json -------------------------------------------------------------------------------
def _read_file(workdir: str) -> dict:
  """The whole of workdir/results.json, or {} when the run has none yet."""
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def read_results(workdir: str) -> dict:
  """The splits of workdir/results.json (split -> metric -> value), or {} when the run has none
  yet; the 'dataset' and `FALLBACK_KEY` entries are left out (`read_provenance`)."""
  return {k: v for k, v in _read_file(workdir).items() if k not in NOT_SPLITS}


def read_provenance(workdir: str) -> dict | None:
  """The 'dataset' entry of workdir/results.json (`fasca_jax.provenance`), None if absent."""
  return _read_file(workdir).get(provenance.PROVENANCE_KEY)


def read_fallbacks(workdir: str) -> dict:
  """The `FALLBACK_KEY` entry of workdir/results.json: split -> {'step', 'reason'} for splits
  evaluated at another step than the best one; {} when there are none."""
  return _read_file(workdir).get(FALLBACK_KEY, {})


def write_results(
  workdir: str, results: dict, *, dataset: dict | None = None, fallback: dict | None = None
):
  """Merges split -> metric -> value (and the `dataset` provenance entry, when given) into
  workdir/results.json (process 0 only).

  `fallback` ({'step': int, 'reason': str}) marks these splits as evaluated at a step other than
  the best one, under `FALLBACK_KEY`; without it their mark (if any) is removed.
  """
  if jax.process_index():
    return
  merged = {**_read_file(workdir), **results}
  if dataset is not None:  # first in the file, replacing an earlier evaluation's.
    earlier = merged.pop(provenance.PROVENANCE_KEY, None)
    if earlier is not None and earlier != dataset:
      logging.warning(
        '%s: the earlier results came from dataset %s, these from %s; results of both are kept.',
        os.path.join(workdir, RESULTS_FILE),
        earlier,
        dataset,
      )
    merged = {provenance.PROVENANCE_KEY: dataset, **merged}
  marks = {s: m for s, m in merged.pop(FALLBACK_KEY, {}).items() if s not in results}
  marks.update(dict.fromkeys(results, fallback) if fallback else {})
  if marks:
    merged[FALLBACK_KEY] = marks
  with open(os.path.join(workdir, RESULTS_FILE), 'w') as f:
    json.dump(merged, f, indent=2)  # metrics in the order the task computes them.


# --- predictions ------------------------------------------------------------------------------
def prediction_rows(task: tasks.Task, split: str, host: dict) -> Iterator[dict]:
  """Prediction rows of one split.

  Args:
    task: the run's Task.
    split: split name written into each row.
    host: `evaluate(..., with_ids=True)` arrays: `id` (N,) str; `output` (N,) sentiment,
      (N, C) or (N, 4, 2) probabilities; `target` (N,), (N,) or (N, 4).

  Yields:
    One dict per example, as in the module docstring.
  """
  ids, output, target = host['id'], np.asarray(host['output']), np.asarray(host['target'])
  if not len(ids) == len(output) == len(target):
    raise ValueError(
      f'split {split!r}: {len(ids)} ids, {len(output)} outputs and '
      f'{len(target)} targets; expected one of each per example.'
    )
  for i, example_id in enumerate(ids):
    yield {'id': str(example_id), 'split': split, **task.prediction_row(output[i], target[i])}


def write_predictions(path: str, rows: Iterable[dict]) -> int:
  """Writes `rows` as JSON lines to `path` (replaced atomically); returns the count.

  A relative `path` is relative to the current directory; missing parent directories are made.
  """
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp, count = path + '.tmp', 0
  with open(tmp, 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')
      count += 1
  os.replace(tmp, path)
  return count


def read_predictions(path: str) -> list[dict]:
  """The rows of a predictions file, in file order."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
