"""`synthetic_affect`: a generated tri-modal sentiment dataset that needs fusion and alignment.

No download: `python -m data_prep.build --dataset=synthetic_affect --config=tiny` (or any use of
`fasca_jax.input_pipeline.ensure_built`) writes it as array_record. Every example follows the
example contract of `DESIGN.md` with MOSEI widths: `text` (T_t, 768), `audio` (T_a, 74),
`vision` (T_v, 35), `regression` in [-3, 3], `label` (0 negative: regression < -0.5,
1 neutral: |regression| <= 0.5, 2 positive: regression > 0.5), `id` and `raw_text`.

Generative process (one example)
--------------------------------
A fixed "world" (seed `WORLD_SEED`, shared by all configs and splits) holds a 38-word vocabulary
(24 neutral words; 10 "polar" words with signed intensities s in +-{0.6, 0.8, 1.0, 1.2, 1.4}; 4
"emphasis" words), a base vector per word, orthonormal directions in each feature space
(`pol_dir` and `emph_dir` in text, `tone_dir` in audio, `face_dir` in vision, plus a
`CODE_DIM`-dimensional sync subspace per modality) and a table of sync codes, one random
`CODE_DIM` vector per word position (think of the timing marks a forced aligner would give).

1. Words. T_t words; each is polar with probability `P_POLAR`, emphasis with `P_EMPHASIS`, else
   neutral; at least one word is polar. `raw_text` joins them.
2. Text. Word j is `base[w_j] + A_POL * s_j * pol_dir + A_EMPH * e_j * emph_dir
   + A_CODE * sync_j + noise`, with s_j = 0 for non-polar words, e_j = 1 for emphasis words,
   sync_j the position's sync code (in the text sync subspace) and i.i.d. Gaussian noise.
3. Timelines. Audio and vision each get T = round(u * T_t) frames (u ~ U(2, 3), clipped to the
   config's `frame_len`), rate r = T / T_t and their own lag ~ U(-1.5, 1.5) * r frames: word j
   occupies frames [round(j * r + lag), round((j + 1) * r + lag)), clipped to the stream, and
   each of them carries sync_j (in that stream's sync subspace) plus noise. A frame's sync code
   tells which word position it belongs to, never which word.
4. Cues, only on words whose frames lie fully inside the stream:
   - audio tone: every emphasis word gets `t_j = +-U(0.5, 1.5)` (`A_TONE * t_j * tone_dir` on
     its frames); any other word gets a distractor tone with probability `P_TONE_DISTRACTOR`.
   - vision expression (+-1, `A_FACE * face_dir`): a polar word gets, with probability
     `P_SARCASM`, the expression contradicting its polarity (sarcasm); any other word gets a
     random-sign distractor expression with probability `P_FACE_DISTRACTOR`.
5. Sentiment. text_score = sum_j s_j; vision_score = -2 sum_j s_j [sarcastic_j] (sarcasm flips a
   polar word); audio_score = sum_j e_j t_j (a tone counts only on an emphasis word):
       regression = clip(W_TEXT * (text_score + vision_score) + W_AUDIO * audio_score
                         + N(0, NOISE^2), -3, 3).

Text alone misses every sarcastic flip and every emphasised tone; pooled audio or vision mixes the
real cues with distractors; reading the cues at lag 0 puts them on the wrong words. Recovering the
label needs the streams aligned to the words, which the sync codes make possible by content.
`oracle_score` does exactly that from the features (per stream, the lag whose word layout best
matches the sync codes) and recovers the label almost perfectly.

Difficulty on `default` v1.1.0, Has0 binary accuracy on test (ridge penalty picked on validation):
ridge on mean-pooled text 0.70, on mean-pooled audio+vision 0.65, on all three 0.74; the oracle
with lag 0 0.76; the oracle 0.97. A one-layer model (text queries cross-attending to each stream,
width 64, no positional encoding, per-word MLP, sum pooling; L1 loss, AdamW, weight decay 1e-2)
reaches 0.93-0.95 after 2500 steps of batch 32 (1.5-3.5 min on 2 CPU cores) for 3 of 4 seeds and
0.80 for the fourth: learning the alignment shows as a jump in accuracy after ~1000-1500 steps.

`short` (10-20 words, 20-60 frames; 8000 training examples, so the demo's 2000 steps see each
one 8 times) is the demo's variant. On 1500 of its examples: the text-only oracle 0.71, the
oracle with lag 0 0.78, the oracle 0.97. FASCA-Net as in `configs/synthetic.py` (2000 steps)
reached 0.867 on test (0.797 after 1250 steps); without weight decay 1e-2 and dropout 0.2 it
memorised the training set and stayed at 0.75-0.76 on validation.

Each split draws from `np.random.default_rng(config.seed + split_index)`, so a rebuild gives
identical data.
"""

