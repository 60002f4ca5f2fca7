"""Modulated deformable convolution (DCNv2), channels-last.

Same semantics as `torchvision.ops.deform_conv2d`, with every tensor moved to
channels-last:

  x:      (B, H, W, Cin)          input, NHWC.
  offset: (B, Ho, Wo, G*K*2)      K = kh*kw taps, row-major (k = i*kw + j);
                                  channel 2*(g*K + k) is dy, 2*(g*K + k) + 1 is dx.
  mask:   (B, Ho, Wo, G*K)        channel g*K + k; None means all ones.
  kernel: (kh, kw, Cin, Cout)     HWIO.
  bias:   (Cout,) or None.

Offset group g owns input channels [g*Cin/G, (g+1)*Cin/G). Tap (i, j) of output
(oy, ox) samples x at

  h = oy*sh - ph + i*dh + dy,    w = ox*sw - pw + j*dw + dx

with torchvision's bilinear rule: the point is zero if h <= -1, h >= H, w <= -1
or w >= W; otherwise it blends the four corners around (h, w), each corner
outside the image counting as zero. Samples are scaled by the mask and
contracted with the kernel:

  out[b, oy, ox, o] = sum_{g, k, c in g} mask * bilinear(x[b, :, :, c], h, w)
                      * kernel[i, j, c, o] + bias[o]

Two implementations give the same numbers (and, through JAX autodiff, the same
gradients):

  'gather': gathers the four corners of every sample point from the flattened
      input. Cost and memory grow with the number of samples B*Ho*Wo*G*K.
  'interp': only for H == 1 (time-only maps). Each sample becomes a row of
      bilinear weights over the W input positions; the dense interpolation
      tensor (B, Ho, Wo, G, K, W) is contracted with the input by einsum, i.e.
      matmuls instead of gathers and scatter-adds. Cost grows with Wo*W, i.e.
      quadratically in the length of the time axis.

method='auto' uses 'interp' when H == 1 and W <= AUTO_INTERP_MAX_WIDTH, else
'gather'.

Sample positions and bilinear weights are computed in at least float32 (so
bfloat16 offsets still resolve sub-pixel positions on long maps); the weights
are then cast to x.dtype for the contractions.
"""

import jax.numpy as jnp

# Widest time axis for which method='auto' picks the dense 'interp' path. On
# CPU at the model's sizes (B=32, 3x3, 64->64) 'interp' is faster for
# forward+backward up to T ~ 100 and 2-3x slower at T=200 (its cost grows as
# W**2); see benchmarks/deform_conv.py.
AUTO_INTERP_MAX_WIDTH = 128

_METHODS = ('auto', 'gather', 'interp')


def _pair(v, name):
  """Returns v as a tuple of two ints."""
  v = tuple(int(e) for e in v) if hasattr(v, '__len__') else (int(v),) * 2
  if len(v) != 2:
    raise ValueError(f'{name} must have two entries, got {v}.')
  return v


def _output_size(size, k, s, p, d):
  """Output length of one spatial axis."""
  return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _check_shapes(x, offset, mask, kernel, bias, stride, padding, dilation, groups):
  """Validates all shapes and returns the output size (Ho, Wo)."""
  if x.ndim != 4:
    raise ValueError(f'x must be (B, H, W, Cin), got shape {x.shape}.')
  if kernel.ndim != 4:
    raise ValueError(f'kernel must be (kh, kw, Cin, Cout), got shape {kernel.shape}.')
  b, h, w, cin = x.shape
  kh, kw, kcin, cout = kernel.shape
  if kcin != cin:
    raise ValueError(
      f'kernel input channels {kcin} (kernel shape '
      f'{kernel.shape}) != x channels {cin} (x shape {x.shape}).'
    )
  if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
    raise ValueError(
      f'Need stride >= 1, dilation >= 1, padding >= 0; got '
      f'stride={stride}, dilation={dilation}, padding={padding}.'
    )
  if groups < 1 or cin % groups:
    raise ValueError(
      f'Input channels {cin} (x shape {x.shape}) must be divisible by offset_groups={groups}.'
    )
  ho = _output_size(h, kh, stride[0], padding[0], dilation[0])
  wo = _output_size(w, kw, stride[1], padding[1], dilation[1])
  if ho < 1 or wo < 1:
    raise ValueError(
      f'Empty output {(ho, wo)} for x shape {x.shape}, kernel '
      f'shape {kernel.shape}, stride={stride}, '
      f'padding={padding}, dilation={dilation}.'
    )
  taps = groups * kh * kw
  if offset.shape != (b, ho, wo, 2 * taps):
    raise ValueError(
      f'offset must have shape (B, Ho, Wo, 2*G*kh*kw) = '
      f'{(b, ho, wo, 2 * taps)} for x shape {x.shape}, kernel shape '
      f'{kernel.shape}, offset_groups={groups}; got {offset.shape}.'
    )
  if mask is not None and mask.shape != (b, ho, wo, taps):
    raise ValueError(
      f'mask must have shape (B, Ho, Wo, G*kh*kw) = {(b, ho, wo, taps)} for '
      f'x shape {x.shape}, kernel shape {kernel.shape}, '
      f'offset_groups={groups}; got {mask.shape}.'
    )
  if bias is not None and bias.shape != (cout,):
    raise ValueError(
      f'bias must have shape (Cout,) = {(cout,)} for kernel shape {kernel.shape}; got {bias.shape}.'
    )
  return ho, wo


