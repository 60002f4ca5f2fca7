"""Seed-sweep summary arithmetic and bookkeeping, on known numbers (no training)."""

import csv
import json
import math
import os

import pytest

from configs import synthetic
from fasca_jax import summary
from fasca_jax import sweep
from fasca_jax import train_lib

PER_SEED = {  # seed -> split -> metric -> value, as in each seed's results.json.
    1111: {'test': {'loss': 0.50, 'Has0_acc_2': 0.70, 'MAE': 0.80}},
    1112: {'test': {'loss': 0.60, 'Has0_acc_2': 0.72, 'MAE': 0.70}},
    1113: {'test': {'loss': 0.70, 'Has0_acc_2': 0.74, 'MAE': 0.90}},
}


def test_mean_and_population_std_x100_except_loss():
  stats = summary.aggregate(PER_SEED)['test']
  # Has0_acc_2 x100: 70, 72, 74 -> mean 72, std sqrt((4 + 0 + 4) / 3) (ddof=0, MMSA's np.std).
  assert stats['Has0_acc_2']['mean'] == pytest.approx(72.0)
  assert stats['Has0_acc_2']['std'] == pytest.approx(math.sqrt(8 / 3))
  assert stats['Has0_acc_2']['values'] == pytest.approx([70.0, 72.0, 74.0])
  assert stats['MAE']['mean'] == pytest.approx(80.0)
  assert stats['MAE']['std'] == pytest.approx(math.sqrt(200 / 3))
  assert stats['loss']['mean'] == pytest.approx(0.6)  # loss is not scaled.
  assert stats['loss']['std'] == pytest.approx(math.sqrt(0.02 / 3))
  assert (stats['loss']['scale'], stats['MAE']['scale']) == (1, 100)


def test_nan_in_one_seed_makes_the_mean_nan():
  per_seed = {1: {'test': {'Corr': 0.5}}, 2: {'test': {'Corr': float('nan')}}}
  assert math.isnan(summary.aggregate(per_seed)['test']['Corr']['mean'])


def test_seeds_with_different_metrics_are_an_error():
  per_seed = {1: {'test': {'Acc': 0.5}}, 2: {'test': {'Has0_acc_2': 0.5}}}
  with pytest.raises(ValueError, match=r"seed 2 has split 'test' metrics \['Has0_acc_2'\]"):
    summary.aggregate(per_seed)


def test_markdown_and_csv_files(tmp_path):
  summary.write(str(tmp_path), PER_SEED, 'toy, 3 seeds')
  md = (tmp_path / 'summary.md').read_text()
  assert md.startswith('# toy, 3 seeds\n')
  assert 'Mean ± std over 3 seeds (1111, 1112, 1113)' in md
  assert '| Has0_acc_2 | 72.00 ± 1.63 |' in md  # sqrt(8/3) = 1.633
  assert '| loss | 0.6000 ± 0.0816 |' in md
  assert '| MAE | 80.00 | 70.00 | 90.00 |' in md  # per-seed table.
  with open(tmp_path / 'summary.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  row = next(r for r in rows if r['metric'] == 'Has0_acc_2')
  assert (row['split'], row['scale'], row['n_seeds']) == ('test', '100', '3')
  assert float(row['mean']) == pytest.approx(72.0)
  assert float(row['std']) == summary.aggregate(PER_SEED)['test']['Has0_acc_2']['std']
  assert [float(row[f'seed_{s}']) for s in PER_SEED] == pytest.approx([70.0, 72.0, 74.0])


@pytest.mark.parametrize('text,seeds', [('', ()), ('1111', (1111,)),
                                        ('1111,1112, 1113', (1111, 1112, 1113))])
def test_parse_seeds(text, seeds):
  assert sweep.parse_seeds(text) == seeds


@pytest.mark.parametrize('text', ['1111;1112', '1111,1111', '-1', 'abc'])
def test_bad_seeds_are_a_clear_error(text):
  with pytest.raises(ValueError, match=r'config.seeds='):
    sweep.parse_seeds(text)


def test_seed_config_sets_the_seed_and_leaves_the_sweep_config_alone():
  config = synthetic.get_config('tiny')
  config.seeds = '1111,1112'
  single = sweep.seed_config(config, 1112)
  assert (single.seed, single.seeds) == (1112, '')
  assert (config.seed, config.seeds) == (1111, '1111,1112')


def _fake_run(run_dir, steps, splits):
  for step in steps:
    os.makedirs(os.path.join(run_dir, train_lib.LATEST_DIR, str(step)))
  os.makedirs(os.path.join(run_dir, train_lib.LATEST_DIR, '12.orbax-checkpoint-tmp-1'))
  with open(os.path.join(run_dir, 'results.json'), 'w') as f:
    json.dump({s: {'loss': 1.0} for s in splits}, f)


def test_is_finished_needs_final_results_and_the_last_step(tmp_path):
  assert not sweep.is_finished(str(tmp_path / 'missing'), 12)
  _fake_run(str(tmp_path / 'done'), (6, 12), ('valid', 'test'))
  assert sweep.is_finished(str(tmp_path / 'done'), 12)
  assert not sweep.is_finished(str(tmp_path / 'done'), 18)  # more epochs asked for: resume.
  _fake_run(str(tmp_path / 'partial'), (6,), ('valid', 'test'))  # eval.py on a partial run.
  assert not sweep.is_finished(str(tmp_path / 'partial'), 12)
  _fake_run(str(tmp_path / 'test_only'), (6, 12), ('test',))
  assert not sweep.is_finished(str(tmp_path / 'test_only'), 12)
