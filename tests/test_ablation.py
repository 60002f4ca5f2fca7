"""Ablation switches: each removes exactly the parameters it should; config args; the runner."""

import json
import os

import jax
import numpy as np
import pytest

from configs import ablations as ablation_configs
from configs import meld
from configs import mosei
from configs import synthetic
from fasca_jax import ablation
from fasca_jax import config_io
from fasca_jax import input_pipeline
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
      lambda k: model.init_with_output(k, inputs, masks, train=False), jax.random.key(0))
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
    return removed, (sum(size(params[k]) for k in removed)
                     + head_rows(params, d_align * len(pairs)))
  m = variant[len('no_'):]
  pairs = ('audio', 'vision') if m == 'text' else (m,)
  removed = {f'cls_{m}'} | {f'fgfa_{p}' for p in pairs}
  removed |= {f'aux_{m}'} if config.model.aux_heads else set()
  per_layer = [f'proj_{m}', f'cross_{m}', f'self_{m}', f'deproj_{m}']
  fusion_part = sum(size(params[k][name]) for k in fusion for name in per_layer)
  width = params[f'cls_{m}'].shape[-1] + d_align * len(pairs)
  return removed, (sum(size(params[k]) for k in removed) + fusion_part
                   + head_rows(params, width))


@pytest.mark.parametrize('task,num_classes,aux', [
    ('regression', 1, False), ('classification', 7, True), ('iemocap', 2, False)])
def test_each_switch_removes_exactly_its_parameters(task, num_classes, aux):
  config = tiny(task, num_classes, aux)
  out_shape, _, full = traced(config)
  assert ablation.count_params(config) == size(full)
  assert ablation.variants(config) == ablation.VARIANTS
  for variant in ablation.VARIANTS[1:]:
    ablated_config = ablation.apply(config, variant)
    shape, inter, ablated = traced(ablated_config)
    removed, count = expected_removal(config, full, variant)
    assert set(full) - set(ablated) == removed, variant
    assert not set(ablated) - set(full), variant
    assert size(full) - size(ablated) == count, variant
    # The ablated model still runs (traced) with the task's output shape and its intermediates.
    assert shape == out_shape
    assert ('cross_attention' in inter) == (variant != 'no_fusion')
    assert ({k[:-len('_far')] for k in inter if k.endswith('_far')}
            == {k[len('fgfa_'):] for k in ablated if k.startswith('fgfa_')})
  assert ablation.count_params(ablated_config) == size(ablated)


def test_switches_leave_the_base_config_untouched():
  config = tiny()
  before = config.to_dict()
  no_text = ablation.apply(config, 'no_text')
  assert no_text.modalities == ('audio', 'vision') and no_text.model.align_pairs == ()
  assert ablation.apply(config, 'no_vision').model.align_pairs == ('audio',)
  assert ablation.apply(config, 'no_fgfa_audio').model.align_pairs == ('vision',)
  assert config.to_dict() == before


def test_inapplicable_and_unknown_variants_are_refused():
  text_only = meld.get_config('text')
  assert ablation.variants(text_only) == ('full', 'no_fusion')
  with pytest.raises(ValueError, match=r"no_audio: needs 'audio' among at least two"):
    ablation.apply(text_only, 'no_audio')
  with pytest.raises(ValueError, match='no_fgfa: the config aligns no pair'):
    ablation.apply(text_only, 'no_fgfa')
  with pytest.raises(ValueError, match=r"unknown ablation 'no_head'"):
    ablation.apply(text_only, 'no_head')


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


def test_table_lists_params_and_every_test_metric():
  table = {'full': {'params': 12345, 'test': {'loss': 0.5, 'MAE': 0.25}},
           'no_fusion': {'params': 999, 'test': {'loss': 0.75}}}
  assert ablation.format_table(table).splitlines() == [
      '| variant | params | test loss | test MAE |',
      '|---|---:|---:|---:|',
      '| full | 12,345 | 0.5000 | 0.2500 |',
      '| no_fusion | 999 | 0.7500 | - |']


def test_run_trains_missing_variants_and_reuses_finished_ones(tmp_path):
  """Runs the real tiny training for one variant; a variant with results.json is reused."""
  config = tiny()
  config.data_dir = str(tmp_path / 'tfds')
  config.num_epochs = 1
  reused = {'valid': {'loss': 1.0}, 'test': {'loss': 2.0, 'MAE': 3.0}}
  os.makedirs(tmp_path / 'runs' / 'full')
  with open(tmp_path / 'runs' / 'full' / 'results.json', 'w') as f:
    json.dump(reused, f)
  table = ablation.run(config, str(tmp_path / 'runs'), ['full', 'no_fusion'])
  assert table['full'] == {'params': ablation.count_params(config), **reused}
  with open(tmp_path / 'runs' / 'no_fusion' / 'results.json') as f:
    trained = json.load(f)
  assert table['no_fusion']['test'] == trained['test'] and np.isfinite(trained['test']['MAE'])
  assert table['no_fusion']['params'] < table['full']['params']
  with open(tmp_path / 'runs' / ablation.JSON_FILE) as f:
    assert json.load(f) == table
  with open(tmp_path / 'runs' / ablation.TABLE_FILE) as f:
    assert f.read() == ablation.format_table(table) + '\n'
  # A dropped modality is not read from the data at all.
  no_audio = ablation.apply(config, 'no_audio')
  batch = next(iter(input_pipeline.make_batches(no_audio, 'validation', train=False,
                                                global_batch_size=16, seed=0)))
  assert {'text', 'vision'} <= set(batch) and not any(k.startswith('audio') for k in batch)
  saved = config_io.load(str(tmp_path / 'runs' / 'no_fusion'))
  assert saved.to_dict() == ablation.apply(config, 'no_fusion').to_dict()
  assert not saved.model.use_fusion