def resolve_method(method, height, width):
  """Maps method='auto' to 'interp' or 'gather'; validates explicit choices."""
  if method not in _METHODS:
    raise ValueError(f'method must be one of {_METHODS}, got {method!r}.')
  if method == 'auto':
    return 'interp' if height == 1 and width <= AUTO_INTERP_MAX_WIDTH else 'gather'
  if method == 'interp' and height != 1:
    raise ValueError(f"method='interp' needs H == 1, got H = {height}.")
  return method


def _sample_points(offset, kernel_size, stride, padding, dilation, groups):
  """Absolute sample positions of every output tap.

  Args:
    offset: (B, Ho, Wo, G*K*2), K = kh*kw.
    kernel_size, stride, padding, dilation: (int, int) pairs.
    groups: number of offset groups G.

  Returns:
    h, w: (B, Ho, Wo, G, K) row and column positions in input pixels.
  """
  b, ho, wo, _ = offset.shape
  kh, kw = kernel_size
  # bfloat16 cannot hold positions like 100.3; use at least float32.
  off = offset.astype(jnp.promote_types(offset.dtype, jnp.float32))
  off = off.reshape(b, ho, wo, groups, kh * kw, 2)
  tap_i = jnp.repeat(jnp.arange(kh), kw)  # (K,)
  tap_j = jnp.tile(jnp.arange(kw), kh)  # (K,)
  base_h = jnp.arange(ho)[:, None] * stride[0] - padding[0] + tap_i * dilation[0]  # (Ho, K)
  base_w = jnp.arange(wo)[:, None] * stride[1] - padding[1] + tap_j * dilation[1]  # (Wo, K)
  h = base_h[:, None, None, :] + off[..., 0]  # (B, Ho, Wo, G, K)
  w = base_w[:, None, :] + off[..., 1]  # (B, Ho, Wo, G, K)
  return h, w


def _bilinear_corners(h, w, height, width):
  """Corners and weights of torchvision's `bilinear_interpolate`.

  Args:
    h, w: (...) sample positions.
    height, width: input size.

  Returns:
    rows, cols: (..., 4) int32 corner indices, order (lo, lo), (lo, hi),
      (hi, lo), (hi, hi). May lie outside the image.
    weights: (..., 4) bilinear weights, zero for corners outside the image
      and for points with h <= -1, h >= H, w <= -1 or w >= W.
  """
  inside = (h > -1) & (h < height) & (w > -1) & (w < width)  # (...)
  h_low, w_low = jnp.floor(h), jnp.floor(w)
  lh, lw = h - h_low, w - w_low
  h_low, w_low = h_low.astype(jnp.int32), w_low.astype(jnp.int32)
  rows = jnp.stack([h_low, h_low, h_low + 1, h_low + 1], axis=-1)  # (..., 4)
  cols = jnp.stack([w_low, w_low + 1, w_low, w_low + 1], axis=-1)  # (..., 4)
  weights = jnp.stack(
    [(1 - lh) * (1 - lw), (1 - lh) * lw, lh * (1 - lw), lh * lw], axis=-1
  )  # (..., 4)
  valid = (
    (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width) & inside[..., None]
  )  # (..., 4)
  return rows, cols, jnp.where(valid, weights, 0)


