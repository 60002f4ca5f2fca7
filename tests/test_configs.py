"""Every dataset config selects its builder, widths, lengths and task head."""

import pytest

from configs import iemocap
from configs import meld
from configs import mosei
from configs import mosi
from fasca_jax import tasks
from fasca_jax.models import fasca_net


@pytest.mark.parametrize(
  'module,arg,builder,dims,lens',
  [
    (mosi, None, ('cmu_mosi', 'mmsa_aligned'), (768, 5, 20), (50, 50, 50)),
    (mosi, 'unaligned', ('cmu_mosi', 'mmsa_unaligned'), (768, 5, 20), (50, 375, 500)),
    (mosi, 'mult_aligned', ('cmu_mosi', 'mult_aligned'), (300, 74, 47), (50, 50, 50)),
    (mosi, 'csd', ('cmu_mosi', 'csd'), (300, 74, 35), (50, 50, 50)),
    (mosei, 'unaligned', ('cmu_mosei', 'mmsa_unaligned'), (768, 74, 35), (50, 500, 500)),
    (mosei, 'mult_unaligned', ('cmu_mosei', 'mult_unaligned'), (300, 74, 35), (50, 500, 500)),
    (iemocap, None, ('iemocap', 'mult_aligned'), (300, 74, 35), (20, 20, 20)),
  ],
)
def test_sentiment_and_iemocap_configs(module, arg, builder, dims, lens):
  c = module.get_config(arg)
  assert (c.dataset.name, c.dataset.config) == builder
  assert tuple(c.dims[m] for m in ('text', 'audio', 'vision')) == dims
  assert tuple(c.max_len[m] for m in ('text', 'audio', 'vision')) == lens
  model = fasca_net.build(c)
  expected_units = 8 if module is iemocap else 1
  assert tasks.get_task(model.task, model.num_classes).output_units == expected_units


def test_mosei_emotions_config():
  c = mosei.get_config('csd_emotions')
  assert (c.dataset.name, c.dataset.config) == ('cmu_mosei', 'csd')
  assert (c.task, c.num_classes, c.target_key) == ('mosei_emotions', 6, 'emotions')
  assert (c.dims.text, c.dims.audio, c.dims.vision) == (300, 74, 35)
  task = tasks.from_config(c)
  assert task.output_units == 6 and task.class_names[0] == 'happy'
  assert task.key_metrics == ('Mean_WA', 'Mean_F1')
  model = fasca_net.build(c)
  assert tasks.get_task(model.task, model.num_classes).output_units == 6


def test_meld_configs():
  text = meld.get_config('text')
  assert (text.dataset.name, text.dataset.config, text.modalities) == ('meld', 'text', ('text',))
  assert (text.task, text.num_classes, text.target_key) == ('classification', 7, 'label')
  assert text.dims.text == 384
  assert meld.get_config('multimodal').modalities == ('text', 'audio', 'vision')


@pytest.mark.parametrize('module,arg', [(mosi, 'bogus'), (iemocap, 'csd'), (meld, 'audio')])
def test_unknown_config_arg_is_a_clear_error(module, arg):
  with pytest.raises(ValueError, match=f'unknown .*{arg!r}'):
    module.get_config(arg)
