"""benchmarks/train_step.py without the timing: case selection, the MOSEI-shaped dataset behind
the input-pipeline rate."""

import numpy as np
import pytest

from benchmarks import train_step
from fasca_jax import input_pipeline


def test_case_selection():
  assert train_step.parse_args(['--quick']).pairs == [
    ('aligned', 32),
    ('aligned', 128),
    ('unaligned', 32),
  ]
  assert train_step.parse_args([]).pairs == [
    ('aligned', 32),
    ('aligned', 128),
    ('unaligned', 32),
    ('unaligned', 128),
  ]
  args = train_step.parse_args(['--quick', '--cases=unaligned', '--batch_sizes=8,16'])
  assert args.pairs == [('unaligned', 8), ('unaligned', 16)] and args.rounds == 2
  with pytest.raises(SystemExit):
    train_step.parse_args(['--cases=aligned,misaligned'])


def test_case_configs_have_mosei_shapes():
  for case, lengths in (('aligned', (50, 50, 50)), ('unaligned', (50, 500, 500))):
    config = train_step.case_config(case, 32)
    assert (config.dims.text, config.dims.audio, config.dims.vision) == (768, 74, 35)
    assert (config.max_len.text, config.max_len.audio, config.max_len.vision) == lengths
    batch = train_step.random_batch(config, 3)
    assert batch['audio'].shape == (3, lengths[1], 74)
    assert batch['audio_mask'].shape == (3, lengths[1])
    assert batch['text_mask'].any(1).all() and not batch['audio_mask'].all()
  config = train_step.case_config('aligned', 32, 'minilm')
  assert config.dims.text == 384 and config.model.text_encoder == 'minilm'
  batch = train_step.random_batch(config, 3)
  assert 'text' not in batch and batch['text_ids'].shape == batch['text_segments'].shape == (3, 50)
  assert (batch['text_ids'][~batch['text_mask']] == 0).all()
  assert (batch['text_ids'][batch['text_mask']] >= 1000).all() and batch['text_ids'].max() < 30522
  assert train_step.parse_args(['--quick', '--text_encoder=minilm']).text_encoder == 'minilm'


def test_pipeline_dataset_is_mosei_shaped(tmp_path, monkeypatch):
  """The pickle goes through the real cmu_mosei builder; make_batches reads MOSEI-shaped rows."""
  monkeypatch.setattr(train_step, 'PIPELINE_EXAMPLES', {'train': 6, 'valid': 2, 'test': 2})
  monkeypatch.setattr(train_step, 'PIPELINE_BATCH', 4)
  args = train_step.parse_args(['--quick', f'--data_dir={tmp_path}'])
  rate = train_step.pipeline_rate('unaligned', args, print)
  assert rate > 0
  config = train_step.case_config('unaligned', 4)
  config.data_dir = str(tmp_path / 'tfds')
  dataset = input_pipeline.open_dataset(config)
  assert dataset.num_examples('train') == 6
  batch = next(
    input_pipeline.make_batches(
      dataset, 'train', train=True, global_batch_size=4, seed=0, process_index=0, process_count=1
    )
  )
  assert batch['text'].shape == (4, 50, 768) and batch['vision'].shape == (4, 500, 35)
  lengths = batch['audio_mask'].sum(1)
  assert np.all((lengths >= 100) & (lengths <= 500)) and np.all(batch['audio_len'] == lengths)


def test_flops_fall_back_to_the_compiled_step_when_the_lowered_one_has_none():
  """JAX on CUDA returns no cost analysis for a lowered program (only for the compiled one);
  on the CPU both count the same matmul."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  lowered = jax.jit(lambda a: a @ a).lower(jnp.ones((64, 64), jnp.float32))
  assert train_step.flops_of(lowered) == pytest.approx(2 * 64**3, rel=0.05)

  class CudaLike:  # the lowered program as JAX 0.11.2 gives it on CUDA.
    def cost_analysis(self):
      return None

    def compile(self):
      return lowered.compile()

  assert train_step.flops_of(CudaLike()) == pytest.approx(2 * 64**3, rel=0.05)


def test_end_to_end_case_selection():
  from benchmarks import end_to_end  # pylint: disable=g-import-not-at-top

  quick = end_to_end.parse_args(['--quick'])
  assert [c[0] for c in quick.plan] == ['tiny', 'mosei_aligned_b32']
  assert 'device' in quick.plan[0][3] and 'device' in quick.plan[1][3]
  full = end_to_end.parse_args([])
  assert {c[0] for c in full.plan} >= {'mosei_unaligned_b128', 'mosei_aligned_b32', 'tiny'}
  assert end_to_end.parse_args(['--cases=mosei_unaligned_b32']).plan[0][3] == (
    'device',
    'host',
    'stream',
  )
  with pytest.raises(SystemExit):
    end_to_end.parse_args(['--cases=mosei_b32'])


def test_seeds_benchmark_case_selection():
  from benchmarks import seeds  # pylint: disable=g-import-not-at-top

  quick = seeds.parse_args(['--quick'])
  assert (quick.batch_size, quick.epochs) == (8, 2)
  assert quick.seed_list == (1111, 1112, 1113, 1114, 1115)
  assert quick.examples['train'] // quick.batch_size == 4
  full = seeds.parse_args(['--seeds=3'])
  assert (full.batch_size, full.seed_list) == (32, (1111, 1112, 1113))
  assert full.examples['train'] == 2048
  with pytest.raises(SystemExit):
    seeds.parse_args(['--seeds=1'])


def test_seeds_benchmark_table_ratios_are_per_framework(capsys):
  from benchmarks import seeds  # pylint: disable=g-import-not-at-top

  args = seeds.parse_args(['--quick'])
  row = lambda wall, compile_s: {'wall_s': wall, 'compile_s': compile_s, 'run_s': wall - compile_s}
  seeds.print_table(
    [
      ('jax 1 seed', row(30.0, 20.0)),
      ('jax 5 seq', row(70.0, 20.0)),
      ('jax 5 parallel', row(45.0, 30.0)),
      ('torch 1 seed', row(8.0, 0.0)),
      ('torch 5 seq', row(40.0, 0.0)),
    ],
    args,
  )
  lines = {
    line.split('  ')[0].strip(): line.split() for line in capsys.readouterr().out.splitlines()
  }
  assert lines['jax 5 seq'][-1] == '5.00'  # run s 50 over the one seed's 10.
  assert lines['jax 5 parallel'][-1] == '1.50'
  assert lines['torch 5 seq'][-1] == '5.00'
