"""Ablations as config switches: pure config edits (ml_collections only; configs import it).

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
`fasca_jax.runs` trains every variant and tabulates them.
"""

import copy

import ml_collections

from fasca_jax import modalities as modalities_lib

PAIRS = tuple(m for m in modalities_lib.MODALITIES if m != modalities_lib.REFERENCE)
VARIANTS = (
  ('full', 'no_fusion', 'no_fgfa')
  + tuple(f'no_fgfa_{p}' for p in PAIRS)
  + tuple(f'no_{m}' for m in modalities_lib.MODALITIES)
)


def apply(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """A copy of `config` with the `variant` switch applied (module docstring).

  Raises:
    ValueError: unknown variant, or one that changes nothing / removes every modality.
  """
  if variant not in VARIANTS:
    raise ValueError(f'unknown ablation {variant!r}: expected one of {VARIANTS}')
  config = copy.deepcopy(config)
  modalities = tuple(config.modalities)
  pairs = modalities_lib.aligned_pairs(modalities, config.model.align_pairs)
  if variant == 'no_fusion':
    if not config.model.use_fusion:
      raise ValueError('ablation no_fusion: config.model.use_fusion is already False')
    config.model.use_fusion = False
  elif variant == 'no_fgfa':
    if not pairs:
      raise ValueError(
        f'ablation no_fgfa: the config aligns no pair (modalities {modalities}, '
        f'align_pairs {tuple(config.model.align_pairs)})'
      )
    config.model.align_pairs = ()
  elif variant.startswith('no_fgfa_'):
    pair = variant[len('no_fgfa_') :]
    if pair not in pairs:
      raise ValueError(
        f'ablation {variant}: {pair!r} is not an FGFA pair of this config (pairs {pairs})'
      )
    config.model.align_pairs = tuple(p for p in config.model.align_pairs if p != pair)
  elif variant.startswith('no_'):
    m = variant[len('no_') :]
    if m not in modalities or len(modalities) == 1:
      raise ValueError(
        f'ablation {variant}: needs {m!r} among at least two modalities; the '
        f'config has {modalities}'
      )
    config.modalities = tuple(x for x in modalities if x != m)
    config.model.align_pairs = (
      () if m == modalities_lib.REFERENCE else tuple(p for p in config.model.align_pairs if p != m)
    )
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
