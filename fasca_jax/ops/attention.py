"""Masked multi-head dot-product attention, dense or chunked with a recomputing gradient.

  q: (B, Tq, N, H) queries, k, v: (B, Tk, N, H) keys and values, kv_mask: (B, Tk) bool
  (True on real steps)  ->  (B, Tq, N, H) = softmax(q k^T / sqrt(H), masked) v

Masked keys get the logit NEG_INF before the softmax (a finite value, as in the dense layer:
a row with every key masked averages all of them); the softmax runs in float32 whatever the
dtype of q, k, v.

Two implementations, equal to float32 rounding in value and gradient:

  'dense':   the formula under JAX autodiff. Backward keeps the (B, N, Tq, Tk) probabilities
      of the forward pass alive, and every elementwise pass over them streams the whole map
      through memory: at CMU-MOSEI unaligned lengths (501 x 552, batch 32) one map is 283 MB.
  'chunked': the same maths over `chunk` examples at a time (lax.map), so the map of one chunk
      stays in cache, with a custom VJP that saves only the output and each row's max and sum
      of exponentials (B, N, Tq) and recomputes the probabilities chunk by chunk in the backward
      pass
      (dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K, dK = dS^T Q, scaled).

method='auto' picks 'chunked' on CPU when Tq * Tk >= AUTO_CHUNKED_MIN_MAP and 'dense'
otherwise (on GPU/TPU the chunks would run one after another on an idle device, so 'dense').
Dropout on the probabilities needs them whole: only 'dense' supports it.
"""

import jax
import jax.numpy as jnp

NEG_INF = -1e9
METHODS = ('auto', 'dense', 'chunked')
# Smallest Tq * Tk for which 'auto' chunks on CPU. At batch 32, 8 heads of 32, forward +
# backward on 2 CPU cores, 'chunked' is 1.1-1.4x faster from 101 x 202 up to 501 x 552 and
# no faster at 51 x 102 (benchmarks/attention.py).
AUTO_CHUNKED_MIN_MAP = 2**14
# Bytes of one chunk's float32 (chunk, N, Tq, Tk) map that 'chunked' aims for (the largest
# divisor of B whose map fits, at least one example): 1-2 examples at 501 x 552 and 4 at
# 51 x 1002 were the fastest there; 16 examples at 51 x 1002 were 1.5x slower.
CHUNK_MAP_BYTES = 8 * 2**20


def resolve_method(method: str, tq: int, tk: int, backend: str = None) -> str:
  """Maps 'auto' to 'dense' or 'chunked' for a (Tq, Tk) map on `backend` (default: JAX's)."""
  if method not in METHODS:
    raise ValueError(f'attention method must be one of {METHODS}, got {method!r}')
  if method != 'auto':
    return method
  backend = backend or jax.default_backend()
  return 'chunked' if backend == 'cpu' and tq * tk >= AUTO_CHUNKED_MIN_MAP else 'dense'


def chunk_size(batch: int, num_heads: int, tq: int, tk: int) -> int:
  """Largest divisor of `batch` whose float32 (chunk, N, Tq, Tk) map fits CHUNK_MAP_BYTES."""
  per_example = 4 * num_heads * tq * tk
  fits = max(1, CHUNK_MAP_BYTES // per_example)
  return max(c for c in range(1, batch + 1) if batch % c == 0 and c <= fits)


def logits(q, k, kv_mask):
  """Scaled, masked float32 logits.  q: (B, Tq, N, H), k: (B, Tk, N, H) -> (B, N, Tq, Tk)."""
  s = jnp.einsum('bqnh,bknh->bnqk', q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  return jnp.where(kv_mask[:, None, None, :], s.astype(jnp.float32), NEG_INF)


def probabilities(q, k, kv_mask):
  """Attention probabilities.  q: (B, Tq, N, H), k: (B, Tk, N, H) -> (B, N, Tq, Tk) float32."""
  return jax.nn.softmax(logits(q, k, kv_mask), axis=-1)


def weighted_values(p, v):
  """p: (B, N, Tq, Tk) probabilities, v: (B, Tk, N, H) -> (B, Tq, N, H) in v's dtype."""
  return jnp.einsum('bnqk,bknh->bqnh', p.astype(v.dtype), v)


def dot_product_attention(q, k, v, kv_mask, method: str = 'auto'):
  """Attention output (module docstring).  q: (B, Tq, N, H), k, v: (B, Tk, N, H) -> q's shape."""
  if resolve_method(method, q.shape[1], k.shape[1]) == 'dense':
    return weighted_values(probabilities(q, k, kv_mask), v)
  return _chunked(q, k, v, kv_mask)


def _split(x, chunk):
  """(B, ...) -> (B / chunk, chunk, ...)."""
  return x.reshape((x.shape[0] // chunk, chunk) + x.shape[1:])


def _merge(x):
  """(B / chunk, chunk, ...) -> (B, ...)."""
  return x.reshape((-1,) + x.shape[2:])


def _forward_chunk(q, k, v, kv_mask):
  """One chunk -> output (b, Tq, N, H), row max and row sum of exponentials (b, N, Tq, 1).

  Max and sum are kept apart: a log-sum-exp m + log(sum) loses log(sum) next to the masked
  logit NEG_INF in float32, which would break the all-masked rows' backward pass.
  """
  s = logits(q, k, kv_mask)
  m = jnp.max(s, axis=-1, keepdims=True)
  e = jnp.exp(s - m)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return weighted_values(e / total, v), m, total


def _backward_chunk(q, k, v, kv_mask, out, m, total, d_out):
  """Gradients of one chunk w.r.t. q, k, v from the saved output, row max and row sum."""
  p = jnp.exp(logits(q, k, kv_mask) - m) / total  # (b, N, Tq, Tk) float32
  dv = jnp.einsum('bnqk,bqnh->bknh', p.astype(v.dtype), d_out)
  dp = jnp.einsum('bqnh,bknh->bnqk', d_out, v).astype(jnp.float32)
  row = jnp.einsum('bqnh,bqnh->bnq', d_out, out).astype(jnp.float32)
  # Masked logits are constants (jnp.where), so no gradient reaches them.
  ds = jnp.where(kv_mask[:, None, None, :], p * (dp - row[..., None]), 0.0)
  ds = (ds / jnp.sqrt(q.shape[-1])).astype(q.dtype)
  dq = jnp.einsum('bnqk,bknh->bqnh', ds, k)
  dk = jnp.einsum('bnqk,bqnh->bknh', ds, q)
  return dq, dk, dv


@jax.custom_vjp
def _chunked(q, k, v, kv_mask):
  return _chunked_forward(q, k, v, kv_mask)[0]


def _chunked_forward(q, k, v, kv_mask):
  chunk = chunk_size(q.shape[0], q.shape[2], q.shape[1], k.shape[1])
  out, m, total = (
    _merge(x)
    for x in jax.lax.map(
      lambda a: _forward_chunk(*a), tuple(_split(x, chunk) for x in (q, k, v, kv_mask))
    )
  )
  return out, (q, k, v, kv_mask, out, m, total)


def _chunked_backward(saved, d_out):
  q, k = saved[:2]
  chunk = chunk_size(q.shape[0], q.shape[2], q.shape[1], k.shape[1])
  grads = jax.lax.map(
    lambda a: _backward_chunk(*a), tuple(_split(x, chunk) for x in saved + (d_out,))
  )
  return tuple(_merge(g) for g in grads) + (None,)


_chunked.defvjp(_chunked_forward, _chunked_backward)
