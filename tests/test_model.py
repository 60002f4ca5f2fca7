"""FASCA-Net model: shapes per task and modality subset, masking, batch independence, gradients."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fasca_jax.models import alignment
from fasca_jax.models import fasca_net

DIMS = {'text': 12, 'audio': 5, 'vision': 7}
LENS = {'text': 6, 'audio': 15, 'vision': 9}


def tiny_model(modalities=('text', 'audio', 'vision'), task='regression', num_classes=1, **kw):
  kw = {
    'd_model': 8,
    'num_heads': 2,
    'd_align': 4,
    'bfa_heads': 2,
    'num_bfa': 1,
    'head_hidden': 8,
    'dropout': 0.0,
    'dilations': {'audio': 2, 'vision': 1},
    **kw,
  }
  return fasca_net.FascaNet(modalities=modalities, task=task, num_classes=num_classes, **kw)


def make_inputs(batch=3, seed=0, modalities=tuple(DIMS), lengths=None):
  rng = np.random.default_rng(seed)
  inputs = {
    m: jnp.asarray(rng.normal(size=(batch, LENS[m], DIMS[m])), jnp.float32) for m in modalities
  }
  lengths = lengths or {m: rng.integers(2, LENS[m] + 1, size=batch) for m in modalities}
  masks = {m: jnp.arange(LENS[m])[None, :] < jnp.asarray(lengths[m])[:, None] for m in modalities}
  return inputs, masks


_VARIABLES = {}


def _init(model):
  """Initialised variables, cached per model configuration."""
  if repr(model) not in _VARIABLES:
    inputs, masks = make_inputs(modalities=model.modalities)
    _VARIABLES[repr(model)] = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), inputs, masks
    )
  return _VARIABLES[repr(model)]


def apply(model, inputs, masks):
  return jax.jit(functools.partial(model.apply, train=False))(_init(model), inputs, masks)


@pytest.mark.parametrize(
  'task,num_classes,shape',
  [('regression', 1, (3,)), ('classification', 7, (3, 7)), ('iemocap', 1, (3, 4, 2))],
)
def test_output_shapes_per_task(task, num_classes, shape):
  model = tiny_model(task=task, num_classes=num_classes)
  (outputs, inter) = apply(model, *make_inputs())
  assert outputs['main'].shape == shape
  assert np.all(np.isfinite(outputs['main']))
  assert inter['cross_attention']['text'].shape == (
    3,
    2,
    LENS['text'] + 1,
    LENS['audio'] + LENS['vision'] + 2,
  )
  assert inter['audio_far']['offsets'].shape == (3, 1, LENS['text'] + 1, 18)
  assert inter['vision_far']['mask'].shape == (3, 1, LENS['text'] + 1, 9)


@pytest.mark.parametrize(
  'modalities,pairs',
  [
    (('text',), ()),
    (('text', 'audio'), ('audio',)),
    (('audio', 'vision'), ()),
    (('text', 'vision'), ('vision',)),
  ],
)
def test_any_subset_of_modalities(modalities, pairs):
  model = tiny_model(modalities=modalities)
  assert model.pairs() == pairs
  outputs, inter = apply(model, *make_inputs(modalities=modalities))
  assert outputs['main'].shape == (3,)
  assert {k[:-4] for k in inter if k.endswith('_far')} == set(pairs)
  params = _init(model)['params']
  assert {k for k in params if k.startswith('fgfa_')} == {f'fgfa_{p}' for p in pairs}


def _perturb_zero_init(params, seed=0):
  """Gives the zero-initialised offset/mask convs small weights, as after some training."""
  rng = np.random.default_rng(seed)

  def f(path, p):
    zero_init = any(getattr(k, 'key', None) in ('offsets', 'mask') for k in path)
    return p + 0.1 * rng.normal(size=p.shape).astype(p.dtype) if zero_init else p

  return jax.tree_util.tree_map_with_path(f, params)


def _trained_like(params, seed=0):
  """Every parameter plus N(0, 0.1) noise, as after some training: biases, LayerNorm offsets
  and FAR's offset/mask convs are non-zero, so a padded step that is not masked after a
  LayerNorm or a conv holds a non-zero value, and FAR samples at fractional offsets."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(p.dtype), params)