import dataclasses
import functools
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from data_prep import quiet

SPLITS = ('train', 'validation', 'test')
DIMS = {'text': 768, 'audio': 74, 'vision': 35}
WORLD_SEED = 20240611
CODE_DIM = 12
MAX_WORDS = 64

NEUTRAL_WORDS = (
  'the',
  'movie',
  'was',
  'i',
  'think',
  'it',
  'and',
  'plot',
  'actor',
  'scene',
  'story',
  'but',
  'this',
  'that',
  'film',
  'music',
  'ending',
  'people',
  'time',
  'just',
  'about',
  'with',
  'they',
  'we',
)
POLAR_WORDS = {
  'good': 0.6,
  'nice': 0.8,
  'great': 1.0,
  'love': 1.2,
  'amazing': 1.4,
  'bad': -0.6,
  'dull': -0.8,
  'boring': -1.0,
  'hate': -1.2,
  'awful': -1.4,
}
EMPHASIS_WORDS = ('really', 'so', 'very', 'totally')

P_POLAR = 0.12
P_EMPHASIS = 0.08
P_SARCASM = 0.2
P_TONE_DISTRACTOR = 0.1
P_FACE_DISTRACTOR = 0.1
MAX_LAG_WORDS = 1.5

A_POL, A_EMPH, A_CODE = 8.0, 3.0, 3.0
A_TONE, A_FACE = 3.0, 3.0
BASE_SCALE, TEXT_NOISE, STREAM_NOISE = 0.5, 0.1, 0.15
W_TEXT, W_AUDIO, NOISE = 0.5, 0.4, 0.1


@dataclasses.dataclass(eq=False)
class SyntheticAffectConfig(tfds.core.BuilderConfig):
  """Split sizes and sequence lengths of a `synthetic_affect` variant.

  Attributes:
    num_examples: examples per split, in `SPLITS` order.
    text_len: inclusive (min, max) number of words T_t.
    frame_len: inclusive (min, max) frames of the audio and vision streams.
    seed: split i draws from `np.random.default_rng(seed + i)`.
  """

  num_examples: tuple[int, int, int] = (2000, 400, 600)
  text_len: tuple[int, int] = (16, 40)
  frame_len: tuple[int, int] = (32, 120)
  seed: int = 0

  def __post_init__(self):
    if self.text_len[1] > MAX_WORDS:
      raise ValueError(f'text_len {self.text_len} exceeds MAX_WORDS={MAX_WORDS}.')


class World(NamedTuple):
  """Fixed vocabulary and feature-space directions shared by every example."""

  words: tuple[str, ...]
  polarity: np.ndarray  # (V,) signed intensity, 0 for non-polar words
  emphasis: np.ndarray  # (V,) bool
  base: np.ndarray  # (V, 768)
  pol_dir: np.ndarray  # (768,)
  emph_dir: np.ndarray  # (768,)
  tone_dir: np.ndarray  # (74,)
  face_dir: np.ndarray  # (35,)
  code: dict[str, np.ndarray]  # modality -> (CODE_DIM, D_m) orthonormal rows
  sync: np.ndarray  # (MAX_WORDS, CODE_DIM) sync code of the word at each position


def _orthonormal_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
  """`n` random orthonormal vectors of width `dim`: (n, dim)."""
  q, _ = np.linalg.qr(rng.standard_normal((dim, n)))
  return q.T


