"""Robustness evaluation of tiny runs: one row per intensity, the plain metrics exactly at the
identity, a seed sweep's mean ± std, an ablation directory's curve per variant, the feature
scales noise is measured against, and eval.py --perturb from the command line."""

import json
import os
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from conftest import save_initial_run
from configs import synthetic
from fasca_jax import ablations
from fasca_jax import config_io
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import perturbations
from fasca_jax import placement
from fasca_jax import robustness
from fasca_jax import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = (
  'missing:audio=0,0.5,1',
  'drop_steps:vision=0,0.5',
  'noise:audio+vision=inf,0',
  'shift:audio=-4,0,4',
)
IDENTITY_ROW = {'missing': 0, 'drop_steps': 0, 'noise': 0, 'shift': 1}


def tiny(data_dir, seed=1111):
  config = synthetic.get_config('tiny')
  config.data_dir, config.seed = str(data_dir), seed
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  input_pipeline.ensure_built(tiny(path))
  return path


@pytest.fixture(scope='module')
def run_dir(data_dir, tmp_path_factory):
  """A tiny run: its (perturbed) initial state saved as the best checkpoint."""
  path = str(tmp_path_factory.mktemp('run'))
  save_initial_run(tiny(data_dir), path, perturb=0.05)
  return path


@pytest.fixture(scope='module')
def run_reports(data_dir, run_dir):
  return robustness.evaluate_workdir(tiny(data_dir), run_dir, SPECS, ('valid', 'test'), seed=0)


def same(a, b) -> bool:
  """Exact equality of nested metrics where NaN (e.g. an undefined Corr or AUC) equals NaN."""
  try:
    np.testing.assert_equal(a, b)
  except AssertionError:
    return False
  return True


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
  """The body rows of the first table after the line `heading`."""
  lines = markdown.splitlines()
  start = lines.index(heading)
  table = []
  for line in lines[start + 1 :]:
    if line.startswith('|'):
      table.append([c.strip() for c in line.strip('|').split('|')])
    elif table:
      break
  return table[2:]  # header and the alignment row


def test_run_table_has_one_row_per_intensity_and_plain_metrics_at_the_identity(
  data_dir, run_dir, run_reports
):
  plain = evaluation.evaluate_run(tiny(data_dir), run_dir, ('valid', 'test'))  # what eval.py does
  assert [(r['perturbation'], r['split']) for r in run_reports] == [
    (s, split) for s in SPECS for split in ('valid', 'test')
  ]
  for report in run_reports:
    stem = os.path.join(run_dir, 'robustness', robustness.report_name(report))
    with open(stem + '.json') as f:
      assert same(json.load(f), report)
    with open(stem + '.md') as f:
      markdown = f.read()
    rows = report['runs']['run']['metrics']
    assert len(rows) == len(report['intensities'])
    table = _table_rows(markdown, f'## {os.path.basename(run_dir)} (step 0)')
    assert [row[0] for row in table] == [
      perturbations.format_intensity(report['kind'], v) for v in report['intensities']
    ]
    assert same(rows[IDENTITY_ROW[report['kind']]], plain[report['split']])  # exactly
    image = matplotlib.image.imread(stem + '.png')
    assert image.ndim == 3 and image.shape[0] > 100
  by_name = {(r['kind'], r['split']): r['runs']['run']['metrics'] for r in run_reports}
  for kind, strongest in (('missing', 2), ('shift', 0), ('noise', 1), ('drop_steps', 1)):
    assert not same(by_name[kind, 'test'][strongest], plain['test']), kind  # reaches the model


def test_each_split_is_placed_once_per_placement(data_dir, run_dir, monkeypatch):
  """Every intensity of every perturbation reuses the split's host data (placed once), and the
  plain pass the split placed as eval.py places it (tiny: on the device)."""
  placed = []
  init = placement.EvalData.__init__

  def counting_init(self, mode, dataset, split, **kwargs):
    placed.append((split, mode))
    init(self, mode, dataset, split, **kwargs)

  monkeypatch.setattr(placement.EvalData, '__init__', counting_init)
  config = tiny(data_dir)
  robustness.evaluate_run(
    config, run_dir, perturbations.parse_all(SPECS), ('valid', 'test'), seed=0
  )
  assert sorted(placed) == sorted(
    (split, mode) for split in ('validation', 'test') for mode in ('device', 'host')
  )


def test_perturbed_metrics_are_deterministic_for_a_seed(data_dir, run_dir, run_reports):
  config = tiny(data_dir)
  spec = 'missing:audio=0,0.5,1'
  again = robustness.evaluate_workdir(config, run_dir, [spec], ('test',), seed=0)[0]
  expected = next(r for r in run_reports if r['kind'] == 'missing' and r['split'] == 'test')
  assert same(again['runs'], expected['runs'])
  other = robustness.evaluate_workdir(config, run_dir, [spec], ('test',), seed=5)[0]
  rows, other_rows = expected['runs']['run']['metrics'], other['runs']['run']['metrics']
  assert same(other_rows[0], rows[0]) and same(other_rows[2], rows[2])  # p = 0, p = 1: none, all
  assert not same(other_rows[1], rows[1])  # another half of the examples lose their audio