# Invariance tolerance, relative to the largest magnitude of the compared quantity (float32
# rounding: a different padded length changes the shapes of the matmuls and so their summation
# order). Measured in `test_padding_length_is_ignored` (test XLA flags): outputs, FAR offsets
# and tap masks and parameter gradients differ by <= 6.5e-7, input gradients by <= 1.1e-6; in
# float64 the outputs are equal. Without the masking, 4 more padded text steps moved the outputs
# by 2.2e-2.
INVARIANCE_RTOL = 1e-5


def assert_close_relative(got, want, err_msg=''):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, err_msg
  scale = max(np.abs(want).max(), 1e-30)
  err = np.abs(got - want).max()
  assert err <= INVARIANCE_RTOL * scale, f'{err_msg}: max error {err:.3g}, scale {scale:.3g}'


def trained_like_model():
  """A classification model with auxiliary heads (every output depends on every modality's
  fused CLS vector) and two BFA blocks, and its trained-like parameters."""
  model = tiny_model(task='classification', num_classes=3, aux_heads=True, num_bfa=2)
  return model, _trained_like(_init(model)['params'])


def _loss(model, params, inputs, masks):
  """A scalar depending on every output of every head (fixed random weights)."""
  outputs, inter = model.apply({'params': params}, inputs, masks, train=False)
  weights = np.random.default_rng(7)
  total = sum(
    (y * jnp.asarray(weights.normal(size=y.shape[1:]), y.dtype)).sum()
    for _, y in sorted(outputs.items())
  )
  return total, (outputs, inter)


_GRAD_FNS = {}


def _outputs_and_gradients(model):
  """The jitted (loss, (outputs, intermediates)), (parameter, input) gradients of `model`,
  cached per model configuration."""
  if repr(model) not in _GRAD_FNS:
    _GRAD_FNS[repr(model)] = jax.jit(
      jax.value_and_grad(functools.partial(_loss, model), argnums=(0, 1), has_aux=True)
    )
  return _GRAD_FNS[repr(model)]


def _pad(inputs, masks, m, extra, rng):
  """Appends `extra` padded steps of non-zero content to modality m."""
  x, mask = inputs[m], masks[m]
  filler = jnp.asarray(rng.normal(size=(x.shape[0], extra, x.shape[2])) * 10, x.dtype)
  return (
    {**inputs, m: jnp.concatenate([x, filler], 1)},
    {**masks, m: jnp.concatenate([mask, jnp.zeros((mask.shape[0], extra), bool)], 1)},
  )


@pytest.mark.parametrize('modality', ['text', 'audio', 'vision'])
def test_padding_length_is_ignored(modality):
  """Padding a modality by 4 more steps (of non-zero content) leaves the outputs, FAR's offsets
  and tap masks at the real text steps, the parameter gradients and the input gradients at real
  steps unchanged, with trained-like parameters; input gradients at padded steps are zero."""
  model, params = trained_like_model()
  inputs, masks = make_inputs(batch=4, seed=5)
  padded = _pad(inputs, masks, modality, 4, np.random.default_rng(6))
  grad_fn = _outputs_and_gradients(model)
  (_, (outputs, inter)), (grads, input_grads) = grad_fn(params, inputs, masks)
  (_, (p_outputs, p_inter)), (p_grads, p_input_grads) = grad_fn(params, *padded)
  p_grads_flat = dict(jax.tree_util.tree_flatten_with_path(p_grads)[0])
  assert sorted(p_outputs) == ['aux_audio', 'aux_text', 'aux_vision', 'main']
  for name, y in outputs.items():
    assert_close_relative(p_outputs[name], y, name)
  text_real = np.asarray(jnp.concatenate([jnp.ones((4, 1), bool), masks['text']], 1))  # + CLS
  for pair in ('audio_far', 'vision_far'):
    for name, value in inter[pair].items():  # (B, 1, T_text + 1, .)
      t = value.shape[2]
      got = np.asarray(p_inter[pair][name])[:, 0, :t][text_real]
      assert_close_relative(got, np.asarray(value)[:, 0][text_real], f'{pair}/{name}')
  # Gradients of different parameters span 10 orders of magnitude (the attention key biases
  # are rounding noise around 0: softmax ignores a shift shared by all keys), so each error is
  # measured against the largest gradient of the model.
  scale = max(np.abs(g).max() for g in jax.tree.leaves(grads))
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    err = np.abs(np.asarray(p_grads_flat[path]) - np.asarray(g)).max()
    assert err <= INVARIANCE_RTOL * scale, f'{jax.tree_util.keystr(path)}: {err:.3g} vs {scale:.3g}'
  for m, g in input_grads.items():
    t = g.shape[1]
    real = np.asarray(masks[m])
    assert_close_relative(np.asarray(p_input_grads[m])[:, :t][real], np.asarray(g)[real], m)
    assert not np.any(np.asarray(p_input_grads[m])[:, :t][~real])
    assert not np.any(np.asarray(p_input_grads[m])[:, t:])


