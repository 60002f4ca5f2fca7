"""FGFA_TA: fine-grained alignment of a partner stream (audio or vision) to the text stream.

Feature maps are laid out as `(B, 1, T, C)`: a one-row image whose spatial axis is time, so the
2-D (deformable) convolutions act along time.

Padding: every op that mixes time steps (the 1x3 convolutions `TimeConv`, the depthwise
`DepthwiseTimeConv`, the deformable convolution, the channel attention's norms and sums over
time) takes the (B, T) mask and reads its input's padded steps as zero, i.e. as the 'SAME' zero
padding past the real end. Pointwise ops (1x1 convs, LayerNorm, GELU) may leave anything at
padded steps (a LayerNorm bias, a conv bias), but nothing reads it: the value at a real step
does not depend on how many padded steps follow or what they hold. Module outputs are zeroed at
padded steps.
"""

from typing import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from fasca_jax.ops import deform_conv


def _mask_map(x, mask):
  """Zeroes padded time steps of a map.  x: (B, 1, T, C), mask: (B, T) bool."""
  return x * mask[:, None, :, None].astype(x.dtype)


def resample_to(x, x_mask, ref_mask):
  """Linearly resamples each example of `x` along time to the reference's real length.

  Step 0 (the CLS step) maps to step 0; the real steps 1..Lx of `x` are stretched onto the real
  steps 1..Lr of the reference (align-corners); padded reference steps get zeros. When Lx == Lr
  this is exactly the identity.

  Args:
    x: (B, Tx, D) partner features, CLS at step 0.
    x_mask: (B, Tx) bool.
    ref_mask: (B, Tr) bool, the reference's mask (CLS at step 0).

  Returns:
    (B, Tr, D) resampled features.
  """
  tx, tr = x_mask.shape[1], ref_mask.shape[1]
  lx = x_mask.sum(-1) - 1  # (B,) real steps without CLS
  lr = ref_mask.sum(-1) - 1
  u = jnp.arange(tr) - 1  # (Tr,) position among the real reference steps
  scale = jnp.where(lr > 1, (lx - 1) / jnp.maximum(lr - 1, 1), 0.0)  # (B,)
  s = u[None, :] * scale[:, None]  # (B, Tr) fractional source step
  lo = jnp.floor(s)
  frac = s - lo
  lo = lo.astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(lx - 1, 0)[:, None])
  w = (
    jax.nn.one_hot(lo + 1, tx) * (1 - frac)[..., None]
    + jax.nn.one_hot(hi + 1, tx) * frac[..., None]
  )  # (B, Tr, Tx)
  real = (u[None, :] >= 0) & (u[None, :] < lr[:, None]) & (lx[:, None] > 0)
  w = jnp.where(real[..., None], w, 0.0)
  w = w.at[:, 0, 0].set(1.0)
  return jnp.einsum('brx,bxd->brd', w.astype(x.dtype), x)


class TimeConv(nn.Conv):
  """`nn.Conv` (same attributes and parameters) whose input's padded time steps read as zero.

  inputs: (B, 1, T, Cin), mask: (B, T) bool -> (B, 1, T, Cout). With 'SAME' padding a real step
  near the real end then sees zeros past it, whatever padding follows.
  """

  def __call__(self, inputs, mask):
    return super().__call__(_mask_map(inputs, mask))


class DepthwiseTimeConv(nn.Module):
  """Depthwise convolution along time with 'SAME' padding, as `width` shifted multiply-adds.

  Same parameters (kernel (1, width, 1, C), bias (C,), same initialisers) and outputs as
  `nn.Conv(C, (1, width), feature_group_count=C)` on the input with its padded steps zeroed
  (as `TimeConv`). XLA:CPU runs grouped convolutions slowly and computes their kernel gradient
  as a dense (C x C) convolution; written as shifts the op and its gradients are cheap
  elementwise work (see the Performance section of the README).
  """

  width: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    """x: (B, 1, T, C), mask: (B, T) bool -> (B, 1, T, C)."""
    t, c = x.shape[-2:]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (1, self.width, 1, c))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    left = (self.width - 1) // 2
    padded = jnp.pad(
      _mask_map(x.astype(self.dtype), mask), ((0, 0), (0, 0), (left, self.width - 1 - left), (0, 0))
    )  # (B, 1, T+w-1, C)
    return sum(padded[:, :, j : j + t] * kernel[0, j, 0] for j in range(self.width)) + bias


