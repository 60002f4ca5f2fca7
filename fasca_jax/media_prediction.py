"""A trained run predicting on new media: Route B features of a clip, then the model.

The run must have been trained on Route B features (data_prep/features), e.g.
`configs/meld.py:multimodal` (or `:text`, `:multimodal_egemaps_face`). The clip goes through the
extractors the run was trained with, as its config records them (`config.dataset.extractors`:
librosa audio 46-d or openSMILE eGeMAPS 25-d; whole-frame vision 27-d or face-centred 32-d; a
config.json without the field means the defaults, librosa and whole-frame). Text is encoded by
the local MiniLM encoder (384-d features), or, for a run that fine-tuned its text encoder
(`config.model.text_encoder`), tokenised by that encoder's tokenizer, as the MELD builder does.
Features go through the input pipeline's own crop/pad (config.max_len), and non-finite values are
set to 0 as the MELD builder does.

Text: the utterance's words. When a clip has none, the text is encoded as the empty string, i.e.
only the encoder's [CLS] and [SEP] tokens, as an utterance without words would be. A text-only
run reads no media and needs the text.
"""

import json
import os

from absl import logging
import ml_collections
import numpy as np

from data_prep import meld
from data_prep.features import extract
from data_prep.features import text as text_lib
from data_prep.features.media import MediaError
from fasca_jax import config_io
from fasca_jax import restored_run
from fasca_jax import tasks
from fasca_jax.models import text_encoder


class InputError(ValueError):
  """A clip cannot be predicted with what was given (e.g. no text for a text-only run)."""


def run_extractors(config: ml_collections.ConfigDict) -> dict[str, str]:
  """The Route B extractors a run was trained with: media modality -> name in
  `extract.EXTRACTOR_SETS` (config.dataset.extractors; defaults for a config without it).

  Raises:
    InputError: an extractor name the config records is unknown.
  """
  recorded = config.dataset.get('extractors') or {}
  try:
    return extract.check_extractors({m: recorded[m] for m in recorded if recorded[m]})
  except ValueError as e:
    raise InputError(f'config.dataset.extractors: {e}') from e


def route_b_dims(
  text_model_dir: str | None = None, extractors: dict[str, str] | None = None
) -> dict[str, int]:
  """Widths of the features predict extracts with `extractors` (default: the default set):
  modality -> D."""
  extractors = extract.check_extractors(extractors or {})
  return {
    'text': text_lib.text_dim(text_model_dir),
    **{m: extract.feature_dim(m, name) for m, name in extractors.items()},
  }


def check_config(config: ml_collections.ConfigDict, dims: dict[str, int], workdir: str):
  """Fails with what to train when the run cannot read Route B features.

  Raises:
    InputError: a modality width differs from `dims`.
  """
  reads = [m for m in config.modalities if not (m == 'text' and text_encoder.enabled(config))]
  wrong = {m: int(config.dims[m]) for m in reads if config.dims[m] != dims[m]}
  if wrong:
    trained = ', '.join(f'{m} {config.dims[m]}' for m in config.modalities)
    extracted = ', '.join(f'{m} {d}' for m, d in dims.items())
    raise InputError(
      f'{workdir} was trained on features of widths {trained} '
      f'({config.dataset.name}/{config.dataset.config}), but predict.py extracts Route B '
      f'features of widths {extracted} (extractors {run_extractors(config)}). Train a run on '
      f'Route B features, e.g. `python train.py --config=configs/meld.py:multimodal '
      f'--workdir=DIR` (or :text, :multimodal_egemaps_face).'
    )


def format_result(result: dict) -> str:
  """A prediction as a small table: the file, then the score or each class by probability."""
  text = f' (text: {result["text"]!r})' if result['text'] else ' (no text)'
  lines = [f'{result["file"]}{text}']
  if 'score' in result:
    lines.append(f'  sentiment {result["score"]:+.4f} ({result["sentiment"]})')
    return '\n'.join(lines)
  probs = sorted(result['probabilities'].items(), key=lambda kv: -kv[1])
  predicted = result['prediction']
  predicted = set(predicted) if isinstance(predicted, list) else {predicted}
  width = max(len(n) for n, _ in probs)
  lines += [
    f'  {n.ljust(width)}  {p:.4f}{"  <- predicted" if n in predicted else ""}' for n, p in probs
  ]
  return '\n'.join(lines)


