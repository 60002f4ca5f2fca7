"""End to end: the real training loop per data placement, against the pure step and PyTorch.

  python benchmarks/end_to_end.py --quick   # < 5 min, 2 CPU cores: tiny (device, host, stream),
                                            # MOSEI aligned b32 (device, host)
  python benchmarks/end_to_end.py           # tiny, MOSEI aligned + unaligned x b32, b128, every
                                            # placement (meant for one GPU: about 10 minutes)

Cases: 'tiny' is `configs/synthetic.py:tiny` (96 training examples); 'mosei_<aligned|unaligned>
_b<B>' is `configs/mosei.py:<aligned|unaligned>` at batch B on a MOSEI-shaped `cmu_mosei`
dataset of random features (widths 768/74/35, lengths 50/50/50 or 50/500/500) written as an MMSA
pickle and built by the real builder (`benchmarks/train_step.build_mosei_dataset`) under
`--data_dir`. Every run trains with `fasca_jax.train_lib.train_and_evaluate` itself, in this
process, into a fresh workdir, with `config.data_placement` set; the programs are kept in one
persistent compilation cache that starts empty (`--cache_dir`), so a placement that needs the
programs of an earlier one (host and stream share theirs) loads them.

Columns, per case and placement:
  first step s   from the call of train_and_evaluate to the end of its first train step
                 (opening the data, building the padded cache on first use, compiling)
  samples/s      steady state: the median of the loop's logged windows (metrics.jsonl) after
                 the first one; the loop leaves epoch-end validation and checkpoints out of them
  epoch s        wall time of the last epoch: training, validation and checkpoint
  step samples/s the pure step in the same run: the compiled train step alone, on one batch
                 already on the device, steps back to back (the median of 5 timed windows)
  e2e/step       samples/s / step samples/s
PyTorch twin (`benchmarks/torch_reference.py`, eager) trained the way MMSA trains it: a
`torch.utils.data.DataLoader` (shuffled, batch B) over the padded arrays as in-memory tensors,
`loss.item()` every step, a validation pass per epoch under `no_grad`; the same epochs, batch and
threads; samples/s over the epochs after the first. `auto` is resolved for each case and its
choice printed with the bytes. Float32 matmuls at full precision in both (as
`benchmarks/train_step.py --matmul_precision=float32`).

The last lines are `e2e_over_step_tiny=<ratio>` and `e2e_over_step_mosei_aligned_b32=<ratio>`
(data_placement=device).
"""

import argparse
import json
import logging as logging_std
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # see benchmarks/train_step.py.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import logging  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import train_step  # pylint: disable=g-import-not-at-top
from configs import synthetic  # pylint: disable=g-import-not-at-top
from fasca_jax import indexing  # pylint: disable=g-import-not-at-top
from fasca_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from fasca_jax import placement  # pylint: disable=g-import-not-at-top
from fasca_jax import steps  # pylint: disable=g-import-not-at-top
from fasca_jax import train_lib  # pylint: disable=g-import-not-at-top

PLACEMENTS = ('device', 'host', 'stream')
# (name, epochs, log_every_steps, placements); MOSEI-shaped examples per split below.
QUICK = (
  ('tiny', 6, 6, PLACEMENTS),
  ('mosei_aligned_b32', 3, 3, ('device', 'host')),
)
FULL = (
  ('tiny', 8, 6, PLACEMENTS),
  *(
    (f'mosei_{case}_b{b}', 3, 4, PLACEMENTS) for case in ('aligned', 'unaligned') for b in (32, 128)
  ),
)
MOSEI_EXAMPLES = {'quick': {'train': 192, 'valid': 32, 'test': 32}}
MOSEI_EXAMPLES['full'] = {'train': 2048, 'valid': 256, 'test': 256}
PURE_STEPS = {'quick': 10, 'full': 50}  # steps per timed window of the pure step;
PURE_WINDOWS = 5  # its rate is the median of its windows' rates, as the loop's is of its windows.


def case_config(name: str, args):
  """The run config of case `name` (dataset built on first use)."""
  if name == 'tiny':
    config = synthetic.get_config('tiny')
    config.data_dir = os.path.join(args.data_dir, 'tiny_tfds')
    return config
  _, case, batch = name.split('_')
  size = 'quick' if args.quick else 'full'
  config = train_step.build_mosei_dataset(
    case, os.path.join(args.data_dir, f'e2e_{size}'), MOSEI_EXAMPLES[size]
  )
  config.batch_size = int(batch[1:])
  config.eval_batch_size = config.batch_size
  return config


class LogRecords(logging_std.Handler):
  """Keeps (time, message) of the loop's log lines."""

  def __init__(self):
    super().__init__(logging_std.INFO)
    self.rows = []

  def emit(self, record):
    self.rows.append((record.created, record.getMessage()))


