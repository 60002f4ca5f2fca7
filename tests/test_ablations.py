"""Ablation switches: each removes exactly the parameters it should; config args."""

import jax
import pytest

from configs import ablations as ablation_configs
from configs import meld
from configs import mosei
from configs import synthetic
from fasca_jax import ablations
from fasca_jax import runs
from fasca_jax import steps
from fasca_jax.models import fasca_net


def tiny(task='regression', num_classes=1, aux_heads=False):
  config = synthetic.get_config('tiny')
  config.task, config.num_classes = task, num_classes
  config.model.aux_heads = aux_heads
  config.model.num_fusion_layers = 2
  return config


def traced(config):
  """(main output shape, intermediates, parameters) of the model `config` builds, as shapes."""
  model = fasca_net.build(config)
  inputs, masks = steps.dummy_batch(config, 2)
  (out, inter), variables = jax.eval_shape(
    lambda k: model.init_with_output(k, inputs, masks, train=False), jax.random.key(0)
  )
  return out['main'].shape, inter, variables['params']


def size(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def head_rows(params, width):
  """Parameters of one head that read `width` input features: LayerNorm scale + bias and the
  rows of the hidden Dense kernel."""
  return width * (2 + params['head']['hidden']['kernel'].shape[1])


def expected_removal(config, params, variant):
  """(top-level parameter names removed, parameter count removed), read off the full tree."""
  d_align = params['fgfa_audio']['proj_text']['kernel'].shape[1]
  fusion = [k for k in params if k.startswith('fusion_')]
  if variant == 'no_fusion':
    return set(fusion), sum(size(params[k]) for k in fusion)
  if variant.startswith('no_fgfa'):
    pairs = ('audio', 'vision') if variant == 'no_fgfa' else (variant.split('_')[-1],)
    removed = {f'fgfa_{p}' for p in pairs}
    return removed, (
      sum(size(params[k]) for k in removed) + head_rows(params, d_align * len(pairs))
    )
  m = variant[len('no_') :]
  pairs = ('audio', 'vision') if m == 'text' else (m,)
  removed = {f'cls_{m}'} | {f'fgfa_{p}' for p in pairs}
  removed |= {f'aux_{m}'} if config.model.aux_heads else set()
  per_layer = [f'proj_{m}', f'cross_{m}', f'self_{m}', f'deproj_{m}']
  fusion_part = sum(size(params[k][name]) for k in fusion for name in per_layer)
  width = params[f'cls_{m}'].shape[-1] + d_align * len(pairs)
  return removed, (sum(size(params[k]) for k in removed) + fusion_part + head_rows(params, width))


@pytest.mark.parametrize(
  'task,num_classes,aux',
  [('regression', 1, False), ('classification', 7, True), ('iemocap', 2, False)],
)
def test_each_switch_removes_exactly_its_parameters(task, num_classes, aux):
  config = tiny(task, num_classes, aux)
  out_shape, _, full = traced(config)
  assert runs.count_params(config) == size(full)
  assert ablations.variants(config) == ablations.VARIANTS
  for variant in ablations.VARIANTS[1:]:
    ablated_config = ablations.apply(config, variant)
    shape, inter, ablated = traced(ablated_config)
    removed, count = expected_removal(config, full, variant)
    assert set(full) - set(ablated) == removed, variant
    assert not set(ablated) - set(full), variant
    assert size(full) - size(ablated) == count, variant
    # The ablated model still runs (traced) with the task's output shape and its intermediates.
    assert shape == out_shape
    assert ('cross_attention' in inter) == (variant != 'no_fusion')
    assert {k[: -len('_far')] for k in inter if k.endswith('_far')} == {
      k[len('fgfa_') :] for k in ablated if k.startswith('fgfa_')
    }
  assert runs.count_params(ablated_config) == size(ablated)


def test_switches_leave_the_base_config_untouched():
  config = tiny()
  before = config.to_dict()
  no_text = ablations.apply(config, 'no_text')
  assert no_text.modalities == ('audio', 'vision') and no_text.model.align_pairs == ()
  assert ablations.apply(config, 'no_vision').model.align_pairs == ('audio',)
  assert ablations.apply(config, 'no_fgfa_audio').model.align_pairs == ('vision',)
  assert config.to_dict() == before


def test_inapplicable_and_unknown_variants_are_refused():
  text_only = meld.get_config('text')
  assert ablations.variants(text_only) == ('full', 'no_fusion')
  with pytest.raises(ValueError, match=r"no_audio: needs 'audio' among at least two"):
    ablations.apply(text_only, 'no_audio')
  with pytest.raises(ValueError, match='no_fgfa: the config aligns no pair'):
    ablations.apply(text_only, 'no_fgfa')
  with pytest.raises(ValueError, match=r"unknown ablation 'no_head'"):
    ablations.apply(text_only, 'no_head')


def test_ablations_config_file_args():
  config = ablation_configs.get_config('synthetic:tiny,no_fgfa_vision')
  assert config.dataset.config == 'tiny' and config.model.align_pairs == ('audio',)
  config = ablation_configs.get_config('meld:multimodal,no_audio')
  assert config.modalities == ('text', 'vision') and config.dims.audio == 46
  assert ablation_configs.get_config('mosei:unaligned,full') == mosei.get_config('unaligned')
  with pytest.raises(ValueError, match='needs the arg'):
    ablation_configs.get_config('synthetic')
  with pytest.raises(ValueError, match='no dataset config configs/nope.py'):
    ablation_configs.get_config('nope,full')
