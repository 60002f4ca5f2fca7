"""Alignment plots: sampled positions against the deformable op itself, PNGs of one example."""

import os
import re
import subprocess
import sys

import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from conftest import save_initial_run
from configs import synthetic
from fasca_jax import alignment_plots
from fasca_jax import config_io
from fasca_jax import restored_run
from fasca_jax import input_pipeline
from fasca_jax.ops import deform_conv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('dilation', [1, 2])
def test_sampling_positions_match_the_deformable_conv(dilation):
  """Per tap, the op applied to a ramp and to ones gives weight*position and weight."""
  t, kh, kw = 7, 3, 3
  rng = np.random.default_rng(dilation)
  offsets = rng.uniform(-1.5, 1.5, size=(t, 2 * kh * kw)).astype(np.float32)
  offsets[:, 0::2][:, 3:6] *= 0.5  # middle-row taps: |dy| < 1, so they keep some weight
  mask = rng.uniform(0.2, 1.0, size=(t, kh * kw)).astype(np.float32)
  positions, weights, base = alignment_plots.sampling_positions(offsets, mask, (kh, kw), dilation)
  np.testing.assert_allclose(positions - base, offsets[:, 1::2], atol=1e-6)
  x = np.stack([np.arange(t, dtype=np.float32), np.ones(t, np.float32)], -1)  # ramp, ones
  inside = (positions >= 0) & (positions <= t - 1)  # no blending with the zero border
  assert inside[weights > 0].sum() > 20
  for k in range(kh * kw):
    kernel = np.zeros((kh, kw, 2, 2), np.float32)
    kernel[k // kw, k % kw] = np.eye(2)
    out = deform_conv.deform_conv2d(
      jnp.asarray(x[None, None]),
      jnp.asarray(offsets[None, None]),
      jnp.asarray(mask[None, None]),
      jnp.asarray(kernel),
      padding=(dilation * (kh - 1) // 2, dilation * (kw - 1) // 2),
      dilation=dilation,
    )[0, 0]  # (T, 2)
    ok = inside[:, k]
    np.testing.assert_allclose(out[ok, 1], weights[ok, k], atol=1e-5)
    np.testing.assert_allclose(out[ok, 0], weights[ok, k] * positions[ok, k], atol=1e-4)
  assert np.all(weights[:, [0, 1, 2, 6, 7, 8]] <= mask[:, [0, 1, 2, 6, 7, 8]])


def _assert_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE, path
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  assert image[..., :3].std() > 0.05  # not blank


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  config = synthetic.get_config('tiny')
  config.data_dir = str(tmp_path_factory.mktemp('tfds'))
  workdir = str(tmp_path_factory.mktemp('run'))
  save_initial_run(config, workdir, perturb=0.05)
  return workdir


def test_plots_of_one_example(run_dir):
  paths = alignment_plots.write_plots(run_dir, 'test_00003', split='test')
  out = os.path.join(run_dir, 'alignment', 'test_00003')
  assert sorted(paths) == sorted(
    os.path.join(out, name)
    for name in (
      'audio_sampling.png',
      'vision_sampling.png',
      'cross_attention_text.png',
      'cross_attention_audio.png',
      'cross_attention_vision.png',
    )
  )
  for path in paths:
    _assert_png(path)
  batch = restored_run.RestoredRun(run_dir).find('test', 'test_00003')
  source = input_pipeline.get_builder(config_io.load(run_dir)).as_data_source('test')
  record = next(r for r in source if r['id'] == b'test_00003')
  length = min(len(record['text']), batch['text'].shape[1])
  assert batch['id'][0] == 'test_00003' and batch['text_mask'][0].sum() == length
  np.testing.assert_array_equal(batch['text'][0, :length], record['text'])


def test_unknown_id_names_split_and_valid_ids(run_dir):
  result = subprocess.run(
    [sys.executable, 'visualize.py', f'--workdir={run_dir}', '--id=nope', '--split=valid'],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 1
  assert "id 'nope' not found in split 'valid' of synthetic_affect/tiny" in result.stderr, (
    result.stderr
  )
  listed = re.search(r'\(32 examples\); e\.g\. (.*)$', result.stderr).group(1).split(', ')
  valid_ids = {
    r['id'].decode()
    for r in input_pipeline.get_builder(config_io.load(run_dir)).as_data_source('validation')
  }
  assert len(listed) == 5 and set(listed) <= valid_ids
