"""The 5-seed table end to end: every seed at once (one vmapped program) against one seed after
another, and against the PyTorch twin trained seed after seed.

  python benchmarks/seeds.py --quick    # < 5 min on 2 CPU cores: MOSEI-shaped aligned, batch 8,
                                        # 2 epochs of 4 steps, 5 seeds
  python benchmarks/seeds.py            # MOSEI-shaped aligned, batch 32, 2048 training
                                        # examples, 3 epochs of 64 steps, 5 seeds (for a GPU)

Data: `configs/mosei.py:aligned` on a MOSEI-shaped `cmu_mosei` dataset of random features
(widths 768/74/35, lengths 50/50/50; `benchmarks/train_step.build_mosei_dataset`) under
`--data_dir`, built before anything is timed. Rows, each timed from its call to its return
(training, per-epoch validation, checkpoints, the final valid and test evaluation, the summary):

  jax 1 seed              `train_lib.train_and_evaluate` of seed 1111
  jax N seq               `runs.run_seeds` of seeds 1111..., config.seed_parallel=False
  jax N parallel          `runs.run_seeds`, config.seed_parallel=True (`fasca_jax.seed_group`)
  torch 1 seed / N seq    the PyTorch twin (`benchmarks/torch_reference.py`, eager) trained the
                          way MMSA trains it (`end_to_end.torch_train`: a shuffled DataLoader,
                          `loss.item()` every step, a validation pass per epoch, a test pass),
                          the same epochs and batch, seed after seed

Columns: wall s; compile s, the seconds the run's 'Compiled ...' log lines report (compiling,
or loading a program from the persistent compilation cache); run s = wall s - compile s; and
run s over the one-seed row's of the same framework (x 1 seed). One compilation cache, fresh
for the benchmark: the 1-seed row compiles the one-seed programs, which the sequential row then
loads (its compile s is that loading), and the parallel row compiles its seed-axis programs.
Float32 matmuls at full precision in both frameworks, the same threads (as `end_to_end.py`).
"""

import argparse
import copy
import os
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # see benchmarks/train_step.py.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top

from benchmarks import end_to_end  # pylint: disable=g-import-not-at-top
from benchmarks import train_step  # pylint: disable=g-import-not-at-top
from fasca_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from fasca_jax import placement  # pylint: disable=g-import-not-at-top
from fasca_jax import runs  # pylint: disable=g-import-not-at-top
from fasca_jax import train_lib  # pylint: disable=g-import-not-at-top

# size -> (batch, epochs, examples per split)
SIZES = {
  'quick': (8, 2, {'train': 32, 'valid': 16, 'test': 16}),
  'full': (32, 3, {'train': 2048, 'valid': 256, 'test': 256}),
}
FIRST_SEED = 1111
COMPILED = re.compile(r'^Compiled .* in ([0-9.]+) s')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='the < 5 min CPU size.')
  parser.add_argument('--seeds', type=int, default=5, help='seeds in the table (at least 2).')
  parser.add_argument('--no_torch', action='store_true', help='leave the PyTorch twin out.')
  parser.add_argument(
    '--data_dir',
    default=os.path.join(REPO, 'data', 'benchmarks'),
    help='where the dataset is built and reused.',
  )
  args = parser.parse_args(argv)
  if args.seeds < 2:
    parser.error(f'--seeds={args.seeds}: the table needs at least 2 seeds.')
  args.size = 'quick' if args.quick else 'full'
  args.batch_size, args.epochs, args.examples = SIZES[args.size]
  args.seed_list = tuple(range(FIRST_SEED, FIRST_SEED + args.seeds))
  return args


def case_config(args, cache_dir: str):
  """configs/mosei.py:aligned on the MOSEI-shaped dataset of `args.size` (built on first use)."""
  config = train_step.build_mosei_dataset(
    'aligned', os.path.join(args.data_dir, f'seeds_{args.size}'), args.examples
  )
  config.batch_size = config.eval_batch_size = args.batch_size
  config.num_epochs = args.epochs
  config.seed = FIRST_SEED
  config.compilation_cache_dir = cache_dir
  return config


