"""workdir/config.json: every shipped config round-trips exactly (values, types, tuples)."""

import pytest

from configs import ablations, default, iemocap, meld, mosei, mosi, synthetic
from configs import sentiment_data
from fasca_jax import config_io

CONFIGS = (
  [
    ('default', default.get_config()),
    ('synthetic', synthetic.get_config()),
    ('synthetic:tiny', synthetic.get_config('tiny')),
    ('meld:text', meld.get_config('text')),
    ('meld:multimodal', meld.get_config('multimodal')),
    ('iemocap', iemocap.get_config()),
    ('ablation', ablations.get_config('synthetic:tiny,no_vision')),
  ]
  + [(f'mosi:{a}', mosi.get_config(a)) for a in sentiment_data.SOURCES]
  + [
    (f'mosei:{a}', mosei.get_config(a))
    for a in sentiment_data.SOURCES
    if 'mosei' in sentiment_data.SOURCES[a][1]
  ]
)


def assert_same(a, b, path='config'):
  """Equal values of identical types, recursively (so 1 vs 1.0 or (1,) vs [1] fail)."""
  assert type(a) is type(b), f'{path}: {type(a).__name__} != {type(b).__name__}'
  if isinstance(a, dict):
    assert a.keys() == b.keys(), path
    for k in a:
      assert_same(a[k], b[k], f'{path}.{k}')
  elif isinstance(a, tuple):
    assert len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      assert_same(x, y, f'{path}[{i}]')
  else:
    assert a == b, path


@pytest.mark.parametrize('name,config', CONFIGS, ids=[n for n, _ in CONFIGS])
def test_config_round_trips(name, config, tmp_path):
  del name
  config.lock()
  config_io.save(config, str(tmp_path))
  loaded = config_io.load(str(tmp_path))
  assert_same(loaded.to_dict(), config.to_dict())
  assert loaded == config and loaded.is_locked
  assert isinstance(loaded.model.far_kernel, tuple) and isinstance(loaded.modalities, tuple)


def test_missing_config_names_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/config.json not found'):
    config_io.load(str(tmp_path))