def _sample_gather(x, rows, cols, weights, groups):
  """Bilinear samples by gathering the four corners.

  Args:
    x: (B, H, W, Cin).
    rows, cols: (B, Ho, Wo, G, K, 4) corner indices.
    weights: (B, Ho, Wo, G, K, 4) corner weights (zero where invalid).
    groups: number of offset groups G.

  Returns:
    (B, Ho, Wo, G, K, Cin/G) weighted samples.
  """
  b, height, width, cin = x.shape
  x = x.reshape(b, height * width, groups, cin // groups)  # (B, H*W, G, Cg)
  flat = jnp.clip(rows, 0, height - 1) * width + jnp.clip(
    cols, 0, width - 1
  )  # (B, Ho, Wo, G, K, 4)
  batch_idx = jnp.arange(b)[:, None, None, None, None, None]
  group_idx = jnp.arange(groups)[:, None, None]
  corners = x[batch_idx, flat, group_idx]  # (B, Ho, Wo, G, K, 4, Cg)
  return jnp.einsum('byxgkqc,byxgkq->byxgkc', corners, weights)


def _sample_interp(x, cols, weights, groups):
  """Bilinear samples of a (B, 1, W, Cin) map via a dense interpolation tensor.

  Args:
    x: (B, 1, W, Cin).
    cols: (B, Ho, Wo, G, K, 4) corner columns, as from _bilinear_corners.
    weights: (B, Ho, Wo, G, K, 4) corner weights; corners off row 0 already
      carry zero weight.
    groups: number of offset groups G.

  Returns:
    (B, Ho, Wo, G, K, Cin/G) weighted samples.
  """
  b, _, width, cin = x.shape
  x = x.reshape(b, width, groups, cin // groups)  # (B, W, G, Cg)
  # Corners (lo, lo) + (hi, lo) share column w_low, (lo, hi) + (hi, hi) w_high.
  col_weights = weights[..., :2] + weights[..., 2:]  # (B, Ho, Wo, G, K, 2)
  positions = jnp.arange(width)
  interp = sum(
    jnp.where(cols[..., n, None] == positions, col_weights[..., n, None], 0) for n in range(2)
  )  # (B, Ho, Wo, G, K, W)
  return jnp.einsum('byxgkw,bwgc->byxgkc', interp, x)


def deform_conv2d(
  x,
  offset,
  mask,
  kernel,
  bias=None,
  *,
  stride=(1, 1),
  padding=(0, 0),
  dilation=(1, 1),
  offset_groups=1,
  method='auto',
):
  """Modulated deformable 2D convolution, torchvision semantics, channels-last.

  Args:
    x: (B, H, W, Cin) input.
    offset: (B, Ho, Wo, G*kh*kw*2) offsets, (dy, dx) pairs per group and tap.
    mask: (B, Ho, Wo, G*kh*kw) modulation, or None for all ones.
    kernel: (kh, kw, Cin, Cout).
    bias: (Cout,) or None.
    stride, padding, dilation: int or (int, int); static.
    offset_groups: G, must divide Cin; static.
    method: 'auto', 'gather' or 'interp' (H == 1 only); static. See the module
      docstring.

  Returns:
    (B, Ho, Wo, Cout) output.
  """
  stride = _pair(stride, 'stride')
  padding = _pair(padding, 'padding')
  dilation = _pair(dilation, 'dilation')
  ho, wo = _check_shapes(x, offset, mask, kernel, bias, stride, padding, dilation, offset_groups)
  b, height, width, cin = x.shape
  kh, kw, _, cout = kernel.shape
  method = resolve_method(method, height, width)

  h, w = _sample_points(
    offset, (kh, kw), stride, padding, dilation, offset_groups
  )  # (B, Ho, Wo, G, K)
  rows, cols, weights = _bilinear_corners(h, w, height, width)
  if mask is not None:
    mask = mask.reshape(b, ho, wo, offset_groups, kh * kw)  # (B, Ho, Wo, G, K)
    weights = weights * mask[..., None]  # (B, Ho, Wo, G, K, 4)
  weights = weights.astype(x.dtype)
  if method == 'interp':
    samples = _sample_interp(x, cols, weights, offset_groups)
  else:
    samples = _sample_gather(x, rows, cols, weights, offset_groups)

  kernel = kernel.reshape(kh * kw, offset_groups, cin // offset_groups, cout)
  out = jnp.einsum('byxgkc,kgco->byxo', samples, kernel)  # (B, Ho, Wo, Cout)
  if bias is not None:
    out = out + bias
  return out
