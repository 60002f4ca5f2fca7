"""The runner of many named runs: seed configs, the one notion of a finished run, and the
ablation runner training a variant and reusing another."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from configs import synthetic
from fasca_jax import ablations
from fasca_jax import checkpoints
from fasca_jax import config_io
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import runs
from fasca_jax import steps
from fasca_jax import tables
from fasca_jax import train_lib
import train_hooks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny():
  config = synthetic.get_config('tiny')
  config.model.num_fusion_layers = 2
  return config


@pytest.mark.parametrize(
  'text,seeds', [('', ()), ('1111', (1111,)), ('1111,1112, 1113', (1111, 1112, 1113))]
)
def test_parse_seeds(text, seeds):
  assert runs.parse_seeds(text) == seeds


@pytest.mark.parametrize('text', ['1111;1112', '1111,1111', '-1', 'abc'])
def test_bad_seeds_are_a_clear_error(text):
  with pytest.raises(ValueError, match=r'config.seeds='):
    runs.parse_seeds(text)


def test_seed_config_sets_the_seed_and_leaves_the_sweep_config_alone():
  config = synthetic.get_config('tiny')
  config.seeds = '1111,1112'
  single = runs.seed_config(config, 1112)
  assert (single.seed, single.seeds) == (1112, '')
  assert (config.seed, config.seeds) == (1111, '1111,1112')


def _fake_run(run_dir, steps, splits):
  for step in steps:
    os.makedirs(os.path.join(run_dir, checkpoints.CHECKPOINT_DIR, str(step)))
  os.makedirs(os.path.join(run_dir, checkpoints.CHECKPOINT_DIR, '12.orbax-checkpoint-tmp-1'))
  with open(os.path.join(run_dir, 'results.json'), 'w') as f:
    json.dump({s: {'loss': 1.0} for s in splits}, f)


def test_is_finished_needs_final_results_and_the_last_step(tmp_path):
  assert not runs.is_finished(str(tmp_path / 'missing'), 12)
  _fake_run(str(tmp_path / 'done'), (6, 12), ('valid', 'test'))
  assert runs.is_finished(str(tmp_path / 'done'), 12)
  assert not runs.is_finished(str(tmp_path / 'done'), 18)  # more epochs asked for: resume.
  _fake_run(str(tmp_path / 'partial'), (6,), ('valid', 'test'))  # eval.py on a partial run.
  assert not runs.is_finished(str(tmp_path / 'partial'), 12)
  _fake_run(str(tmp_path / 'test_only'), (6, 12), ('test',))
  assert not runs.is_finished(str(tmp_path / 'test_only'), 12)


def test_run_trains_missing_variants_and_reuses_finished_ones(tmp_path):
  """Runs the real tiny training for one variant; a finished variant (its last step saved and
  its final results written) is reused."""
  config = tiny()
  config.data_dir = str(tmp_path / 'tfds')
  config.num_epochs = 1
  reused = {'valid': {'loss': 1.0}, 'test': {'loss': 2.0, 'MAE': 3.0}}
  _fake_run(str(tmp_path / 'runs' / 'full'), (6,), ())  # tiny, 1 epoch: 6 steps.
  with open(tmp_path / 'runs' / 'full' / 'results.json', 'w') as f:
    json.dump(reused, f)
  table = runs.run_ablations(config, str(tmp_path / 'runs'), ['full', 'no_fusion'])
  assert table['full'] == {'params': runs.count_params(config), **reused}
  with open(tmp_path / 'runs' / 'no_fusion' / 'results.json') as f:
    trained = json.load(f)
  assert table['no_fusion']['test'] == trained['test'] and np.isfinite(trained['test']['MAE'])
  assert table['no_fusion']['params'] < table['full']['params']
  with open(tmp_path / 'runs' / tables.ABLATION_JSON) as f:
    assert json.load(f) == table
  with open(tmp_path / 'runs' / tables.ABLATION_MD) as f:
    assert f.read() == tables.ablation_markdown(table) + '\n'
  # A dropped modality is not read from the data at all.
  no_audio = input_pipeline.open_dataset(ablations.apply(config, 'no_audio'))
  batch = next(
    iter(
      input_pipeline.make_batches(no_audio, 'validation', train=False, global_batch_size=16, seed=0)
    )
  )
  assert {'text', 'vision'} <= set(batch) and not any(k.startswith('audio') for k in batch)
  saved = config_io.load(str(tmp_path / 'runs' / 'no_fusion'))
  assert saved.to_dict() == ablations.apply(config, 'no_fusion').to_dict()
  assert not saved.model.use_fusion


def test_results_json_provenance_entry_is_read_apart_from_the_splits(tmp_path):
  """results.json's 'dataset' entry is not a split: finished runs holding one are reused, and
  the seed summary and the ablation table see the splits only."""
  config = tiny()
  config.data_dir = str(tmp_path / 'tfds')
  config.num_epochs, config.seeds = 1, '1111,1112'
  dataset = {'name': 'synthetic_affect/tiny', 'version': '1.1.0', 'sources': {}}
  per_seed = {}
  for seed in (1111, 1112):
    run_dir = str(tmp_path / 'sweep' / f'seed_{seed}')
    _fake_run(run_dir, (6,), ())  # tiny, 1 epoch: 6 steps; results written below.
    per_seed[seed] = {'valid': {'loss': seed / 1000}, 'test': {'loss': 1.0, 'MAE': seed / 2000}}
    evaluation.write_results(run_dir, per_seed[seed], dataset=dataset)
    assert evaluation.read_results(run_dir) == per_seed[seed]
    assert evaluation.read_provenance(run_dir) == dataset
    assert runs.is_finished(run_dir, 6)
  summary = runs.run_seeds(config, str(tmp_path / 'sweep'))
  assert summary == tables.aggregate(per_seed) and set(summary) == {'valid', 'test'}
  assert summary['test']['MAE']['values'] == pytest.approx([1111 / 20, 1112 / 20])
  # Merging keeps the entry; another dataset replaces it.
  run_dir = str(tmp_path / 'sweep' / 'seed_1111')
  evaluation.write_results(run_dir, {'train': {'loss': 3.0}})
  assert evaluation.read_provenance(run_dir) == dataset
  assert set(evaluation.read_results(run_dir)) == {'valid', 'test', 'train'}
  other = {**dataset, 'version': '9.9.9'}
  evaluation.write_results(run_dir, {'test': {'loss': 2.0}}, dataset=other)
  with open(os.path.join(run_dir, evaluation.RESULTS_FILE)) as f:
    assert list(json.load(f)) == ['dataset', 'valid', 'test', 'train']
  assert evaluation.read_provenance(run_dir) == other
  # The ablation table reads the splits only too.
  _fake_run(str(tmp_path / 'abl' / 'full'), (6,), ())
  evaluation.write_results(str(tmp_path / 'abl' / 'full'), per_seed[1111], dataset=dataset)
  table = runs.run_ablations(config, str(tmp_path / 'abl'), ['full'])
  assert table['full'] == {'params': runs.count_params(config), **per_seed[1111]}


def test_ablation_rerun_with_another_config_refuses_and_trains_nothing(tmp_path):
  """A finished variant trained with d_model 16, rerun with d_model 32: refused before any
  variant trains (the old metrics are never tabulated beside the new parameter count); the same
  config reuses it."""
  config = tiny()
  config.data_dir = str(tmp_path / 'tfds')
  config.num_epochs = 1
  root = tmp_path / 'runs'
  _fake_run(str(root / 'full'), (6,), ('valid', 'test'))
  config_io.save(ablations.apply(config, 'full'), str(root / 'full'))
  bigger = config.copy_and_resolve_references()
  bigger.model.d_model = 32
  with pytest.raises(
    checkpoints.ConfigMismatchError,
    match=rf"workdir '{root / 'full'}' holds a run with model.d_model 16 but "
    r'config.model.d_model=32: rerun with the values it was trained with',
  ):
    runs.run_ablations(bigger, str(root), ['no_fusion', 'full'])
  assert not (root / 'no_fusion').exists() and not (root / tables.ABLATION_MD).exists()
  table = runs.run_ablations(config, str(root), ['full'])  # the same config: reused.
  assert table['full']['test'] == {'loss': 1.0}


def test_eval_on_an_interrupted_variant_does_not_make_it_finished(tmp_path):
  """A variant stopped by SIGTERM after step 3 of 6, then `eval.py --split=valid --split=test`
  on its directory: results.json holds valid and test, yet the ablation runner resumes the
  variant to its last step and tabulates the finished run's results, not eval.py's."""
  config = tiny()
  config.data_dir = str(tmp_path / 'tfds')
  config.num_epochs = 1  # tiny: 6 steps.
  variant = ablations.apply(config, 'no_fusion')
  run_dir = str(tmp_path / 'runs' / 'no_fusion')
  jitted = steps.JittedSteps(variant, steps.make_optimizer(variant, 6, 6))

  def sigterm_after_step_3(state):  # the trainer's own SIGTERM handling stops the run.
    if int(state.step) == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return state

  train_hooks.after_train_calls(jitted, sigterm_after_step_3)
  assert train_lib.train_and_evaluate(variant, run_dir, jitted=jitted) == {}
  assert checkpoints.Checkpoints(run_dir).all_steps() == [3]
  proc = subprocess.run(
    [
      sys.executable,
      'eval.py',
      '--config=configs/ablations.py:synthetic:tiny,no_fusion',
      f'--config.data_dir={config.data_dir}',
      '--config.num_epochs=1',
      '--config.model.num_fusion_layers=2',
      f'--workdir={run_dir}',
      '--split=valid',
      '--split=test',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  partial = evaluation.read_results(run_dir)
  assert set(partial) == {'valid', 'test'}
  assert not runs.is_finished(run_dir, 6)

  table = runs.run_ablations(config, str(tmp_path / 'runs'), ['no_fusion'])
  assert checkpoints.Checkpoints(run_dir).all_steps()[-1] == 6
  assert runs.is_finished(run_dir, 6)
  final = evaluation.read_results(run_dir)
  assert table['no_fusion']['test'] == final['test'] != partial['test']
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  # Resumed, not restarted: one start (hparams), training rows up to step 6, epoch-1 validation.
  assert [r['kind'] for r in rows].count('hparams') == 1
  assert max(r['step'] for r in rows if r['kind'] == 'train') == 6
  assert any(r['kind'] == 'valid' and r['step'] == 6 for r in rows)
