"""Small building blocks shared by the fusion and alignment modules."""

import flax.linen as nn
from flax.typing import Dtype
import jax.numpy as jnp

from fasca_jax.ops import attention


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention with a boolean key mask.

  Attributes:
    num_heads: number of heads N; the width D must divide by N.
    dropout: dropout rate on the attention weights.
    dtype: computation dtype (parameters stay float32).
    method: 'auto', 'dense' or 'chunked' (fasca_jax/ops/attention.py); dropout on the
      weights runs 'dense'.
  """

  num_heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  method: str = 'auto'

  @nn.compact
  def __call__(self, q, kv, kv_mask, *, train: bool):
    """Attends from `q` to `kv`.

    Args:
      q: (B, Tq, D) queries.
      kv: (B, Tk, Dk) keys and values.
      kv_mask: (B, Tk) bool, True on real steps.
      train: enables dropout.

    Returns:
      out: (B, Tq, D) and weights: (B, N, Tq, Tk) attention probabilities.
    """
    d = q.shape[-1]
    if d % self.num_heads:
      raise ValueError(f'width {d} is not divisible by num_heads={self.num_heads}')
    dense = lambda name: nn.DenseGeneral(
      (self.num_heads, d // self.num_heads), dtype=self.dtype, name=name
    )
    qh = dense('query')(q)  # (B, Tq, N, H)
    kh = dense('key')(kv)  # (B, Tk, N, H)
    vh = dense('value')(kv)  # (B, Tk, N, H)
    weights = attention.probabilities(qh, kh, kv_mask)  # (B, N, Tq, Tk)
    dropping = train and self.dropout > 0
    if dropping and self.method == 'chunked':
      raise ValueError("attention method 'chunked' has no dropout on the weights; use 'dense'")
    if dropping or attention.resolve_method(self.method, q.shape[1], kv.shape[1]) == 'dense':
      dropped = nn.Dropout(self.dropout, deterministic=not train)(weights)
      ctx = attention.weighted_values(dropped, vh)  # (B, Tq, N, H)
    else:  # the weights are returned for inspection only; XLA drops them where unused.
      ctx = attention.dot_product_attention(qh, kh, vh, kv_mask, 'chunked')
    out = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name='out')(ctx)
    return out, weights


class FeedForward(nn.Module):
  """Position-wise MLP: Dense(mult * D) -> GELU -> dropout -> Dense(D).  x: (B, T, D)."""

  mult: int = 4
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    d = x.shape[-1]
    h = nn.gelu(nn.Dense(self.mult * d, dtype=self.dtype, name='up')(x))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(d, dtype=self.dtype, name='down')(h)


def masked_fill(x, mask):
  """Zeroes padded steps.  x: (B, T, ...), mask: (B, T) bool."""
  return x * mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)).astype(x.dtype)
