"""A trained run predicting on new media: Route B features of a clip, then the model.

The run must have been trained on Route B features (data_prep/features: text from the local
MiniLM encoder, 384-d; audio 46-d; vision 27-d), i.e. `configs/meld.py:multimodal` (or `:text`).
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


class InputError(ValueError):
  """A clip cannot be predicted with what was given (e.g. no text for a text-only run)."""


def route_b_dims(text_model_dir: str | None = None) -> dict[str, int]:
  """Widths of the features predict extracts: modality -> D."""
  return {'text': text_lib.text_dim(text_model_dir), **extract.FEATURE_DIMS}


def check_config(config: ml_collections.ConfigDict, dims: dict[str, int], workdir: str):
  """Fails with what to train when the run cannot read Route B features.

  Raises:
    InputError: a modality width differs from `dims`.
  """
  wrong = {m: int(config.dims[m]) for m in config.modalities if config.dims[m] != dims[m]}
  if wrong:
    trained = ', '.join(f'{m} {config.dims[m]}' for m in config.modalities)
    extracted = ', '.join(f'{m} {d}' for m, d in dims.items())
    raise InputError(
      f'{workdir} was trained on features of widths {trained} '
      f'({config.dataset.name}/{config.dataset.config}), but predict.py extracts Route B '
      f'features of widths {extracted}. Train a run on Route B features, e.g. '
      f'`python train.py --config=configs/meld.py:multimodal --workdir=DIR` (or :text).'
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
    check_config(config, route_b_dims(text_model_dir), workdir)
    self.run = restored_run.RestoredRun(workdir, config)
    self.config = config
    self.task = tasks.from_config(config)

  @property
  def media_modalities(self) -> tuple[str, ...]:
    return tuple(m for m in self.config.modalities if m in extract.EXTRACTORS)

  def features(self, path: str, text: str) -> dict[str, np.ndarray]:
    """Route B features of `path` (and `text`) for the run's modalities: m -> (T_m, D_m).

    Raises:
      MediaError: naming `path` when it is unreadable or lacks a needed stream.
    """
    feats = {m: extract.EXTRACTORS[m](path) for m in self.media_modalities}  # as MELD's build
    if 'text' in self.config.modalities:
      feats['text'] = text_lib.cached_encoder(self.text_model_dir).encode([text])[0]
    return {m: meld.replace_nonfinite(x)[0] for m, x in feats.items()}

  def predict(self, path: str, text: str = '') -> dict:
    """Prediction for one clip: {'file', 'id', 'text', 'steps', ...Task.describe()}.

    `steps` holds each modality's length before cropping to config.max_len (longer inputs are
    cropped, as in training, with a warning).
    """
    if not self.media_modalities and not text:
      raise InputError(f'{path}: this run reads only text and no text was given')
    feats = self.features(path, text)
    clip_id = os.path.splitext(os.path.basename(path))[0]
    for m, x in feats.items():
      if len(x) > self.config.max_len[m]:
        logging.warning(
          '%s: %s has %d steps; the model reads the first %d (config.max_len.%s).',
          path,
          m,
          len(x),
          self.config.max_len[m],
          m,
        )
    outputs, _ = self.run.apply(self.run.batch(feats, clip_id))
    host = np.asarray(self.task.host_output(outputs['main']))[0]
    return {
      'file': os.fspath(path),
      'id': clip_id,
      'text': text,
      'steps': {m: len(x) for m, x in feats.items()},
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