def quiet_logs() -> LogRecords:
  """absl's INFO lines kept (returned) instead of printed; warnings still go to stderr."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().setLevel(logging_std.WARNING)  # the table is the output.
  records = LogRecords()
  absl_logger = logging_std.getLogger('absl')
  absl_logger.addHandler(records)
  absl_logger.propagate = False  # libraries' INFO lines stay out of the output.
  warnings = logging_std.StreamHandler(sys.stderr)
  warnings.setLevel(logging_std.WARNING)
  absl_logger.addHandler(warnings)
  return records


def run_loop(config, workdir: str, records: LogRecords) -> dict:
  """train_and_evaluate once -> {'first_step_s', 'samples_per_s', 'epoch_s'}."""
  records.rows.clear()
  t = time.time()
  train_lib.train_and_evaluate(config, workdir)
  first = next(r for r, m in records.rows if m.startswith('time to first step'))
  epochs = [r for r, m in records.rows if m.startswith('epoch ') and ' validation' in m]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    windows = [r for r in map(json.loads, f) if r['kind'] == 'train']
  # The first window holds the warm-up call (untimed when it is the window's only call).
  rates = [r['samples_per_s'] for r in windows[1:] if 'samples_per_s' in r]
  return {
    'first_step_s': first - t,
    'samples_per_s': statistics.median(rates),
    'epoch_s': epochs[-1] - epochs[-2],
  }


def pure_step_rate(config, dataset, num_steps: int) -> float:
  """Samples/s of the compiled one-step program on one device batch, back to back: the median
  of `PURE_WINDOWS` windows of `num_steps` steps."""
  per_epoch = dataset.steps_per_epoch(config.batch_size)
  jitted = steps.JittedSteps(
    config, steps.make_optimizer(config, per_epoch * config.num_epochs, per_epoch)
  )
  state = jitted.init(config.seed)
  arrays = placement.padded_split(dataset, 'train')
  order = indexing.HostOrder(
    config.seed, num_examples=dataset.num_examples('train'), global_batch_size=config.batch_size
  )
  batch = indexing.take(arrays, order.indices(0), xp=np)
  sharding = placement.chunk_sharding(jitted.mesh)
  data = {k: jax.device_put(v[None], sharding) for k, v in batch.items()}
  program = jitted.program('train_chunk', state, data)
  for _ in range(2):
    state, _ = program(state, data)
  jax.block_until_ready(state)
  rates = []
  for _ in range(PURE_WINDOWS):
    t = time.perf_counter()
    for _ in range(num_steps):
      state, metrics = program(state, data)
    jax.block_until_ready((state, metrics))
    rates.append(num_steps * config.batch_size / (time.perf_counter() - t))
  return statistics.median(rates)


def torch_mmsa_rate(config, dataset, threads: int) -> dict:
  """The PyTorch twin trained MMSA-style -> {'samples_per_s', 'epoch_s'} (None without torch)."""
  run = torch_train(config, dataset, threads)
  if run is None:
    return None
  per_epoch = dataset.steps_per_epoch(config.batch_size)
  return {
    'samples_per_s': per_epoch * config.batch_size / statistics.median(run['train_s'][1:]),
    'epoch_s': run['epoch_s'][-1],
  }


def torch_train(config, dataset, threads: int, seed: int | None = None, test: bool = False):
  """One run of the PyTorch twin trained the way MMSA trains it: a shuffled `DataLoader` over
  the padded arrays, `loss.item()` every step, a validation pass per epoch (and with `test` a
  test pass at the end); `seed` seeds torch first. -> {'train_s': per epoch, 'epoch_s': per
  epoch (training + validation), 'wall_s'}, or None without torch."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from torch.utils import data as torch_data  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top

  t_start = time.perf_counter()
  torch.set_num_threads(threads)
  if seed is not None:
    torch.manual_seed(seed)
  train_step.set_matmul_precision('float32', torch)
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  sync = torch.cuda.synchronize if device.type == 'cuda' else lambda: None
  keys = [*config.modalities, *(f'{m}_mask' for m in config.modalities), config.target_key]

  def tensors(split):
    batch = indexing.take(
      placement.padded_split(dataset, split),
      np.arange(dataset.num_examples(split), dtype=np.int32),
      xp=np,
    )
    return torch_data.TensorDataset(*(torch.from_numpy(np.asarray(batch[k])) for k in keys))

  def to_batch(rows):
    batch = {k: v.to(device) for k, v in zip(keys, rows)}
    batch['valid'] = torch.ones(len(rows[0]), dtype=torch.bool, device=device)
    return batch

  def score(loader):
    model.eval()
    with torch.no_grad():
      for rows in loader:
        torch_reference.loss_fn(config, model, to_batch(rows)).item()
    sync()

  b = config.batch_size
  train = torch_data.DataLoader(tensors('train'), batch_size=b, shuffle=True, drop_last=True)
  valid = torch_data.DataLoader(tensors('validation'), batch_size=config.eval_batch_size)
  model = torch_reference.build(config).to(device)
  per_epoch = len(train)
  opt, sched = torch_reference.make_optimizer(
    config, model, per_epoch * config.num_epochs, per_epoch
  )
  train_s, epoch_s = [], []
  for _ in range(config.num_epochs):
    t = time.perf_counter()
    model.train()
    for rows in train:
      torch_reference.train_step(config, model, opt, sched, to_batch(rows)).item()
    sync()
    train_s.append(time.perf_counter() - t)
    score(valid)
    epoch_s.append(time.perf_counter() - t)
  if test:
    score(torch_data.DataLoader(tensors('test'), batch_size=config.eval_batch_size))
  return {'train_s': train_s, 'epoch_s': epoch_s, 'wall_s': time.perf_counter() - t_start}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help=f'cases {[c[0] for c in QUICK]}.')
  parser.add_argument('--cases', default=None, help='comma-separated subset of the case names.')
  parser.add_argument('--no_torch', action='store_true', help='leave the PyTorch twin out.')
  parser.add_argument(
    '--data_dir',
    default=os.path.join(REPO, 'data', 'benchmarks'),
    help='where the datasets are built and reused.',
  )
  parser.add_argument(
    '--cache_dir', default=None, help='persistent compilation cache (default: a fresh temp dir).'
  )
  args = parser.parse_args(argv)
  plan = QUICK if args.quick else FULL
  if args.cases:
    known = {c[0]: c for c in (*FULL, *QUICK)}
    unknown = set(args.cases.split(',')) - set(known)
    if unknown:
      parser.error(f'unknown --cases {sorted(unknown)}: expected some of {sorted(known)}')
    plan = tuple(known[c] for c in args.cases.split(','))
  args.plan = plan
  return args


