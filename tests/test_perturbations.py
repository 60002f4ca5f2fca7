"""The perturbations of a batch (robustness evaluation) and modality dropout (training): spec
parsing and its errors; each perturbation deterministic for a seed and independent of batch
composition, touching only its modality, keeping masks consistent, the identity at intensity 0;
what each one does to the numbers; modality dropout inside the jitted train step."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from fasca_jax import perturbations
from fasca_jax import steps

L = {'text': 8, 'audio': 14, 'vision': 11}
D = {'text': 5, 'audio': 3, 'vision': 4}
SCALES = {m: np.linspace(0.5, 2.0, d).astype(np.float32) for m, d in D.items()}
SPECS = (
  'missing:audio=0,0.5,1',
  'drop_steps:audio=0,0.3,1',
  'noise:audio=inf,10,0',
  'shift:audio=-3,0,2,20',
  'missing:text+vision=0,0.6',
  'drop_steps:vision=0,0.5',
  'noise:text=inf,3',
  'shift:vision=0,-1,5',
)


def make_batch(batch_size=12, seed=0, padding_rows=2, first_index=0):
  """A host batch in the input pipeline's layout: prefix masks of random lengths (some longer
  than L_m, i.e. cropped), zero features on padded steps, the last rows padding."""
  rng = np.random.default_rng(seed)
  batch = {}
  real = batch_size - padding_rows
  for m in L:
    lengths = rng.integers(0, L[m] + 4, batch_size).astype(np.int32)
    lengths[real:] = 0
    mask = np.arange(L[m])[None] < np.minimum(lengths, L[m])[:, None]
    batch[m] = (rng.standard_normal((batch_size, L[m], D[m])) * mask[..., None]).astype(np.float32)
    batch[f'{m}_mask'] = mask
    batch[f'{m}_len'] = lengths
  batch['regression'] = rng.uniform(-3, 3, batch_size).astype(np.float32)
  batch['index'] = np.where(
    np.arange(batch_size) < real, first_index + np.arange(batch_size), -1
  ).astype(np.int32)
  batch['valid'] = np.arange(batch_size) < real
  batch['id'] = np.array([f'x{i}' if i >= 0 else '' for i in batch['index']])
  return batch


def perturbed(batch, spec, intensity, seed=0):
  return perturbations.apply(batch, perturbations.parse(spec), intensity, seed=seed, scales=SCALES)


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a[k].dtype == b[k].dtype, k


# --- the spec ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
  'spec,kind,modalities,intensities',
  [
    ('shift:audio=4,-4,0', 'shift', ('audio',), (-4.0, 0.0, 4.0)),
    ('noise:audio+vision=0,inf,10', 'noise', ('audio', 'vision'), (math.inf, 10.0, 0.0)),
    (' missing : vision ', 'missing', ('vision',), (0.0, 0.25, 0.5, 0.75, 1.0)),
    ('drop_steps:text=0.5, 0', 'drop_steps', ('text',), (0.0, 0.5)),
    ('noise:audio', 'noise', ('audio',), (math.inf, 20.0, 10.0, 5.0, 0.0)),
  ],
)
def test_parse(spec, kind, modalities, intensities):
  p = perturbations.parse(spec)
  assert (p.kind, p.modalities, p.intensities) == (kind, modalities, intensities)
  assert perturbations.parse(p.spec) == p  # the canonical spec reads back.
  assert [p.is_identity(v) for v in p.intensities].count(True) == (
    perturbations.IDENTITY[kind] in intensities
  )


@pytest.mark.parametrize(
  'spec,problem',
  [
    ('blur:audio', "unknown perturbation 'blur'"),
    ('shift', 'shift needs a modality'),
    ('shift:=1', 'shift needs a modality'),
    ('missing:smell', "unknown modality 'smell'"),
    ('missing:audio+audio', 'listed twice'),
    ('shift:text=1', 'cannot shift text'),
    ('shift:audio+text=1', 'cannot shift text'),
    ('missing:audio=1.5', r'probabilities in \[0, 1\], got 1.5'),
    ('drop_steps:audio=-0.1', r'probabilities in \[0, 1\]'),
    ('shift:audio=0.5', 'whole numbers of steps, got 0.5'),
    ('noise:audio=abc', "'abc' is not a number"),
    ('noise:audio=nan', 'nan is not an intensity'),
    ('noise:audio=-inf', 'got -inf'),
    ('missing:audio=', 'empty intensity'),
    ('missing:audio=0,,1', 'empty intensity'),
    ('missing:audio=0,0.0', 'an intensity is listed twice'),
  ],
)
def test_bad_spec_is_a_clear_error(spec, problem):
  with pytest.raises(ValueError, match=problem) as e:
    perturbations.parse(spec)
  assert f'--perturb={spec!r}' in str(e.value) and 'KIND:MODALITY' in str(e.value)


def test_the_same_perturbation_twice_is_refused_and_absent_modalities_are_named():
  with pytest.raises(ValueError, match='shift:audio is given twice'):
    perturbations.parse_all(['shift:audio=1', 'noise:audio', 'shift:audio=2'])
  parsed = perturbations.parse_all(['shift:audio=1', 'missing:vision'])
  with pytest.raises(ValueError, match="read no 'vision'"):
    perturbations.check_modalities(parsed, ['text', 'audio'])


# --- acceptance properties of every perturbation -----------------------------------------------
@pytest.mark.parametrize('spec', SPECS)
def test_perturbation_is_deterministic_for_a_seed(spec):
  batch = make_batch()
  p = perturbations.parse(spec)
  for v in p.intensities:
    assert_batches_equal(perturbed(batch, spec, v, seed=3), perturbed(batch, spec, v, seed=3))
  if p.kind != 'shift':  # shift draws nothing; the others draw from the seed.
    v = p.intensities[1]
    a, b = perturbed(batch, spec, v, seed=3), perturbed(batch, spec, v, seed=4)
    assert any(not np.array_equal(a[m], b[m]) for m in p.modalities)


@pytest.mark.parametrize('spec', SPECS)
def test_an_example_is_perturbed_the_same_whatever_batch_holds_it(spec):
  """Draws depend on (seed, example index), not on the batch size, composition or order."""
  whole = make_batch(batch_size=12, padding_rows=0)
  order = np.random.default_rng(1).permutation(12)
  p = perturbations.parse(spec)
  for v in p.intensities:
    a = perturbed(whole, spec, v)
    halves = [
      perturbed({k: x[order[i : i + 6]] for k, x in whole.items()}, spec, v) for i in (0, 6)
    ]
    b = {k: np.concatenate([h[k] for h in halves]) for k in a}
    assert_batches_equal({k: x[order] for k, x in a.items()}, b)


@pytest.mark.parametrize('spec', SPECS)
def test_perturbation_touches_only_its_modalities_and_keeps_masks_consistent(spec):
  batch = make_batch()
  before = {k: v.copy() for k, v in batch.items()}
  p = perturbations.parse(spec)
  for v in p.intensities:
    out = perturbed(batch, spec, v)
    assert_batches_equal(batch, before)  # the input is not modified.
    assert out.keys() == batch.keys()
    for k in batch:
      assert out[k].shape == batch[k].shape and out[k].dtype == batch[k].dtype, k
      if k.split('_')[0] not in p.modalities:
        np.testing.assert_array_equal(out[k], batch[k], err_msg=k)
    padding = ~batch['valid']
    for m in L:
      x, mask, length = out[m], out[f'{m}_mask'], out[f'{m}_len']
      assert (mask == (np.arange(L[m])[None] < mask.sum(-1)[:, None])).all()  # a prefix
      assert (mask == (np.arange(L[m])[None] < np.minimum(length, L[m])[:, None])).all()
      assert (x[~mask] == 0).all()  # features exactly 0 off the mask
      np.testing.assert_array_equal(x[padding], batch[m][padding])  # padding rows untouched


@pytest.mark.parametrize('spec', SPECS)
def test_perturbation_is_the_identity_at_intensity_zero(spec):
  batch = make_batch()
  p = perturbations.parse(spec)
  assert perturbations.IDENTITY[p.kind] in p.intensities
  assert_batches_equal(perturbed(batch, spec, perturbations.IDENTITY[p.kind]), batch)


# --- what each one does ------------------------------------------------------------------------
def test_missing_zeroes_a_nested_fraction_of_examples():
  batch = make_batch(batch_size=400, padding_rows=0)
  gone = {}
  for p in (0.0, 0.25, 0.5, 1.0):
    out = perturbed(batch, 'missing:audio', p)
    gone[p] = ~out['audio_mask'].any(-1) & batch['audio_mask'].any(-1)
    np.testing.assert_array_equal(out['audio'][gone[p]], 0)
    np.testing.assert_array_equal(out['audio_len'][gone[p]], 0)
    kept = ~gone[p]
    np.testing.assert_array_equal(out['audio'][kept], batch['audio'][kept])
  real = batch['audio_mask'].any(-1)
  assert gone[1.0].sum() == real.sum() and gone[0.0].sum() == 0
  assert abs(gone[0.5].sum() / real.sum() - 0.5) < 0.1
  assert (gone[0.25] <= gone[0.5]).all()  # common random numbers: nested sets


def test_drop_steps_removes_steps_and_closes_up_in_order():
  batch = make_batch(batch_size=200, padding_rows=0)
  out = perturbed(batch, 'drop_steps:audio', 0.4)
  n_before, n_after = batch['audio_mask'].sum(-1), out['audio_mask'].sum(-1)
  assert abs(1 - n_after.sum() / n_before.sum() - 0.4) < 0.05
  for i in range(200):
    kept, original = out['audio'][i, : n_after[i]], batch['audio'][i, : n_before[i]]
    rows = [np.flatnonzero((original == step).all(-1))[0] for step in kept]
    assert rows == sorted(set(rows))  # a subsequence of the original steps, order kept
  assert not perturbed(batch, 'drop_steps:audio', 1.0)['audio_mask'].any()


def test_noise_has_the_requested_snr_against_the_training_scale():
  batch = make_batch(batch_size=300, padding_rows=0)
  mask = batch['audio_mask']
  noise = {snr: perturbed(batch, 'noise:audio', snr)['audio'] - batch['audio'] for snr in (0, 20)}
  ratio = noise[0][mask].std(0) / SCALES['audio']  # (D,): 1 at 0 dB
  np.testing.assert_allclose(ratio, 1.0, atol=0.05)
  np.testing.assert_allclose(noise[20] * 10, noise[0], rtol=1e-4, atol=1e-5)  # same draw
  assert (noise[0][~mask] == 0).all()  # padded steps stay zero
  with pytest.raises(ValueError, match='scale'):
    perturbations.apply(batch, perturbations.parse('noise:audio'), 10.0, seed=0)


@pytest.mark.parametrize('k', [2, -3, 0, 50])
def test_shift_moves_the_stream_by_k_steps_and_keeps_its_length(k):
  batch = make_batch(padding_rows=0)
  out = perturbed(batch, f'shift:vision={k}', k)
  np.testing.assert_array_equal(out['vision_mask'], batch['vision_mask'])
  for i, n in enumerate(batch['vision_mask'].sum(-1)):
    x, y = batch['vision'][i], out['vision'][i]
    for t in range(n):
      expected = x[t - k] if 0 <= t - k < n else np.zeros_like(x[0])
      np.testing.assert_array_equal(y[t], expected)


# --- modality dropout (training) ---------------------------------------------------------------
def test_modality_dropout_rates_from_the_config():
  config = synthetic.get_config('tiny')
  assert perturbations.dropout_rates(config) == {}  # off by default
  config.modality_dropout.audio = 0.3
  config.modality_dropout.text = 0.0
  assert perturbations.dropout_rates(config) == {'audio': 0.3}
  config.modalities = ('text', 'vision')  # e.g. the no_audio ablation of a config using it
  assert perturbations.dropout_rates(config) == {}
  config.modality_dropout.vision = 1.5
  with pytest.raises(ValueError, match=r'config.modality_dropout.vision=1.5'):
    perturbations.dropout_rates(config)


def test_drop_modalities_drops_whole_modalities_per_example():
  host = make_batch(batch_size=256, padding_rows=0)
  batch = {k: jnp.asarray(v) for k, v in host.items() if k != 'id'}
  key = jax.random.key(7)
  out = perturbations.drop_modalities(batch, {'audio': 0.5, 'vision': 1.0}, key)
  again = perturbations.drop_modalities(batch, {'audio': 0.5, 'vision': 1.0}, key)
  other = perturbations.drop_modalities(batch, {'audio': 0.5, 'vision': 1.0}, jax.random.key(8))
  np.testing.assert_array_equal(out['audio_mask'], again['audio_mask'])
  assert not np.array_equal(out['audio_mask'], other['audio_mask'])
  dropped = ~np.asarray(out['audio_mask']).any(-1) & np.asarray(batch['audio_mask']).any(-1)
  assert 0.35 < dropped.mean() < 0.65
  np.testing.assert_array_equal(np.asarray(out['audio'])[dropped], 0)
  np.testing.assert_array_equal(np.asarray(out['audio'])[~dropped], batch['audio'][~dropped])
  assert not np.asarray(out['vision_mask']).any() and not np.asarray(out['vision']).any()
  for k in ('text', 'text_mask', 'regression', 'index', 'valid'):
    np.testing.assert_array_equal(out[k], batch[k])


def test_modality_dropout_inside_the_train_step_equals_training_on_the_dropped_batch():
  """modality_dropout.audio=1 drops audio inside the jitted step: the same update as a step
  without it on a batch whose audio was removed beforehand (dropout off, so that the two steps'
  keys do not matter), and not the update of the plain batch."""
  config = synthetic.get_config('tiny')
  config.model.dropout = 0.0
  config.modalities, config.model.align_pairs = ('text', 'audio'), ()  # compiles faster
  dims = {'text': 768, 'audio': 74, 'vision': 35}
  rng = np.random.default_rng(0)
  batch = {
    'regression': rng.uniform(-3, 3, 4).astype(np.float32),
    'index': np.arange(4, dtype=np.int32),
    'valid': np.ones(4, bool),
  }
  for m in config.modalities:
    n = config.max_len[m]
    mask = np.arange(n)[None] < rng.integers(1, n + 1, 4)[:, None]
    batch[m] = (rng.standard_normal((4, n, dims[m])) * mask[..., None]).astype(np.float32)
    batch[f'{m}_mask'] = mask
  removed = dict(
    batch, audio=np.zeros_like(batch['audio']), audio_mask=np.zeros_like(batch['audio_mask'])
  )
  results = {}
  for name, rate, data in (
    ('plain', 0.0, batch),
    ('removed', 0.0, removed),
    ('dropped', 1.0, batch),
  ):
    config.modality_dropout.audio = rate
    if name != 'removed':  # 'removed' reuses the steps compiled for 'plain'.
      jitted = steps.JittedSteps(config, steps.make_optimizer(config, 10, 5))
    state, scalars = jitted.train(jitted.init(config.seed), data)
    results[name] = jax.device_get(state.params), float(scalars['loss'])
  assert results['dropped'][1] == results['removed'][1] != results['plain'][1]
  jax.tree.map(np.testing.assert_array_equal, results['dropped'][0], results['removed'][0])
