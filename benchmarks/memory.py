r"""Peak host memory (RSS) of real `train.py` runs and of the input pipeline alone.

  python benchmarks/memory.py [--train_steps=5] [--split_scale=4] [--workdir=/tmp/fasca_memory]

Every measurement is a fresh subprocess; its peak RSS is `ru_maxrss` from `os.wait4`, so it
includes Python, JAX/XLA (compilation too), TFDS and grain. Cases:
- tiny: `train.py --config=configs/synthetic.py:tiny` end to end (2 epochs, validation, test).
- mosei: `train.py --config=configs/mosei.py:unaligned --config.num_epochs=1` (default model,
  batch 32, max_len text/audio/vision 50/500/500, widths 768/74/35) on a MOSEI-shaped
  array_record dataset: an MMSA `unaligned_50.pkl` of random float32 features at full length
  (every example 50/500/500 steps, 363 KiB of features), sentiment uniform in [-3, 3],
  `train_steps` x 32 train examples and 64 validation / 64 test, built with
  `python -m data_prep.build --dataset=cmu_mosei --config=mmsa_unaligned`.
- pipeline: one pass of `input_pipeline.make_batches` (train mode, batch 32) over that train
  split and over one `split_scale` times larger: the peak must not grow with the split.
Random features make the run's metrics meaningless; only shapes and memory matter here.
"""

import argparse
import os
import pickle
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOSEI_DIMS = {'text': 768, 'audio': 74, 'vision': 35}
MOSEI_STEPS = {'text': 50, 'audio': 500, 'vision': 500}
BATCH = 32


def _measure(args, env=None) -> tuple[float, float, str]:
  """Runs `python args...` in the repository -> (peak RSS MiB, seconds, output tail)."""
  start = time.time()
  proc = subprocess.Popen(
    [sys.executable, *args],
    cwd=REPO,
    env=env or os.environ,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  out = proc.stdout.read().decode(errors='replace')
  _, status, usage = os.wait4(proc.pid, 0)
  code = os.waitstatus_to_exitcode(status)
  if code:
    raise RuntimeError(f'{" ".join(args)} exited with {code}:\n{out[-3000:]}')
  return usage.ru_maxrss / 1024, time.time() - start, out


def write_mosei_pickle(directory: str, sizes: dict[str, int], seed: int = 0):
  """An MMSA-format `unaligned_50.pkl` with MOSEI shapes and random content."""
  rng = np.random.default_rng(seed)
  data = {}
  for split, n in sizes.items():
    part = {
      m: rng.standard_normal((n, MOSEI_STEPS[m], d), np.float32) for m, d in MOSEI_DIMS.items()
    }
    part['audio_lengths'] = np.full(n, MOSEI_STEPS['audio'])
    part['vision_lengths'] = np.full(n, MOSEI_STEPS['vision'])
    part['id'] = np.array([f'video{split}{i}$_${i}' for i in range(n)], dtype=object)
    part['raw_text'] = np.array(['random'] * n, dtype=object)
    part['regression_labels'] = rng.uniform(-3, 3, n).astype(np.float32)
    data[split] = part
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'unaligned_50.pkl'), 'wb') as f:
    pickle.dump(data, f, protocol=4)


def build_mosei(root: str, train_examples: int) -> tuple[str, float]:
  """Writes and builds the MOSEI-shaped dataset under `root` -> (data_dir, train split MiB)."""
  manual, data_dir = os.path.join(root, 'manual'), os.path.join(root, 'tfds')
  if not os.path.isdir(os.path.join(data_dir, 'cmu_mosei')):
    write_mosei_pickle(manual, {'train': train_examples, 'valid': 64, 'test': 64})
    _measure(
      [
        '-m',
        'data_prep.build',
        '--dataset=cmu_mosei',
        '--config=mmsa_unaligned',
        f'--manual_dir={manual}',
        f'--data_dir={data_dir}',
      ]
    )
    os.remove(os.path.join(manual, 'unaligned_50.pkl'))
  split_bytes = 0
  for path, _, files in os.walk(data_dir):
    split_bytes += sum(os.path.getsize(os.path.join(path, f)) for f in files if '-train.' in f)
  return data_dir, split_bytes / 2**20


def pipeline_pass(data_dir: str):
  """Child: one pass over the MOSEI-shaped train split, batch 32; prints the batch count."""
  sys.path.insert(0, REPO)
  from configs import mosei  # pylint: disable=g-import-not-at-top
  from fasca_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  config = mosei.get_config('unaligned')
  config.data_dir = data_dir
  dataset = input_pipeline.open_dataset(config)
  batches = input_pipeline.make_batches(
    dataset, 'train', train=True, global_batch_size=BATCH, seed=0, process_index=0, process_count=1
  )
  count = dataset.num_examples('train') // BATCH
  for _ in range(count):
    batch = next(batches)
    assert batch['audio'].shape == (BATCH, 500, 74)
  print(f'batches {count}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--train_steps', type=int, default=5)
  parser.add_argument('--split_scale', type=int, default=4)
  parser.add_argument('--workdir', default='/tmp/fasca_memory')
  parser.add_argument('--pipeline_pass', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.pipeline_pass:
    return pipeline_pass(args.pipeline_pass)
  env = {**os.environ, 'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu')}
  rows = []
  stamp = str(int(time.time()))
  rss, secs, _ = _measure(
    [
      'train.py',
      '--config=configs/synthetic.py:tiny',
      f'--workdir={os.path.join(args.workdir, "runs", "tiny" + stamp)}',
      f'--config.data_dir={os.path.join(args.workdir, "synthetic")}',
    ],
    env,
  )
  rows.append(('train.py synthetic.py:tiny (2 epochs + eval)', '-', rss, secs))

  small, small_mib = build_mosei(
    os.path.join(args.workdir, 'mosei_small'), args.train_steps * BATCH
  )
  rss, secs, _ = _measure(
    [
      'train.py',
      '--config=configs/mosei.py:unaligned',
      f'--workdir={os.path.join(args.workdir, "runs", "mosei" + stamp)}',
      f'--config.data_dir={small}',
      '--config.num_epochs=1',
    ],
    env,
  )
  rows.append(
    (
      f'train.py mosei.py:unaligned ({args.train_steps} steps of 32 + eval)',
      f'{small_mib:.0f}',
      rss,
      secs,
    )
  )

  large, large_mib = build_mosei(
    os.path.join(args.workdir, 'mosei_large'), args.split_scale * args.train_steps * BATCH
  )
  for data_dir, mib in ((small, small_mib), (large, large_mib)):
    rss, secs, out = _measure([os.path.abspath(__file__), f'--pipeline_pass={data_dir}'], env)
    count = out.strip().splitlines()[-1].split()[-1]
    rows.append((f'input pipeline only, one pass ({count} batches of 32)', f'{mib:.0f}', rss, secs))

  print(f'| {"run":54} | train split on disk MiB | peak RSS MiB | wall s |')
  print(f'|{"-" * 56}|-----------------------:|-------------:|-------:|')
  for name, mib, rss, secs in rows:
    print(f'| {name:54} | {mib:>22} | {rss:12.0f} | {secs:6.0f} |')


if __name__ == '__main__':
  main()