def main(argv=None):
  args = parse_args(argv)
  t_start = time.perf_counter()
  log = lambda msg: print(f'[{time.perf_counter() - t_start:5.0f}s] {msg}', flush=True)
  cache_dir = args.cache_dir or tempfile.mkdtemp(prefix='fasca_e2e_xla_')
  records = quiet_logs()
  train_step.set_matmul_precision('float32')
  device = jax.devices()[0]
  threads = train_step.xla_threads() if jax.default_backend() == 'cpu' else 1
  log(
    f'JAX {jax.__version__} on {device.device_kind} ({device.platform}), {jax.device_count()} '
    f'device(s); load average {os.getloadavg()[0]:.1f}; compilation cache {cache_dir}'
  )
  rows, ratios, workroot = [], {}, tempfile.mkdtemp(prefix='fasca_e2e_')
  try:
    for name, epochs, log_every, placements in args.plan:
      config = case_config(name, args)
      config.num_epochs, config.log_every_steps = epochs, log_every
      config.compilation_cache_dir = cache_dir
      dataset = input_pipeline.open_dataset(config)
      config.data_placement = 'auto'
      log(f'{name}: auto chose {placement.choose(config, dataset)!r} ({_auto_line(records)})')
      results = {}
      for mode in placements:
        config.data_placement = mode
        results[mode] = run_loop(config, os.path.join(workroot, f'{name}_{mode}'), records)
        log(f'{name} {mode}: ' + ', '.join(f'{k} {v:.2f}' for k, v in results[mode].items()))
      step_rate = pure_step_rate(config, dataset, PURE_STEPS['quick' if args.quick else 'full'])
      log(f'{name}: pure step {step_rate:.1f} samples/s')
      torch = None if args.no_torch else torch_mmsa_rate(config, dataset, threads)
      for mode, r in results.items():
        rows.append((name, mode, r, step_rate))
      if torch:
        log(f'{name} torch (MMSA-style DataLoader): {torch}')
        rows.append((name, 'torch', torch, step_rate))
      if 'device' in results:
        ratios[name] = results['device']['samples_per_s'] / step_rate
  finally:
    shutil.rmtree(workroot, ignore_errors=True)
    if not args.cache_dir:
      shutil.rmtree(cache_dir, ignore_errors=True)
  log(f'load average {os.getloadavg()[0]:.1f}')
  print_table(rows)
  for name in ('tiny', 'mosei_aligned_b32'):
    if name in ratios:
      print(f'e2e_over_step_{name}={ratios[name]:.3f}')


def _auto_line(records: LogRecords) -> str:
  line = next((m for _, m in reversed(records.rows) if m.startswith('data_placement')), '')
  return line.split(': ', 1)[-1].split(';')[0]


def print_table(rows):
  header = (
    f'{"case":<20}{"placement":<11}{"first step s":>13}{"samples/s":>11}{"epoch s":>9}'
    f'{"step samples/s":>16}{"e2e/step":>10}{"vs torch":>10}'
  )
  print('\n' + header + '\n' + '-' * len(header))
  torch_rates = {name: r['samples_per_s'] for name, mode, r, _ in rows if mode == 'torch'}
  for name, mode, r, step_rate in rows:
    first = f'{r["first_step_s"]:.1f}' if 'first_step_s' in r else '-'
    vs = r['samples_per_s'] / torch_rates[name] if name in torch_rates else float('nan')
    print(
      f'{name:<20}{mode:<11}{first:>13}{r["samples_per_s"]:>11.1f}{r["epoch_s"]:>9.2f}'
      f'{step_rate:>16.1f}{r["samples_per_s"] / step_rate:>10.3f}'
      + (f'{vs:>9.2f}x' if mode != 'torch' and name in torch_rates else f'{"-":>10}')
    )


if __name__ == '__main__':
  main()
