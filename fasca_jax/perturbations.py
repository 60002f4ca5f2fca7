r"""Deterministic, seed-controlled perturbations of a modality in a batch: the evaluation-time
degradations of a robustness evaluation (`eval.py --perturb`, `fasca_jax.robustness`) and their
training-time counterpart, modality dropout (`config.modality_dropout`).

Spec (`parse`; what `eval.py --perturb=` takes, one per flag):

  KIND:MODALITY[+MODALITY...][=V1,V2,...]       e.g.  shift:audio=-8,-4,0,4,8
                                                        missing:vision=0,0.5,1
                                                        noise:audio+vision=inf,20,10,0
                                                        drop_steps:text          (defaults)

  kind        intensity                                               identity  default list
  missing     p in [0, 1]: each example loses the modality with       0         0,0.25,0.5,0.75,1
              probability p (its features 0, its mask all False)
  drop_steps  p in [0, 1]: each real step is removed with             0         0,0.25,0.5,0.75,1
              probability p; the steps left close up in order
              (the mask shrinks to their count)
  noise       SNR in dB, `inf` for none: x + s_d 10^(-SNR/20) z on    inf       inf,20,10,5,0
              real steps, z ~ N(0, 1), s_d the standard deviation
              of feature dimension d over the training split's steps
  shift       k, an integer number of the modality's own steps:       0         -8,-4,-2,0,2,4,8
              k > 0 delays the modality relative to text (step t
              shows what step t - k showed), k < 0 advances it

Every listed modality gets the same perturbation (with its own random draws). The intensities
are evaluated from the identity to the strongest (ascending; noise: descending SNR), each once.
`shift` needs a partner of text (`shift:text` is refused: shifts are relative to text).

What a perturbed batch keeps (the batch layout of `fasca_jax.input_pipeline`): shapes and
dtypes; the other modalities, the targets, `index` and `valid` untouched; padding rows
(`valid` False) untouched; the mask a prefix of real steps with features exactly 0 wherever it is
False, and `mask == arange(L_m) < min(m_len, L_m)`. A perturbation acts on the L_m steps the
model sees (steps cropped away by max_len are gone); `m_len` becomes the real length left when
that changes (missing, drop_steps). A `shift` keeps every stream's real length and mask: the
steps it vacates (the first k when delaying, the last |k| when advancing) hold zeros, as a blank
stretch of the stream would, and the content moved past the end is lost. They are not masked
out because the model reads a mask as a prefix of real steps (FGFA resamples the partner to the
text by its real length): masking the vacated steps would misplace them (in front) or also
stretch the stream (at the end), i.e. not be a pure misalignment. At the identity intensity the
batch is returned as it is.

Determinism: the draws of an example come from `np.random.default_rng((seed, kind, modality,
index))`, with `index` its position in the split, so they do not depend on the batch size, the
batch composition, the process count or the intensity: the examples missing at p = 0.25 are
missing at p = 0.5 too, and every SNR scales the same noise draw (common random numbers, so
curves are smooth in the intensity).
"""

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fasca_jax import modalities as modalities_lib

KINDS = ('missing', 'drop_steps', 'noise', 'shift')
IDENTITY = {'missing': 0.0, 'drop_steps': 0.0, 'noise': math.inf, 'shift': 0.0}
DEFAULT_INTENSITIES = {
  'missing': (0.0, 0.25, 0.5, 0.75, 1.0),
  'drop_steps': (0.0, 0.25, 0.5, 0.75, 1.0),
  'noise': (math.inf, 20.0, 10.0, 5.0, 0.0),
  'shift': (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0),
}
# The intensity's name and unit, for tables and curves.
UNITS = {
  'missing': 'p (fraction of examples without the modality)',
  'drop_steps': 'p (fraction of steps removed)',
  'noise': 'SNR (dB)',
  'shift': 'k (steps; > 0: delayed, < 0: advanced relative to text)',
}
SYMBOLS = {'missing': 'p', 'drop_steps': 'p', 'noise': 'SNR dB', 'shift': 'k'}
EXAMPLE = 'e.g. --perturb=shift:audio=-8,-4,0,4,8 or --perturb=missing:vision=0,0.5,1'


@dataclasses.dataclass(frozen=True)
class Perturbation:
  """One parsed spec: a kind, the modalities it touches and the intensities to evaluate.

  Attributes:
    kind: one of KINDS.
    modalities: the modalities perturbed, in the order given.
    intensities: sorted from the identity outwards (module docstring); floats, `inf` allowed
      for noise.
  """

  kind: str
  modalities: tuple[str, ...]
  intensities: tuple[float, ...]

  @property
  def name(self) -> str:
    """File-name stem, e.g. 'shift_audio', 'noise_audio+vision'."""
    return f'{self.kind}_{"+".join(self.modalities)}'

  @property
  def spec(self) -> str:
    """The canonical spec, e.g. 'shift:audio=-4,0,4' (parses back to this perturbation)."""
    return f'{self.kind}:{"+".join(self.modalities)}=' + ','.join(
      format_intensity(self.kind, v) for v in self.intensities
    )

  def is_identity(self, intensity: float) -> bool:
    return intensity == IDENTITY[self.kind]


