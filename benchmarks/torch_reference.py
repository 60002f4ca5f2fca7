"""FASCA-Net in PyTorch, module for module the same as fasca_jax.models, for parity and speed.

Every torch module carries the name of its Flax counterpart (`fusion_0.cross_text.attn.query`,
`fgfa_audio.far.kernel`, ...), so `load_flax_params` copies a Flax parameter tree in by path.
Layouts differ only where PyTorch's own conventions do:

  Flax                                      torch
  Dense kernel (in, out)                    Linear weight (out, in)
  DenseGeneral kernel (D, N, H)/(N, H, D)   Linear weight (N*H, D)/(D, N*H)
  Conv kernel (1, 1, in, out)               Linear weight (out, in)  (1x1 conv = per-step Linear)
  Conv kernel (1, 3, in/g, out)             Conv1d weight (out, in/g, 3)
  LayerNorm scale, bias (eps 1e-6)          LayerNorm weight, bias (eps 1e-6)
  FAR kernel (kh, kw, C, C) HWIO            FAR kernel (C, C, kh, kw) OIHW (torchvision)

With a text encoder (`config.model.text_encoder`, fasca_jax/models/text_encoder.py) the twin
runs `TextEncoder` below, the same BERT / RoBERTa computation with the Flax module's parameter
names (Embed embedding (V, H) = Embedding weight (V, H)); `make_optimizer` then gives the encoder
its own AdamW groups (rate, weight decay off biases and LayerNorm scales, frozen lower layers
with requires_grad=False) as `fasca_jax.steps.optimizer` does.

Time maps are kept channels-last, (B, T, C) (the Flax `(B, 1, T, C)` without its unit axis);
the modulated deformable convolution follows `torchvision.ops.deform_conv2d` (NCHW) exactly,
written with index gathers because torchvision is not assumed to be installed; `build(config,
deform=torchvision_deform_conv2d())` uses torchvision's own kernel instead where it is importable
(the strongest PyTorch peer). Eager by default.
The model returns the task outputs and FAR's offsets and tap masks like the Flax model, but not
the cross-attention weights: attention runs through `F.scaled_dot_product_attention`, the
fastest form PyTorch offers, which does not expose them.
"""

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

REFERENCE = 'text'
FEATURES = 'features'  # config.model.text_encoder without an encoder in the model.
LN_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon.
IEMOCAP_EMOTIONS = 4


def gelu(x):
  """flax.linen.gelu (tanh approximation)."""
  return F.gelu(x, approximate='tanh')


def masked_fill(x, mask):
  """Zeroes padded steps.  x: (B, T, D), mask: (B, T) bool."""
  return x * mask[..., None].to(x.dtype)