@functools.cache
def make_world() -> World:
  """The fixed world, from `WORLD_SEED`."""
  rng = np.random.default_rng(WORLD_SEED)
  words = NEUTRAL_WORDS + tuple(POLAR_WORDS) + EMPHASIS_WORDS
  polarity = np.array([POLAR_WORDS.get(w, 0.0) for w in words])
  emphasis = np.array([w in EMPHASIS_WORDS for w in words])
  text_dirs = _orthonormal_rows(rng, CODE_DIM + 2, DIMS['text'])
  audio_dirs = _orthonormal_rows(rng, CODE_DIM + 1, DIMS['audio'])
  vision_dirs = _orthonormal_rows(rng, CODE_DIM + 1, DIMS['vision'])
  base = BASE_SCALE * rng.standard_normal((len(words), DIMS['text']))
  base -= base @ text_dirs.T @ text_dirs  # Keep the designed directions clean.
  return World(
    words=words,
    polarity=polarity,
    emphasis=emphasis,
    base=base,
    pol_dir=text_dirs[0],
    emph_dir=text_dirs[1],
    tone_dir=audio_dirs[0],
    face_dir=vision_dirs[0],
    code={'text': text_dirs[2:], 'audio': audio_dirs[1:], 'vision': vision_dirs[1:]},
    sync=rng.standard_normal((MAX_WORDS, CODE_DIM)),
  )


def word_edges(num_words: int, num_frames: int, lag) -> np.ndarray:
  """Unclipped frame interval [start, end) of each word in a stream.

  Args:
    num_words: T_t.
    num_frames: T, frames in the stream; the rate is r = T / T_t.
    lag: float, or an array (...) of lags, in frames.

  Returns:
    (..., T_t, 2) int: word j spans [round(j * r + lag), round((j + 1) * r + lag)).
  """
  steps = np.arange(num_words + 1) * (num_frames / num_words)
  edges = np.round(steps + np.asarray(lag, np.float64)[..., None]).astype(np.int64)
  return np.stack([edges[..., :-1], edges[..., 1:]], axis=-1)


def _sample_words(rng: np.random.Generator, world: World, num_words: int) -> np.ndarray:
  """Word ids (T_t,): polar / emphasis / neutral by `P_POLAR` / `P_EMPHASIS`, >= 1 polar."""
  kind = rng.choice(3, size=num_words, p=(P_POLAR, P_EMPHASIS, 1 - P_POLAR - P_EMPHASIS))
  if not (kind == 0).any():  # kind: 0 polar, 1 emphasis, 2 neutral.
    kind[rng.integers(num_words)] = 0
  pools = [
    np.flatnonzero(world.polarity != 0),
    np.flatnonzero(world.emphasis),
    np.flatnonzero((world.polarity == 0) & ~world.emphasis),
  ]
  choices = [pool[rng.integers(len(pool), size=num_words)] for pool in pools]  # 3 x (T_t,)
  return np.choose(kind, choices)


def _stream(
  rng: np.random.Generator,
  world: World,
  modality: str,
  codes: np.ndarray,
  num_frames: int,
  cue_dir: np.ndarray,
  cues,
) -> tuple[np.ndarray, np.ndarray]:
  """One lagged, time-stretched stream.

  Args:
    rng: generator.
    world: the fixed `World`.
    modality: 'audio' or 'vision'.
    codes: (T_t, CODE_DIM) sync codes of the words.
    num_frames: T, number of frames.
    cue_dir: (D,) the cue's direction times its scale.
    cues: callable `visible (T_t,) bool -> (T_t,) cue amplitude per word`, drawn only on words
      whose frames lie fully inside the stream.

  Returns:
    features (T, D) float32 and the cue amplitude per word (T_t,).
  """
  num_words = len(codes)
  lag = rng.uniform(-MAX_LAG_WORDS, MAX_LAG_WORDS) * num_frames / num_words
  edges = word_edges(num_words, num_frames, lag)
  amplitude = cues((edges[:, 0] >= 0) & (edges[:, 1] <= num_frames))
  per_word = A_CODE * codes @ world.code[modality] + amplitude[:, None] * cue_dir  # (T_t, D)
  frames = STREAM_NOISE * rng.standard_normal((num_frames, len(cue_dir)))
  for (start, end), value in zip(np.clip(edges, 0, num_frames), per_word):
    frames[start:end] += value
  return frames.astype(np.float32), amplitude