def test_seed_sweep_reports_mean_and_std_over_seeds(data_dir, tmp_path):
  config = tiny(data_dir)
  config.seeds = '1111,1112'
  for name, seed_config in runs.seed_runs(config).items():
    save_initial_run(seed_config, str(tmp_path / name), perturb=0.05)
  config.seeds = ''  # found from the seed_<n>/ directories
  (report,) = robustness.evaluate_workdir(config, str(tmp_path), ['shift:vision=0,3'])
  assert report['layout'] == 'seeds' and list(report['runs']) == ['seed_1111', 'seed_1112']
  for metric, stat in report['summary'].items():
    values = np.array([[row[metric] for row in r['metrics']] for r in report['runs'].values()])
    np.testing.assert_array_equal(stat['mean'], values.mean(0))
    np.testing.assert_array_equal(stat['std'], values.std(0))
    assert len(stat['mean']) == 2
  with open(tmp_path / 'robustness' / 'shift_vision_test.md') as f:
    table = _table_rows(f.read(), '## mean ± std over 2 seeds (ddof=0)')
  assert [row[0] for row in table] == ['0', '3']
  mean, std = report['summary']['loss']['mean'][1], report['summary']['loss']['std'][1]
  assert table[1][1] == f'{mean:.4f} ± {std:.4f}'
  assert (tmp_path / 'robustness' / 'shift_vision_test.png').is_file()
  # Without a config (eval.py without --config) each seed's own config.json gives the same.
  (own,) = robustness.evaluate_workdir(None, str(tmp_path), ['shift:vision=0,3'])
  assert list(own['runs']) == list(report['runs'])
  for name, run in own['runs'].items():
    assert same(run['metrics'], report['runs'][name]['metrics']), name


def test_ablation_directory_has_a_curve_per_variant(data_dir, tmp_path):
  config = tiny(data_dir)
  for variant in ('full', 'no_audio'):
    save_initial_run(ablations.apply(config, variant), str(tmp_path / variant), perturb=0.05)
  (report,) = robustness.evaluate_workdir(config, str(tmp_path), ['missing:audio=0,1'])
  assert report['layout'] == 'ablation' and list(report['runs']) == ['full', 'no_audio']
  full, no_audio = report['runs']['full'], report['runs']['no_audio']
  assert not full['unaffected'] and not same(full['metrics'][1], full['metrics'][0])
  assert no_audio['unaffected'] and same(no_audio['metrics'][1], no_audio['metrics'][0])
  with open(tmp_path / 'robustness' / 'missing_audio_test.md') as f:
    markdown = f.read()
  assert 'Unaffected (no audio stream): no_audio.' in markdown
  side_by_side = _table_rows(markdown, '## key metrics side by side')
  assert [row[0] for row in side_by_side] == ['0', '1'] and len(side_by_side[0]) == 1 + 2 * 2


def test_find_runs_of_each_layout_and_a_clear_error(data_dir, run_dir, tmp_path):
  config = tiny(data_dir)
  assert runs.find_runs(config, run_dir) == ('run', {'run': config})
  layout, own = runs.find_runs(None, run_dir)  # the run's own config.json
  assert layout == 'run' and own['run'].to_dict() == config_io.load(run_dir).to_dict()
  with pytest.raises(FileNotFoundError, match='holds no trained run'):
    runs.find_runs(config, str(tmp_path))
  config.seeds = '1111,1112'
  with pytest.raises(FileNotFoundError, match='seed_1111, seed_1112 of config.seeds'):
    runs.find_runs(config, str(tmp_path))


def test_feature_scales_are_the_per_dimension_std_of_the_training_split(data_dir):
  dataset = input_pipeline.open_dataset(tiny(data_dir))
  scales = robustness.feature_scales(dataset)
  source = dataset.source('train')
  for m in ('text', 'audio', 'vision'):
    steps = np.concatenate([np.asarray(source[i][m], np.float64) for i in range(len(source))])
    np.testing.assert_allclose(scales[m], steps.std(0), rtol=1e-4, atol=1e-6)
  cached = robustness.feature_scales(dataset)  # read back from the cache
  for m in scales:
    np.testing.assert_array_equal(cached[m], scales[m])


def _eval(*args):
  return subprocess.run(
    [sys.executable, os.path.join(REPO, 'eval.py'), *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )


def test_eval_cli_perturb(data_dir, run_dir, run_reports, tmp_path):
  common = ['--config=configs/synthetic.py:tiny', f'--config.data_dir={data_dir}']
  bad = _eval(*common, f'--workdir={run_dir}', '--perturb=shift:audio=0.5')
  assert bad.returncode != 0
  assert "--perturb='shift:audio=0.5': shift takes whole numbers of steps" in bad.stderr
  out_dir = tmp_path / 'copy'
  shutil.copytree(run_dir, out_dir)
  proc = _eval(*common, f'--workdir={out_dir}', '--perturb=missing:audio=1,0', '--split=test')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '# missing:audio=0,1 on test' in proc.stdout
  with open(out_dir / 'robustness' / 'missing_audio_test.json') as f:
    report = json.load(f)
  expected = next(r for r in run_reports if r['kind'] == 'missing' and r['split'] == 'test')
  rows = expected['runs']['run']['metrics']
  assert same(report['runs']['run']['metrics'], [rows[0], rows[2]])  # p = 0 (plain) and p = 1