def format_intensity(kind: str, value: float) -> str:
  """0.25 -> '0.25', 4.0 (shift) -> '4', inf -> 'inf'."""
  if math.isinf(value):
    return 'inf'
  return str(int(value)) if kind == 'shift' or float(value).is_integer() else f'{value:g}'


def _spec_error(spec: str, problem: str) -> ValueError:
  return ValueError(
    f'--perturb={spec!r}: {problem}. A spec is KIND:MODALITY[+MODALITY...][=V1,V2,...] with '
    f'KIND one of {", ".join(KINDS)} and MODALITY one of {", ".join(modalities_lib.MODALITIES)}; '
    f'{EXAMPLE} (see fasca_jax/perturbations.py).'
  )


def _read_value(spec: str, kind: str, token: str) -> float:
  try:
    value = float(token)
  except ValueError:
    raise _spec_error(spec, f'{token!r} is not a number') from None
  if math.isnan(value):
    raise _spec_error(spec, 'nan is not an intensity')
  if kind in ('missing', 'drop_steps') and not 0.0 <= value <= 1.0:
    raise _spec_error(spec, f'{kind} takes probabilities in [0, 1], got {token}')
  if kind == 'shift' and not (math.isfinite(value) and value.is_integer()):
    raise _spec_error(spec, f'shift takes whole numbers of steps, got {token}')
  if kind == 'noise' and value == -math.inf:
    raise _spec_error(spec, 'noise takes an SNR in dB (inf: no noise), got -inf')
  return value


def parse(spec: str) -> Perturbation:
  """'KIND:MODALITY[+MODALITY...][=V1,V2,...]' -> Perturbation (module docstring).

  Raises:
    ValueError: naming the spec, what is wrong with it and the expected form.
  """
  text = spec.strip()
  head, sep, values = text.partition('=')
  kind, colon, mods = head.partition(':')
  kind, mods = kind.strip(), mods.strip()
  if kind not in KINDS:
    raise _spec_error(spec, f'unknown perturbation {kind!r}')
  if not colon or not mods:
    raise _spec_error(spec, f'{kind} needs a modality, e.g. {kind}:audio')
  modalities = tuple(m.strip() for m in mods.split('+'))
  for m in modalities:
    if m not in modalities_lib.MODALITIES:
      raise _spec_error(spec, f'unknown modality {m!r}')
  if len(set(modalities)) != len(modalities):
    raise _spec_error(spec, 'a modality is listed twice')
  if kind == 'shift' and modalities_lib.REFERENCE in modalities:
    raise _spec_error(
      spec,
      f'shift moves a modality relative to {modalities_lib.REFERENCE}, so it cannot shift '
      f'{modalities_lib.REFERENCE} itself; shift its partners instead (e.g. shift:audio+vision)',
    )
  if sep:
    tokens = [t.strip() for t in values.split(',')]
    if not values.strip() or any(not t for t in tokens):
      raise _spec_error(spec, 'an empty intensity in the list after "="')
    intensities = [_read_value(spec, kind, t) for t in tokens]
  else:
    intensities = list(DEFAULT_INTENSITIES[kind])
  if len(set(intensities)) != len(intensities):
    raise _spec_error(spec, 'an intensity is listed twice')
  if kind == 'noise':
    intensities.sort(reverse=True)  # clean (inf) first, then ever noisier.
  else:
    intensities.sort()
  return Perturbation(kind=kind, modalities=modalities, intensities=tuple(intensities))


def parse_all(specs: Iterable[str]) -> tuple[Perturbation, ...]:
  """Every spec parsed; two specs of the same kind and modalities are refused (their outputs
  would share a file name)."""
  parsed = tuple(parse(s) for s in specs)
  names = [p.name for p in parsed]
  for name in names:
    if names.count(name) > 1:
      raise ValueError(
        f'--perturb: {name.replace("_", ":", 1)} is given twice; put all its intensities in '
        f'one spec, e.g. --perturb=shift:audio=-8,-4,0,4,8.'
      )
  return parsed


def check_modalities(perturbations: Sequence[Perturbation], available: Iterable[str]):
  """Raises ValueError when a perturbation names a modality none of the runs reads."""
  available = set(available)
  for p in perturbations:
    absent = [m for m in p.modalities if m not in available]
    if absent:
      raise ValueError(
        f'--perturb={p.spec!r}: the run(s) read no {absent[0]!r} (their modalities: '
        f'{sorted(available)}); perturb one of those.'
      )