def timed(run, records: end_to_end.LogRecords) -> dict:
  """Calls `run()` -> {'wall_s', 'compile_s', 'run_s'} from the log lines it wrote."""
  records.rows.clear()
  t = time.perf_counter()
  run()
  wall = time.perf_counter() - t
  compile_s = sum(
    float(m.group(1)) for _, line in records.rows if (m := COMPILED.match(line)) is not None
  )
  return {'wall_s': wall, 'compile_s': compile_s, 'run_s': wall - compile_s}


def main(argv=None):
  args = parse_args(argv)
  t_start = time.perf_counter()
  log = lambda msg: print(f'[{time.perf_counter() - t_start:5.0f}s] {msg}', flush=True)
  records = end_to_end.quiet_logs()
  train_step.set_matmul_precision('float32')
  device = jax.devices()[0]
  threads = train_step.xla_threads() if jax.default_backend() == 'cpu' else 1
  cache_dir = tempfile.mkdtemp(prefix='fasca_seeds_xla_')
  workroot = tempfile.mkdtemp(prefix='fasca_seeds_')
  log(
    f'JAX {jax.__version__} on {device.device_kind} ({device.platform}), {jax.device_count()} '
    f'device(s); load average {os.getloadavg()[0]:.1f}'
  )
  rows = []
  try:
    config = case_config(args, cache_dir)
    dataset = input_pipeline.open_dataset(config)
    for split in placement.SPLITS:  # the padded cache, built before anything is timed.
      placement.padded_split(dataset, split)
    seeds = ','.join(map(str, args.seed_list))
    n = len(args.seed_list)
    jax_runs = {
      'jax 1 seed': lambda: train_lib.train_and_evaluate(config, os.path.join(workroot, 'one')),
      f'jax {n} seq': lambda: runs.run_seeds(
        _sweep(config, seeds, False), os.path.join(workroot, 'seq')
      ),
      f'jax {n} parallel': lambda: runs.run_seeds(
        _sweep(config, seeds, True), os.path.join(workroot, 'parallel')
      ),
    }
    for name, run in jax_runs.items():
      rows.append((name, timed(run, records)))
      log(f'{name}: ' + ', '.join(f'{k} {v:.1f}' for k, v in rows[-1][1].items()))
    if not args.no_torch:
      torch_rows = {}
      for seed in args.seed_list:
        r = end_to_end.torch_train(config, dataset, threads, seed=seed, test=True)
        if r is None:
          log('torch: not installed, left out')
          break
        torch_rows[seed] = r['wall_s']
        log(f'torch seed {seed}: {r["wall_s"]:.1f} s')
      if torch_rows:
        first = torch_rows[args.seed_list[0]]
        rows.append(('torch 1 seed', {'wall_s': first, 'compile_s': 0.0, 'run_s': first}))
        total = sum(torch_rows.values())
        rows.append((f'torch {n} seq', {'wall_s': total, 'compile_s': 0.0, 'run_s': total}))
  finally:
    shutil.rmtree(workroot, ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
  log(f'load average {os.getloadavg()[0]:.1f}')
  print_table(rows, args)


def _sweep(config, seeds: str, parallel: bool):
  sweep = copy.deepcopy(config)  # keeps config.seed_parallel's field type (any of VALUES).
  sweep.seeds, sweep.seed_parallel = seeds, parallel
  return sweep


def print_table(rows, args):
  print(
    f'\n{len(args.seed_list)} seeds, MOSEI-shaped aligned, batch {args.batch_size}, '
    f'{args.epochs} epochs of {args.examples["train"] // args.batch_size} steps'
  )
  header = f'{"run":<20}{"wall s":>9}{"compile s":>11}{"run s":>9}{"x 1 seed":>10}'
  print(header + '\n' + '-' * len(header))
  one = {name.split()[0]: r['run_s'] for name, r in rows if name.endswith('1 seed')}
  for name, r in rows:
    ratio = r['run_s'] / one[name.split()[0]]
    print(f'{name:<20}{r["wall_s"]:>9.1f}{r["compile_s"]:>11.1f}{r["run_s"]:>9.1f}{ratio:>10.2f}')


if __name__ == '__main__':
  main()
