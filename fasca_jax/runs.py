r"""Many named runs of one config, trained into `workdir/<name>/`, finished ones reused, tabulated.

Two generators of named configs:
  seeds       `--config.seeds=1111,1112,...`: `seed_<n>` is the config with config.seed = n
              (train.py); the table is the mean ± std over seeds (workdir/summary.md, .csv).
  ablations   `ablate.py`: one run per variant of `fasca_jax.ablations`; the table lists each
              variant's parameter count and test metrics (workdir/ablation.md, .json).

`find_runs` names the runs a directory made by either holds (or the directory itself, a single
run), for commands that evaluate all of them (`eval.py --perturb`).

Each run is a normal training run (its own checkpoints, config.json, results.json, metrics.jsonl,
TensorBoard events and curves.png). Re-running the same command resumes: a finished run
(`is_finished`) is reused, an interrupted one resumes from its checkpoints. Before anything
trains, every run's saved config is compared with the one asked for (`checkpoints.guard_config`):
a run trained with other values (e.g. another learning rate or d_model) is refused, naming the
run and the fields, so stale results are never reused or tabulated; `replace=True` (the
`--replace` flag) moves such runs aside and trains them anew. The seeds of a sweep share one
`steps.JittedSteps`, so the model compiles once, and train together, stacked in one program,
when `config.seed_parallel` says so (`fasca_jax.seed_group`).
"""

import os
import re
from collections.abc import Mapping, Sequence

from absl import logging
import jax
import ml_collections

from fasca_jax import ablations
from fasca_jax import checkpoints
from fasca_jax import config_io
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import seed_group
from fasca_jax import steps
from fasca_jax import tables
from fasca_jax import train_lib
from fasca_jax.models import fasca_net

FINAL_SPLITS = ('valid', 'test')
RUNS_REMEDY = (
  'rerun with the values it was trained with, choose another --workdir, or pass --replace to '
  'move the runs that differ aside and train them anew'
)


def parse_seeds(text: str) -> tuple[int, ...]:
  """config.seeds '1111,1112,1113' -> (1111, 1112, 1113); '' -> ()."""
  items = [s.strip() for s in str(text).split(',') if s.strip()]
  try:
    seeds = tuple(int(s) for s in items)
  except ValueError:
    raise ValueError(
      f'config.seeds={text!r}: expected comma-separated integers, e.g. '
      f'--config.seeds=1111,1112,1113'
    ) from None
  if len(set(seeds)) != len(seeds) or any(not 0 <= s < 2**31 for s in seeds):
    raise ValueError(f'config.seeds={text!r}: expected distinct integers in [0, 2**31)')
  return seeds


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """A copy of `config` for one run of the sweep: config.seed = seed, no config.seeds."""
  single = config.copy_and_resolve_references()
  single.seed, single.seeds = seed, ''
  return single


def seed_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """'seed_<n>' -> the config of seed n, for each of `config.seeds`."""
  seeds = parse_seeds(config.seeds)
  if not seeds:
    raise ValueError('config.seeds is empty: give e.g. --config.seeds=1111,1112,1113')
  return {f'seed_{s}': seed_config(config, s) for s in seeds}


def ablation_runs(
  config: ml_collections.ConfigDict, names: Sequence[str] | None = None
) -> dict[str, ml_collections.ConfigDict]:
  """variant -> its config, for `names` (default: every variant that applies to `config`).
  Every name is checked before anything trains."""
  return {v: ablations.apply(config, v) for v in (names or ablations.variants(config))}


def is_finished(run_dir: str, total_steps: int) -> bool:
  """True when the run in `run_dir` trained all `total_steps` and wrote its final results
  (valid and test): the one notion of a finished run for every multi-run command. An `eval.py`
  on an interrupted run writes results.json but not the last step, so it is not finished."""
  results = evaluation.read_results(run_dir)
  try:
    saved = [
      int(d) for d in os.listdir(os.path.join(run_dir, checkpoints.CHECKPOINT_DIR)) if d.isdigit()
    ]
  except FileNotFoundError:
    return False
  return all(s in results for s in FINAL_SPLITS) and max(saved, default=-1) >= total_steps


def train_all(
  runs: Mapping[str, ml_collections.ConfigDict],
  workdir: str,
  share_steps: bool = False,
  replace: bool = False,
) -> dict[str, dict] | None:
  """Trains (or reuses, when finished) each run into workdir/<name>/.

  With `share_steps` (runs that differ only in the seed) one `JittedSteps` serves them all, and
  the unfinished ones train as one group when `seed_group.choose` says so.
  Every run's config is checked against its saved config.json first (`checkpoints.guard_config`;
  with `replace`, differing runs are moved aside and retrained).

  Returns:
    name -> its results.json, or None when a run was stopped by SIGTERM or SIGINT (the same
    call resumes it).

  Raises:
    ConfigMismatchError: a run directory holds a run of another config (nothing was touched).
  """
  for name, config in runs.items():  # all refusals before anything trains.
    checkpoints.guard_config(
      config, os.path.join(workdir, name), replace=replace, remedy=RUNS_REMEDY
    )
  jitted, todo = None, []
  for i, (name, config) in enumerate(runs.items(), 1):
    run_dir = os.path.join(workdir, name)
    dataset = input_pipeline.open_dataset(config)
    steps_per_epoch = dataset.steps_per_epoch(config.batch_size)
    if is_finished(run_dir, steps_per_epoch * config.num_epochs):
      logging.info('Run %s (%d/%d): finished in %s, reused.', name, i, len(runs), run_dir)
    else:
      todo.append((i, name))
      if share_steps and jitted is None:
        jitted = steps.JittedSteps(
          config, steps.make_optimizer(config, steps_per_epoch * config.num_epochs, steps_per_epoch)
        )
  dirs = [os.path.join(workdir, name) for _, name in todo]
  if share_steps and todo and seed_group.choose(runs[todo[0][1]], dataset, jitted, dirs):
    logging.info('Runs %s: training together.', ', '.join(name for _, name in todo))
    if not train_lib.train_group([runs[name] for _, name in todo], dirs, jitted=jitted)[0]:
      logging.warning('Stopped in runs %s; the same command resumes.', ', '.join(dirs))
      return None
  else:
    for (i, name), run_dir in zip(todo, dirs):
      logging.info('Run %s (%d/%d): training in %s.', name, i, len(runs), run_dir)
      if not train_lib.train_and_evaluate(runs[name], run_dir, jitted=jitted):
        logging.warning('Stopped in run %s; the same command resumes.', name)
        return None
  return {name: evaluation.read_results(os.path.join(workdir, name)) for name in runs}