# --- evaluation: host-side NumPy ---------------------------------------------------------------
def apply(
  batch: Mapping[str, np.ndarray],
  perturbation: Perturbation,
  intensity: float,
  *,
  seed: int,
  scales: Mapping[str, np.ndarray] | None = None,
) -> dict:
  """`batch` perturbed at `intensity` (module docstring); `batch` itself is not modified.

  Args:
    batch: a host batch of `input_pipeline.make_batches`: for each modality m `m` (B, L_m, D_m),
      `m_mask` (B, L_m) bool, `m_len` (B,); `index` (B,) int (position in the split, -1 on
      padding) and `valid` (B,) bool. A modality of the perturbation that the batch lacks is
      skipped (e.g. an ablation variant without it).
    perturbation: what to do.
    intensity: one value of its kind (need not be in `perturbation.intensities`).
    seed: non-negative int; with the example's index it fixes every random draw.
    scales: modality -> (D_m,) per-dimension standard deviation on the training split; needed
      by noise.

  Returns:
    A new batch dict (arrays of untouched fields shared with `batch`).
  """
  if perturbation.is_identity(intensity):
    return dict(batch)
  kind = perturbation.kind
  out = dict(batch)
  rows = np.flatnonzero(np.asarray(batch['valid']).astype(bool) & (np.asarray(batch['index']) >= 0))
  for m in perturbation.modalities:
    if m not in batch:
      continue
    x = np.array(batch[m], copy=True)  # (B, L, D)
    mask = np.array(batch[f'{m}_mask'], dtype=bool, copy=True)  # (B, L)
    length = np.array(batch.get(f'{m}_len', mask.sum(-1)), copy=True)  # (B,)
    if kind == 'noise' and (scales is None or m not in scales):
      raise ValueError(
        f'noise:{m} needs the per-dimension scale of {m!r} on the training split '
        f'(`scales`, from fasca_jax.robustness.feature_scales).'
      )
    for i in rows:
      n = int(mask[i].sum())  # real steps in the window (the mask is a prefix).
      if kind == 'shift':
        x[i, :n] = _shifted(x[i, :n], int(intensity))
        continue
      rng = np.random.default_rng(
        (seed, KINDS.index(kind), modalities_lib.MODALITIES.index(m), int(batch['index'][i]))
      )
      if kind == 'missing':
        if rng.random() < intensity:
          x[i], mask[i], length[i] = 0.0, False, 0
      elif kind == 'drop_steps':
        keep = rng.random(x.shape[1])[:n] >= intensity  # (n,)
        kept = x[i, :n][keep]
        x[i] = 0.0
        x[i, : len(kept)] = kept
        mask[i] = np.arange(x.shape[1]) < len(kept)
        length[i] = len(kept)
      elif kind == 'noise':
        z = rng.standard_normal(x.shape[1:], dtype=np.float32)[:n]  # (n, D)
        sigma = np.asarray(scales[m], np.float32) * np.float32(10.0 ** (-intensity / 20.0))
        x[i, :n] = x[i, :n] + sigma * z
    out[m], out[f'{m}_mask'] = x, mask
    if f'{m}_len' in batch:
      out[f'{m}_len'] = length.astype(np.asarray(batch[f'{m}_len']).dtype)
  return out


def _shifted(x: np.ndarray, k: int) -> np.ndarray:
  """x: (n, D) real steps -> (n, D) with step t holding x[t - k] (zeros where t - k is outside)."""
  n = len(x)
  out = np.zeros_like(x)
  if abs(k) >= n:
    return out
  if k >= 0:
    out[k:] = x[: n - k]
  else:
    out[: n + k] = x[-k:]
  return out


# --- training: modality dropout, inside the jitted step ------------------------------------------
def dropout_rates(config) -> dict[str, float]:
  """modality -> probability of dropping it for an example, from `config.modality_dropout`
  (only the modalities the run reads, and only rates > 0; {} when off or absent, as in a run
  saved before the field existed).

  Raises:
    ValueError: a rate outside [0, 1], naming the field.
  """
  field = config.get('modality_dropout')
  if not field:
    return {}
  rates = {}
  for m, rate in dict(field).items():
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
      raise ValueError(
        f'config.modality_dropout.{m}={rate}: expected a probability in [0, 1] (0 turns it off), '
        f'e.g. --config.modality_dropout.{m}=0.3.'
      )
    if rate and m in config.modalities:
      rates[m] = rate
  return rates


def drop_modalities(batch: Mapping[str, jax.Array], rates: Mapping[str, float], rng) -> dict:
  """Drops each modality m of `rates` for each example independently with probability rates[m]:
  its features (B, L_m, D_m) become 0 and its mask (B, L_m) all False, as `missing:m` does at
  evaluation. Traceable (used inside the jitted train step); `rng` is a JAX key, folded with the
  modality's index in `modalities.MODALITIES`. Returns a new batch dict."""
  out = dict(batch)
  for m, rate in rates.items():
    key = jax.random.fold_in(rng, modalities_lib.MODALITIES.index(m))
    keep = ~jax.random.bernoulli(key, rate, batch[f'{m}_mask'].shape[:1])  # (B,)
    out[m] = jnp.where(keep[:, None, None], batch[m], jnp.zeros((), batch[m].dtype))
    out[f'{m}_mask'] = batch[f'{m}_mask'] & keep[:, None]
  return out