class MediaPredictor:
  """A restored run that predicts on media files (Route B features, then the model)."""

  def __init__(
    self,
    workdir: str,
    config: ml_collections.ConfigDict | None = None,
    text_model_dir: str | None = None,
  ):
    config = config if config is not None else config_io.load(workdir)
    self.text_model_dir = text_model_dir
    self.extractors = run_extractors(config)
    check_config(config, route_b_dims(text_model_dir, self.extractors), workdir)
    self.run = restored_run.RestoredRun(workdir, config)
    self.config = config
    self.task = tasks.from_config(config)

  @property
  def media_modalities(self) -> tuple[str, ...]:
    return tuple(m for m in self.config.modalities if m in extract.EXTRACTORS)

  def features(self, path: str, text: str) -> dict[str, np.ndarray]:
    """Route B features of `path` (and `text`) for the run's modalities: m -> (T_m, D_m), by
    the run's extractors; with a text encoder in the run, `text_ids` and `text_segments` (T,)
    int32 from its tokenizer instead of `text`.

    Raises:
      MediaError: naming `path` when it is unreadable or lacks a needed stream.
    """
    feats = {  # as MELD's build
      m: extract.EXTRACTOR_SETS[m][self.extractors[m]](path) for m in self.media_modalities
    }
    tokens = {}
    if text_encoder.enabled(self.config):
      directory = text_encoder.model_dir(self.config.model.text_encoder)
      ((tokens['text_ids'], tokens['text_segments']),) = text_lib.cached_tokenizer(directory)(
        [text]
      )
    elif 'text' in self.config.modalities:
      feats['text'] = text_lib.cached_encoder(self.text_model_dir).encode([text])[0]
    return {**{m: meld.replace_nonfinite(x)[0] for m, x in feats.items()}, **tokens}

  def predict(self, path: str, text: str = '') -> dict:
    """Prediction for one clip: {'file', 'id', 'text', 'steps', ...Task.describe()}.

    `steps` holds each modality's length before cropping to config.max_len (longer inputs are
    cropped, as in training, with a warning).
    """
    if not self.media_modalities and not text:
      raise InputError(f'{path}: this run reads only text and no text was given')
    feats = self.features(path, text)
    clip_id = os.path.splitext(os.path.basename(path))[0]
    steps = {
      m: len(feats[f'{m}_ids' if f'{m}_ids' in feats else m]) for m in self.config.modalities
    }
    for m, n in steps.items():
      if n > self.config.max_len[m]:
        logging.warning(
          '%s: %s has %d steps; the model reads the first %d (config.max_len.%s).',
          path,
          m,
          n,
          self.config.max_len[m],
          m,
        )
    outputs, _ = self.run.apply(self.run.batch(feats, clip_id))
    host = np.asarray(self.task.host_output(outputs['main']))[0]
    return {
      'file': os.fspath(path),
      'id': clip_id,
      'text': text,
      'steps': steps,
      **self.task.describe(host),
    }


def clip_text(path) -> str:
  """Text of a clip in a folder: the stripped contents of <clip name>.txt beside it, else ''."""
  sidecar = os.path.splitext(path)[0] + '.txt'
  if not os.path.isfile(sidecar):
    return ''
  with open(sidecar, encoding='utf-8') as f:
    return f.read().strip()


def predict_folder(predictor: MediaPredictor, input_dir: str, output: str) -> tuple[list, dict]:
  """Predicts every media file directly inside `input_dir`, in sorted order, into JSONL `output`.

  Returns:
    (results written, {file: reason} of the clips skipped because they could not be read).
  """
  results, failed = [], {}
  with open(output, 'w') as f:
    for path in extract.scan_folder(input_dir).values():  # sorted by file name
      try:
        result = predictor.predict(os.fspath(path), clip_text(path))
      except (MediaError, InputError) as e:
        failed[os.fspath(path)] = str(e)
        logging.warning('Skipped %s: %s', path, e)
        continue
      f.write(json.dumps(result) + '\n')
      f.flush()
      results.append(result)
  return results, failed