class ChannelAttention(nn.Module):
  """'Transposed' attention across channels with a learned per-head temperature.

  Queries and keys are L2-normalised over the real time steps; the attention map is (C/N, C/N)
  per head, so the cost is linear in T.
  """

  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    """x: (B, 1, T, C), mask: (B, T) bool -> (B, 1, T, C)."""
    b, _, t, c = x.shape
    if c % self.num_heads:
      raise ValueError(f'd_align={c} is not divisible by bfa_heads={self.num_heads}')
    qkv = nn.Conv(3 * c, (1, 1), dtype=self.dtype, name='qkv')(x)
    qkv = DepthwiseTimeConv(width=3, dtype=self.dtype, name='qkv_dw')(qkv, mask)
    qkv = _mask_map(qkv, mask)  # the norms and sums over time below see the real steps only.
    q, k, v = (a.reshape(b, t, self.num_heads, c // self.num_heads) for a in jnp.split(qkv, 3, -1))
    q = q / (jnp.linalg.norm(q, axis=1, keepdims=True) + 1e-6)
    k = k / (jnp.linalg.norm(k, axis=1, keepdims=True) + 1e-6)
    temperature = self.param('temperature', nn.initializers.ones, (self.num_heads,))
    logits = jnp.einsum('btnc,btnd->bncd', q, k) * temperature[None, :, None, None]
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)  # (B, N, C', C')
    out = jnp.einsum('bncd,btnd->btnc', attn, v).reshape(b, 1, t, c)
    return nn.Conv(c, (1, 1), dtype=self.dtype, name='out')(out)


class GatedFFN(nn.Module):
  """Gated depthwise-conv feed-forward: GELU(a) * b after a 3-tap depthwise conv along time."""

  mult: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    """x: (B, 1, T, C), mask: (B, T) bool -> (B, 1, T, C)."""
    c = x.shape[-1]
    h = nn.Conv(2 * self.mult * c, (1, 1), dtype=self.dtype, name='up')(x)
    h = DepthwiseTimeConv(width=3, dtype=self.dtype, name='dw')(h, mask)
    a, g = jnp.split(h, 2, -1)
    return nn.Conv(c, (1, 1), dtype=self.dtype, name='down')(nn.gelu(a) * g)


class BFA(nn.Module):
  """Pre-LN block: channel attention + residual, gated FFN + residual (padding kept at zero)."""

  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    """x: (B, 1, T, C), mask: (B, T) -> (B, 1, T, C)."""
    x = _mask_map(
      x
      + ChannelAttention(num_heads=self.num_heads, dtype=self.dtype, name='attn')(
        nn.LayerNorm(dtype=self.dtype, name='ln_attn')(x), mask
      ),
      mask,
    )
    return _mask_map(
      x
      + GatedFFN(dtype=self.dtype, name='ffn')(
        nn.LayerNorm(dtype=self.dtype, name='ln_ffn')(x), mask
      ),
      mask,
    )


class RBFE(nn.Module):
  """Reference-based feature enrichment: BFA blocks, then dual residual fusion with the
  reference."""

  num_blocks: int
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, ref, feat, mask):
    """ref, feat: (B, 1, T, C), mask: (B, T) -> (B, 1, T, C)."""
    c = ref.shape[-1]
    conv = lambda f, name, a: TimeConv(f, (1, 3), dtype=self.dtype, name=name)(a, mask)
    for i in range(self.num_blocks):
      feat = BFA(num_heads=self.num_heads, dtype=self.dtype, name=f'bfa_{i}')(feat, mask)
    cat = jnp.concatenate([ref, feat], -1)  # (B, 1, T, 2C)
    fused = nn.gelu(conv(c, 'fuse', cat))
    resid = nn.gelu(conv(c, 'resid_out', nn.gelu(conv(2 * c, 'resid_in', fused)) - cat))
    return _mask_map(fused + resid, mask)


