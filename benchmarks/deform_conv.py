"""Benchmarks deform_conv2d: 'gather' vs 'interp' (vs NumPy) at the model's shapes.

Usage, from the repo root:

  python benchmarks/deform_conv.py [--quick]

Times are medians over repeats of jitted calls (compile and one warm-up call
excluded, block_until_ready). 'fwd+bwd' is value_and_grad of a scalar loss
w.r.t. x, offset, mask, kernel and bias. 'max|d|' is the max abs difference
of the forward output to 'gather' on the same inputs.
"""

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from fasca_jax.ops.deform_conv import deform_conv2d  # pylint: disable=g-import-not-at-top

# (name, x shape (B, 1, T, C), padding, dilation, methods)
CASES = [
  ('T=50 d=(1,1)', (32, 1, 50, 64), (1, 1), (1, 1), ('gather', 'interp')),
  ('T=50 d=(1,2)', (32, 1, 50, 64), (1, 2), (1, 2), ('gather', 'interp')),
  ('T=500 d=(1,2)', (32, 1, 500, 64), (1, 2), (1, 2), ('gather', 'interp')),
  ('small B=2 T=50 d=(1,2)', (2, 1, 50, 64), (1, 2), (1, 2), ('gather', 'interp', 'numpy')),
]
KERNEL_HW = (3, 3)
COUT = 64
GROUPS = 1


def numpy_deform_conv2d(x, offset, mask, kernel, bias, padding, dilation):
  """Vectorised NumPy forward (stride 1, one offset group), float32.

  x: (B, H, W, C); offset: (B, Ho, Wo, K*2); mask: (B, Ho, Wo, K);
  kernel: (kh, kw, C, O); bias: (O,). Returns (B, Ho, Wo, O).
  """
  b, height, width, cin = x.shape
  kh, kw, _, cout = kernel.shape
  _, ho, wo, _ = mask.shape
  tap_i, tap_j = np.divmod(np.arange(kh * kw), kw)  # (K,)
  h = (
    np.arange(ho)[:, None, None] - padding[0] + tap_i * dilation[0] + offset[..., 0::2]
  )  # (B, Ho, Wo, K)
  w = (
    np.arange(wo)[:, None] - padding[1] + tap_j * dilation[1] + offset[..., 1::2]
  )  # (B, Ho, Wo, K)
  inside = (h > -1) & (h < height) & (w > -1) & (w < width)
  h_low, w_low = np.floor(h), np.floor(w)
  lh, lw = h - h_low, w - w_low
  h_low, w_low = h_low.astype(np.int64), w_low.astype(np.int64)
  flat_x = x.reshape(b, height * width, cin)
  batch = np.arange(b)[:, None, None, None]
  cols = np.zeros((b, ho, wo, kh * kw, cin), x.dtype)  # (B, Ho, Wo, K, C)
  for dr, dc, wt in (
    (0, 0, (1 - lh) * (1 - lw)),
    (0, 1, (1 - lh) * lw),
    (1, 0, lh * (1 - lw)),
    (1, 1, lh * lw),
  ):
    r, c = h_low + dr, w_low + dc
    ok = inside & (r >= 0) & (r < height) & (c >= 0) & (c < width)
    idx = np.clip(r, 0, height - 1) * width + np.clip(c, 0, width - 1)
    cols += (np.where(ok, wt, 0) * mask)[..., None] * flat_x[batch, idx]
  out = np.einsum('byxkc,kco->byxo', cols, kernel.reshape(kh * kw, cin, cout))  # (B, Ho, Wo, O)
  return out + bias


def _inputs(x_shape, padding, dilation, seed=0):
  """Random float32 inputs for a stride-1 conv on x_shape."""
  rng = np.random.default_rng(seed)
  b, h, w, cin = x_shape
  kh, kw = KERNEL_HW
  ho = h + 2 * padding[0] - dilation[0] * (kh - 1)
  wo = w + 2 * padding[1] - dilation[1] * (kw - 1)
  taps = GROUPS * kh * kw
  f32 = lambda a: a.astype(np.float32)
  return (
    f32(rng.normal(size=x_shape)),
    f32(rng.normal(scale=2.0, size=(b, ho, wo, 2 * taps))),
    f32(rng.uniform(size=(b, ho, wo, taps))),
    f32(rng.normal(scale=0.1, size=(kh, kw, cin, COUT))),
    f32(rng.normal(size=(COUT,))),
  )


def _median_ms(fn, repeats):
  """Median wall time of fn() in ms; the first (compiling) call is excluded."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def _time_jax(args, padding, dilation, method, repeats):
  """Returns (forward output, fwd ms, fwd+bwd ms)."""
  conv = dict(padding=padding, dilation=dilation, offset_groups=GROUPS, method=method)
  fwd = jax.jit(lambda *a: deform_conv2d(*a, **conv))
  loss = lambda *a: jnp.sum(jnp.tanh(deform_conv2d(*a, **conv)))
  fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=range(5)))
  args = [jnp.asarray(a) for a in args]
  out = np.asarray(fwd(*args))
  return (out, _median_ms(lambda: fwd(*args), repeats), _median_ms(lambda: fwd_bwd(*args), repeats))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--quick', action='store_true', help='fewer repeats (finishes well under 2 minutes)'
  )
  flags = parser.parse_args()
  repeats = 5 if flags.quick else 20

  print(
    f'jax {jax.__version__} on {jax.devices()[0].platform}, '
    f'kernel {KERNEL_HW}, {COUT} out channels, offset_groups {GROUPS}, '
    f'median of {repeats}'
  )
  header = (
    f'{"case":<24}{"x shape":<18}{"method":<8}{"fwd ms":>10}'
    f'{"fwd+bwd ms":>12}{"fwd /gather":>13}{"f+b /gather":>13}'
    f'{"max|d|":>10}'
  )
  print(header)
  print('-' * len(header))
  for name, x_shape, padding, dilation, methods in CASES:
    args = _inputs(x_shape, padding, dilation)
    base = None
    for method in methods:
      if method == 'numpy':
        out = numpy_deform_conv2d(*args, padding, dilation)
        fwd_ms = _median_ms(
          functools.partial(numpy_deform_conv2d, *args, padding, dilation), repeats
        )
        bwd_ms = float('nan')
      else:
        out, fwd_ms, bwd_ms = _time_jax(args, padding, dilation, method, repeats)
      base = base or (out, fwd_ms, bwd_ms)
      print(
        f'{name:<24}{str(x_shape):<18}{method:<8}{fwd_ms:>10.2f}'
        f'{bwd_ms:>12.2f}{fwd_ms / base[1]:>13.2f}'
        f'{bwd_ms / base[2]:>13.2f}'
        f'{np.abs(out - base[0]).max():>10.1e}'
      )


if __name__ == '__main__':
  main()
