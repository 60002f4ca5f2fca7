r"""Builds one dataset config as array_record and prints what was built and repaired.

  python -m data_prep.build --dataset=cmu_mosei --config=mmsa_unaligned \
      --manual_dir=/data/MMSA/MOSEI/Processed --data_dir=~/tensorflow_datasets

`--dataset` names both the builder and its module, `data_prep.<dataset>` (cmu_mosi, cmu_mosei,
iemocap, meld, synthetic_affect). The summary gives the example count of each split, every
repair or drop of the builder's build log (`repairs.json` in the dataset directory), per split,
field and kind, then the SHA-256 and size of each source file read and the build's notes (e.g.
which folds file was used). An already built dataset is reused (and summarised) unless
--overwrite.
"""

import json
import os
import sys

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from data_prep import registry
from data_prep import sources
from fasca_jax import errors
from fasca_jax import logs

_DATASET = flags.DEFINE_string(
  'dataset', None, 'Builder name, also its module data_prep.<dataset>.', required=True
)
_CONFIG = flags.DEFINE_string('config', None, "Builder config; default: the builder's default.")
_MANUAL_DIR = flags.DEFINE_string(
  'manual_dir',
  None,
  "Folder with the manually downloaded source files (see the builder's "
  'MANUAL_DOWNLOAD_INSTRUCTIONS).',
)
_DATA_DIR = flags.DEFINE_string(
  'data_dir', None, "Where datasets are written; default: TFDS's (~/tensorflow_datasets)."
)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Rebuild even if the dataset exists.')
# Route B options (meld): passed to the builder only when set.
_TEXT_MODEL_DIR = flags.DEFINE_string(
  'text_model_dir', None, 'Local BERT-family checkpoint for text features (meld).'
)
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Per-clip feature cache (meld multimodal).')
_FEATURES_DIR = flags.DEFINE_string(
  'features_dir', None, 'Your own <split>/<modality>/<id>.npy features (meld).'
)
_NUM_WORKERS = flags.DEFINE_integer('num_workers', None, 'Extraction processes (meld).')


builder_class = registry.builder_class  # the builder named `dataset`, in data_prep.<dataset>.


def build(
  dataset: str,
  config: str | None = None,
  *,
  manual_dir: str | None = None,
  data_dir: str | None = None,
  overwrite: bool = False,
  **builder_kwargs,
) -> tfds.core.DatasetBuilder:
  """Builds (or reuses) `dataset`/`config` as array_record; returns the prepared builder.

  `builder_kwargs` (e.g. meld's text_model_dir) go to the builder's constructor.
  """
  registry.check(dataset, config, flags=('--dataset', '--config'))
  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)
  cls = builder_class(dataset)
  try:
    builder = cls(config=config, data_dir=data_dir, file_format='array_record', **builder_kwargs)
  except TypeError as e:
    raise ValueError(
      f'builder {dataset!r} does not take the options {sorted(builder_kwargs)}: {e}'
    ) from e
  mode = (
    tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    if overwrite
    else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
  )
  tfds.disable_progress_bar()  # TFDS's bars name its temporary incomplete.* folders.
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode),
    file_format='array_record',
  )
  return builder


def repairs_text(path) -> str:
  """A repairs file as text: a `RepairLog` table followed, when it recorded any, by the source
  files (SHA-256, bytes, name) and notes; other builders' JSON pretty-printed."""
  with open(path) as f:
    data = json.load(f)
  if not sources.RepairLog.is_record(data):
    return json.dumps(data, indent=2, sort_keys=True)
  log = sources.RepairLog.from_record(data)
  text = log.summary()
  if log.sources or log.notes:
    text += '\nSource files (SHA-256, bytes, name) and notes:\n' + log.sources_summary()
  return text


def summary(builder: tfds.core.DatasetBuilder) -> str:
  """Example count per split and the builder's repair log, as text."""
  name = (
    builder.name
    if builder.builder_config is None
    else (f'{builder.name}/{builder.builder_config.name}')
  )
  lines = [f'{name} {builder.version} at {builder.data_dir}']
  lines += [
    f'  {split}: {info.num_examples} examples' for split, info in builder.info.splits.items()
  ]
  repairs_path = os.path.join(builder.data_dir, sources.REPAIRS_FILE)
  if os.path.exists(repairs_path):
    lines += ['Repairs and drops:', repairs_text(repairs_path)]
  else:
    lines.append(f'No repair log ({sources.REPAIRS_FILE}) recorded by this builder.')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  options = {
    'text_model_dir': _TEXT_MODEL_DIR.value,
    'cache_dir': _CACHE_DIR.value,
    'features_dir': _FEATURES_DIR.value,
    'num_workers': _NUM_WORKERS.value,
  }
  logs.setup_logging()
  try:
    builder = build(
      _DATASET.value,
      _CONFIG.value,
      manual_dir=_MANUAL_DIR.value,
      data_dir=_DATA_DIR.value,
      overwrite=_OVERWRITE.value,
      **{k: v for k, v in options.items() if v is not None},
    )
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  print(summary(builder))


if __name__ == '__main__':
  app.run(main)
