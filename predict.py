r"""Predicts sentiment / emotion of new clips with a trained run (Route B features).

  python predict.py --workdir=workdirs/meld_mm --video=clip.mp4 --text="what was said"
  python predict.py --workdir=workdirs/meld_mm --input_dir=clips/ [--output=preds.jsonl]

The run must have been trained on Route B features, e.g. `configs/meld.py:multimodal`; its config
comes from --workdir/config.json unless --config is given. Audio and vision are extracted from
the clip as data_prep/features does, the text is encoded by the same MiniLM encoder.
  --video        prints the prediction as a table: each class with its probability (or the
                 sentiment score). --text is optional: without it the utterance is encoded as
                 empty text ([CLS] [SEP] only). An unreadable clip is an error naming the file.
  --input_dir    every media file directly inside the folder, in sorted order; a clip's text is
                 read from <clip name>.txt beside it when present. One JSON line per predicted
                 clip goes to --output (default <input_dir>/predictions.jsonl). Unreadable clips
                 are listed with the reason and skipped; the exit status is 1 only when no clip
                 could be predicted.
"""

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from data_prep.features.media import MediaError
from fasca_jax import cli
from fasca_jax import media_prediction

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, "Config file (default: the run's own workdir/config.json).", lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_VIDEO = flags.DEFINE_string('video', None, 'One media file (any container FFmpeg reads).')
_TEXT = flags.DEFINE_string('text', None, 'What was said in --video (optional).')
_INPUT_DIR = flags.DEFINE_string('input_dir', None, 'A folder of media files.')
_OUTPUT = flags.DEFINE_string(
  'output', None, 'JSONL output for --input_dir (default <input_dir>/predictions.jsonl).'
)
_TEXT_MODEL_DIR = flags.DEFINE_string(
  'text_model_dir', None, 'Text encoder checkpoint (default: the bundled MiniLM).'
)
flags.mark_flags_as_required(['workdir'])
flags.register_multi_flags_validator(
  ['video', 'input_dir'],
  lambda f: (f['video'] is None) != (f['input_dir'] is None),
  'give exactly one of --video and --input_dir',
)
flags.register_multi_flags_validator(
  ['text', 'input_dir'],
  lambda f: f['text'] is None or f['input_dir'] is None,
  '--text goes with --video; with --input_dir put the text in <clip name>.txt',
)


def main(argv):
  del argv
  try:
    predictor = media_prediction.MediaPredictor(
      _WORKDIR.value, _CONFIG.value, _TEXT_MODEL_DIR.value
    )
    if _VIDEO.value:
      if _TEXT.value is None:
        logging.warning('No --text: %s is predicted with empty text.', _VIDEO.value)
      print(media_prediction.format_result(predictor.predict(_VIDEO.value, _TEXT.value or '')))
      return
    if not os.path.isdir(_INPUT_DIR.value):
      raise FileNotFoundError(f'--input_dir {_INPUT_DIR.value} is not a folder')
    output = _OUTPUT.value or os.path.join(_INPUT_DIR.value, 'predictions.jsonl')
    results, failed = media_prediction.predict_folder(predictor, _INPUT_DIR.value, output)
  except (media_prediction.InputError, MediaError, FileNotFoundError) as e:
    raise SystemExit(f'predict.py: {e}') from e
  for r in results:
    print(
      f'{r["file"]}: '
      + (r['prediction'] if 'prediction' in r else f'{r["score"]:+.4f} ({r["sentiment"]})')
    )
  for path, reason in failed.items():
    print(f'skipped {path}: {reason}', file=sys.stderr)
  print(f'{len(results)} clips predicted into {output}; {len(failed)} skipped.')
  if not results:
    raise SystemExit(f'predict.py: no clip in {_INPUT_DIR.value} could be predicted')


if __name__ == '__main__':
  cli.run(main)