class TimeConv(nn.Conv1d):
  """Conv1d along time on channels-last input, 'SAME' padding, reading padded steps as zero
  (alignment.TimeConv / DepthwiseTimeConv).  x: (B, T, Cin), mask: (B, T) -> (B, T, Cout)."""

  def __init__(self, cin, cout, width=3, groups=1):
    super().__init__(cin, cout, width, padding=width // 2, groups=groups)

  def forward(self, x, mask):
    return super().forward(masked_fill(x, mask).transpose(1, 2)).transpose(1, 2)


# --- fusion --------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
  """Multi-head attention with a boolean key mask (True = real step).  layers.MultiHeadAttention."""

  def __init__(self, d, kv_dim, num_heads, dropout=0.0):
    super().__init__()
    if d % num_heads:
      raise ValueError(f'width {d} is not divisible by num_heads={num_heads}')
    self.num_heads, self.dropout = num_heads, dropout
    self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(kv_dim, d), nn.Linear(kv_dim, d)
    self.out = nn.Linear(d, d)

  def forward(self, q, kv, kv_mask):
    """q: (B, Tq, D), kv: (B, Tk, Dk), kv_mask: (B, Tk) bool -> (B, Tq, D)."""
    b, tq, d = q.shape
    heads = lambda a: a.view(b, a.shape[1], self.num_heads, -1).transpose(1, 2)  # (B, N, T, H)
    ctx = F.scaled_dot_product_attention(
      heads(self.query(q)),
      heads(self.key(kv)),
      heads(self.value(kv)),
      attn_mask=kv_mask[:, None, None, :],
      dropout_p=self.dropout if self.training else 0.0,
    )
    return self.out(ctx.transpose(1, 2).reshape(b, tq, d))


class FeedForward(nn.Module):
  """Dense(mult * D) -> GELU -> dropout -> Dense(D).  x: (B, T, D)."""

  def __init__(self, d, mult, dropout):
    super().__init__()
    self.up, self.down, self.drop = (
      nn.Linear(d, mult * d),
      nn.Linear(mult * d, d),
      nn.Dropout(dropout),
    )

  def forward(self, x):
    return self.down(self.drop(gelu(self.up(x))))


class AttentionBlock(nn.Module):
  """Post-LN block: attention + residual + LN, then FFN + residual + LN.  fusion.AttentionBlock."""

  def __init__(self, d, num_heads, ffn_mult, dropout, attn_dropout):
    super().__init__()
    self.attn = MultiHeadAttention(d, d, num_heads, attn_dropout)
    self.ln_attn = nn.LayerNorm(d, eps=LN_EPS)
    self.ffn = FeedForward(d, ffn_mult, dropout)
    self.ln_ffn = nn.LayerNorm(d, eps=LN_EPS)
    self.drop = nn.Dropout(dropout)

  def forward(self, q, kv, kv_mask):
    """q: (B, Tq, D), kv: (B, Tk, D), kv_mask: (B, Tk) -> (B, Tq, D)."""
    h = self.ln_attn(q + self.drop(self.attn(q, kv, kv_mask)))
    return self.ln_ffn(h + self.drop(self.ffn(h)))


class TriModalFusion(nn.Module):
  """Cross-modal block, self block, Dense back to D_m added to the input.  fusion.TriModalFusion."""

  def __init__(self, dims: Mapping[str, int], d_model, num_heads, ffn_mult, dropout, attn_dropout):
    super().__init__()
    self.names = list(dims)
    block = lambda: AttentionBlock(d_model, num_heads, ffn_mult, dropout, attn_dropout)
    for m, d in dims.items():
      self.add_module(f'proj_{m}', nn.Linear(d, d_model))
      if len(dims) > 1:
        self.add_module(f'cross_{m}', block())
      self.add_module(f'self_{m}', block())
      self.add_module(f'deproj_{m}', nn.Linear(d_model, d))

  def forward(self, xs, masks):
    """xs: m -> (B, T_m, D_m), masks: m -> (B, T_m) bool -> m -> (B, T_m, D_m)."""
    h = {m: getattr(self, f'proj_{m}')(xs[m]) for m in self.names}
    outs = {}
    for m in self.names:
      others = [o for o in self.names if o != m]
      q = h[m]
      if others:
        kv = torch.cat([h[o] for o in others], 1)  # (B, sum T_o, d_model)
        kv_mask = torch.cat([masks[o] for o in others], 1)
        q = getattr(self, f'cross_{m}')(q, kv, kv_mask)
      q = getattr(self, f'self_{m}')(q, q, masks[m])
      outs[m] = masked_fill(xs[m] + getattr(self, f'deproj_{m}')(q), masks[m])
    return outs


# --- deformable convolution ----------------------------------------------------------------------
def _bilinear_corners(h, w, height, width):
  """torchvision's bilinear rule: corner indices (..., 4) and weights (..., 4), 0 when outside."""
  inside = (h > -1) & (h < height) & (w > -1) & (w < width)
  h_low, w_low = torch.floor(h), torch.floor(w)
  lh, lw = h - h_low, w - w_low
  h_low, w_low = h_low.long(), w_low.long()
  rows = torch.stack([h_low, h_low, h_low + 1, h_low + 1], -1)
  cols = torch.stack([w_low, w_low + 1, w_low, w_low + 1], -1)
  weights = torch.stack([(1 - lh) * (1 - lw), (1 - lh) * lw, lh * (1 - lw), lh * lw], -1)
  valid = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width) & inside[..., None]
  return rows, cols, weights * valid