def generate_example(rng: np.random.Generator, config: SyntheticAffectConfig) -> dict:
  """One example of the contract (without `id`), following the module docstring."""
  world = make_world()
  num_words = int(rng.integers(config.text_len[0], config.text_len[1] + 1))
  words = _sample_words(rng, world, num_words)
  signed, emph = world.polarity[words], world.emphasis[words]
  codes = world.sync[:num_words]
  text = (
    world.base[words]
    + A_POL * signed[:, None] * world.pol_dir
    + A_EMPH * emph[:, None] * world.emph_dir
    + A_CODE * codes @ world.code['text']
    + TEXT_NOISE * rng.standard_normal((num_words, DIMS['text']))
  )

  def frames():
    return int(np.clip(np.round(rng.uniform(2, 3) * num_words), *config.frame_len))

  def tones(visible):
    sign = rng.choice([-1.0, 1.0], size=num_words)
    cued = visible & (emph | (rng.random(num_words) < P_TONE_DISTRACTOR))
    return cued * sign * rng.uniform(0.5, 1.5, size=num_words)

  def faces(visible):
    polar, u = np.sign(signed), rng.random(num_words)
    on_polar = (u < P_SARCASM) * -polar
    elsewhere = (u < P_FACE_DISTRACTOR) * rng.choice([-1.0, 1.0], size=num_words)
    return visible * np.where(polar != 0, on_polar, elsewhere)

  audio, tone = _stream(rng, world, 'audio', codes, frames(), A_TONE * world.tone_dir, tones)
  vision, face = _stream(rng, world, 'vision', codes, frames(), A_FACE * world.face_dir, faces)
  sarcastic = face * signed < 0
  score = W_TEXT * np.sum(signed * (1 - 2 * sarcastic)) + W_AUDIO * np.sum(emph * tone)
  regression = float(np.clip(score + NOISE * rng.standard_normal(), -3, 3))
  return {
    'text': text.astype(np.float32),
    'audio': audio,
    'vision': vision,
    'regression': np.float32(regression),
    'label': np.int32(sentiment_class(regression)),
    'raw_text': ' '.join(world.words[w] for w in words),
  }


def sentiment_class(regression: float) -> int:
  """0 negative (< -0.5), 1 neutral (|r| <= 0.5), 2 positive (> 0.5)."""
  return 0 if regression < -0.5 else 2 if regression > 0.5 else 1


def estimate_lag(text_codes: np.ndarray, stream_codes: np.ndarray) -> float:
  """Lag (frames) whose word layout best matches sync codes.

  Args:
    text_codes: (T_t, K) sync codes read from the text.
    stream_codes: (T, K) sync codes read from a stream.

  Returns:
    the lag in the generative range maximising the summed code agreement of word j with its
    frames. Candidates are one lag per distinct rounding of the word edges, so the search is
    exact.
  """
  num_words, num_frames = len(text_codes), len(stream_codes)
  max_lag = MAX_LAG_WORDS * num_frames / num_words
  steps = np.arange(num_words + 1) * (num_frames / num_words)
  frames = np.arange(-np.ceil(max_lag) - 1, num_frames + np.ceil(max_lag) + 2)
  breaks = np.unique(np.clip((frames[:, None] + 0.5 - steps).ravel(), -max_lag, max_lag))
  lags = (breaks[:-1] + breaks[1:]) / 2  # (L,)
  edges = np.clip(word_edges(num_words, num_frames, lags), 0, num_frames)  # (L, T_t, 2)
  cum = np.cumsum(np.pad(text_codes @ stream_codes.T, ((0, 0), (1, 0))), axis=1)  # (T_t, T+1)
  rows = np.arange(num_words)
  agreement = (cum[rows, edges[..., 1]] - cum[rows, edges[..., 0]]).sum(-1)  # (L,)
  return float(lags[np.argmax(agreement)])


