"""Tests for fasca_jax.ops.deform_conv against a slow NumPy loop reference."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fasca_jax.ops import deform_conv
from fasca_jax.ops.deform_conv import deform_conv2d

STATIC = ('stride', 'padding', 'dilation', 'offset_groups', 'method')
# Jitted once per static configuration: far faster than op-by-op dispatch.
conv_jit = jax.jit(deform_conv2d, static_argnames=STATIC)

# Forward tolerance (max abs error) in float32, as required of the op.
FWD_ATOL = 1e-5
# Gradient tolerance: float64 JAX gradients vs float64 central differences
# with step 1e-6 where the op is smooth (observed errors ~2e-9).
GRAD_ATOL = 1e-7


def _out_size(size, k, s, p, d):
  """Output length of one axis: kernel k, stride s, padding p, dilation d."""
  return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _bilinear(img, h, w):
  """torchvision `bilinear_interpolate` on one channel. img: (H, W)."""
  height, width = img.shape
  if h <= -1 or h >= height or w <= -1 or w >= width:
    return 0.0
  h_low, w_low = math.floor(h), math.floor(w)
  h_high, w_high = h_low + 1, w_low + 1
  lh, lw = h - h_low, w - w_low
  hh, hw = 1 - lh, 1 - lw
  v1 = img[h_low, w_low] if h_low >= 0 and w_low >= 0 else 0.0
  v2 = img[h_low, w_high] if h_low >= 0 and w_high <= width - 1 else 0.0
  v3 = img[h_high, w_low] if h_high <= height - 1 and w_low >= 0 else 0.0
  v4 = img[h_high, w_high] if h_high <= height - 1 and w_high <= width - 1 else 0.0
  return hh * hw * v1 + hh * lw * v2 + lh * hw * v3 + lh * lw * v4


def reference(x, offset, mask, kernel, bias, stride, padding, dilation, groups):
  """Loop reference in float64. Same layouts as deform_conv2d."""
  x, offset, kernel = (np.asarray(a, np.float64) for a in (x, offset, kernel))
  b_size, height, width, cin = x.shape
  kh, kw, _, cout = kernel.shape
  (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
  ho = _out_size(height, kh, sh, ph, dh)
  wo = _out_size(width, kw, sw, pw, dw)
  taps = kh * kw
  cg = cin // groups
  if mask is None:
    mask = np.ones((b_size, ho, wo, groups * taps))
  mask = np.asarray(mask, np.float64)
  out = np.zeros((b_size, ho, wo, cout))
  for b in range(b_size):
    for oy in range(ho):
      for ox in range(wo):
        for g in range(groups):
          for k in range(taps):
            i, j = divmod(k, kw)
            dy = offset[b, oy, ox, 2 * (g * taps + k)]
            dx = offset[b, oy, ox, 2 * (g * taps + k) + 1]
            m = mask[b, oy, ox, g * taps + k]
            h = oy * sh - ph + i * dh + dy
            w = ox * sw - pw + j * dw + dx
            for c in range(g * cg, (g + 1) * cg):
              val = m * _bilinear(x[b, :, :, c], h, w)
              for co in range(cout):
                out[b, oy, ox, co] += val * kernel[i, j, c, co]
  if bias is not None:
    out += np.asarray(bias, np.float64)
  return out


def _make_inputs(
  seed,
  x_shape,
  kernel_hw,
  cout,
  stride,
  padding,
  dilation,
  groups,
  with_mask,
  with_bias,
  offsets='mixed',
):
  """Random float32 inputs.

  offsets='mixed': fractional offsets, exact integers and large ones that push
  points outside the input. offsets='smooth': fractional part of every sample
  position in [0.1, 0.9], so the op is differentiable with margin.
  """
  rng = np.random.default_rng(seed)
  b, h, w, cin = x_shape
  kh, kw = kernel_hw
  ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
  wo = _out_size(w, kw, stride[1], padding[1], dilation[1])
  off_shape = (b, ho, wo, 2 * groups * kh * kw)
  if offsets == 'mixed':
    offset = rng.normal(scale=1.5, size=off_shape)
    pick = rng.uniform(size=off_shape)
    offset = np.where(pick < 0.3, np.round(offset), offset)
    offset = np.where(pick > 0.9, np.sign(offset) * (max(h, w) + 1.5), offset)
  else:
    offset = rng.integers(-3, 3, size=off_shape) + rng.uniform(0.1, 0.9, size=off_shape)
  x = rng.normal(size=x_shape)
  kernel = rng.normal(size=(kh, kw, cin, cout))
  mask = rng.uniform(size=(b, ho, wo, groups * kh * kw)) if with_mask else None
  bias = rng.normal(size=(cout,)) if with_bias else None
  f32 = lambda a: None if a is None else a.astype(np.float32)
  return f32(x), f32(offset), f32(mask), f32(kernel), f32(bias)


# (x_shape, kernel_hw, cout, stride, padding, dilation, groups, mask, bias)
CASES = [
  ((2, 5, 6, 4), (3, 3), 3, (1, 1), (1, 1), (1, 1), 1, True, True),
  ((2, 6, 5, 4), (3, 3), 3, (2, 1), (1, 2), (1, 2), 2, False, False),
  ((1, 7, 7, 4), (3, 2), 2, (1, 2), (2, 2), (2, 2), 2, True, False),
  ((1, 4, 6, 2), (2, 3), 3, (2, 2), (0, 1), (1, 1), 1, False, True),
  # Time-only maps, like the model: x (B, 1, T, C), 3x3, 'same' along T.
  ((2, 1, 9, 4), (3, 3), 3, (1, 1), (1, 1), (1, 1), 2, True, True),
  ((2, 1, 9, 4), (3, 3), 3, (1, 1), (1, 2), (1, 2), 1, True, False),
  ((1, 1, 8, 4), (3, 3), 2, (1, 2), (1, 1), (1, 1), 2, False, True),
  ((2, 1, 7, 2), (1, 3), 2, (1, 1), (0, 1), (1, 1), 1, False, False),
]


def _case_id(case):
  x_shape, khw, _, s, p, d, g, m, b = case
  return (
    f'x{"x".join(map(str, x_shape))}-k{khw[0]}{khw[1]}-s{s[0]}{s[1]}'
    f'-p{p[0]}{p[1]}-d{d[0]}{d[1]}-g{g}-m{int(m)}-b{int(b)}'
  )


def _methods(x_shape):
  return ('gather', 'interp') if x_shape[1] == 1 else ('gather',)


@pytest.mark.parametrize('case', CASES, ids=_case_id)
def test_matches_loop_reference(case):
  x_shape, khw, cout, stride, padding, dilation, groups, m, b = case
  args = _make_inputs(0, x_shape, khw, cout, stride, padding, dilation, groups, m, b)
  want = reference(*args, stride, padding, dilation, groups)
  for method in _methods(x_shape):
    got = conv_jit(
      *args, stride=stride, padding=padding, dilation=dilation, offset_groups=groups, method=method
    )
    assert got.shape == want.shape
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=FWD_ATOL, err_msg=method)


def test_offsets_outside_input_give_bias_only():
  x, offset, mask, kernel, bias = _make_inputs(
    1, (2, 4, 5, 4), (3, 3), 3, (1, 1), (1, 1), (1, 1), 2, True, True
  )
  for shift in (-5.0, 10.0):
    got = conv_jit(
      x, np.full_like(offset, shift), mask, kernel, bias, padding=(1, 1), offset_groups=2
    )
    np.testing.assert_array_equal(got, np.broadcast_to(bias, got.shape))


@pytest.mark.parametrize(
  'x_shape,stride,padding,dilation',
  [
    ((2, 6, 7, 4), (1, 1), (1, 1), (1, 1)),
    ((2, 7, 6, 4), (2, 1), (1, 2), (1, 2)),
    ((1, 8, 8, 4), (2, 2), (2, 2), (2, 2)),
    ((2, 1, 12, 4), (1, 1), (1, 2), (1, 2)),
    ((2, 1, 12, 4), (1, 3), (1, 0), (1, 1)),
  ],
)
def test_zero_offsets_equal_regular_conv(x_shape, stride, padding, dilation):
  x, offset, _, kernel, bias = _make_inputs(
    2, x_shape, (3, 3), 5, stride, padding, dilation, 2, False, True
  )
  want = (
    jax.lax.conv_general_dilated(
      x,
      kernel,
      window_strides=stride,
      padding=[(padding[0], padding[0]), (padding[1], padding[1])],
      rhs_dilation=dilation,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    + bias
  )
  ones = np.ones(offset.shape[:-1] + (offset.shape[-1] // 2,), np.float32)
  for method in _methods(x_shape):
    got = conv_jit(
      x,
      np.zeros_like(offset),
      ones,
      kernel,
      bias,
      stride=stride,
      padding=padding,
      dilation=dilation,
      offset_groups=2,
      method=method,
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=FWD_ATOL, err_msg=method)


def _central_differences(fn, args, eps=1e-6):
  """d fn / d args[n] for each array argument, by central differences."""
  grads = []
  for n, arg in enumerate(args):
    grad = np.zeros_like(arg)
    for idx in np.ndindex(arg.shape):
      plus = [a.copy() for a in args]
      minus = [a.copy() for a in args]
      plus[n][idx] += eps
      minus[n][idx] -= eps
      grad[idx] = (fn(*plus) - fn(*minus)) / (2 * eps)
    grads.append(grad)
  return grads


# (x_shape, kernel_hw, stride, padding, dilation, groups, methods)
GRAD_CASES = [
  ((1, 4, 5, 4), (3, 3), (2, 1), (1, 2), (1, 2), 2, ('gather',)),
  ((1, 1, 6, 4), (3, 3), (1, 1), (1, 1), (1, 1), 2, ('gather', 'interp')),
]


@pytest.mark.parametrize('case', GRAD_CASES, ids=['2d', 'time_only'])
def test_gradients_match_finite_differences(case):
  x_shape, khw, stride, padding, dilation, groups, methods = case
  cout = 2
  args = [
    a.astype(np.float64)
    for a in _make_inputs(
      3, x_shape, khw, cout, stride, padding, dilation, groups, True, True, offsets='smooth'
    )
  ]
  out_shape = args[1].shape[:-1] + (cout,)
  cotangent = np.random.default_rng(4).normal(size=out_shape)
  conv = dict(stride=stride, padding=padding, dilation=dilation)

  def ref_loss(*a):
    return np.sum(reference(*a, **conv, groups=groups) * cotangent)

  want = _central_differences(ref_loss, args)
  with jax.enable_x64(True):
    for method in methods:

      def loss(*a, method=method):
        out = deform_conv2d(*a, **conv, offset_groups=groups, method=method)
        return jnp.sum(out * cotangent)

      got = jax.jit(jax.grad(loss, argnums=range(5)))(*map(jnp.asarray, args))
      for name, g, w in zip(('x', 'offset', 'mask', 'kernel', 'bias'), got, want):
        assert g.dtype == jnp.float64
        np.testing.assert_allclose(g, w, rtol=0, atol=GRAD_ATOL, err_msg=f'{method} d/d{name}')
        assert np.abs(w).max() > 1e-3, name  # The check is not vacuous.


@pytest.mark.parametrize('padding,dilation,groups', [((1, 1), (1, 1), 1), ((1, 2), (1, 2), 2)])
def test_interp_and_gather_agree(padding, dilation, groups):
  """Model-like time-only map; values and all gradients agree."""
  args = _make_inputs(5, (4, 1, 50, 16), (3, 3), 8, (1, 1), padding, dilation, groups, True, True)
  cotangent = np.random.default_rng(6).normal(size=args[1].shape[:-1] + (8,)).astype(np.float32)
  conv = dict(padding=padding, dilation=dilation, offset_groups=groups)

  def loss(method, *a):
    out = deform_conv2d(*a, **conv, method=method)
    return jnp.sum(out * cotangent), out

  results = {}
  for method in ('gather', 'interp'):
    fn = jax.value_and_grad(functools.partial(loss, method), argnums=range(5), has_aux=True)
    results[method] = jax.jit(fn)(*args)
  (_, out_interp), grads_interp = results['interp']
  (_, out_gather), grads_gather = results['gather']
  np.testing.assert_allclose(out_interp, out_gather, rtol=0, atol=FWD_ATOL)
  for g_interp, g_gather in zip(grads_interp, grads_gather):
    # Gradients are sums over up to B*Ho*Wo*Cout terms: relative to their size.
    scale = max(1.0, float(np.abs(g_gather).max()))
    np.testing.assert_allclose(g_interp, g_gather, rtol=0, atol=FWD_ATOL * scale)


def test_jit_matches_eager():
  conv = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
  args = _make_inputs(7, (2, 6, 5, 4), (3, 3), 3, **conv, groups=2, with_mask=True, with_bias=True)
  eager = deform_conv2d(*args, **conv, offset_groups=2)
  jitted = conv_jit(*args, **conv, offset_groups=2)
  np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-6)
  np.testing.assert_allclose(jitted, reference(*args, **conv, groups=2), rtol=0, atol=FWD_ATOL)


def test_bfloat16_keeps_subpixel_positions():
  """bfloat16 offsets on a long map: positions must not be rounded to bf16."""
  args = _make_inputs(8, (1, 1, 200, 4), (3, 3), 4, (1, 1), (1, 1), (1, 1), 1, True, True)
  bf16 = [jnp.asarray(a, jnp.bfloat16) for a in args]
  want = reference(*[np.asarray(a, np.float64) for a in bf16], (1, 1), (1, 1), (1, 1), 1)
  for method in ('gather', 'interp'):
    got = conv_jit(*bf16, padding=(1, 1), method=method)
    assert got.dtype == jnp.bfloat16
    # bf16 rounding of weights, samples and output (observed 0.5% of |out|);
    # positions rounded to bf16 would give errors ~50% of |out| here.
    np.testing.assert_allclose(
      np.asarray(got, np.float64), want, rtol=0, atol=0.02 * np.abs(want).max()
    )


def test_auto_rule():
  limit = deform_conv.AUTO_INTERP_MAX_WIDTH
  assert deform_conv.resolve_method('auto', 1, limit) == 'interp'
  assert deform_conv.resolve_method('auto', 1, limit + 1) == 'gather'
  assert deform_conv.resolve_method('auto', 2, 8) == 'gather'
  assert deform_conv.resolve_method('gather', 1, 8) == 'gather'


def _valid_args():
  x = np.zeros((2, 5, 6, 4), np.float32)
  offset = np.zeros((2, 5, 6, 2 * 2 * 9), np.float32)
  mask = np.zeros((2, 5, 6, 2 * 9), np.float32)
  kernel = np.zeros((3, 3, 4, 3), np.float32)
  bias = np.zeros((3,), np.float32)
  return dict(x=x, offset=offset, mask=mask, kernel=kernel, bias=bias)


@pytest.mark.parametrize(
  'change,kwargs,match',
  [
    (
      dict(offset=np.zeros((2, 5, 6, 18), np.float32)),
      {},
      r'offset must have shape .*\(2, 5, 6, 36\).*got \(2, 5, 6, 18\)',
    ),
    (dict(offset=np.zeros((2, 4, 6, 36), np.float32)), {}, r'offset must have shape'),
    (
      dict(mask=np.zeros((2, 5, 6, 9), np.float32)),
      {},
      r'mask must have shape .*\(2, 5, 6, 18\).*got \(2, 5, 6, 9\)',
    ),
    (
      dict(x=np.zeros((2, 5, 6, 3), np.float32), kernel=np.zeros((3, 3, 3, 3), np.float32)),
      {},
      r'Input channels 3 \(x shape \(2, 5, 6, 3\)\) must be divisible by '
      r'offset_groups=2',
    ),
    (
      dict(kernel=np.zeros((3, 3, 5, 3), np.float32)),
      {},
      r'kernel input channels 5 .* != x channels 4',
    ),
    (dict(bias=np.zeros((4,), np.float32)), {}, r'bias must have shape'),
    (dict(x=np.zeros((5, 6, 4), np.float32)), {}, r'x must be \(B, H, W, Cin\)'),
    ({}, dict(method='interp'), r"method='interp' needs H == 1, got H = 5"),
    ({}, dict(method='fft'), r'method must be one of'),
    ({}, dict(padding=(0, 0), dilation=(4, 4)), r'Empty output'),
  ],
)
def test_bad_shapes_raise(change, kwargs, match):
  args = _valid_args() | change
  kwargs = dict(padding=(1, 1), offset_groups=2) | kwargs
  with pytest.raises(ValueError, match=match):
    deform_conv2d(**args, **kwargs)
