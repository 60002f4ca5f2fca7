"""The tables of many runs on known numbers: the seed summary's arithmetic and files, the
ablation table."""

import csv
import json
import math

import pytest

from fasca_jax import tables

PER_SEED = {  # seed -> split -> metric -> value, as in each seed's results.json.
  1111: {'test': {'loss': 0.50, 'Has0_acc_2': 0.70, 'MAE': 0.80}},
  1112: {'test': {'loss': 0.60, 'Has0_acc_2': 0.72, 'MAE': 0.70}},
  1113: {'test': {'loss': 0.70, 'Has0_acc_2': 0.74, 'MAE': 0.90}},
}


def test_mean_and_population_std_x100_except_loss():
  stats = tables.aggregate(PER_SEED)['test']
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
  assert math.isnan(tables.aggregate(per_seed)['test']['Corr']['mean'])


def test_seeds_with_different_metrics_are_an_error():
  per_seed = {1: {'test': {'Acc': 0.5}}, 2: {'test': {'Has0_acc_2': 0.5}}}
  with pytest.raises(ValueError, match=r"seed 2 has split 'test' metrics \['Has0_acc_2'\]"):
    tables.aggregate(per_seed)


def test_markdown_and_csv_files(tmp_path):
  tables.write_seed_summary(str(tmp_path), PER_SEED, 'toy, 3 seeds')
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
  assert float(row['std']) == tables.aggregate(PER_SEED)['test']['Has0_acc_2']['std']
  assert [float(row[f'seed_{s}']) for s in PER_SEED] == pytest.approx([70.0, 72.0, 74.0])


def test_table_lists_params_and_every_test_metric():
  table = {
    'full': {'params': 12345, 'test': {'loss': 0.5, 'MAE': 0.25}},
    'no_fusion': {'params': 999, 'test': {'loss': 0.75}},
  }
  assert tables.ablation_markdown(table).splitlines() == [
    '| variant | params | test loss | test MAE |',
    '|---|---:|---:|---:|',
    '| full | 12,345 | 0.5000 | 0.2500 |',
    '| no_fusion | 999 | 0.7500 | - |',
  ]


def test_ablation_files(tmp_path):
  table = {'full': {'params': 7, 'valid': {'loss': 0.25}, 'test': {'loss': 0.5}}}
  tables.write_ablation_table(str(tmp_path), table)
  with open(tmp_path / tables.ABLATION_JSON) as f:
    assert json.load(f) == table
  assert (tmp_path / tables.ABLATION_MD).read_text() == tables.ablation_markdown(table) + '\n'