def deform_conv2d(
  input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None
):
  """Modulated deformable convolution with `torchvision.ops.deform_conv2d`'s signature.

  Args:
    input: (B, Cin, H, W).
    offset: (B, 2*G*kh*kw, Ho, Wo), (dy, dx) pairs per offset group and row-major tap.
    weight: (Cout, Cin, kh, kw).
    bias: (Cout,) or None.
    stride, padding, dilation: (int, int).
    mask: (B, G*kh*kw, Ho, Wo) modulation, or None for ones.

  Returns:
    (B, Cout, Ho, Wo).
  """
  b, cin, height, width = input.shape
  cout, _, kh, kw = weight.shape
  k = kh * kw
  _, taps2, ho, wo = offset.shape
  groups = taps2 // (2 * k)
  off = offset.view(b, groups, k, 2, ho, wo)
  dev = input.device
  tap_i = torch.arange(kh, device=dev).repeat_interleave(kw)  # (K,)
  tap_j = torch.arange(kw, device=dev).repeat(kh)
  base_h = tap_i[:, None] * dilation[0] + torch.arange(ho, device=dev) * stride[0] - padding[0]
  base_w = tap_j[:, None] * dilation[1] + torch.arange(wo, device=dev) * stride[1] - padding[1]
  h = base_h[:, :, None] + off[:, :, :, 0]  # (B, G, K, Ho, Wo)
  w = base_w[:, None, :] + off[:, :, :, 1]
  rows, cols, weights = _bilinear_corners(h, w, height, width)  # (B, G, K, Ho, Wo, 4)
  if mask is not None:
    weights = weights * mask.view(b, groups, k, ho, wo)[..., None]
  flat = rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)
  x = input.permute(0, 2, 3, 1).reshape(b, height * width, groups, cin // groups)
  batch_idx = torch.arange(b, device=dev).view(b, 1, 1, 1, 1, 1)
  group_idx = torch.arange(groups, device=dev).view(1, groups, 1, 1, 1, 1)
  corners = x[batch_idx, flat, group_idx]  # (B, G, K, Ho, Wo, 4, Cg)
  samples = torch.einsum('bgkyxqc,bgkyxq->bgkyxc', corners, weights.to(input.dtype))
  kernel = weight.view(cout, groups, cin // groups, k)
  out = torch.einsum('bgkyxc,ogck->boyx', samples, kernel)
  return out if bias is None else out + bias[:, None, None]


# --- alignment -----------------------------------------------------------------------------------
def resample_to(x, x_mask, ref_mask):
  """alignment.resample_to: linear resampling of real steps onto the reference's real length.

  x: (B, Tx, D), x_mask: (B, Tx) bool, ref_mask: (B, Tr) bool -> (B, Tr, D).
  """
  tx, tr = x_mask.shape[1], ref_mask.shape[1]
  lx, lr = x_mask.sum(-1) - 1, ref_mask.sum(-1) - 1  # (B,)
  u = torch.arange(tr, device=x.device) - 1  # (Tr,)
  scale = torch.where(lr > 1, (lx - 1) / (lr - 1).clamp(min=1), 0.0).to(torch.float32)
  s = u[None, :] * scale[:, None]  # (B, Tr)
  lo = torch.floor(s)
  frac = s - lo
  lo = lo.long()
  hi = torch.minimum(lo + 1, (lx - 1).clamp(min=0)[:, None])
  positions = torch.arange(tx, device=x.device)
  w = ((lo + 1)[..., None] == positions) * (1 - frac)[..., None] + (
    (hi + 1)[..., None] == positions
  ) * frac[..., None]  # (B, Tr, Tx)
  real = (u[None, :] >= 0) & (u[None, :] < lr[:, None]) & (lx[:, None] > 0)
  w = torch.where(real[..., None], w, 0.0)
  w[:, 0, 0] = 1.0
  return torch.bmm(w.to(x.dtype), x)


class ChannelAttention(nn.Module):
  """'Transposed' attention across channels with a learned temperature.  x: (B, T, C)."""

  def __init__(self, c, num_heads):
    super().__init__()
    if c % num_heads:
      raise ValueError(f'd_align={c} is not divisible by bfa_heads={num_heads}')
    self.num_heads = num_heads
    self.qkv = nn.Linear(c, 3 * c)
    self.qkv_dw = TimeConv(3 * c, 3 * c, groups=3 * c)
    self.temperature = nn.Parameter(torch.ones(num_heads))
    self.out = nn.Linear(c, c)

  def forward(self, x, mask):
    b, t, c = x.shape
    qkv = masked_fill(self.qkv_dw(self.qkv(x), mask), mask)  # norms and sums: real steps only.
    q, k, v = (a.reshape(b, t, self.num_heads, -1) for a in qkv.chunk(3, -1))  # (B, T, N, C')
    q = q / (torch.linalg.vector_norm(q, dim=1, keepdim=True) + 1e-6)
    k = k / (torch.linalg.vector_norm(k, dim=1, keepdim=True) + 1e-6)
    logits = torch.einsum('btnc,btnd->bncd', q, k) * self.temperature[None, :, None, None]
    out = torch.einsum('bncd,btnd->btnc', logits.softmax(-1), v)
    return self.out(out.reshape(b, t, c))


class GatedFFN(nn.Module):
  """GELU(a) * g after a 3-tap depthwise conv.  x: (B, T, C)."""

  def __init__(self, c, mult=2):
    super().__init__()
    self.up = nn.Linear(c, 2 * mult * c)
    self.dw = TimeConv(2 * mult * c, 2 * mult * c, groups=2 * mult * c)
    self.down = nn.Linear(mult * c, c)

  def forward(self, x, mask):
    a, g = self.dw(self.up(x), mask).chunk(2, -1)
    return self.down(gelu(a) * g)


class BFA(nn.Module):
  """Pre-LN channel attention + residual, gated FFN + residual.  x: (B, T, C), mask: (B, T)."""

  def __init__(self, c, num_heads):
    super().__init__()
    self.ln_attn, self.attn = nn.LayerNorm(c, eps=LN_EPS), ChannelAttention(c, num_heads)
    self.ln_ffn, self.ffn = nn.LayerNorm(c, eps=LN_EPS), GatedFFN(c)

  def forward(self, x, mask):
    x = masked_fill(x + self.attn(self.ln_attn(x), mask), mask)
    return masked_fill(x + self.ffn(self.ln_ffn(x), mask), mask)


class RBFE(nn.Module):
  """BFA blocks, then dual residual fusion with the reference.  ref, feat: (B, T, C)."""

  def __init__(self, c, num_blocks, num_heads):
    super().__init__()
    self.num_blocks = num_blocks
    for i in range(num_blocks):
      self.add_module(f'bfa_{i}', BFA(c, num_heads))
    self.fuse, self.resid_in, self.resid_out = (
      TimeConv(2 * c, c),
      TimeConv(c, 2 * c),
      TimeConv(2 * c, c),
    )

  def forward(self, ref, feat, mask):
    for i in range(self.num_blocks):
      feat = getattr(self, f'bfa_{i}')(feat, mask)
    cat = torch.cat([ref, feat], -1)  # (B, T, 2C)
    fused = gelu(self.fuse(cat, mask))
    resid = gelu(self.resid_out(gelu(self.resid_in(fused, mask)) - cat, mask))
    return masked_fill(fused + resid, mask)


class FAR(nn.Module):
  """Offsets and tap masks from (reference, x), then a modulated deformable conv on x."""

  def __init__(self, c, kernel_size, dilation, bottleneck):
    super().__init__()
    self.kernel_size, self.dilation = tuple(kernel_size), dilation
    k = math.prod(self.kernel_size)
    self.bottleneck = TimeConv(2 * c, bottleneck)
    self.offsets, self.mask = TimeConv(bottleneck, 2 * k), TimeConv(bottleneck, k)
    for conv in (self.offsets, self.mask):  # DCNv2: start as a plain conv, taps weighted 0.5.
      nn.init.zeros_(conv.weight)
      nn.init.zeros_(conv.bias)
    self.deform = deform_conv2d  # or torchvision.ops.deform_conv2d: `build(..., deform=)`.
    self.kernel = nn.Parameter(torch.empty(c, c, *self.kernel_size))  # OIHW
    nn.init.kaiming_uniform_(self.kernel, a=math.sqrt(5))
    self.bias = nn.Parameter(torch.zeros(c))

  def forward(self, ref, x, mask):
    """ref, x: (B, T, C), mask: (B, T) -> (B, T, C), {'offsets': (B, T, 2K), 'mask': (B, T, K)}."""
    kh, kw = self.kernel_size
    d = self.dilation
    x = masked_fill(x, mask)  # the deformable conv samples across the real end.
    feat = gelu(self.bottleneck(torch.cat([ref, x], -1), mask))
    offsets, tap_mask = self.offsets(feat, mask), torch.sigmoid(self.mask(feat, mask))
    nchw = lambda a: a.transpose(1, 2).unsqueeze(2)  # (B, T, C) -> (B, C, 1, T)
    aligned = self.deform(
      nchw(x),
      nchw(offsets),
      self.kernel,
      self.bias,
      padding=(d * (kh - 1) // 2, d * (kw - 1) // 2),
      dilation=(d, d),
      mask=nchw(tap_mask),
    )  # (B, C, 1, T)
    return masked_fill(aligned[:, :, 0].transpose(1, 2), mask), {
      'offsets': offsets,
      'mask': tap_mask,
    }


class FGFA(nn.Module):
  """Aligns a partner stream to text; returns the aligned map at the CLS step, (B, d_align)."""

  def __init__(self, text_dim, partner_dim, d_align, dilation, kernel_size, num_bfa, bfa_heads):
    super().__init__()
    self.proj_text, self.proj_partner = (
      nn.Linear(text_dim, d_align),
      nn.Linear(partner_dim, d_align),
    )
    self.fuse = nn.Linear(2 * d_align, d_align)
    self.far = FAR(d_align, kernel_size, dilation, max(d_align // 2, 1))
    self.rbfe = RBFE(d_align, num_bfa, bfa_heads)

  def forward(self, text, text_mask, partner, partner_mask):
    """text: (B, Tt, Dt), partner: (B, Tp, Dp), masks (B, T) bool -> (B, d_align), FAR's dict."""
    partner = resample_to(partner, partner_mask, text_mask)  # (B, Tt, Dp)
    ref = masked_fill(self.proj_text(text), text_mask)
    x = masked_fill(self.proj_partner(partner), text_mask)
    fused = self.fuse(torch.cat([ref, x], -1))
    aligned, far = self.far(ref, fused, text_mask)
    return self.rbfe(ref, aligned, text_mask)[:, 0], far


# --- head and model ------------------------------------------------------------------------------
def output_size(task, num_classes):
  return {'regression': 1, 'classification': num_classes, 'iemocap': 2 * IEMOCAP_EMOTIONS}[task]


class TaskHead(nn.Module):
  """LayerNorm -> Dense -> GELU -> dropout -> Dense; shaped as heads.shape_output.  x: (B, D)."""

  def __init__(self, d_in, task, num_classes, hidden, dropout):
    super().__init__()
    self.task = task
    self.ln, self.hidden = nn.LayerNorm(d_in, eps=LN_EPS), nn.Linear(d_in, hidden)
    self.drop, self.out = nn.Dropout(dropout), nn.Linear(hidden, output_size(task, num_classes))

  def forward(self, x):
    y = self.out(self.drop(gelu(self.hidden(self.ln(x)))))
    if self.task == 'regression':
      return y[:, 0]
    if self.task == 'iemocap':
      return y.view(y.shape[0], IEMOCAP_EMOTIONS, 2)
    return y


# --- the text encoder ----------------------------------------------------------------------------
ENCODER_ACTIVATIONS = {
  'gelu': F.gelu,
  'gelu_new': gelu,
  'gelu_pytorch_tanh': gelu,
  'relu': F.relu,
}


class EncoderEmbeddings(nn.Module):
  """text_encoder.Embeddings: word + position + segment -> LayerNorm -> dropout."""

  def __init__(self, c):
    super().__init__()
    self.c = c
    self.word = nn.Embedding(c.vocab_size, c.hidden_size)
    self.position = nn.Embedding(c.max_positions, c.hidden_size)
    self.segment = nn.Embedding(c.type_vocab_size, c.hidden_size)
    self.ln = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
    self.drop = nn.Dropout(c.dropout)

  def forward(self, ids, mask, segments):
    if self.c.model_type == 'roberta':  # positions count real tokens from pad_token_id + 1.
      positions = torch.cumsum(mask.long(), 1) * mask.long() + self.c.pad_token_id
    else:
      positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape)
    h = self.word(ids) + self.position(positions) + self.segment(segments)
    return self.drop(self.ln(h))


class EncoderAttention(nn.Module):
  """text_encoder.SelfAttention: multi-head self-attention, padded keys masked."""

  def __init__(self, c):
    super().__init__()
    self.num_heads, self.dropout = c.num_heads, c.attention_dropout
    for name in ('query', 'key', 'value', 'out'):
      self.add_module(name, nn.Linear(c.hidden_size, c.hidden_size))

  def forward(self, h, mask):
    b, length, width = h.shape
    split = lambda x: x.view(b, length, self.num_heads, -1).transpose(1, 2)  # (B, N, L, Hd)
    q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
    ctx = F.scaled_dot_product_attention(
      q, k, v, attn_mask=mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
    )
    return self.out(ctx.transpose(1, 2).reshape(b, length, width))


class EncoderLayer(nn.Module):
  """text_encoder.Layer: post-LN attention and feed-forward blocks."""

  def __init__(self, c):
    super().__init__()
    self.attention = EncoderAttention(c)
    self.attention_ln = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
    self.ffn_up = nn.Linear(c.hidden_size, c.intermediate_size)
    self.ffn_down = nn.Linear(c.intermediate_size, c.hidden_size)
    self.ffn_ln = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
    self.act = ENCODER_ACTIVATIONS[c.hidden_act]
    self.drop = nn.Dropout(c.dropout)

  def forward(self, h, mask):
    h = self.attention_ln(h + self.drop(self.attention(h, mask)))
    return self.ffn_ln(h + self.drop(self.ffn_down(self.act(self.ffn_up(h)))))


class TextEncoder(nn.Module):
  """text_encoder.TextEncoder (config: its `EncoderConfig`).  ids, mask, segments: (B, L) ->
  last hidden state (B, L, H)."""

  def __init__(self, c):
    super().__init__()
    self.embeddings = EncoderEmbeddings(c)
    self.num_layers = c.num_layers
    for i in range(c.num_layers):
      self.add_module(f'layer_{i}', EncoderLayer(c))

  def forward(self, ids, mask, segments=None):
    mask = mask.bool()
    segments = torch.zeros_like(ids) if segments is None else segments
    h = self.embeddings(ids.long(), mask, segments.long())
    for i in range(self.num_layers):
      h = getattr(self, f'layer_{i}')(h, mask)
    return h


class FascaNet(nn.Module):
  """fasca_net.FascaNet: CLS tokens, fusion layers, FGFA pairs, task head(s); with
  `text_encoder` (an `EncoderConfig`), the text stream is that encoder run on token ids."""

  def __init__(
    self,
    dims: Mapping[str, int],
    task: str,
    num_classes: int,
    *,
    d_model=256,
    num_heads=8,
    num_fusion_layers=1,
    ffn_mult=4,
    dropout=0.1,
    attn_dropout=0.0,
    use_fusion=True,
    d_align=64,
    align_pairs: Sequence[str] = ('audio', 'vision'),
    dilations: Mapping[str, int] = None,
    far_kernel=(3, 3),
    num_bfa=2,
    bfa_heads=4,
    head_hidden=256,
    aux_heads=False,
    text_encoder=None,
  ):
    super().__init__()
    self.modalities = list(dims)
    if text_encoder is not None and REFERENCE in dims:
      self.text_encoder = TextEncoder(text_encoder)
      dims = {**dims, REFERENCE: text_encoder.hidden_size}
    else:
      self.text_encoder = None
    for m, d in dims.items():
      self.register_parameter(f'cls_{m}', nn.Parameter(0.02 * torch.randn(1, 1, d)))
    self.num_fusion_layers = num_fusion_layers if use_fusion else 0
    for i in range(self.num_fusion_layers):
      self.add_module(
        f'fusion_{i}', TriModalFusion(dims, d_model, num_heads, ffn_mult, dropout, attn_dropout)
      )
    self.pairs = [p for p in align_pairs if REFERENCE in dims and p in dims and p != REFERENCE]
    for p in self.pairs:
      self.add_module(
        f'fgfa_{p}',
        FGFA(
          dims[REFERENCE],
          dims[p],
          d_align,
          (dilations or {}).get(p, 1),
          far_kernel,
          num_bfa,
          bfa_heads,
        ),
      )
    head_in = len(self.pairs) * d_align + sum(dims.values())
    self.head = TaskHead(head_in, task, num_classes, head_hidden, dropout)
    self.aux_heads = aux_heads
    for m in self.modalities if aux_heads else ():
      self.add_module(f'aux_{m}', TaskHead(dims[m], task, num_classes, head_hidden, dropout))

  def forward(self, inputs, masks):
    """Runs the model (outputs and FAR intermediates as FascaNet returns them).

    Args:
      inputs: m -> (B, T_m, D_m); masks: m -> (B, T_m) bool. With a text encoder,
        inputs['text'] is (B, T_t) token ids and inputs['text_segments'] (optional) their
        segment ids.

    Returns:
      outputs: {'main': (B,) | (B, C) | (B, 4, 2), 'aux_<m>': ... when aux_heads}, and
      intermediates: {'<pair>_far': {'offsets': (B, T_t+1, 2K), 'mask': (B, T_t+1, K)}}.
    """
    xs, ms = {}, {}
    for m in self.modalities:
      x = inputs[m]
      if m == REFERENCE and self.text_encoder is not None:
        x = self.text_encoder(x, masks[m], inputs.get(f'{m}_segments'))  # (B, T_t, H)
      cls = getattr(self, f'cls_{m}').expand(x.shape[0], 1, x.shape[-1])
      xs[m] = torch.cat([cls, x], 1)  # (B, T_m + 1, D_m)
      ms[m] = torch.cat([torch.ones_like(masks[m][:, :1]), masks[m]], 1)
    for i in range(self.num_fusion_layers):
      xs = getattr(self, f'fusion_{i}')(xs, ms)
    pooled, intermediates = [], {}
    for p in self.pairs:
      out, intermediates[f'{p}_far'] = getattr(self, f'fgfa_{p}')(
        xs[REFERENCE], ms[REFERENCE], xs[p], ms[p]
      )
      pooled.append(out)
    cls_vectors = [xs[m][:, 0] for m in self.modalities]
    outputs = {'main': self.head(torch.cat(pooled + cls_vectors, -1))}
    for m in self.modalities if self.aux_heads else ():
      outputs[f'aux_{m}'] = getattr(self, f'aux_{m}')(xs[m][:, 0])
    return outputs, intermediates


def encoder_config(config):
  """The `EncoderConfig` of config.model.text_encoder, or None without an encoder."""
  name = config.model.get('text_encoder', FEATURES)
  if name == FEATURES or REFERENCE not in config.modalities:
    return None
  from fasca_jax.models import text_encoder  # pylint: disable=g-import-not-at-top

  return text_encoder.load_config(name)


def torchvision_deform_conv2d():
  """`torchvision.ops.deform_conv2d`, or None when torchvision is not importable."""
  try:
    from torchvision.ops import deform_conv2d as tv_deform_conv2d  # pylint: disable=g-import-not-at-top
  except Exception:  # pylint: disable=broad-except  # absent, or built for another torch.
    return None
  return tv_deform_conv2d


def build(config, deform=None) -> FascaNet:
  """The torch twin of `fasca_net.build(config)` (float32); `deform`: the modulated deformable
  convolution to use (default: this module's `deform_conv2d`)."""
  model = _build(config)
  if deform is not None:
    for module in model.modules():
      if isinstance(module, FAR):
        module.deform = deform
  return model


def _build(config) -> FascaNet:
  m = config.model
  return FascaNet(
    {k: config.dims[k] for k in config.modalities},
    config.task,
    config.num_classes,
    d_model=m.d_model,
    num_heads=m.num_heads,
    num_fusion_layers=m.num_fusion_layers,
    ffn_mult=m.ffn_mult,
    dropout=m.dropout,
    attn_dropout=m.attn_dropout,
    use_fusion=m.use_fusion,
    d_align=m.d_align,
    align_pairs=tuple(m.align_pairs),
    dilations=dict(m.dilations),
    far_kernel=tuple(m.far_kernel),
    num_bfa=m.num_bfa,
    bfa_heads=m.bfa_heads,
    head_hidden=m.head_hidden,
    aux_heads=m.aux_heads,
    text_encoder=encoder_config(config),
  )


# --- parameters from Flax ------------------------------------------------------------------------
def _flatten(tree, prefix=()):
  """Nested mapping -> {path tuple: leaf}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def _convert(module, leaf, a):
  """One Flax leaf -> (torch parameter name, array in torch layout) for its owning module."""
  if isinstance(module, nn.Linear):
    if leaf == 'kernel':  # Dense (in, out), DenseGeneral (D, N, H) / (N, H, D), 1x1 Conv.
      return 'weight', a.reshape(-1, module.out_features).T
    return 'bias', a.reshape(-1)
  if isinstance(module, nn.Conv1d):
    return ('weight', a[0].transpose(2, 1, 0)) if leaf == 'kernel' else ('bias', a)
  if isinstance(module, nn.LayerNorm):
    return {'scale': 'weight', 'bias': 'bias'}[leaf], a
  if isinstance(module, nn.Embedding):
    return 'weight', a
  if isinstance(module, FAR) and leaf == 'kernel':
    return 'kernel', a.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  return leaf, a


def flax_to_torch(model: nn.Module, tree) -> dict:
  """A Flax parameter (or gradient) tree -> {torch parameter name: tensor in torch layout}."""
  state = {}
  for path, value in _flatten(tree).items():
    *owner, leaf = path
    try:
      module = model.get_submodule('.'.join(owner))
    except AttributeError as e:
      raise ValueError(f'flax-only parameter {"/".join(path)}: {e}') from e
    name, a = _convert(module, leaf, np.asarray(value, np.float32))
    state['.'.join(owner + [name])] = torch.from_numpy(np.array(a, np.float32, order='C'))
  return state


def load_flax_params(model: nn.Module, params) -> nn.Module:
  """Copies Flax parameters into `model`; every parameter on both sides must match (strict)."""
  state = flax_to_torch(model, params)
  own = dict(model.named_parameters())
  missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
  if missing or unexpected:
    raise ValueError(f'parameter mismatch: torch-only {missing}, flax-only {unexpected}')
  with torch.no_grad():
    for name, value in state.items():
      if own[name].shape != value.shape:
        raise ValueError(f'{name}: torch shape {tuple(own[name].shape)} != {tuple(value.shape)}')
      own[name].copy_(value)
  return model


# --- loss and training step ----------------------------------------------------------------------
def per_example_loss(task, y, target):
  """tasks.per_example_loss: L1, cross-entropy, or IEMOCAP 4 x 2-way cross-entropy -> (B,)."""
  if task == 'regression':
    return (y - target.float()).abs()
  if task == 'classification':
    return F.cross_entropy(y, target.long(), reduction='none')
  if task == 'iemocap':
    return F.cross_entropy(y.transpose(1, 2), target.long(), reduction='none').mean(-1)
  raise ValueError(f'unknown task {task!r}')


def model_inputs(config, batch):
  """steps.model_inputs: batch -> (inputs, masks); token ids for the text encoder."""
  tokens = encoder_config(config) is not None
  inputs = {m: batch[m] for m in config.modalities if not (tokens and m == REFERENCE)}
  if tokens:
    inputs[REFERENCE], inputs[f'{REFERENCE}_segments'] = batch['text_ids'], batch['text_segments']
  return inputs, {m: batch[f'{m}_mask'] for m in config.modalities}


def loss_fn(config, model, batch):
  """Masked mean of the main task loss over valid examples (aux heads as in train_lib)."""
  inputs, masks = model_inputs(config, batch)
  outputs, _ = model(inputs, masks)
  target, valid = batch[config.target_key], batch['valid'].float()
  masked_mean = lambda v: (v * valid).sum() / valid.sum().clamp(min=1.0)
  loss = masked_mean(per_example_loss(config.task, outputs['main'], target))
  aux = [
    masked_mean(per_example_loss(config.task, y, target))
    for k, y in outputs.items()
    if k.startswith('aux_')
  ]
  if aux and config.aux_loss_weight:
    loss = loss + config.aux_loss_weight * sum(aux) / len(aux)
  return loss


def encoder_depth(name: str) -> int | None:
  """text_encoder.param_labels' depth of a torch parameter name: 0 for the embeddings, i + 1
  for layer_i, None outside the encoder."""
  parts = name.split('.')
  if parts[0] != 'text_encoder':
    return None
  return 0 if parts[1] == 'embeddings' else int(parts[1].split('_')[1]) + 1


def param_groups(config, model) -> list[dict]:
  """AdamW groups of steps.optimizer: the rest at lr / weight_decay; with a text encoder, its
  leaves at text_encoder_lr, decayed by text_encoder_weight_decay except biases and LayerNorm
  weights (text_encoder.decay_mask), and the frozen ones (embeddings and the
  text_encoder_frozen_layers lowest layers) set requires_grad=False and left out."""
  o = config.optimizer
  other, decayed, spared = [], [], []
  frozen = o.get('text_encoder_frozen_layers', 0)
  for name, p in model.named_parameters():
    depth = encoder_depth(name)
    if depth is None:
      other.append(p)
    elif frozen > 0 and depth <= frozen:
      p.requires_grad_(False)
    elif name.endswith('.bias') or isinstance(
      model.get_submodule(name.rsplit('.', 1)[0]), nn.LayerNorm
    ):
      spared.append(p)
    else:
      decayed.append(p)
  groups = [{'params': other, 'lr': o.lr, 'weight_decay': o.weight_decay}]
  if encoder_config(config) is not None:
    groups += [
      {'params': decayed, 'lr': o.text_encoder_lr, 'weight_decay': o.text_encoder_weight_decay},
      {'params': spared, 'lr': o.text_encoder_lr, 'weight_decay': 0.0},
    ]
  return [g for g in groups if g['params']]


def make_optimizer(config, model, total_steps, steps_per_epoch):
  """train_lib.make_optimizer in torch: AdamW, linear warm-up + cosine decay -> (opt, sched)."""
  o = config.optimizer
  warmup = min(int(o.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
  decay = max(total_steps, warmup + 1)

  def factor(step):
    if step < warmup:
      return step / warmup
    t = min(step - warmup, decay - warmup) / (decay - warmup)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

  opt = torch.optim.AdamW(
    param_groups(config, model),
    lr=o.lr,
    betas=(o.b1, o.b2),
    eps=1e-8,
    weight_decay=o.weight_decay,
    fused=True,
  )
  return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(config, model, opt, sched, batch):
  """Forward + backward + global-norm clip + AdamW; returns the loss tensor."""
  opt.zero_grad(set_to_none=True)
  loss = loss_fn(config, model, batch)
  loss.backward()
  trained = [p for p in model.parameters() if p.requires_grad]
  nn.utils.clip_grad_norm_(trained, config.optimizer.grad_clip_norm, foreach=True)
  opt.step()
  sched.step()
  return loss.detach()
