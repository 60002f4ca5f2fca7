"""Ablations as config switches, and the runner that trains each variant and tabulates the results.

Variants (`VARIANTS`, each a change of the config):
  full            the base config unchanged.
  no_fusion       `model.use_fusion=False`: no TriModalFusion layer; the FGFA pairs and the head
                  read the CLS-prefixed input features directly.
  no_fgfa         `model.align_pairs=()`: no FGFA pair; the head sees the CLS vectors only.
  no_fgfa_audio   `model.align_pairs` without 'audio' (likewise no_fgfa_vision).
  no_text         `modalities` without 'text' (likewise no_audio, no_vision); the modality is
                  also dropped from `model.align_pairs`. Text is the reference of every FGFA pair,
                  so no_text removes both pairs as well.
A variant that changes nothing for a config (e.g. no_audio for a text-only config) is refused.
"""

import copy
import json
import os
from typing import Sequence

from absl import logging
import jax
import ml_collections

from fasca_jax import steps
from fasca_jax import train_lib
from fasca_jax.models import fasca_net

MODALITIES = ('text', 'audio', 'vision')
PAIRS = ('audio', 'vision')
VARIANTS = (('full', 'no_fusion', 'no_fgfa') + tuple(f'no_fgfa_{p}' for p in PAIRS)
            + tuple(f'no_{m}' for m in MODALITIES))
TABLE_FILE, JSON_FILE = 'ablation.md', 'ablation.json'


def _pairs(config) -> tuple[str, ...]:
  """The partners actually aligned to text under `config` (as FascaNet.pairs)."""
  return fasca_net.build(config).pairs()


def apply(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """A copy of `config` with the `variant` switch applied (module docstring).

  Raises:
    ValueError: unknown variant, or one that changes nothing / removes every modality.
  """
  if variant not in VARIANTS:
    raise ValueError(f'unknown ablation {variant!r}: expected one of {VARIANTS}')
  config = copy.deepcopy(config)
  modalities, pairs = tuple(config.modalities), _pairs(config)
  if variant == 'no_fusion':
    if not config.model.use_fusion:
      raise ValueError('ablation no_fusion: config.model.use_fusion is already False')
    config.model.use_fusion = False
  elif variant == 'no_fgfa':
    if not pairs:
      raise ValueError(f'ablation no_fgfa: the config aligns no pair (modalities {modalities}, '
                       f'align_pairs {tuple(config.model.align_pairs)})')
    config.model.align_pairs = ()
  elif variant.startswith('no_fgfa_'):
    pair = variant[len('no_fgfa_'):]
    if pair not in pairs:
      raise ValueError(f'ablation {variant}: {pair!r} is not an FGFA pair of this config '
                       f'(pairs {pairs})')
    config.model.align_pairs = tuple(p for p in config.model.align_pairs if p != pair)
  elif variant.startswith('no_'):
    m = variant[len('no_'):]
    if m not in modalities or len(modalities) == 1:
      raise ValueError(f'ablation {variant}: needs {m!r} among at least two modalities; the '
                       f'config has {modalities}')
    config.modalities = tuple(x for x in modalities if x != m)
    config.model.align_pairs = () if m == fasca_net.REFERENCE else tuple(
        p for p in config.model.align_pairs if p != m)
  return config


def variants(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The variants that apply to `config`, in VARIANTS order."""
  usable = []
  for v in VARIANTS:
    try:
      apply(config, v)
    except ValueError:
      continue
    usable.append(v)
  return tuple(usable)


def count_params(config: ml_collections.ConfigDict) -> int:
  """Number of model parameters under `config` (shapes only; nothing is computed)."""
  model = fasca_net.build(config)
  inputs, masks = steps.dummy_batch(config, 1)
  shapes = jax.eval_shape(lambda k: model.init(k, inputs, masks, train=False), jax.random.key(0))
  return sum(x.size for x in jax.tree.leaves(shapes['params']))


def run(config: ml_collections.ConfigDict, workdir: str,
        names: Sequence[str] | None = None) -> dict:
  """Trains and evaluates each variant into workdir/<variant>/ and writes the ablation table.

  A variant whose results.json already holds the test split is not run again (delete its
  directory to redo it); an interrupted one resumes from its checkpoints.

  Returns:
    variant -> {'params': int, 'valid': metrics, 'test': metrics}, also written to
    workdir/ablation.json, with the table in workdir/ablation.md.
  """
  names = tuple(names or variants(config))
  configs = {v: apply(config, v) for v in names}  # every name is checked before any training.
  table = {}
  for v, variant_config in configs.items():
    run_dir = os.path.join(workdir, v)
    if 'test' in train_lib.read_results(run_dir):
      logging.info('Ablation %s: reusing %s/results.json.', v, run_dir)
    else:
      logging.info('Ablation %s: training into %s.', v, run_dir)
      if not train_lib.train_and_evaluate(variant_config, run_dir):
        return {}  # stopped by SIGTERM: the same command resumes.
    results = train_lib.read_results(run_dir)  # one source, fresh or reused
    table[v] = {'params': count_params(variant_config),
                **{s: results[s] for s in ('valid', 'test') if s in results}}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, JSON_FILE), 'w') as f:
      json.dump(table, f, indent=2)
    with open(os.path.join(workdir, TABLE_FILE), 'w') as f:
      f.write(format_table(table) + '\n')
  return table


def format_table(table: dict, split: str = 'test') -> str:
  """Markdown table: one row per variant; parameters, then every metric of `split` (4 decimals)."""
  metrics = list(dict.fromkeys(k for row in table.values() for k in row.get(split, {})))
  lines = ['| variant | params | ' + ' | '.join(f'{split} {m}' for m in metrics) + ' |',
           '|---|---:|' + '---:|' * len(metrics)]
  for v, row in table.items():
    values = [f'{row[split][m]:.4f}' if m in row.get(split, {}) else '-' for m in metrics]
    lines.append(f'| {v} | {row["params"]:,} | ' + ' | '.join(values) + ' |')
  return '\n'.join(lines)