def run_seeds(config: ml_collections.ConfigDict, workdir: str, *, replace: bool = False) -> dict:
  """Trains every seed of `config.seeds` and writes the summary (workdir/summary.md, .csv).

  `replace`: see `train_all`. Returns `tables.aggregate` of the seeds' results (split -> metric
  -> mean/std/values), or {} when a run was stopped by SIGTERM or SIGINT.
  """
  runs = seed_runs(config)
  results = train_all(runs, workdir, share_steps=True, replace=replace)
  if results is None:
    return {}
  per_seed = {runs[name].seed: {s: r[s] for s in FINAL_SPLITS} for name, r in results.items()}
  title = f'{config.dataset.name}/{config.dataset.config}, {len(runs)} seeds'
  summary = tables.write_seed_summary(workdir, per_seed, title)
  logging.info(
    'Wrote %s and %s.',
    os.path.join(workdir, tables.SUMMARY_MD),
    os.path.join(workdir, tables.SUMMARY_CSV),
  )
  return summary


def run_ablations(
  config: ml_collections.ConfigDict,
  workdir: str,
  names: Sequence[str] | None = None,
  *,
  replace: bool = False,
) -> dict:
  """Trains each variant and writes the ablation table (workdir/ablation.md, .json).

  `replace`: see `train_all`.

  Returns:
    variant -> {'params': int, 'valid': metrics, 'test': metrics}, or {} when a run was stopped
    by SIGTERM or SIGINT.
  """
  runs = ablation_runs(config, names)
  results = train_all(runs, workdir, replace=replace)
  if results is None:
    return {}
  table = {
    v: {'params': count_params(runs[v]), **{s: r[s] for s in FINAL_SPLITS if s in r}}
    for v, r in results.items()
  }
  tables.write_ablation_table(workdir, table)
  return table


def find_runs(
  config: ml_collections.ConfigDict | None, workdir: str
) -> tuple[str, dict[str, ml_collections.ConfigDict]]:
  """The trained runs of a directory made by train.py or ablate.py, each with its config, so
  that a command can evaluate all of them (`eval.py --perturb`). `config` is the one given to
  the command that trained them; None takes each run's own config.json.

  Returns:
    (layout, name -> config): ('run', {'run': config}) when `workdir` is a run itself (it has
    checkpoints/); ('seeds', {'seed_<n>': seed config}) for a seed sweep, the seeds of
    `config.seeds` if set, else every `seed_<n>/` run found; ('ablation', {variant: its config})
    for the `<variant>/` runs found, in `ablations.VARIANTS` order.

  Raises:
    FileNotFoundError: `workdir` holds none of these, or a seed of `config.seeds` has no run;
      the message says what was expected.
  """
  has_run = lambda d: os.path.isdir(os.path.join(workdir, d, checkpoints.CHECKPOINT_DIR))
  own = lambda d: config_io.load(os.path.join(workdir, d))
  if has_run(''):
    return 'run', {'run': own('') if config is None else config}
  if config is not None and parse_seeds(config.get('seeds', '')):
    named = seed_runs(config)
    missing = [name for name in named if not has_run(name)]
    if missing:
      raise FileNotFoundError(
        f'{workdir!r}: no trained run in {", ".join(missing)} of config.seeds; train them with '
        f'`python train.py --config=... --config.seeds={config.seeds} --workdir={workdir}`.'
      )
    return 'seeds', named
  entries = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []
  seeds = sorted(
    int(m.group(1)) for d in entries if (m := re.fullmatch(r'seed_(\d+)', d)) and has_run(d)
  )
  if seeds:
    return 'seeds', {
      f'seed_{s}': own(f'seed_{s}') if config is None else seed_config(config, s) for s in seeds
    }
  variants = [v for v in ablations.VARIANTS if v in entries and has_run(v)]
  if variants:
    return 'ablation', {v: own(v) for v in variants} if config is None else ablation_runs(
      config, variants
    )
  raise FileNotFoundError(
    f'{workdir!r} holds no trained run: expected {checkpoints.CHECKPOINT_DIR}/ (train.py), '
    f'seed_<n>/ runs (train.py --config.seeds=...) or <variant>/ runs (ablate.py).'
  )


def count_params(config: ml_collections.ConfigDict) -> int:
  """Number of model parameters under `config` (shapes only; nothing is computed)."""
  model = fasca_net.build(config)
  inputs, masks = steps.dummy_batch(config, 1)
  shapes = jax.eval_shape(lambda k: model.init(k, inputs, masks, train=False), jax.random.key(0))
  return sum(x.size for x in jax.tree.leaves(shapes['params']))
