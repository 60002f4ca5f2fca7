"""Attention core, 'dense' vs 'chunked' (fasca_jax/ops/attention.py), and PyTorch's fused kernel.

  python benchmarks/attention.py            # the model's map shapes at batch 32
  python benchmarks/attention.py --batch=128 --shapes=501x552

Times forward + backward (value_and_grad of a sum of squares w.r.t. q, k, v) of the masked
attention core at 8 heads of 32 (configs/mosei.py), for each (Tq x Tk) map: the fusion layer's
cross-modal maps are T_m+1 x (sum of the other two T+1), its self-attention maps T_m+1 x T_m+1
('aligned' 51 x 102 and 51 x 51; 'unaligned' 51 x 1002, 501 x 552 and 501 x 501). With torch
installed, `F.scaled_dot_product_attention` (its fused CPU kernel, as benchmarks/torch_reference.py
uses) runs the same maths on the same threads. Median of --repeats after a warm-up; the
frameworks alternate. The last column is which method `attention.resolve_method('auto', ...)`
picks for the shape on this backend.
"""

import argparse
import functools
import os
import statistics
import sys
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from fasca_jax.ops import attention  # pylint: disable=g-import-not-at-top

SHAPES = '51x51,51x102,101x202,51x1002,501x501,501x552'
NUM_HEADS, HEAD_DIM = 8, 32


def inputs(batch, tq, tk, seed=0):
  """q: (B, Tq, N, H), k, v: (B, Tk, N, H) float32, kv_mask: (B, Tk) with lengths in [Tk/5, Tk]."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(batch, tq, NUM_HEADS, HEAD_DIM)).astype(np.float32)
  k, v = (rng.normal(size=(batch, tk, NUM_HEADS, HEAD_DIM)).astype(np.float32) for _ in range(2))
  mask = np.arange(tk)[None] < rng.integers(max(tk // 5, 1), tk + 1, batch)[:, None]
  return q, k, v, mask


def _block(step, *args):
  """Runs `step(*args)` and waits for the result."""
  return jax.block_until_ready(step(*args))


def jax_step(method, mask):
  """Jitted value-and-grad of sum(attention ** 2) w.r.t. q, k, v."""
  loss = lambda q, k, v: (attention.dot_product_attention(q, k, v, mask, method) ** 2).sum()
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def torch_step(torch, q, k, v, mask):
  """The same with torch's scaled_dot_product_attention (heads moved to dim 1)."""
  tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
  tmask = torch.tensor(mask)[:, None, None, :]
  heads = lambda a: a.transpose(1, 2)

  def run():
    for a in (tq, tk, tv):
      a.grad = None
    out = torch.nn.functional.scaled_dot_product_attention(
      heads(tq), heads(tk), heads(tv), attn_mask=tmask
    )
    (out**2).sum().backward()

  return run


def median_ms(runners: dict, repeats: int) -> dict:
  """name -> median milliseconds per call; each runner warmed up once, order rotating."""
  for run in runners.values():
    run()
  names = list(runners)
  times = {n: [] for n in names}
  for r in range(repeats):
    for n in names[r % len(names) :] + names[: r % len(names)]:
      t = time.perf_counter()
      runners[n]()
      times[n].append(time.perf_counter() - t)
  return {n: 1e3 * statistics.median(v) for n, v in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--shapes', default=SHAPES, help='comma-separated TqxTk maps')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--no_torch', action='store_true')
  args = parser.parse_args(argv)
  try:
    if args.no_torch:
      raise ImportError
    import torch  # pylint: disable=g-import-not-at-top

    torch.set_num_threads(len(os.sched_getaffinity(0)))
  except ImportError:
    torch = None
  print(
    f'backend={jax.default_backend()} batch={args.batch} heads={NUM_HEADS}x{HEAD_DIM} '
    f'(forward+backward, ms)'
  )
  print(f'{"Tq x Tk":>10} {"dense":>9} {"chunked":>9} {"d/c":>6} {"torch":>9} {"t/c":>6}  auto')
  for shape in args.shapes.split(','):
    tq, tk = (int(s) for s in shape.split('x'))
    q, k, v, mask = inputs(args.batch, tq, tk)
    runners = {
      m: functools.partial(_block, jax_step(m, mask), q, k, v) for m in ('dense', 'chunked')
    }
    if torch is not None:
      runners['torch'] = torch_step(torch, q, k, v, mask)
    ms = median_ms(runners, args.repeats)
    t_cols = (
      f'{ms["torch"]:9.1f} {ms["torch"] / ms["chunked"]:6.2f}'
      if torch is not None
      else f'{"-":>9} {"-":>6}'
    )
    print(
      f'{shape:>10} {ms["dense"]:9.1f} {ms["chunked"]:9.1f} '
      f'{ms["dense"] / ms["chunked"]:6.2f} {t_cols}  '
      f'{attention.resolve_method("auto", tq, tk)}',
      flush=True,
    )


if __name__ == '__main__':
  main()