def test_padding_content_is_ignored():
  model, params = trained_like_model()
  inputs, masks = make_inputs(seed=1)
  noisy = {m: jnp.where(masks[m][..., None], x, 1e3) for m, x in inputs.items()}
  run = jax.jit(functools.partial(model.apply, train=False))
  a, _ = run({'params': params}, inputs, masks)
  b, _ = run({'params': params}, noisy, masks)
  for name, y in a.items():
    assert_close_relative(b[name], y, name)
  # The same at initialisation.
  model = tiny_model()
  a, _ = apply(model, inputs, masks)
  b, _ = apply(model, noisy, masks)
  np.testing.assert_allclose(a['main'], b['main'], atol=1e-5)


def test_each_sample_is_independent_of_the_batch():
  """The original FAR used sample 0 of the batch as reference; here outputs are per-sample.
  With trained-like parameters, so that FAR's offsets and masks depend on the reference."""
  model, params = trained_like_model()
  inputs, masks = make_inputs(batch=4, seed=2)
  run = jax.jit(functools.partial(model.apply, train=False))
  full, _ = run({'params': params}, inputs, masks)
  for i in range(4):
    single, _ = run({'params': params}, *jax.tree.map(lambda a, i=i: a[i : i + 1], (inputs, masks)))
    for name, y in full.items():
      assert_close_relative(single[name], y[i : i + 1], f'{name} of sample {i}')
  shuffled, _ = run({'params': params}, *jax.tree.map(lambda a: a[::-1], (inputs, masks)))
  for name, y in full.items():
    assert_close_relative(shuffled[name], y[::-1], name)


def test_gradients_reach_every_parameter():
  model = tiny_model(task='classification', num_classes=3, aux_heads=True)
  inputs, masks = make_inputs(seed=3)
  params = _init(model)['params']
  labels = jnp.array([0, 1, 2])

  def loss(p):
    out, _ = model.apply({'params': p}, inputs, masks, train=False)
    return sum(-jax.nn.log_softmax(y)[jnp.arange(3), labels].mean() for y in out.values())

  def dead(grads):
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert all(np.all(np.isfinite(g)) for _, g in flat)
    return sorted(jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g) != 0))

  grad_fn = jax.jit(jax.grad(loss))
  # At initialisation the offset/mask convs are zero (DCNv2), so the FAR bottleneck that feeds
  # them gets no gradient yet; everything else does.
  assert dead(grad_fn(params)) == sorted(
    f"['fgfa_{p}']['far']['bottleneck']['{w}']"
    for p in ('audio', 'vision')
    for w in ('bias', 'kernel')
  )
  # Once those convs have weights, every parameter receives a gradient.
  grads = grad_fn(_perturb_zero_init(params))
  assert dead(grads) == []
  # On a one-row time map, rows 0 and 2 of the audio FAR's 3x3 deformable kernel (dilation 2)
  # sample at h = -2 + dy and 2 + dy, outside the map for small dy: no gradient there.
  far_kernel = np.asarray(grads['fgfa_audio']['far']['kernel'])
  assert np.all(far_kernel[0] == 0) and np.all(far_kernel[2] == 0)
  assert np.any(far_kernel[1] != 0)


def test_dropout_only_in_training():
  model = tiny_model(dropout=0.5)
  inputs, masks = make_inputs()
  variables = _init(model)
  run = lambda rng: model.apply(variables, inputs, masks, train=True, rngs={'dropout': rng})[0]
  a, b = run(jax.random.key(1)), run(jax.random.key(2))
  assert not np.allclose(a['main'], b['main'])
  c = model.apply(variables, inputs, masks, train=False)[0]
  d = model.apply(variables, inputs, masks, train=False)[0]
  np.testing.assert_array_equal(c['main'], d['main'])


