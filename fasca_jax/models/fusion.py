"""TriModalFusion: cross-modal attention, intra-modal self-attention, residual de-projection."""

from typing import Any, Mapping

import flax.linen as nn
from flax.typing import Dtype
import jax.numpy as jnp

from fasca_jax.models import layers


class AttentionBlock(nn.Module):
  """Post-LN transformer block: attention + residual + LN, then FFN + residual + LN."""

  num_heads: int
  ffn_mult: int = 4
  dropout: float = 0.0
  attn_dropout: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = 'auto'

  @nn.compact
  def __call__(self, q, kv, kv_mask, *, train: bool):
    """q: (B, Tq, D), kv: (B, Tk, D), kv_mask: (B, Tk) -> (B, Tq, D), weights (B, N, Tq, Tk)."""
    drop = nn.Dropout(self.dropout, deterministic=not train)
    a, weights = layers.MultiHeadAttention(
      num_heads=self.num_heads,
      dropout=self.attn_dropout,
      dtype=self.dtype,
      method=self.attention,
      name='attn',
    )(q, kv, kv_mask, train=train)
    h = nn.LayerNorm(dtype=self.dtype, name='ln_attn')(q + drop(a))
    f = layers.FeedForward(mult=self.ffn_mult, dropout=self.dropout, dtype=self.dtype, name='ffn')(
      h, train=train
    )
    return nn.LayerNorm(dtype=self.dtype, name='ln_ffn')(h + drop(f)), weights


class TriModalFusion(nn.Module):
  """One fusion layer over any set of modalities (shapes preserved).

  Each modality m is projected to `d_model`; m attends (as query) to the time-concatenation of
  the other projected modalities (cross-modal block), then to itself (self-attention block); a
  Dense maps the result back to D_m and it is added to the input. With a single modality only
  the self-attention block runs. `attention` is the attention implementation
  (fasca_jax/ops/attention.py).
  """

  d_model: int
  num_heads: int
  ffn_mult: int = 4
  dropout: float = 0.0
  attn_dropout: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = 'auto'

  @nn.compact
  def __call__(self, xs: Mapping[str, Any], masks: Mapping[str, Any], *, train: bool):
    """Fuses the modalities.

    Args:
      xs: modality -> (B, T_m, D_m) features.
      masks: modality -> (B, T_m) bool, True on real steps.
      train: enables dropout.

    Returns:
      outs: modality -> (B, T_m, D_m), and intermediates: modality -> cross-attention weights
      (B, N, T_m, sum of the other T) (absent for a single modality).
    """
    names = list(xs)
    block = lambda name: AttentionBlock(
      num_heads=self.num_heads,
      ffn_mult=self.ffn_mult,
      dropout=self.dropout,
      attn_dropout=self.attn_dropout,
      dtype=self.dtype,
      attention=self.attention,
      name=name,
    )
    h = {m: nn.Dense(self.d_model, dtype=self.dtype, name=f'proj_{m}')(xs[m]) for m in names}
    outs, weights = {}, {}
    for m in names:
      others = [o for o in names if o != m]
      q = h[m]
      if others:
        kv = jnp.concatenate([h[o] for o in others], axis=1)  # (B, sum T_o, d_model)
        kv_mask = jnp.concatenate([masks[o] for o in others], axis=1)
        q, weights[m] = block(f'cross_{m}')(q, kv, kv_mask, train=train)
      q, _ = block(f'self_{m}')(q, q, masks[m], train=train)
      back = nn.Dense(xs[m].shape[-1], dtype=self.dtype, name=f'deproj_{m}')(q)
      outs[m] = layers.masked_fill(xs[m] + back, masks[m])
    return outs, weights
