"""Train-step race at CMU-MOSEI shape: JAX (jit) vs the same model in PyTorch, one process.

  python benchmarks/train_step.py --quick   # < 5 min, 2 CPU cores: aligned b32, b128; unaligned b32
  python benchmarks/train_step.py           # aligned and unaligned x batch 32 and 128
  python benchmarks/train_step.py --cases=aligned --batch_sizes=32,64 --torch_compile
  python benchmarks/train_step.py --quick --text_encoder=minilm   # text = MiniLM fine-tuned

One step = forward + backward + global-norm clipping + AdamW, with the model and optimizer of
`configs/mosei.py` (widths 768/74/35; 'aligned' lengths 50/50/50, 'unaligned' 50/500/500) and
dropout on, on a fixed random batch whose real lengths vary in [T/5, T]. With --text_encoder
(e.g. `minilm`), the text stream is that BERT-family encoder fine-tuned on token ids (random ids
of the same lengths) in both frameworks, with its own AdamW groups (fasca_jax/models/
text_encoder.py; the twin's `TextEncoder`). JAX runs
`fasca_jax.steps.train_step` (the function `steps.JittedSteps` jits for `train_lib`), compiled
ahead of time with the state donated; PyTorch runs `benchmarks/torch_reference.py` loaded with
the same parameters (outputs and gradients match the Flax model: tests/test_torch_parity.py),
eagerly and, with --torch_compile, under `torch.compile`.

Fairness: compilation and warm-up steps are excluded; in every round each framework runs
`--steps` steps back to back and the order rotates between rounds; the table reports the median
over rounds. Both frameworks get the same threads: XLA:CPU sizes its intra-op pool to the CPUs
the process may run on (sched_getaffinity), so `--threads N` pins the process to N CPUs before
JAX starts; after JAX's first computation the benchmark counts XLA's pool threads
(`tf_XLAEigen` in /proc/self/task) and gives torch exactly that many (torch.set_num_threads).
OMP_WAIT_POLICY defaults to PASSIVE: torch's spin-waiting OpenMP threads otherwise slow down
5-10x when another process competes for the cores. On a GPU both run on the first device
(JAX's default device; torch 'cuda'), synchronised before each clock read.

Float32 matmul precision: stated and equal for both (`--matmul_precision`, default 'float32':
JAX 'highest', torch 'highest', TF32 off; 'tf32' for both). JAX's default float32 matmul on
recent NVIDIA GPUs is TF32 while torch's is full float32, which would race unequal arithmetic.
Where torchvision is importable, 'torch+tv' is the twin with `torchvision.ops.deform_conv2d`
(its own CUDA/CPU kernel) in place of the twin's index-gather version.

Columns: ms/step and samples/s per framework, ratio = torch time / JAX time; GFLOP/step is XLA's
cost analysis of the JAX step lowered with dense attention (of the compiled step where the
backend gives none for the lowered one: CUDA) (the model's maths, the same for both
frameworks: the chunked attention's recomputation in the backward pass is not counted, and XLA
counts a loop body once, so the chunked step itself cannot be costed); GFLOP/s = GFLOP/step / JAX
time; util = GFLOP/s / peak, peak being the best rate of a large float32 matmul under jax.jit
measured in the same run at the same precision. Then the input pipeline: batches/s that
`fasca_jax.input_pipeline.make_batches` delivers at batch 128 from a MOSEI-shaped dataset (an
MMSA-format pickle of random features written to `--data_dir`, built by the real `cmu_mosei`
builder), against the batches/s the JAX step consumes at batch 128 (goal: >= 5x); skipped
where grain/TFDS are not installed. The last line is `speedup_vs_torch=<ratio at batch 32
aligned>` (eager torch).

Needs only JAX, Flax, Optax, ml_collections (pure Python) and torch (+ grain/TFDS for the
pipeline part).
"""

import argparse
import collections
import copy
import functools
import os
import statistics
import sys
import time