def test_no_fusion_ablation_has_no_fusion_params():
  model = tiny_model(use_fusion=False)
  params = _init(model)['params']
  assert not any(k.startswith('fusion_') for k in params)
  outputs, inter = apply(model, *make_inputs())
  assert outputs['main'].shape == (3,) and 'cross_attention' not in inter


def test_missing_modality_input_is_a_clear_error():
  model = tiny_model()
  inputs, masks = make_inputs(modalities=('text', 'audio'))
  with pytest.raises(ValueError, match=r"missing \['vision'\]"):
    model.init(jax.random.key(0), inputs, masks, train=False)


def _masks_from_lengths(lengths, t):
  return jnp.arange(t)[None, :] < (jnp.asarray(lengths)[:, None] + 1)  # +1: the CLS step.


def test_resample_identity_when_lengths_match():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 3)), jnp.float32)
  x_mask = _masks_from_lengths([5, 3], 6)
  out = alignment.resample_to(x, x_mask, x_mask)
  np.testing.assert_allclose(out, x * x_mask[..., None], atol=1e-6)


def test_resample_linear_interpolation_by_hand():
  # One example: CLS + 3 partner steps [0, 10, 20] stretched onto CLS + 5 reference steps:
  # source positions 0, .5, 1, 1.5, 2 -> values 0, 5, 10, 15, 20; reference padding -> 0.
  x = jnp.asarray([[[7.0], [0.0], [10.0], [20.0], [99.0]]])
  x_mask = _masks_from_lengths([3], 5)
  ref_mask = _masks_from_lengths([5], 7)
  out = alignment.resample_to(x, x_mask, ref_mask)
  np.testing.assert_allclose(out[0, :, 0], [7, 0, 5, 10, 15, 20, 0], atol=1e-5)
  # Downsampling 4 steps [0, 3, 6, 9] onto 2: positions 0 and 3 -> 0 and 9.
  x = jnp.asarray([[[1.0], [0.0], [3.0], [6.0], [9.0]]])
  out = alignment.resample_to(x, _masks_from_lengths([4], 5), _masks_from_lengths([2], 3))
  np.testing.assert_allclose(out[0, :, 0], [1, 0, 9], atol=1e-5)


@pytest.mark.parametrize('width', [3, 4])
def test_depthwise_time_conv_is_the_grouped_conv(width):
  """Same parameters (names, shapes, initial values), outputs and input gradients as nn.Conv
  (every step real)."""
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 1, 7, 6)), jnp.float32)
  real = jnp.ones((2, 7), bool)
  ours = alignment.DepthwiseTimeConv(width)
  grouped = nn.Conv(6, (1, width), feature_group_count=6)
  variables = ours.init(jax.random.key(3), x, real)
  reference = grouped.init(jax.random.key(3), x)
  jax.tree.map(np.testing.assert_array_equal, variables, reference)
  variables = jax.tree.map(lambda p: p + 0.3, variables)  # a non-zero bias too.
  np.testing.assert_allclose(ours.apply(variables, x, real), grouped.apply(variables, x), atol=1e-6)
  loss = lambda f, *m: lambda v, a: (f.apply(v, a, *m) ** 2).sum()
  got = jax.grad(loss(ours, real), argnums=(0, 1))(variables, x)
  want = jax.grad(loss(grouped), argnums=(0, 1))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


@pytest.mark.parametrize(
  'conv',
  [
    alignment.DepthwiseTimeConv(3),
    alignment.TimeConv(5, (1, 3)),
    alignment.TimeConv(5, (1, 3), kernel_dilation=(1, 2)),
  ],
  ids=['depthwise', 'time_conv', 'time_conv_dilated'],
)
def test_time_convs_read_padded_steps_as_zero(conv):
  """At the real steps, a masked time conv over a padded map equals the conv over the real
  steps alone (whose 'SAME' padding is zero past the end), whatever the padding holds."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 1, 9, 6)), jnp.float32)
  lengths = [4, 9]
  mask = jnp.arange(9)[None, :] < jnp.asarray(lengths)[:, None]
  variables = jax.tree.map(lambda p: p + 0.3, conv.init(jax.random.key(0), x, mask))
  out = conv.apply(variables, x, mask)
  for i, n in enumerate(lengths):
    alone = conv.apply(variables, x[i : i + 1, :, :n], jnp.ones((1, n), bool))
    np.testing.assert_allclose(out[i : i + 1, :, :n], alone, atol=1e-6)