def _cue_per_word(
  text_codes: np.ndarray,
  stream: np.ndarray,
  code_proj: np.ndarray,
  cue_dir: np.ndarray,
  align: bool,
) -> np.ndarray:
  """Mean cue along `cue_dir` over each word's frames: (T_t,).

  Args:
    text_codes: (T_t, K) sync codes read from the text.
    stream: (T, D) audio or vision features.
    code_proj: (K, D) the stream's sync subspace.
    cue_dir: (D,) the cue's unit direction.
    align: place the words with `estimate_lag`; otherwise at lag 0.
  """
  lag = estimate_lag(text_codes, stream @ code_proj.T) if align else 0.0
  edges = np.clip(word_edges(len(text_codes), len(stream), lag), 0, len(stream))
  cue = stream @ cue_dir
  return np.array([cue[s:e].mean() if e > s else 0.0 for s, e in edges])


def oracle_parts(example: dict, align: bool = True) -> dict[str, float]:
  """Recovers text/audio/vision scores from the features alone, using the world's directions.

  Args:
    example: a contract example with `text` (T_t, 768), `audio` (T_a, 74), `vision` (T_v, 35).
    align: estimate each stream's lag from the sync codes; otherwise assume lag 0.

  Returns:
    {'text': text_score, 'audio': audio_score, 'vision': vision_score}.
  """
  world = make_world()
  text = np.asarray(example['text'], np.float64)
  levels = np.unique(world.polarity)
  signed = levels[np.abs((text @ world.pol_dir / A_POL)[:, None] - levels).argmin(-1)]
  emph = text @ world.emph_dir / A_EMPH > 0.5
  codes = text @ world.code['text'].T
  tone = (
    _cue_per_word(codes, np.asarray(example['audio']), world.code['audio'], world.tone_dir, align)
    / A_TONE
  )
  face = (
    _cue_per_word(codes, np.asarray(example['vision']), world.code['vision'], world.face_dir, align)
    / A_FACE
  )
  sarcastic = face * np.sign(signed) < -0.5
  return {
    'text': float(signed.sum()),
    'audio': float(np.sum(emph * tone)),
    'vision': float(-2 * np.sum(signed * sarcastic)),
  }


def oracle_score(example: dict, align: bool = True) -> float:
  """Noise-free sentiment predicted from the features: scalar in [-3, 3]."""
  parts = oracle_parts(example, align)
  score = W_TEXT * (parts['text'] + parts['vision']) + W_AUDIO * parts['audio']
  return float(np.clip(score, -3, 3))


def _sequence(dim: int) -> tfds.features.Tensor:
  """Variable-length float32 (T, dim) feature, stored as raw bytes (fast to write and read)."""
  return tfds.features.Tensor(shape=(None, dim), dtype=np.float32, encoding='bytes')


class SyntheticAffect(quiet.QuietBuild, tfds.core.GeneratorBasedBuilder):
  """Generated tri-modal sentiment data; see the module docstring."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'Initial release.',
    '1.1.0': 'Tone and expression cues twice as strong (A_TONE = A_FACE = 3): alignment is '
    'learned more reliably.',
  }
  BUILD_AUTOMATICALLY = True  # No manual files: `input_pipeline.ensure_built` may build it.
  BUILDER_CONFIGS = [
    SyntheticAffectConfig(
      name='default', description='2000/400/600 examples, 16-40 words, 32-120 frames.'
    ),
    SyntheticAffectConfig(
      name='short',
      description='8000/400/600 examples, 10-20 words, 20-60 frames (demo).',
      num_examples=(8000, 400, 600),
      text_len=(10, 20),
      frame_len=(20, 60),
    ),
    SyntheticAffectConfig(
      name='tiny',
      description='96/32/32 examples, 6-12 words, 10-30 frames (tests).',
      num_examples=(96, 32, 32),
      text_len=(6, 12),
      frame_len=(10, 30),
    ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'id': tfds.features.Text(),
          **{m: _sequence(dim) for m, dim in DIMS.items()},
          'regression': tfds.features.Scalar(np.float32, doc='Sentiment in [-3, 3].'),
          'label': tfds.features.Scalar(
            np.int32, doc='0 negative (< -0.5), 1 neutral, 2 positive (> 0.5).'
          ),
          'raw_text': tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    index = SPLITS.index(split)
    rng = np.random.default_rng(config.seed + index)
    for i in range(config.num_examples[index]):
      example_id = f'{split}_{i:05d}'
      yield example_id, {'id': example_id, **generate_example(rng, config)}