# Must be set before torch loads OpenMP (see the module docstring).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from configs import mosei  # pylint: disable=g-import-not-at-top
from fasca_jax import steps  # pylint: disable=g-import-not-at-top
from fasca_jax import tasks  # pylint: disable=g-import-not-at-top
from fasca_jax.models import fasca_net  # pylint: disable=g-import-not-at-top
from fasca_jax.models import text_encoder  # pylint: disable=g-import-not-at-top

CASES = ('aligned', 'unaligned')
QUICK = (('aligned', 32), ('aligned', 128), ('unaligned', 32))
TOTAL_STEPS, STEPS_PER_EPOCH = 10_000, 500  # schedule shape only; does not change the step cost.
PIPELINE_BATCH = 128
PIPELINE_EXAMPLES = {'train': 160, 'valid': 4, 'test': 4}  # > one batch of 128.


def case_config(case: str, batch_size: int, encoder: str = text_encoder.FEATURES):
  """configs/mosei.py:<case> with the benchmark's batch size and text encoder (its hidden
  size as the text width)."""
  config = mosei.get_config(case)
  config.batch_size = batch_size
  config.model.text_encoder = encoder
  if text_encoder.enabled(config):
    config.dims.text = text_encoder.load_config(encoder).hidden_size
  return config


def random_batch(config, batch_size: int, seed: int = 0) -> dict:
  """NumPy batch in the input pipeline's layout; real lengths drawn in [T/5, T]."""
  rng = np.random.default_rng(seed)
  batch = {
    'regression': rng.uniform(-3, 3, batch_size).astype(np.float32),
    'valid': np.ones(batch_size, bool),
  }
  for m in config.modalities:
    t = config.max_len[m]
    batch[m] = rng.normal(size=(batch_size, t, config.dims[m])).astype(np.float32)
    lengths = rng.integers(max(t // 5, 1), t + 1, size=batch_size)
    batch[f'{m}_mask'] = np.arange(t)[None, :] < lengths[:, None]  # (B, T)
  if text_encoder.enabled(config):  # token ids of the same lengths instead of text features
    del batch['text']
    vocab = text_encoder.load_config(config.model.text_encoder).vocab_size
    ids = rng.integers(min(1000, vocab - 1), vocab, size=batch['text_mask'].shape)
    batch['text_ids'] = np.where(batch['text_mask'], ids, 0).astype(np.int32)
    batch['text_segments'] = np.zeros_like(batch['text_ids'])
  return batch


def xla_threads() -> int:
  """Threads in XLA:CPU's intra-op pool of this process (after its first computation)."""
  try:
    names = [
      open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')
    ]
  except OSError:
    names = []
  return sum('XLAEigen' in n for n in names) or len(os.sched_getaffinity(0))


def peak_matmul_flops(n: int, reps: int) -> float:
  """Best float32 FLOP/s of an n x n matmul under jax.jit (4 chained products per call)."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)) / np.sqrt(n), jnp.float32)
  f = jax.jit(lambda x: x @ x @ x @ x @ x)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 4 * 2 * n**3 / best


def init_params(config):
  """Float32 parameters (their shapes do not depend on lengths or batch size).

  Initialisation runs once and is not timed, so it is compiled at XLA's lowest backend
  optimisation level on CPU, which shortens its compile.
  """
  model = fasca_net.build(config)
  tx, _ = steps.make_optimizer(config, TOTAL_STEPS, STEPS_PER_EPOCH)
  seed = np.int32(config.seed)
  init = jax.jit(functools.partial(steps.init_state, model, tx, config)).lower(seed)
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None
  return jax.device_get(init.compile(compiler_options=options)(seed).params)


def step_fn(config):
  """(optimizer, the un-jitted `steps.train_step` of config's model and optimizer)."""
  model = fasca_net.build(config)
  tx, schedule = steps.make_optimizer(config, TOTAL_STEPS, STEPS_PER_EPOCH)
  return tx, functools.partial(
    steps.train_step, model, tasks.from_config(config), tx, schedule, config
  )


def jax_runner(config, params, np_batch):
  """AOT-compiled train step on the default device -> (step fn, FLOPs/step, compile seconds)."""
  tx, train_step = step_fn(config)
  device = jax.devices()[0]
  state = jax.device_put(
    steps.TrainState(
      step=np.int32(0),
      seed=np.int32(config.seed),
      params=params,
      opt_state=tx.init(params),
      nonfinite_count=np.int32(0),
      first_nonfinite_step=np.int32(-1),
    ),
    device,
  )
  batch = jax.device_put(np_batch, device)
  t = time.perf_counter()
  compiled = jax.jit(train_step, donate_argnums=(0,)).lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready((holder[0], metrics))

  return run, model_flops(config, state, batch), compile_s


def model_flops(config, state, batch) -> float:
  """FLOPs of one train step: XLA's cost analysis of the step lowered with dense attention."""
  dense = copy.deepcopy(config)
  dense.model.attention = 'dense'
  return flops_of(jax.jit(step_fn(dense)[1]).lower(state, batch))


def flops_of(lowered) -> float:
  """'flops' of XLA's cost analysis of `lowered`: of the lowered program where the backend
  gives one (CPU), else of the compiled program (CUDA, where the lowered one is None); NaN when
  neither counts them."""
  for analyse in (lowered.cost_analysis, lambda: lowered.compile().cost_analysis()):
    cost = analyse()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    if cost and 'flops' in cost:
      return float(cost['flops'])
  return float('nan')


def set_matmul_precision(precision: str, torch=None) -> str:
  """The float32 matmul precision of both frameworks: 'float32' (full float32: JAX 'highest',
  torch 'highest', TF32 off, also for cuDNN convolutions) or 'tf32' (JAX 'tensorfloat32', torch
  'high' with TF32 convolutions). JAX's own default on recent NVIDIA GPUs is TF32 and torch's
  is float32, so leaving both at their defaults races unequal arithmetic. Returns a description."""
  tf32 = precision == 'tf32'
  jax.config.update('jax_default_matmul_precision', 'tensorfloat32' if tf32 else 'highest')
  if torch is not None:
    torch.set_float32_matmul_precision('high' if tf32 else 'highest')
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
  return (
    f'float32 matmul precision {precision} for both (JAX '
    f'{"tensorfloat32" if tf32 else "highest"}'
    + (f', torch {torch.get_float32_matmul_precision()}, cuDNN TF32 {tf32})' if torch else ')')
  )


def torch_runner(
  torch, torch_reference, config, params, np_batch, device, compile_model, deform=None
):
  """Eager (or torch.compile'd) step of the PyTorch twin on the same parameters and batch;
  `deform`: its deformable convolution (default the twin's own; torchvision's for 'torch+tv')."""
  model = torch_reference.load_flax_params(torch_reference.build(config, deform=deform), params)
  model = model.to(device).train()
  opt, sched = torch_reference.make_optimizer(config, model, TOTAL_STEPS, STEPS_PER_EPOCH)
  run_model = torch.compile(model) if compile_model else model
  batch = {k: torch.from_numpy(v).to(device) for k, v in np_batch.items()}
  sync = torch.cuda.synchronize if device.type == 'cuda' else lambda: None

  def run():
    torch_reference.train_step(config, run_model, opt, sched, batch)
    sync()

  return run


def time_alternating(runners: dict, rounds: int, steps_per_round: int) -> dict:
  """name -> median over rounds of seconds per step; the starting runner rotates each round."""
  names = list(runners)
  times = {n: [] for n in names}
  for r in range(rounds):
    for n in names[r % len(names) :] + names[: r % len(names)]:
      t = time.perf_counter()
      for _ in range(steps_per_round):
        runners[n]()
      times[n].append((time.perf_counter() - t) / steps_per_round)
  return {n: statistics.median(v) for n, v in times.items()}


def bench_case(case, batch_size, params, torch_env, args, log):
  """Times one (lengths, batch) case -> ({framework: s/step}, FLOPs/step)."""
  config = case_config(case, batch_size, args.text_encoder)
  np_batch = random_batch(config, batch_size)
  runners = {}
  runners['jax'], flops, compile_s = jax_runner(config, params, np_batch)
  log(f'{case} b={batch_size}: JAX compile {compile_s:.1f} s, {flops / 1e9:.1f} GFLOP/step')
  if torch_env:
    torch, torch_reference, device = torch_env
    runners['torch'] = torch_runner(
      torch, torch_reference, config, params, np_batch, device, compile_model=False
    )
    tv_deform = torch_reference.torchvision_deform_conv2d()
    if tv_deform is not None:  # torchvision's deform_conv2d kernel: the strongest torch peer.
      runners['torch+tv'] = torch_runner(
        torch, torch_reference, config, params, np_batch, device, False, deform=tv_deform
      )
    if args.torch_compile:
      try:
        compiled = torch_runner(
          torch, torch_reference, config, params, np_batch, device, compile_model=True
        )
        t = time.perf_counter()
        compiled()
        log(f'{case} b={batch_size}: torch.compile first step {time.perf_counter() - t:.1f} s')
        runners['torch.compile'] = compiled
      except Exception as e:  # pylint: disable=broad-except
        log(
          f'{case} b={batch_size}: torch.compile failed, left out: '
          f'{type(e).__name__}: {str(e)[:300]}'
        )
  for run in runners.values():
    for _ in range(args.warmup):
      run()
  times = time_alternating(runners, args.rounds, args.steps)
  log(f'{case} b={batch_size}: ' + ', '.join(f'{n} {s * 1e3:.0f} ms' for n, s in times.items()))
  return times, flops


def write_mmsa_pickle(path, case: str, rng, examples=None):
  """An MMSA-format pickle of random features at MOSEI widths and lengths (data_prep/mmsa.py);
  `examples`: split -> count (default PIPELINE_EXAMPLES)."""
  import pickle  # pylint: disable=g-import-not-at-top

  config = mosei.get_config(case)
  t = {m: config.max_len[m] for m in config.modalities}
  data = {}
  for split, n in (examples or PIPELINE_EXAMPLES).items():
    part = {
      'id': np.array([f'v{split}{i}$_${i}' for i in range(n)], dtype=object),
      'raw_text': np.array(['words'] * n, dtype=object),
      'regression_labels': rng.uniform(-3, 3, n).astype(np.float32),
    }
    lengths = {m: rng.integers(max(t[m] // 5, 1), t[m] + 1, n) for m in t}
    if case == 'aligned':
      lengths['audio'] = lengths['vision'] = lengths['text']
    else:
      part['audio_lengths'], part['vision_lengths'] = lengths['audio'], lengths['vision']
    part['text_bert'] = np.zeros((n, 3, t['text']), np.float32)
    part['text_bert'][:, 1] = np.arange(t['text'])[None, :] < lengths['text'][:, None]
    for m in t:
      x = rng.normal(size=(n, t[m], config.dims[m])).astype(np.float32)
      x[np.arange(t[m])[None, :] >= lengths[m][:, None]] = 0  # padding, as MMSA stores it.
      part[m] = x
    data[split] = part
  with open(path, 'wb') as f:
    pickle.dump(data, f, protocol=4)


def build_mosei_dataset(case: str, data_dir: str, examples=None):
  """configs/mosei.py:<case> over a MOSEI-shaped cmu_mosei dataset of random features (an MMSA
  pickle written to `data_dir`, built by the real builder; reused when there) -> its config."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from fasca_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  config = mosei.get_config(case)
  config.data_dir = os.path.join(data_dir, 'tfds')
  manual_dir = os.path.join(data_dir, f'manual_{case}')
  os.makedirs(manual_dir, exist_ok=True)
  name = 'aligned_50.pkl' if case == 'aligned' else 'unaligned_50.pkl'
  if not os.path.exists(os.path.join(manual_dir, name)):
    write_mmsa_pickle(os.path.join(manual_dir, name), case, np.random.default_rng(0), examples)
  tfds.disable_progress_bar()
  input_pipeline.get_builder(config).download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir), file_format='array_record'
  )
  return config


def pipeline_rate(case: str, args, log):
  """Batches/s of make_batches at batch 128 on a MOSEI-shaped cmu_mosei dataset, or None."""
  try:
    import tensorflow_datasets  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    from fasca_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    log(f'input pipeline: skipped ({e})')
    return None
  t = time.perf_counter()
  config = build_mosei_dataset(case, args.data_dir)
  log(
    f'input pipeline {case}: {config.dataset.name}/{config.dataset.config} ready in '
    f'{time.perf_counter() - t:.1f} s under {args.data_dir}'
  )
  batches = input_pipeline.make_batches(
    input_pipeline.open_dataset(config),
    'train',
    train=True,
    global_batch_size=PIPELINE_BATCH,
    seed=0,
    process_index=0,
    process_count=1,
  )
  for _ in range(2):
    next(batches)
  n = 6 if args.quick else 30
  t = time.perf_counter()
  for _ in range(n):
    batch = next(batches)
  assert batch['audio'].shape == (PIPELINE_BATCH, config.max_len.audio, config.dims.audio)
  return n / (time.perf_counter() - t)


def print_table(results: dict, peak: float, frameworks: list):
  """results: (case, batch) -> ({framework: s/step}, FLOPs/step)."""
  others = [f for f in frameworks if f != 'jax']
  header = f'{"case":<10}{"batch":>6}{"jax ms":>9}{"jax samp/s":>11}'
  for f in others:
    header += f'{f + " ms":>{len(f) + 5}}{f + " samp/s":>{len(f) + 9}}{"ratio":>7}'
  header += f'{"GFLOP/step":>11}{"GFLOP/s":>9}{"util":>7}'
  print(header + '\n' + '-' * len(header))
  for (case, batch), (times, flops) in results.items():
    jax_s = times['jax']
    row = f'{case:<10}{batch:>6}{jax_s * 1e3:>9.0f}{batch / jax_s:>11.1f}'
    for f in others:
      s = times.get(f)
      row += (
        f'{s * 1e3:>{len(f) + 5}.0f}{batch / s:>{len(f) + 9}.1f}{s / jax_s:>6.2f}x'
        if s
        else f'{"-":>{len(f) + 5}}{"-":>{len(f) + 9}}{"-":>7}'
      )
    row += f'{flops / 1e9:>11.1f}{flops / jax_s / 1e9:>9.1f}{flops / jax_s / peak:>7.1%}'
    print(row)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--quick',
    action='store_true',
    help=f'cases {QUICK}, fewer repeats: < 5 minutes on 2 CPU cores.',
  )
  parser.add_argument(
    '--cases',
    default=None,
    help=f'comma-separated subset of {CASES} (default: all; quick: see above).',
  )
  parser.add_argument(
    '--batch_sizes',
    default=None,
    help='comma-separated batch sizes (default 32,128; quick: see above).',
  )
  parser.add_argument('--no_torch', action='store_true', help='time JAX only.')
  parser.add_argument(
    '--text_encoder',
    default=text_encoder.FEATURES,
    help="config.model.text_encoder: 'features' (default), 'minilm' or a checkpoint directory.",
  )
  parser.add_argument(
    '--torch_compile',
    action='store_true',
    help="also time the torch.compile'd model (compilation excluded).",
  )
  parser.add_argument(
    '--threads',
    type=int,
    default=None,
    help='pin the process to this many CPUs (default: all it may use).',
  )
  parser.add_argument('--rounds', type=int, default=None, help='timed rounds (quick 2, else 5).')
  parser.add_argument('--steps', type=int, default=None, help='steps per round (default 1).')
  parser.add_argument('--warmup', type=int, default=1, help='untimed steps per framework.')
  parser.add_argument(
    '--data_dir',
    default=os.path.join(REPO, 'data', 'benchmarks'),
    help='where the MOSEI-shaped pipeline dataset is written and reused.',
  )
  parser.add_argument('--no_pipeline', action='store_true', help='skip the input pipeline rate.')
  parser.add_argument(
    '--matmul_precision',
    choices=('float32', 'tf32'),
    default='float32',
    help='float32 matmul precision of both frameworks (see set_matmul_precision).',
  )
  args = parser.parse_args(argv)
  if args.cases or args.batch_sizes or not args.quick:
    cases = (args.cases or ','.join(CASES)).split(',')
    unknown = set(cases) - set(CASES)
    if unknown:
      parser.error(f'unknown --cases {sorted(unknown)}: expected a subset of {CASES}')
    batches = [int(b) for b in (args.batch_sizes or '32,128').split(',')]
    args.pairs = [(c, b) for c in cases for b in batches]
  else:
    args.pairs = list(QUICK)
  args.rounds = args.rounds or (2 if args.quick else 5)
  args.steps = args.steps or 1
  return args


def load_torch(log):
  """(torch, torch_reference, device) or None when torch is not installed."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    log('torch not installed: timing JAX only (pip install -r requirements-bench.txt)')
    return None
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top

  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  return torch, torch_reference, device


def main(argv=None):
  args = parse_args(argv)
  if args.threads:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
  t_start = time.perf_counter()
  log = lambda msg: print(f'[{time.perf_counter() - t_start:5.0f}s] {msg}', flush=True)
  on_cpu = jax.default_backend() == 'cpu'
  torch_env = None if args.no_torch else load_torch(log)
  precision = set_matmul_precision(args.matmul_precision, torch_env[0] if torch_env else None)
  peak = peak_matmul_flops(2048 if on_cpu else 8192, reps=5)  # at that precision.
  threads = xla_threads()
  jax_device = jax.devices()[0]
  log(
    f'JAX {jax.__version__} on {jax_device.device_kind} ({jax_device.platform}), '
    f'XLA intra-op threads {threads if on_cpu else "-"}; load average '
    f'{os.getloadavg()[0]:.1f}; peak float32 matmul {peak / 1e9:.0f} GFLOP/s'
  )
  log(precision)
  if torch_env:
    torch, _, device = torch_env
    torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    log(
      f'torch {torch.__version__} on {name} ({device.type}), intra-op threads '
      f'{torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}'
    )
  params = init_params(case_config('aligned', 2, args.text_encoder))
  results = {}
  for case, batch in args.pairs:
    results[(case, batch)] = bench_case(case, batch, params, torch_env, args, log)
  peak = max(peak, peak_matmul_flops(2048 if on_cpu else 8192, reps=3))
  log(f'load average {os.getloadavg()[0]:.1f}')
  frameworks = list(
    collections.OrderedDict.fromkeys(f for times, _ in results.values() for f in times)
  )
  print(
    f'\nTrain step (forward + backward + AdamW), median of {args.rounds} rounds x '
    f'{args.steps} step(s); ratio = torch time / JAX time; peak float32 matmul '
    f'{peak / 1e9:.0f} GFLOP/s.'
  )
  print_table(results, peak, frameworks)
  if not args.no_pipeline:
    print()
    for case, batch in args.pairs:
      if batch != PIPELINE_BATCH:
        continue
      rate = pipeline_rate(case, args, log)
      if rate is not None:
        consume = 1 / results[(case, batch)][0]['jax']
        print(
          f'input pipeline {case} b={PIPELINE_BATCH}: delivers {rate:.2f} batches/s, the JAX '
          f'step consumes {consume:.3f} batches/s: {rate / consume:.0f}x (goal >= 5x)'
        )
  aligned32 = results.get(('aligned', 32), ({}, 0))[0]
  if 'torch' in aligned32:
    print(f'speedup_vs_torch={aligned32["torch"] / aligned32["jax"]:.3f}')


if __name__ == '__main__':
  main()
