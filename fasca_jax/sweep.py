r"""Seed sweeps: one training run per seed, then the mean ± std table over seeds.

  python train.py --config=configs/mosei.py --config.seeds=1111,1112,1113,1114,1115 --workdir=DIR

trains seed n in DIR/seed_<n>/ (a normal run with config.seed = n: its own checkpoints,
results.json, metrics.jsonl, TensorBoard events and curves.png) one after the other, then writes
DIR/summary.md and DIR/summary.csv (`fasca_jax.summary`). Re-running the command resumes: a
finished seed is skipped, an interrupted one resumes from its checkpoint. All seeds share one
Trainer, so the model is compiled once.
"""

import os

from absl import logging
import jax
import ml_collections

from fasca_jax import input_pipeline
from fasca_jax import summary
from fasca_jax import train_lib

FINAL_SPLITS = ('valid', 'test')


def parse_seeds(text: str) -> tuple[int, ...]:
  """config.seeds '1111,1112,1113' -> (1111, 1112, 1113); '' -> ()."""
  items = [s.strip() for s in str(text).split(',') if s.strip()]
  try:
    seeds = tuple(int(s) for s in items)
  except ValueError:
    raise ValueError(f'config.seeds={text!r}: expected comma-separated integers, e.g. '
                     f'--config.seeds=1111,1112,1113') from None
  if len(set(seeds)) != len(seeds) or any(not 0 <= s < 2**31 for s in seeds):
    raise ValueError(f'config.seeds={text!r}: expected distinct integers in [0, 2**31)')
  return seeds


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f'seed_{seed}')


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """A copy of `config` for one run of the sweep: config.seed = seed, no config.seeds."""
  single = config.copy_and_resolve_references()
  single.seed, single.seeds = seed, ''
  return single


def is_finished(run_dir: str, total_steps: int) -> bool:
  """True when the run in `run_dir` trained all `total_steps` and wrote its final results."""
  results = train_lib.read_results(run_dir)
  try:
    steps = [int(d) for d in os.listdir(os.path.join(run_dir, train_lib.LATEST_DIR))
             if d.isdigit()]
  except FileNotFoundError:
    return False
  return all(s in results for s in FINAL_SPLITS) and max(steps, default=-1) >= total_steps


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or skips, when finished) every seed of `config.seeds`; writes the summary.

  Returns `summary.aggregate` of the seeds' results (split -> metric -> mean/std/values), or {}
  when a run was stopped by SIGTERM (the same call resumes it).
  """
  seeds = parse_seeds(config.seeds)
  if not seeds:
    raise ValueError('config.seeds is empty: give e.g. --config.seeds=1111,1112,1113')
  input_pipeline.ensure_built(config)
  total_steps = input_pipeline.steps_per_epoch(config) * config.num_epochs
  trainer, per_seed = None, {}
  for i, seed in enumerate(seeds, 1):
    single, run_dir = seed_config(config, seed), seed_dir(workdir, seed)
    if is_finished(run_dir, total_steps):
      logging.info('Seed %d (%d/%d): finished in %s, skipped.', seed, i, len(seeds), run_dir)
      results = train_lib.read_results(run_dir)
    else:
      logging.info('Seed %d (%d/%d): training in %s.', seed, i, len(seeds), run_dir)
      trainer = trainer or train_lib.make_trainer(single)
      results = train_lib.train_and_evaluate(single, run_dir, trainer=trainer)
      if not results:
        logging.warning('Sweep stopped in seed %d; the same command resumes it.', seed)
        return {}
    per_seed[seed] = {split: results[split] for split in FINAL_SPLITS}
  title = f'{config.dataset.name}/{config.dataset.config}, {len(seeds)} seeds'
  if jax.process_index():
    return summary.aggregate(per_seed)
  written = summary.write(workdir, per_seed, title)
  logging.info('Wrote %s and %s.', os.path.join(workdir, 'summary.md'),
               os.path.join(workdir, 'summary.csv'))
  return written
