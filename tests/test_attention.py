"""Tests for fasca_jax.ops.attention: dense and chunked against NumPy, gradients, the switch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as configs_default
from fasca_jax.models import fasca_net
from fasca_jax.models import fusion
from fasca_jax.models import layers
from fasca_jax.ops import attention

B, TQ, TK, N, H = 6, 5, 7, 2, 4


def make_qkv(seed=0, dtype=np.float32):
  """q: (B, TQ, N, H), k, v: (B, TK, N, H); example 1 has every key masked, example 0 none."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, TQ, N, H)).astype(dtype)
  k, v = (rng.normal(size=(B, TK, N, H)).astype(dtype) for _ in range(2))
  lengths = np.array([TK, 0, 1, 3, 5, 6])
  return q, k, v, np.arange(TK)[None, :] < lengths[:, None]


def numpy_attention(q, k, v, mask):
  """float64 loop over examples and heads; a fully masked row averages every key."""
  out = np.zeros(q.shape, np.float64)
  for b in range(q.shape[0]):
    for n in range(q.shape[2]):
      s = q[b, :, n].astype(np.float64) @ k[b, :, n].T.astype(np.float64) / np.sqrt(H)
      s = np.where(mask[b][None, :], s, attention.NEG_INF)
      p = np.exp(s - s.max(-1, keepdims=True))
      out[b, :, n] = (p / p.sum(-1, keepdims=True)) @ v[b, :, n]
  return out


@pytest.fixture
def three_chunks(monkeypatch):
  """Chunks of 2 examples: B=6 runs as 3 sequential chunks."""
  monkeypatch.setattr(attention, 'CHUNK_MAP_BYTES', 2 * 4 * N * TQ * TK)
  assert attention.chunk_size(B, N, TQ, TK) == 2


@pytest.mark.parametrize('method', ['dense', 'chunked'])
def test_forward_matches_numpy(method, three_chunks):
  q, k, v, mask = make_qkv()
  got = jax.jit(attention.dot_product_attention, static_argnums=4)(q, k, v, mask, method)
  np.testing.assert_allclose(got, numpy_attention(q, k, v, mask), atol=1e-5, rtol=0)


def test_chunked_gradients_match_dense_autodiff(three_chunks):
  q, k, v, mask = make_qkv(1)
  d_out = np.random.default_rng(2).normal(size=q.shape).astype(np.float32)

  def grads(method):
    loss = lambda q, k, v: jnp.sum(attention.dot_product_attention(q, k, v, mask, method) * d_out)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

  dense, chunked = grads('dense'), grads('chunked')
  for name, a, b in zip('qkv', chunked, dense):
    assert a.shape == b.shape and a.dtype == b.dtype, name
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=f'd{name}')
  # Keys behind the mask get no gradient, except in the all-masked example (uniform average).
  assert np.all(np.asarray(chunked[1])[~mask & (mask.sum(1) > 0)[:, None]] == 0)
  assert np.all(np.asarray(chunked[2])[~mask & (mask.sum(1) > 0)[:, None]] == 0)
  assert np.abs(np.asarray(chunked[2])[1]).min() > 0


def test_chunked_bfloat16_close_to_float32(three_chunks):
  q, k, v, mask = make_qkv(3)
  ref = attention.dot_product_attention(q, k, v, mask, 'dense')
  bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
  out = attention.dot_product_attention(*bf, mask, 'chunked')
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.05)
  g = jax.grad(
    lambda q: attention.dot_product_attention(q, *bf[1:], mask, 'chunked').astype(jnp.float32).sum()
  )(bf[0])
  assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


def test_auto_and_chunk_size():
  big = attention.AUTO_CHUNKED_MIN_MAP
  assert attention.resolve_method('auto', 1, big, 'cpu') == 'chunked'
  assert attention.resolve_method('auto', 1, big - 1, 'cpu') == 'dense'
  assert attention.resolve_method('auto', 501, 552, 'gpu') == 'dense'
  assert attention.resolve_method('dense', 501, 552, 'cpu') == 'dense'
  with pytest.raises(ValueError, match="'flash'"):
    attention.resolve_method('flash', 1, 1)
  # MOSEI unaligned at batch 32: one 501 x 552 map of 8 heads is 8.8 MB > 8 MiB -> 1 example;
  # 51 x 1002 is 1.6 MB -> 4 (the largest divisor of 32 that fits); a prime batch -> 1.
  assert attention.chunk_size(32, 8, 501, 552) == 1
  assert attention.chunk_size(32, 8, 51, 1002) == 4
  assert attention.chunk_size(7, 8, 51, 1002) == 1
  assert attention.chunk_size(32, 8, 5, 5) == 32


def test_fusion_chunked_equals_dense(three_chunks):
  """TriModalFusion (where the model attends), forward, weights and parameter gradients."""
  rng = np.random.default_rng(0)
  dims, lens = {'text': 6, 'audio': 5, 'vision': 4}, {'text': 4, 'audio': 6, 'vision': 5}
  xs = {m: jnp.asarray(rng.normal(size=(B, lens[m], d)), jnp.float32) for m, d in dims.items()}
  masks = {
    m: jnp.arange(lens[m])[None] < jnp.asarray(rng.integers(1, lens[m] + 1, B))[:, None]
    for m in dims
  }
  models = [
    fusion.TriModalFusion(d_model=8, num_heads=2, attention=a) for a in ('chunked', 'dense')
  ]
  params = jax.jit(lambda key: models[1].init(key, xs, masks, train=False))(jax.random.key(0))

  def run(model):
    loss = lambda p: sum(jnp.sum(o**2) for o in model.apply(p, xs, masks, train=True)[0].values())
    return jax.jit(
      lambda p: (jax.value_and_grad(loss)(p), model.apply(p, xs, masks, train=False)[1])
    )(params)

  ((l_chunked, g_chunked), w_chunked), ((l_dense, g_dense), w_dense) = map(run, models)
  np.testing.assert_allclose(l_chunked, l_dense, rtol=1e-5)
  flat_dense = dict(jax.tree_util.tree_leaves_with_path(g_dense))
  for path, g in jax.tree_util.tree_leaves_with_path(g_chunked):
    np.testing.assert_allclose(
      g, flat_dense[path], atol=1e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path)
    )
  for m in dims:  # the returned cross-attention weights are the same probabilities.
    np.testing.assert_allclose(w_chunked[m], w_dense[m], atol=1e-6)


def test_build_passes_the_config_switch():
  config = configs_default.get_config()
  assert fasca_net.build(config).attention == 'auto'
  config.model.attention = 'chunked'
  assert fasca_net.build(config).attention == 'chunked'


def test_chunked_refuses_attention_dropout():
  q = jnp.ones((2, 3, 4))
  mha = layers.MultiHeadAttention(num_heads=2, dropout=0.1, method='chunked')
  params = mha.init(jax.random.key(0), q, q, jnp.ones((2, 3), bool), train=False)
  with pytest.raises(ValueError, match="'chunked' has no dropout"):
    mha.apply(params, q, q, jnp.ones((2, 3), bool), train=True, rngs={'dropout': jax.random.key(1)})
  # 'auto' falls back to dense when the weights are dropped out.
  auto = layers.MultiHeadAttention(num_heads=2, dropout=0.1)
  out, _ = auto.apply(
    params, q, q, jnp.ones((2, 3), bool), train=True, rngs={'dropout': jax.random.key(1)}
  )
  assert out.shape == q.shape