class FAR(nn.Module):
  """Feature alignment: predicts per-tap offsets and masks, then a modulated deformable conv.

  Offsets and mask logits are zero-initialised (DCNv2), so at initialisation the op is a plain
  convolution with every tap weighted 0.5.
  """

  kernel_size: Sequence[int] = (3, 3)
  dilation: int = 1
  bottleneck: int = 32
  deform_method: str = 'auto'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, ref, x, mask):
    """Resamples `x` toward `ref`.

    Args:
      ref: (B, 1, T, C) reference (text) map.
      x: (B, 1, T, C) map to align; its padded steps are read as zero.
      mask: (B, T) bool.

    Returns:
      aligned: (B, 1, T, C), and intermediates {'offsets': (B, 1, T, K*2), 'mask': (B, 1, T, K)}.
    """
    kh, kw = self.kernel_size
    k, c = kh * kw, x.shape[-1]
    x = _mask_map(x, mask)  # the deformable conv samples across the real end.
    feat = nn.gelu(
      TimeConv(self.bottleneck, (1, 3), dtype=self.dtype, name='bottleneck')(
        jnp.concatenate([ref, x], -1), mask
      )
    )
    zeros = nn.initializers.zeros
    offsets = TimeConv(2 * k, (1, 3), kernel_init=zeros, dtype=self.dtype, name='offsets')(
      feat, mask
    )
    tap_mask = jax.nn.sigmoid(
      TimeConv(k, (1, 3), kernel_init=zeros, dtype=self.dtype, name='mask')(feat, mask)
    )
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (kh, kw, c, c))
    bias = self.param('bias', zeros, (c,))
    d = self.dilation
    aligned = deform_conv.deform_conv2d(
      x,
      offsets,
      tap_mask,
      kernel.astype(self.dtype),
      bias.astype(self.dtype),
      padding=(d * (kh - 1) // 2, d * (kw - 1) // 2),
      dilation=(d, d),
      method=self.deform_method,
    )
    return _mask_map(aligned, mask), {'offsets': offsets, 'mask': tap_mask}


class FGFA(nn.Module):
  """Aligns a partner stream to the text stream and pools the result at the CLS step."""

  d_align: int
  dilation: int
  kernel_size: Sequence[int] = (3, 3)
  num_bfa: int = 2
  bfa_heads: int = 4
  deform_method: str = 'auto'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text, text_mask, partner, partner_mask):
    """Aligns `partner` to `text`.

    Args:
      text: (B, Tt, Dt) reference stream, CLS at step 0.
      text_mask: (B, Tt) bool.
      partner: (B, Tp, Dp) stream to align, CLS at step 0.
      partner_mask: (B, Tp) bool.

    Returns:
      pooled: (B, d_align) aligned map at the CLS step, and intermediates from FAR.
    """
    b, t = text_mask.shape
    partner = resample_to(partner, partner_mask, text_mask)  # (B, Tt, Dp)
    to_map = lambda a: a.reshape(b, 1, t, self.d_align)
    ref = to_map(nn.Dense(self.d_align, dtype=self.dtype, name='proj_text')(text))
    x = to_map(nn.Dense(self.d_align, dtype=self.dtype, name='proj_partner')(partner))
    ref, x = _mask_map(ref, text_mask), _mask_map(x, text_mask)
    fused = nn.Conv(self.d_align, (1, 1), dtype=self.dtype, name='fuse')(
      jnp.concatenate([ref, x], -1)
    )  # dual-branch fused map (B, 1, T, C)
    aligned, inter = FAR(
      kernel_size=self.kernel_size,
      dilation=self.dilation,
      bottleneck=max(self.d_align // 2, 1),
      deform_method=self.deform_method,
      dtype=self.dtype,
      name='far',
    )(ref, fused, text_mask)
    out = RBFE(num_blocks=self.num_bfa, num_heads=self.bfa_heads, dtype=self.dtype, name='rbfe')(
      ref, aligned, text_mask
    )
    return out[:, 0, 0, :], inter
